"""Per-group ranking metrics over padded ``[R, L]`` rows (one group per row) and their exact
aggregation, as the reference evaluation computes them.

``v`` are the true oriented values (higher = better), ``s`` the predicted scores, ``mask`` a bool
``[R, L]`` of real items. Per-row functions return ``(values[R], valid[R])``: a row is *valid*
for a metric when the metric is defined there (``n ≥ 2`` items; ``n ≥ K`` for the @K metrics,
the reference's per-K group set). Everything is jit-able with fixed shapes and rows are independent,
so callers may split rows into chunks freely (the τ metrics build an ``[R, L, L]`` matrix).

Orders: every ranking is a **stable** descending sort over the valid items, ties going to the
lower slot; so tied predicted scores rank in slot order and the "first index" argmax of ``v``
is the top of the ground-truth order. Ranks are 0-based (0 = best).

Aggregation: :func:`aggregate` turns the per-group values of any number of batches (kept per
group for breakdowns) into plain and pair-count-weighted means on the host.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from jax import Array, lax
from jax.typing import ArrayLike

__all__ = [
    "aggregate",
    "group_metrics",
    "hit_at_k",
    "ndcg_at_k",
    "recall_at_k",
    "weighted_tau",
    "weighted_tau_ref",
]

TAU_METRICS = ("weighted_tau", "weighted_tau_ref")


# --- helpers ---------------------------------------------------------------------------------


def _prepare(v: ArrayLike, s: ArrayLike, mask: ArrayLike) -> tuple[Array, Array, Array]:
    v, s, mask = jnp.asarray(v), jnp.asarray(s), jnp.asarray(mask)
    if mask.dtype != jnp.bool_:
        raise TypeError(f"mask must be bool, got {mask.dtype}")
    if v.ndim != 2 or v.shape != s.shape or v.shape != mask.shape:
        raise ValueError(
            f"v, s, mask must share one [R, L] shape: {v.shape} {s.shape} {mask.shape}"
        )
    dtype = jnp.result_type(v.dtype, s.dtype, jnp.float32)
    return jnp.where(mask, v, 0).astype(dtype), jnp.where(mask, s, 0).astype(dtype), mask


def _desc_ranks(mask: Array, *keys: Array) -> Array:
    """0-based rank of each slot in a stable sort by ``keys`` descending (lexicographic), valid
    slots first; ties in all keys go to the lower slot. Padded slots get ranks ``≥ n``."""
    slot = lax.broadcasted_iota(jnp.int32, mask.shape, 1)
    sort_keys = ((~mask).astype(jnp.int32), *(-k for k in keys), slot)
    perm = lax.sort(sort_keys, dimension=1, is_stable=True, num_keys=len(sort_keys))[-1]
    return lax.sort((perm, slot), dimension=1, is_stable=True, num_keys=1)[1]


def _num_items(mask: Array) -> Array:
    return jnp.sum(mask, axis=1, dtype=jnp.int32)


class _Ranked(NamedTuple):
    """Sanitised inputs with each row's stable descending ranks, shared by all metrics."""

    v: Array
    s: Array
    mask: Array
    n: Array  # [R] valid items
    r_gt: Array  # [R, L] rank by v (0 = best)
    r_pred: Array  # [R, L] rank by s


def _rank(v: ArrayLike, s: ArrayLike, mask: ArrayLike) -> _Ranked:
    v, s, mask = _prepare(v, s, mask)
    return _Ranked(v, s, mask, _num_items(mask), _desc_ranks(mask, v), _desc_ranks(mask, s))


def _weighted_tau_core(x: Array, y: Array, mask: Array) -> tuple[Array, Array, Array]:
    """Vigna's additive hyperbolic τ_w with ``rank=None`` semantics; returns (τ, dx, dy)."""
    rho = _desc_ranks(mask, x, y).astype(x.dtype)
    w = 1.0 / (rho + 1.0)
    pair_w = w[:, :, None] + w[:, None, :]
    both = mask[:, :, None] & mask[:, None, :]
    sx = jnp.sign(x[:, :, None] - x[:, None, :])
    sy = jnp.sign(y[:, :, None] - y[:, None, :])
    # Sums over ordered pairs i ≠ j: each unordered pair twice, which cancels in the ratio.
    num = jnp.sum(jnp.where(both, pair_w * sx * sy, 0), axis=(1, 2))
    dx = jnp.sum(jnp.where(both & (sx != 0), pair_w, 0), axis=(1, 2))
    dy = jnp.sum(jnp.where(both & (sy != 0), pair_w, 0), axis=(1, 2))
    denom = dx * dy
    tau = jnp.where(denom > 0, num / jnp.sqrt(jnp.where(denom > 0, denom, 1)), 0)
    return tau, dx, dy


