"""Ablation sweep: pairwise (BPR) loss weight λ_pair × dropout rate, 3 × 3 = 9 runs.

The config itself is ``configs/default.py`` (same presets: ``:tiny``, ``:paper``, ``:reference``);
this file only adds ``get_sweep(h)``, expanded by ``launch/sweep.py``.

Run (tiny models, 20 steps each, about a minute per run on 2 CPU cores):
  python launch/sweep.py --config=configs/sweep_example.py:tiny --workdir=runs/sweep_example \\
      --extra='--config.train.steps=20 --config.train.eval_every=10'

Result: runs/sweep_example/<name>/ (pairwise=0.5,dropout=0.1 ...), plus sweep.csv, sweep.md
and sweep_heatmap.png (judge = validation weighted_tau averaged over the three settings).
Re-running the same command skips finished runs and resumes interrupted ones. ``--dry_run``
prints the nine commands instead; ``--vectorize`` trains the nine points as one program.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import ml_collections


def _default_module():
    # Loaded by path: config files are not a package, and config_flags loads this file by path.
    path = Path(__file__).with_name("default.py")
    spec = importlib.util.spec_from_file_location("_modellens_configs_default", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """``configs/default.py``'s config, with the same ``:preset`` argument."""
    return _default_module().get_config(arg)


def get_sweep(h):
    return h.product([
        h.sweep("config.loss.weights.pairwise", [0.0, 0.5, 1.0]),
        h.sweep("config.model.dropout", [0.0, 0.1, 0.3]),
    ])  # fmt: skip
