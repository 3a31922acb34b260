"""Ranking losses over the fixed-shape ``[R, L]`` list batch (see ``data/batch.py``).

Every loss is a pure ``jax.numpy`` function in the rax style (keyword-only options, a bool
``mask``, optional ``segments``) and returns a ``(sum, count)`` pair of scalars instead of a
mean, so that means stay exact when summed over devices, hosts or batches: the caller divides
once, at the end.

A *list* is one ``(row, segment)`` pair: the valid slots (``mask`` True) of a row that share a
segment id. With ``segments=None`` each row is one list. Padded slots are ignored whatever their
segment, value or score (NaN and inf included), and get zero gradient. ``values`` are oriented
(higher = better); ``scores`` are the model's predictions (higher = predicted better).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import jax
import jax.numpy as jnp
from jax import Array, lax
from jax.typing import ArrayLike

__all__ = ["bpr_loss", "plackett_luce_loss", "pointwise_loss", "ranking_loss"]

LOSS_NAMES = ("listwise", "pairwise", "pointwise")


# --- helpers ---------------------------------------------------------------------------------


def _check_2d(name: str, x: Array) -> None:
    if x.ndim != 2:
        raise ValueError(f"{name} must be [R, L], got shape {x.shape}")


def _float_dtype(x: Array) -> jnp.dtype:
    return jnp.result_type(x.dtype, jnp.float32)


def _prepare(
    scores: ArrayLike, values: ArrayLike, mask: ArrayLike, segments: ArrayLike | None
) -> tuple[Array, Array, Array, Array]:
    """Sanitised ``(scores, values, mask, list ids)``: padded slots hold 0 so nothing leaks."""
    scores, values, mask = jnp.asarray(scores), jnp.asarray(values), jnp.asarray(mask)
    if mask.dtype != jnp.bool_:
        raise TypeError(f"mask must be bool, got {mask.dtype}")
    _check_2d("scores", scores)
    if values.shape != scores.shape or mask.shape != scores.shape:
        raise ValueError(f"shape mismatch: {scores.shape}, {values.shape}, {mask.shape}")
    dtype = _float_dtype(scores)
    scores = jnp.where(mask, scores, 0).astype(dtype)
    values = jnp.where(mask, values, 0).astype(dtype)
    seg = mask.astype(jnp.int32) if segments is None else jnp.asarray(segments, jnp.int32)
    if seg.shape != scores.shape:
        raise ValueError(f"segments shape {seg.shape} != scores shape {scores.shape}")
    return scores, values, mask, jnp.where(mask, seg, 0)


def _pair_matrix(x: Array) -> tuple[Array, Array]:
    """``(x[:, :, None], x[:, None, :])``: entry ``[r, i, j]`` pairs item i with item j."""
    return x[:, :, None], x[:, None, :]


# --- Plackett–Luce ---------------------------------------------------------------------------


def plackett_luce_loss(
    scores: ArrayLike,
    values: ArrayLike,
    *,
    mask: ArrayLike,
    segments: ArrayLike | None = None,
    tiebreak: ArrayLike | None = None,
    reduction: Literal["mean", "sum"] = "mean",
    ties: Literal["stable", "drop_tied"] = "stable",
) -> tuple[Array, Array]:
    r"""Plackett–Luce negative log-likelihood of each list's true order (ListMLE).

    Each list is sorted best first by ``(value desc, tiebreak asc, slot asc)``; with ``π`` that
    order and ``n`` the list's valid size,

    .. math::
        \ell = \sum_{i=1}^{n} \Big[\log \sum_{j \ge i} e^{s_{π_j}} - s_{π_i}\Big]

    (the last term is always 0). ``reduction="mean"`` divides ``ℓ`` by ``n`` (upstream ensemble
    loss), ``"sum"`` keeps it (upstream ``ListwiseRankLoss``; equals ``rax.listmle_loss`` per
    list). Returns ``(Σ_lists ℓ, #lists)``; lists with ``n < 2`` add nothing and are not counted.

    Ties:

    * ``"stable"`` (option A): items with equal values keep the deterministic order above, so
      the loss learns the tie order given by ``tiebreak`` (default: slot position; the trainer
      passes model ids so the order does not depend on the batch layout).
    * ``"drop_tied"`` (option D): the same order, then only the **last** term of each tie block
      (maximal run of equal values) is kept. That term's denominator holds the item itself and
      the strictly worse items only, so it equals option C's term
      ``log(e^{s_i} + Σ_{v_j < v_i} e^{s_j}) − s_i`` for the tie block's last item; the other
      tied items' comparisons with worse items are dropped. ``"mean"`` still divides by ``n``.
      A list counts only if it has at least two distinct values (a fully tied list has no
      kept term).

    Computed without a sort, on an ``[R, L, L]`` comparison matrix like BPR's (fine for
    ``L ≤ 256``): each item's term is a masked logsumexp over the items at or after it in its
    list. This compiles in well under a second, where a segmented ``lax.associative_scan``
    (which is also how ``lax.cumlogsumexp`` lowers off TPU) took seconds on CPU at ``L = 256``.

    Args:
      scores: ``[R, L]`` predicted scores.
      values: ``[R, L]`` oriented true values (higher = better) that define the order.
      mask: ``[R, L]`` bool, True for real records.
      segments: optional ``[R, L]`` int list ids inside a row; ``None`` = one list per row.
      tiebreak: optional ``[R, L]`` numbers ordering tied values (ascending); ``None`` = slot.
      reduction: ``"mean"`` or ``"sum"`` over the positions of a list.
      ties: ``"stable"`` or ``"drop_tied"``.

    Returns:
      ``(sum, count)`` scalars in the scores' float dtype.
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    if ties not in ("stable", "drop_tied"):
        raise ValueError(f"ties must be 'stable' or 'drop_tied', got {ties!r}")
    s, v, mask, seg = _prepare(scores, values, mask, segments)
    slot = lax.broadcasted_iota(jnp.int32, s.shape, 1)
    tb = slot if tiebreak is None else jnp.broadcast_to(jnp.asarray(tiebreak), s.shape)

    # Entry [r, i, j] compares item j with item i of the same row. No sort is needed: "j is at
    # or after i in its list's order" is a lexicographic comparison of (-value, tiebreak, slot).
    _, sj = _pair_matrix(s)
    vi, vj = _pair_matrix(v)
    ti, tj = _pair_matrix(tb)
    pi, pj = _pair_matrix(slot)
    mi, mj = _pair_matrix(mask)
    gi, gj = _pair_matrix(seg)
    same = mi & mj & (gi == gj)
    after = (vj < vi) | ((vj == vi) & ((tj > ti) | ((tj == ti) & (pj >= pi))))
    tail = (same & after) | (pi == pj)  # the diagonal keeps padded slots finite
    # Reversed cumulative logsumexp over each list's order, as a masked [R, L, L] logsumexp.
    lse = jax.nn.logsumexp(jnp.broadcast_to(sj, tail.shape), axis=-1, where=tail)
    terms = lse - s

    n = jnp.sum(same, axis=-1)  # valid size of each item's list
    keep = mask & (n >= 2)
    counted = keep & ~jnp.any(same & ~after, axis=-1)  # one per list: its first item
    if ties == "drop_tied":
        keep &= ~jnp.any(same & after & (pj != pi) & (vj == vi), axis=-1)  # a later tie exists
        counted &= jnp.any(same & (vj != vi), axis=-1)  # at least two distinct values
    if reduction == "mean":
        terms = terms / jnp.maximum(n, 1).astype(terms.dtype)
    total = jnp.sum(jnp.where(keep, terms, 0))
    return total, jnp.sum(counted).astype(total.dtype)


