"""Runs a config file's ``get_sweep(h)``: ``python launch/sweep.py --config=configs/x.py[:preset]
--workdir=ROOT [--parallel=N] [--dry-run | --emit=shell|slurm] [--extra='--config.x=y ...']``.

A thin wrapper over ``modellens_jax.sweep`` (see its docstring, or ``--help``).
"""

import sys

from modellens_jax import sweep

if __name__ == "__main__":
    sys.exit(sweep.main())
