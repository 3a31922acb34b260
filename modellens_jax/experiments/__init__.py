"""Experiments over the trainer: sweeps declared in config files (``sweep``), vectorised sweep
members trained as one program (``members``), ablation tables (``ablate``) and the throughput
benchmark (``bench``)."""