# --- BPR -------------------------------------------------------------------------------------


def _sample_pairs(key: ArrayLike, valid: Array, num_pairs: int) -> tuple[Array, Array, Array]:
    """Draw ``num_pairs`` pairs per row uniformly, with replacement, from ``valid`` ``[R, L, L]``.

    Inverse-CDF on the row's flattened valid-pair count: an integer ``k`` uniform in
    ``[0, P_row)`` picks the ``k``-th valid pair. Returns ``(i, j, ok)`` each ``[R, num_pairs]``;
    ``ok`` is False in rows with no valid pair (their draws are arbitrary and must be ignored).
    """
    num_rows, size, _ = valid.shape
    csum = jnp.cumsum(valid.reshape(num_rows, size * size).astype(jnp.int32), axis=1)
    total = csum[:, -1:]
    k = jax.random.randint(key, (num_rows, num_pairs), 0, jnp.maximum(total, 1))
    flat = jax.vmap(lambda c, q: jnp.searchsorted(c, q, side="right"))(csum, k)
    flat = jnp.minimum(flat, size * size - 1)
    ok = jnp.broadcast_to(total > 0, flat.shape)
    return flat // size, flat % size, ok


def bpr_loss(
    scores: ArrayLike,
    values: ArrayLike,
    *,
    mask: ArrayLike,
    segments: ArrayLike | None = None,
    z: ArrayLike | None = None,
    weighting: Literal["none", "zgap"] = "none",
    weight_cap: float | ArrayLike = 3.0,
    pair_key: ArrayLike | None = None,
    num_pairs: int | None = None,
) -> tuple[Array, Array]:
    r"""Bayesian personalised ranking loss over the ordered pairs of each list.

    For every pair ``(i, j)`` of valid items in the same list with ``v_i > v_j`` (equal values
    make no pair):

    .. math::
        \text{sum} = \sum_{(i, j)} w_{ij}\,\operatorname{softplus}(-(s_i - s_j)),
        \qquad \text{count} = \#\text{pairs},

    so ``sum / count`` is upstream's ``(1/P) Σ_p w_p·softplus(−δ_p)`` (no margin). With
    ``weighting="none"`` ``w = 1`` and the pair sum equals
    ``rax.pairwise_logistic_loss(..., reduce_fn=jnp.sum)``. ``weighting="zgap"`` uses
    ``w_ij = min(|z_i − z_j|, weight_cap)``: our reading of upstream's ``alpha: 3.0`` as a cap
    on the z-score gap **[inferred]**; ``count`` stays the number of pairs, not the weight sum.

    All pairs are used (a dense ``[R, L, L]`` matrix; fine for ``L ≤ 256``) unless both
    ``pair_key`` and ``num_pairs`` are given: then each row draws ``num_pairs`` pairs uniformly
    with replacement from its valid pairs (one list per row: uniform over the list's pairs; a
    packed row pools its lists' pairs, so a list is drawn in proportion to its pair count).
    Draws from a row without a valid pair are not counted. ``count`` is then the number of
    counted draws. Pass ``fold_in(key, step)`` so steps differ and runs replay.

    Args:
      scores: ``[R, L]`` predicted scores.
      values: ``[R, L]`` oriented true values defining which item of a pair is better.
      mask: ``[R, L]`` bool, True for real records.
      segments: optional ``[R, L]`` int list ids inside a row; ``None`` = one list per row.
      z: ``[R, L]`` within-group z-scores; required for ``weighting="zgap"``.
      weighting: ``"none"`` or ``"zgap"``.
      weight_cap: cap on the z gap for ``"zgap"`` (may be a traced scalar).
      pair_key: PRNG key for pair sampling.
      num_pairs: pairs drawn per row (static).

    Returns:
      ``(sum, count)`` scalars in the scores' float dtype.
    """
    if weighting not in ("none", "zgap"):
        raise ValueError(f"weighting must be 'none' or 'zgap', got {weighting!r}")
    if weighting == "zgap" and z is None:
        raise ValueError("weighting='zgap' needs z")
    if (pair_key is None) != (num_pairs is None):
        raise ValueError("pair sampling needs both pair_key and num_pairs")
    s, v, mask, seg = _prepare(scores, values, mask, segments)
    zz = None if z is None else jnp.where(mask, jnp.asarray(z), 0).astype(s.dtype)

    si, sj = _pair_matrix(s)
    vi, vj = _pair_matrix(v)
    mi, mj = _pair_matrix(mask)
    gi, gj = _pair_matrix(seg)
    valid = mi & mj & (gi == gj) & (vi > vj)

    if num_pairs is None:
        losses = jax.nn.softplus(-(si - sj))
        if weighting == "zgap":
            zi, zj = _pair_matrix(zz)
            losses = losses * jnp.minimum(jnp.abs(zi - zj), weight_cap)
        total = jnp.sum(jnp.where(valid, losses, 0))
        return total, jnp.sum(valid).astype(total.dtype)

    i, j, ok = _sample_pairs(pair_key, valid, int(num_pairs))

    def take(x: Array, idx: Array) -> Array:
        return jnp.take_along_axis(x, idx, axis=1)

    losses = jax.nn.softplus(-(take(s, i) - take(s, j)))
    if weighting == "zgap":
        losses = losses * jnp.minimum(jnp.abs(take(zz, i) - take(zz, j)), weight_cap)
    total = jnp.sum(jnp.where(ok, losses, 0))
    return total, jnp.sum(ok).astype(total.dtype)