# --- weighted Kendall τ ----------------------------------------------------------------------


def weighted_tau(v: ArrayLike, s: ArrayLike, *, mask: ArrayLike) -> tuple[Array, Array]:
    r"""Top-weighted Kendall τ_w per row: ``scipy.stats.weightedtau(v, s, rank=None)``.

    Importance rank ``ρ`` = position in the decreasing lexicographic order of ``(v, s)`` (the
    best true value weighs most), ``w(ρ) = 1/(ρ+1)``, ``w_ij = w(ρ_i) + w(ρ_j)``:

    .. math::
        τ_w = \frac{\sum_{i<j} w_{ij}\,\operatorname{sgn}(v_i - v_j)\operatorname{sgn}(s_i - s_j)}
                   {\sqrt{\sum_{i<j} w_{ij}[v_i \ne v_j] \cdot \sum_{i<j} w_{ij}[s_i \ne s_j]}}

    Ties stay ties. Valid when ``n ≥ 2`` and ``v`` has two distinct values (else scipy's NaN);
    when all predictions tie, scipy gives NaN and we give 0 (a constant ranker is uninformative,
    and dropping the group would flatter it). Returns ``(τ[R], valid[R])``.
    """
    return _weighted_tau(_rank(v, s, mask))


def _weighted_tau(rk: _Ranked) -> tuple[Array, Array]:
    tau, dx, _ = _weighted_tau_core(rk.v, rk.s, rk.mask)
    return tau, (rk.n >= 2) & (dx > 0)


def weighted_tau_ref(v: ArrayLike, s: ArrayLike, *, mask: ArrayLike) -> tuple[Array, Array]:
    r"""Upstream's call: τ_w (as :func:`weighted_tau`) of 0-based ranks, which weighs the bottom.

    ``x`` = rank of each item in the stable descending sort of ``v`` (0 = best), ``y`` = the
    same for ``s``; returns ``weightedtau(x, y, rank=None)``. The largest ``x`` is the worst
    model, so the worst items weigh most (swapping the top two of 10 gives 0.984, the bottom
    two 0.886). Valid when ``n ≥ 2``. Returns ``(τ[R], valid[R])``.
    """
    return _weighted_tau_ref(_rank(v, s, mask))


def _weighted_tau_ref(rk: _Ranked) -> tuple[Array, Array]:
    x, y = rk.r_gt.astype(rk.v.dtype), rk.r_pred.astype(rk.v.dtype)
    tau, _, _ = _weighted_tau_core(x, y, rk.mask)
    return tau, rk.n >= 2


# --- @K metrics ------------------------------------------------------------------------------


def _k_setup(rk: _Ranked, k: int) -> tuple[Array, Array]:
    """``(K_eff[R, 1], valid[R])`` for a cut-off K."""
    if int(k) < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return jnp.minimum(int(k), rk.n)[:, None], rk.n >= max(int(k), 2)


def ndcg_at_k(v: ArrayLike, s: ArrayLike, k: int, *, mask: ArrayLike) -> tuple[Array, Array]:
    r"""NDCG@K with min–max graded gains (upstream ``evaluate_ranking_mlp``).

    ``rel = (v − min v)/(max v − min v + 1e-9)``, gain ``2^rel − 1``, discount ``1/log2(i+1)``
    at positions ``i = 1..K_eff``, ``K_eff = min(K, n)``:
    ``NDCG = DCG(predicted order) / (DCG(ideal order) + 1e-9)``. A group whose values all tie
    has zero gains and scores 0 (as upstream). Valid when ``n ≥ max(K, 2)``.
    """
    return _ndcg(_rank(v, s, mask), k)


