"""Slow, obviously-correct float64 references for the losses and metrics (Python loops).

They mirror the definitions in method.md §5, §7 and §10, not the vectorised code: lists are
gathered item by item, sorted with Python's ``sorted`` and summed term by term.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

# --- lists -----------------------------------------------------------------------------------


def lists_of(mask: np.ndarray, segments: np.ndarray | None) -> list[tuple[int, list[int]]]:
    """``[(row, [slots...]), ...]``: the valid slots of each (row, segment), in slot order."""
    out = []
    for r in range(mask.shape[0]):
        groups: dict[int, list[int]] = {}
        for i in range(mask.shape[1]):
            if mask[r, i]:
                seg = 1 if segments is None else int(segments[r, i])
                groups.setdefault(seg, []).append(i)
        out.extend((r, slots) for _, slots in sorted(groups.items()))
    return out


def _logsumexp(xs: Sequence[float]) -> float:
    m = max(xs)
    return m + math.log(sum(math.exp(x - m) for x in xs))


def _softplus(x: float) -> float:
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


# --- losses ----------------------------------------------------------------------------------


def pl_loss_ref(
    scores: np.ndarray,
    values: np.ndarray,
    mask: np.ndarray,
    segments: np.ndarray | None = None,
    tiebreak: np.ndarray | None = None,
    reduction: str = "mean",
    ties: str = "stable",
) -> tuple[float, int]:
    """Plackett–Luce NLL, list by list: order by (value desc, tiebreak asc, slot asc)."""
    total, count = 0.0, 0
    for r, slots in lists_of(mask, segments):
        n = len(slots)
        if n < 2:
            continue

        def key(i: int, r: int = r) -> tuple[float, float, int]:
            tb = i if tiebreak is None else tiebreak[r, i]
            return (-float(values[r, i]), float(tb), i)

        order = sorted(slots, key=key)
        s = [float(scores[r, i]) for i in order]
        v = [float(values[r, i]) for i in order]
        if ties == "drop_tied" and v[0] == v[-1]:
            continue  # fully tied: no kept term, not counted
        ell = 0.0
        for p in range(n):
            if ties == "drop_tied" and p + 1 < n and v[p + 1] == v[p]:
                continue  # not the last of its tie block
            ell += _logsumexp(s[p:]) - s[p]
        total += ell / n if reduction == "mean" else ell
        count += 1
    return total, count


def bpr_loss_ref(
    scores: np.ndarray,
    values: np.ndarray,
    mask: np.ndarray,
    segments: np.ndarray | None = None,
    z: np.ndarray | None = None,
    weighting: str = "none",
    weight_cap: float = 3.0,
) -> tuple[float, int]:
    """BPR over all ordered pairs with ``v_i > v_j`` in the same list."""
    total, count = 0.0, 0
    for r, slots in lists_of(mask, segments):
        for i in slots:
            for j in slots:
                if values[r, i] > values[r, j]:
                    w = 1.0
                    if weighting == "zgap":
                        w = min(abs(float(z[r, i]) - float(z[r, j])), weight_cap)
                    total += w * _softplus(-(float(scores[r, i]) - float(scores[r, j])))
                    count += 1
    return total, count


def mse_ref(pred: np.ndarray, z: np.ndarray, mask: np.ndarray) -> tuple[float, int]:
    total, count = 0.0, 0
    for r, i in zip(*np.nonzero(mask)):
        total += (float(pred[r, i]) - float(z[r, i])) ** 2
        count += 1
    return total, count


def fd_grad(f: Callable[[np.ndarray], float], x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central finite differences of a scalar function, in float64."""
    x = np.asarray(x, np.float64)
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        hi, lo = x.copy(), x.copy()
        hi[idx] += eps
        lo[idx] -= eps
        g[idx] = (f(hi) - f(lo)) / (2 * eps)
    return g


# --- metrics ---------------------------------------------------------------------------------