# --- pointwise -------------------------------------------------------------------------------


def pointwise_loss(pred: ArrayLike, z: ArrayLike, *, mask: ArrayLike) -> tuple[Array, Array]:
    r"""Squared error to the within-group z-score: ``(Σ_valid (ẑ − z)², #valid records)``.

    Every valid record counts, including those of single-item groups (upstream ``L_mse``).

    Args:
      pred: ``[R, L]`` predicted z-scores ``ẑ``.
      z: ``[R, L]`` target z-scores.
      mask: ``[R, L]`` bool, True for real records.
    """
    pred, z, mask = jnp.asarray(pred), jnp.asarray(z), jnp.asarray(mask)
    if mask.dtype != jnp.bool_:
        raise TypeError(f"mask must be bool, got {mask.dtype}")
    # Padded targets need no sanitising: `where` drops them, and d(pred - z)/d pred is 1.
    diff = jnp.where(mask, pred - z, 0).astype(_float_dtype(pred))
    total = jnp.sum(diff * diff)
    return total, jnp.sum(mask).astype(total.dtype)


# --- combined --------------------------------------------------------------------------------


def ranking_loss(
    scores: ArrayLike,
    z_hat: ArrayLike,
    batch: Mapping[str, ArrayLike],
    *,
    weights: Mapping[str, float | ArrayLike],
    pl_reduction: Literal["mean", "sum"],
    pl_ties: Literal["stable", "drop_tied"],
    bpr_weighting: Literal["none", "zgap"],
    bpr_weight_cap: float | ArrayLike,
    tiebreak: ArrayLike | None = None,
    pair_key: ArrayLike | None = None,
    num_pairs: int | None = None,
) -> tuple[Array, dict[str, Array]]:
    r"""The training objective: weighted sum of the listwise, pairwise and pointwise means.

    .. math::
        L = λ_\text{list} \frac{S_\text{PL}}{\max(C_\text{PL}, 1)}
          + λ_\text{pair} \frac{S_\text{BPR}}{\max(C_\text{BPR}, 1)}
          + λ_\text{pt} \frac{S_\text{MSE}}{\max(C_\text{MSE}, 1)}

    with ``(S, C)`` the ``(sum, count)`` of :func:`plackett_luce_loss` (on ``scores``),
    :func:`bpr_loss` (on ``scores``, pairs from the same lists) and :func:`pointwise_loss` (on
    ``z_hat``). Upstream's ensemble adds ``β·MSE`` inside both the listwise and the pairwise
    term (with the pair batch's MSE); we use one pointwise weight on the list batch's records
    instead. ``weights`` may hold traced arrays, so a sweep over them shares compiled code.

    Args:
      scores: ``[R, L]`` ranking scores.
      z_hat: ``[R, L]`` predicted z-scores.
      batch: mapping with ``"mask"``, ``"segment"``, ``"value"``, ``"z"`` (``[R, L]`` each).
      weights: ``{"listwise", "pairwise", "pointwise"}`` → λ (exactly these keys).
      pl_reduction, pl_ties: see :func:`plackett_luce_loss`.
      bpr_weighting, bpr_weight_cap: see :func:`bpr_loss`.
      tiebreak: optional ``[R, L]`` tie order for Plackett–Luce (e.g. model ids).
      pair_key, num_pairs: optional BPR pair sampling, see :func:`bpr_loss`.

    Returns:
      ``(total, components)``; components hold ``"{name}_sum"`` and ``"{name}_count"`` for
      ``name`` in ``listwise``, ``pairwise``, ``pointwise`` (to sum across steps for logging).
    """
    if set(weights) != set(LOSS_NAMES):
        raise ValueError(f"weights must have exactly the keys {LOSS_NAMES}, got {sorted(weights)}")
    mask, seg = jnp.asarray(batch["mask"]), batch["segment"]
    value, z = batch["value"], batch["z"]
    parts = {
        "listwise": plackett_luce_loss(
            scores,
            value,
            mask=mask,
            segments=seg,
            tiebreak=tiebreak,
            reduction=pl_reduction,
            ties=pl_ties,
        ),
        "pairwise": bpr_loss(
            scores,
            value,
            mask=mask,
            segments=seg,
            z=z,
            weighting=bpr_weighting,
            weight_cap=bpr_weight_cap,
            pair_key=pair_key,
            num_pairs=num_pairs,
        ),
        "pointwise": pointwise_loss(z_hat, z, mask=mask),
    }
    total = 0.0
    components: dict[str, Array] = {}
    for name in LOSS_NAMES:
        part_sum, part_count = parts[name]
        total = total + weights[name] * part_sum / jnp.maximum(part_count, 1)
        components[f"{name}_sum"] = part_sum
        components[f"{name}_count"] = part_count
    return jnp.asarray(total), components