def _ndcg(rk: _Ranked, k: int) -> tuple[Array, Array]:
    k_eff, valid = _k_setup(rk, k)
    v, mask = rk.v, rk.mask
    vmin = jnp.min(jnp.where(mask, v, jnp.inf), axis=1, keepdims=True)
    vmax = jnp.max(jnp.where(mask, v, -jnp.inf), axis=1, keepdims=True)
    vmin, vmax = jnp.where(jnp.isfinite(vmin), vmin, 0), jnp.where(jnp.isfinite(vmax), vmax, 0)
    gain = jnp.exp2((v - vmin) / (vmax - vmin + 1e-9)) - 1

    def dcg(rank: Array) -> Array:
        disc = 1.0 / jnp.log2(rank.astype(v.dtype) + 2.0)
        return jnp.sum(jnp.where(mask & (rank < k_eff), gain * disc, 0), axis=1)

    return dcg(rk.r_pred) / (dcg(rk.r_gt) + 1e-9), valid


def hit_at_k(v: ArrayLike, s: ArrayLike, k: int, *, mask: ArrayLike) -> tuple[Array, Array]:
    """Hit@K: 1 if the best item (``argmax v``, first slot on ties) is in the predicted top K.
    Valid when ``n ≥ max(K, 2)``."""
    return _hit(_rank(v, s, mask), k)


def _hit(rk: _Ranked, k: int) -> tuple[Array, Array]:
    k_eff, valid = _k_setup(rk, k)
    hit = jnp.any(rk.mask & (rk.r_gt == 0) & (rk.r_pred < k_eff), axis=1)
    return hit.astype(rk.v.dtype), valid


def recall_at_k(v: ArrayLike, s: ArrayLike, k: int, *, mask: ArrayLike) -> tuple[Array, Array]:
    """Rec@K = ``|topK(pred) ∩ topK(true)| / K_eff`` with stable orders (equals precision@K).
    Valid when ``n ≥ max(K, 2)``."""
    return _recall(_rank(v, s, mask), k)


def _recall(rk: _Ranked, k: int) -> tuple[Array, Array]:
    k_eff, valid = _k_setup(rk, k)
    inter = jnp.sum(rk.mask & (rk.r_pred < k_eff) & (rk.r_gt < k_eff), axis=1)
    return inter / jnp.maximum(k_eff[:, 0], 1).astype(rk.v.dtype), valid


# --- all metrics and aggregation -------------------------------------------------------------


def group_metrics(
    v: ArrayLike, s: ArrayLike, *, mask: ArrayLike, ks: Sequence[int] = (1, 10)
) -> dict[str, tuple[Array, Array]]:
    """Every per-group metric: ``{name: (values[R], valid[R])}`` for ``weighted_tau``,
    ``weighted_tau_ref`` and ``ndcg@K``, ``hit@K``, ``recall@K`` for each K in ``ks``."""
    rk = _rank(v, s, mask)
    out = {"weighted_tau": _weighted_tau(rk), "weighted_tau_ref": _weighted_tau_ref(rk)}
    for k in ks:
        out[f"ndcg@{k}"] = _ndcg(rk, k)
        out[f"hit@{k}"] = _hit(rk, k)
        out[f"recall@{k}"] = _recall(rk, k)
    return out


def aggregate(groups: Mapping[str, np.ndarray], ks: Sequence[int] = (1, 10)) -> dict[str, float]:
    """Exact aggregation of per-group metrics (``{name: [G]}`` with NaN where a metric is
    undefined, plus ``n``, the group sizes): plain means over the valid groups, pair-count-weighted
    means (``P_g = n_g(n_g−1)/2``) as ``"{name}_pairs"`` for the τ variants, ``num_groups`` (the
    groups given) and ``num_groups@K`` (the groups entering the @K means, upstream's
    ``num_datasets_for_k@K``). A group's metrics do not depend on how groups were batched."""
    n = groups["n"].astype(np.float64)
    pairs = n * (n - 1) / 2
    out: dict[str, float] = {"num_groups": float(len(n))}
    for name, vals in groups.items():
        if name in ("group", "n"):
            continue
        ok = np.isfinite(vals)
        out[name] = float(vals[ok].mean()) if ok.any() else float("nan")
        if name in TAU_METRICS:
            w = pairs[ok]
            out[f"{name}_pairs"] = (
                float((vals[ok] * w).sum() / w.sum()) if ok.any() else float("nan")
            )
    for k in ks:
        out[f"num_groups@{k}"] = float(np.isfinite(groups.get(f"ndcg@{k}", np.zeros(0))).sum())
    return out