def weighted_tau_formula(x: Sequence[float], y: Sequence[float]) -> float:
    """Vigna's additive hyperbolic τ_w with rank = decreasing lexicographic (x, y), by the
    formula of method.md §7 (NaN where a denominator is 0, as scipy)."""
    n = len(x)
    order = sorted(range(n), key=lambda i: (x[i], y[i]), reverse=True)
    rho = {item: pos for pos, item in enumerate(order)}
    num = dx = dy = 0.0
    for i in range(n):
        for j in range(i + 1, n):
            w = 1.0 / (rho[i] + 1) + 1.0 / (rho[j] + 1)
            sx = np.sign(x[i] - x[j])
            sy = np.sign(y[i] - y[j])
            num += w * sx * sy
            dx += w * (x[i] != x[j])
            dy += w * (y[i] != y[j])
    return num / math.sqrt(dx * dy) if dx * dy > 0 else float("nan")


def ranks_desc(a: np.ndarray) -> np.ndarray:
    """0-based rank in the stable descending order (0 = largest; ties to the lower index)."""
    order = np.argsort(-np.asarray(a, np.float64), kind="stable")
    ranks = np.empty(len(a), np.int64)
    ranks[order] = np.arange(len(a))
    return ranks


def ndcg_ref(v: np.ndarray, s: np.ndarray, k: int) -> float:
    v, s = np.asarray(v, np.float64), np.asarray(s, np.float64)
    k_eff = min(k, len(v))
    rel = (v - v.min()) / (v.max() - v.min() + 1e-9)
    gain = 2.0**rel - 1.0
    pred = np.argsort(-s, kind="stable")[:k_eff]
    ideal = np.sort(gain)[::-1][:k_eff]
    dcg = sum(gain[m] / math.log2(i + 2) for i, m in enumerate(pred))
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / (idcg + 1e-9)


def hit_ref(v: np.ndarray, s: np.ndarray, k: int) -> float:
    best = int(np.argmax(v))
    return float(best in np.argsort(-np.asarray(s, np.float64), kind="stable")[:k].tolist())


def recall_ref(v: np.ndarray, s: np.ndarray, k: int) -> float:
    k_eff = min(k, len(v))
    top_pred = set(np.argsort(-np.asarray(s, np.float64), kind="stable")[:k_eff].tolist())
    top_gt = set(np.argsort(-np.asarray(v, np.float64), kind="stable")[:k_eff].tolist())
    return len(top_pred & top_gt) / k_eff


def group_metrics_ref(
    v: np.ndarray, s: np.ndarray, mask: np.ndarray, ks: Sequence[int]
) -> list[dict[str, float | None]]:
    """Per row: ``{name: value or None (group excluded)}`` from the definitions above."""
    rows = []
    for r in range(mask.shape[0]):
        vv, ss = v[r][mask[r]].astype(np.float64), s[r][mask[r]].astype(np.float64)
        n = len(vv)
        out: dict[str, float | None] = {}
        if n >= 2:
            tau = weighted_tau_formula(vv.tolist(), ss.tolist())
            if len(set(vv.tolist())) < 2:
                tau = None  # no true order
            elif len(set(ss.tolist())) < 2:
                tau = 0.0  # constant prediction (scipy: NaN)
            out["weighted_tau"] = tau
            out["weighted_tau_ref"] = weighted_tau_formula(
                ranks_desc(vv).tolist(), ranks_desc(ss).tolist()
            )
        else:
            out["weighted_tau"] = out["weighted_tau_ref"] = None
        for k in ks:
            ok = n >= max(k, 2)
            out[f"ndcg@{k}"] = ndcg_ref(vv, ss, k) if ok else None
            out[f"hit@{k}"] = hit_ref(vv, ss, k) if ok else None
            out[f"recall@{k}"] = recall_ref(vv, ss, k) if ok else None
        rows.append(out)
    return rows
