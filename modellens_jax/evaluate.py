"""Evaluation: any scorer over the held-out groups of a split and setting -> ranking metrics.

A scorer is a function from a batch (``modellens_jax.data.batch``, one group per row) to scores
``[R, L]``: the trained model, or a baseline. Metrics are computed per group on device, kept per
group (for breakdowns) and aggregated as sums and counts (exact across batches and padding).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from modellens_jax import metrics
from modellens_jax.data import pipeline, splits

KS = (1, 10)
Scorer = Callable[[dict[str, np.ndarray]], Any]


@functools.partial(jax.jit, static_argnames=("ks",))
def _per_group(value, score, mask, ks=KS):
    return metrics.group_metrics(value, score, mask=mask, ks=ks)


def evaluate(
    scorer: Scorer,
    tables: pipeline.FeatureTables,
    split: int,
    setting: int | None,
    *,
    ks: tuple[int, ...] = KS,
    slots_per_batch: int = 8192,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Returns (aggregate metrics, per-group arrays incl. ``group`` and ``n``)."""
    per: dict[str, list[np.ndarray]] = {"group": [], "n": []}
    for batch, gid in pipeline.eval_batches(
        tables, split, setting, slots_per_batch=slots_per_batch
    ):
        s = scorer(batch)
        out = jax.device_get(_per_group(batch["value"], s, batch["mask"], ks=ks))
        real = gid >= 0
        per["group"].append(gid[real])
        per["n"].append(batch["mask"].sum(1)[real])
        for name, (val, valid) in out.items():
            per.setdefault(name, []).append(np.where(valid, val, np.nan)[real])
    groups = {k: np.concatenate(v) if v else np.zeros(0) for k, v in per.items()}
    return aggregate(groups, ks), groups


def aggregate(groups: dict[str, np.ndarray], ks: tuple[int, ...] = KS) -> dict[str, float]:
    """Plain means over valid groups, pair-count-weighted means for the tau variants, and the
    number of groups per K (a group enters the @K means only when n >= K)."""
    n = groups["n"].astype(np.float64)
    pairs = n * (n - 1) / 2
    out: dict[str, float] = {"num_groups": float(len(n))}
    for name, vals in groups.items():
        if name in ("group", "n"):
            continue
        ok = np.isfinite(vals)
        out[name] = float(vals[ok].mean()) if ok.any() else float("nan")
        if name in metrics.TAU_METRICS:
            w = pairs[ok]
            out[f"{name}_pairs"] = (
                float((vals[ok] * w).sum() / w.sum()) if ok.any() else float("nan")
            )
    for k in ks:
        out[f"num_groups@{k}"] = float(np.isfinite(groups.get(f"ndcg@{k}", np.zeros(0))).sum())
    return out


def evaluate_settings(
    scorer: Scorer, tables: pipeline.FeatureTables, split: int, **kw
) -> dict[str, dict[str, float]]:
    """Aggregate metrics for each of the three settings of ``split``."""
    return {
        name: evaluate(scorer, tables, split, setting, **kw)[0]
        for name, setting in splits.SETTINGS.items()
    }


def judge_value(results: dict[str, dict[str, float]], judge: str) -> float:
    """Mean of ``judge`` over the settings that have groups (the early-stopping criterion)."""
    vals = [
        r[judge] for r in results.values() if r.get("num_groups", 0) > 0 and np.isfinite(r[judge])
    ]
    return float(np.mean(vals)) if vals else float("nan")
