"""Does a seed ensemble's spread say where its ranking is wrong? Per record of held-out groups:
the members' spread and the served confidence (``serving.confidence``) against the record's
rank error, summarised as Spearman correlations and a calibration curve (the backtest report).

Per group (records laid out and tie-permuted exactly as ``evaluate`` scores them): ``spread``
is the members' standard deviation of the record's score, ``rel_spread`` that divided by the
standard deviation of the group's mean scores (comparable across groups), ``confidence`` as
served for that list, and the rank error ``|predicted rank − true rank|`` (predicted: by mean
score, ties in slot order as the metrics break them; true: by value, tied values at their
average rank), ``norm_err`` the same over ``n − 1`` (0 = in place, 1 = at the other end).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from modellens_jax import evaluate
from modellens_jax.data import batch as batch_lib
from modellens_jax.data import pipeline
from modellens_jax.serving import confidence as confidence_lib

MIN_GROUP = 5  # records a group needs for its own Spearman correlation
REL_SPREAD_EDGES = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, np.inf)
CONFIDENCE_EDGES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0 + 1e-9)
RECORD_KEYS = ("group", "n", "spread", "rel_spread", "confidence", "abs_err", "norm_err")


def average_ranks(x: np.ndarray) -> np.ndarray:
    """0-based ranks of ``x`` ascending, tied values at their average rank."""
    x = np.asarray(x, np.float64)
    order = np.argsort(x, kind="stable")
    sx = x[order]
    starts = np.flatnonzero(np.r_[True, sx[1:] != sx[:-1]])
    ends = np.r_[starts[1:], len(x)]
    avg = (starts + ends - 1) / 2.0
    ranks = np.empty(len(x))
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's ρ (Pearson on average ranks); NaN when either side is constant."""
    ra, rb = average_ranks(a), average_ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / den) if den > 0 else float("nan")


def group_records(members: np.ndarray, value: np.ndarray) -> dict[str, np.ndarray]:
    """One group's per-record spread, confidence and rank error from its members' scores
    ``[N, n]`` (slot order) and true values ``[n]``."""
    n = len(value)
    mean, std = members.mean(0), members.std(0)
    pred = np.empty(n)
    pred[np.argsort(-mean, kind="stable")] = np.arange(n)
    err = np.abs(pred - average_ranks(-np.asarray(value, np.float64)))
    scale = float(np.std(mean))
    return {
        "n": np.full(n, n),
        "spread": std.astype(np.float64),
        "rel_spread": std / scale if scale > 0 else np.full(n, np.nan),
        "confidence": confidence_lib.confidence(mean, std),
        "abs_err": err,
        "norm_err": err / max(n - 1, 1),
    }


def records(
    scorer: evaluate.EnsembleScorer,
    tables: pipeline.FeatureTables,
    split: int,
    setting: int | None,
    *,
    tie_seed: int | None = 0,
) -> dict[str, np.ndarray]:
    """Every held-out record of ``split``/``setting`` (``RECORD_KEYS`` arrays)."""
    parts: dict[str, list[np.ndarray]] = {k: [] for k in RECORD_KEYS}
    for batch, gid in pipeline.eval_batches(tables, split, setting):
        if tie_seed is not None:  # the order evaluate scores in (ties break alike)
            perm = evaluate.slot_permutation(gid, batch["mask"], tie_seed)
            for k in (*batch_lib.RECORD_KEYS, *batch_lib.COMPETENCE_KEYS):
                if k in batch:
                    p = perm if batch[k].ndim == 2 else perm[..., None]
                    batch[k] = np.take_along_axis(batch[k], p, 1)
        m = scorer.members(batch)
        mask = batch["mask"].astype(bool)
        for r in np.flatnonzero(gid >= 0):
            sel = mask[r]
            rec = group_records(m[:, r, sel], batch["value"][r, sel])
            rec["group"] = np.full(int(sel.sum()), int(gid[r]))
            for k in RECORD_KEYS:
                parts[k].append(rec[k])
    return {k: np.concatenate(v) if v else np.zeros(0) for k, v in parts.items()}


def _bins(x: np.ndarray, y: np.ndarray, edges: Sequence[float]) -> list[dict[str, float]]:
    """Per bin of ``x``: record count and the sum of ``y`` (sums add up over units)."""
    ok = np.isfinite(x) & np.isfinite(y)
    idx = np.digitize(x[ok], edges[1:-1])
    out = []
    for b in range(len(edges) - 1):
        sel = idx == b
        out.append({"lo": float(edges[b]), "hi": float(edges[b + 1]),
                    "count": int(sel.sum()), "sum": float(y[ok][sel].sum())})  # fmt: skip
    return out


def summarise(rec: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """One setting's records -> per-group Spearman correlations (spread and confidence against
    |rank error|, groups of at least ``MIN_GROUP`` records), the pooled correlations (relative
    spread and confidence against the normalised error) and the calibration bins."""
    g = np.asarray(rec["group"])
    per_spread, per_conf = [], []
    for x in np.unique(g):
        sel = g == x
        if sel.sum() < MIN_GROUP:
            continue
        err = rec["abs_err"][sel]
        per_spread.append(spearman(rec["spread"][sel], err))
        per_conf.append(spearman(rec["confidence"][sel], err))
    ok = np.isfinite(rec["rel_spread"])
    return {
        "records": len(g),
        "per_group_spread": [x for x in per_spread if np.isfinite(x)],
        "per_group_confidence": [x for x in per_conf if np.isfinite(x)],
        "pooled_rel_spread": spearman(rec["rel_spread"][ok], rec["norm_err"][ok])
        if ok.sum() > 2
        else float("nan"),
        "pooled_confidence": spearman(rec["confidence"], rec["norm_err"])
        if len(g) > 2
        else float("nan"),
        "bins_rel_spread": _bins(rec["rel_spread"], rec["norm_err"], REL_SPREAD_EDGES),
        "bins_confidence": _bins(rec["confidence"], rec["norm_err"], CONFIDENCE_EDGES),
    }


def combine(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Summaries of several units (folds, seeds) of one setting -> one: per-group correlations
    pooled, pooled correlations averaged over units, calibration bins summed."""
    parts = [p for p in parts if p and p.get("records")]
    if not parts:
        return {"records": 0}

    def merged(key: str) -> list[dict[str, float]]:
        out = [dict(b) for b in parts[0][key]]
        for p in parts[1:]:
            for b, c in zip(out, p[key]):
                b["count"] += c["count"]
                b["sum"] += c["sum"]
        for b in out:
            b["mean"] = b["sum"] / b["count"] if b["count"] else float("nan")
        return out

    def mean(key: str) -> float:
        vals = [p[key] for p in parts if np.isfinite(p[key])]
        return float(np.mean(vals)) if vals else float("nan")

    return {
        "records": int(sum(p["records"] for p in parts)),
        "per_group_spread": [x for p in parts for x in p["per_group_spread"]],
        "per_group_confidence": [x for p in parts for x in p["per_group_confidence"]],
        "pooled_rel_spread": mean("pooled_rel_spread"),
        "pooled_confidence": mean("pooled_confidence"),
        "bins_rel_spread": merged("bins_rel_spread"),
        "bins_confidence": merged("bins_confidence"),
    }


def mean_interval(x: Sequence[float], *, resamples: int = 1000, seed: int = 0) -> tuple:
    """(mean, 2.5 %, 97.5 %) of ``x`` with groups resampled (NaN for none)."""
    x = np.asarray(x, np.float64)
    if not len(x):
        return (float("nan"),) * 3
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), (resamples, len(x)))].mean(1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(x.mean()), float(lo), float(hi)
