"""Losses against the slow references, rax, and their invariances (padding, order, packing)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rax
import reference as ref

from modellens_jax import losses

PL_OPTIONS = [(r, t) for r in ("mean", "sum") for t in ("stable", "drop_tied")]

pl_jit = jax.jit(losses.plackett_luce_loss, static_argnames=("reduction", "ties"))
bpr_jit = jax.jit(losses.bpr_loss, static_argnames=("weighting", "num_pairs"))


@pytest.fixture(autouse=True, scope="module")
def _fast_compiles():
    """Unoptimised XLA compiles: these tests compile many small programs and run them once."""
    old = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", old)


def make_case(seed: int, rows: int = 7, size: int = 10, packed: bool = True) -> dict:
    """Random lists with padding (garbage in padded slots), ties, a single-item list, a fully
    padded row, a tie-free row, a fully tied row and (if ``packed``) interleaved segments."""
    rng = np.random.default_rng(seed)
    mask = rng.random((rows, size)) < 0.8
    mask[0] = False  # fully padded row
    mask[1] = False
    mask[1, 4] = True  # a single-item list
    mask[2:4, :3] = True
    seg = rng.integers(1, 4 if packed else 2, (rows, size)).astype(np.int32)
    seg = np.where(mask, seg, 0).astype(np.int32)
    values = rng.integers(0, 4, (rows, size)).astype(np.float32)
    values[2] = rng.normal(size=size)  # tie-free row
    values[3] = 1.0  # fully tied row
    scores = (2 * rng.normal(size=(rows, size))).astype(np.float32)
    z = rng.normal(size=(rows, size)).astype(np.float32)
    tiebreak = rng.permuted(np.tile(np.arange(size), (rows, 1)), axis=1).astype(np.int32)
    tiebreak[-1] //= 3  # repeated tiebreaks fall back to slot order
    garbage = np.array([np.nan, np.inf, -np.inf, 1e30], np.float32)
    for a in (values, scores, z):
        a[~mask] = rng.choice(garbage, size=int((~mask).sum()))
    return dict(mask=mask, segments=seg, values=values, scores=scores, z=z, tiebreak=tiebreak)


def _opt(case: dict, packed: bool, use_tiebreak: bool) -> dict:
    return dict(
        segments=case["segments"] if packed else None,
        tiebreak=case["tiebreak"] if use_tiebreak else None,
    )


# --- Plackett–Luce ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reduction,ties,packed,use_tiebreak",
    [(r, t, True, True) for r, t in PL_OPTIONS]
    + [("mean", "stable", False, False), ("sum", "drop_tied", False, True)],
)
def test_pl_matches_reference(reduction, ties, packed, use_tiebreak):
    for seed in range(4):
        c = make_case(seed, packed=packed)
        opt = _opt(c, packed, use_tiebreak)
        got_sum, got_count = pl_jit(
            c["scores"], c["values"], mask=c["mask"], reduction=reduction, ties=ties, **opt
        )
        want_sum, want_count = ref.pl_loss_ref(
            c["scores"], c["values"], c["mask"], reduction=reduction, ties=ties, **opt
        )
        assert got_count == want_count
        np.testing.assert_allclose(got_sum, want_sum, rtol=1e-5)


@functools.partial(jax.jit, static_argnames=("reduction", "ties"))
def _pl_grad(scores, values, mask, segments, tiebreak, *, reduction, ties):
    def loss(s):
        return losses.plackett_luce_loss(
            s,
            values,
            mask=mask,
            segments=segments,
            tiebreak=tiebreak,
            reduction=reduction,
            ties=ties,
        )[0]

    return jax.grad(loss)(scores)


@pytest.mark.parametrize(
    "reduction,ties,x64",
    [("mean", "stable", False), ("sum", "drop_tied", False), ("mean", "drop_tied", True)],
)
def test_pl_gradient_matches_finite_differences(reduction, ties, x64):
    """float32 and float64 gradients of the JAX loss against float64 central differences."""
    c = make_case(11, rows=5, size=8)
    opt = _opt(c, True, True)

    def ref_sum(s):
        return ref.pl_loss_ref(s, c["values"], c["mask"], reduction=reduction, ties=ties, **opt)[0]

    want = ref.fd_grad(ref_sum, c["scores"])
    with jax.enable_x64(x64):
        dtype = jnp.float64 if x64 else jnp.float32
        got = _pl_grad(
            jnp.asarray(c["scores"], dtype),
            c["values"],
            c["mask"],
            opt["segments"],
            opt["tiebreak"],
            reduction=reduction,
            ties=ties,
        )
        assert got.dtype == dtype
    assert np.all(np.isfinite(got))
    np.testing.assert_array_equal(np.asarray(got)[~c["mask"]], 0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-9 if x64 else 1e-6)


def test_pl_equals_rax_listmle_without_ties():
    c = make_case(3)
    values = np.where(c["mask"], np.random.default_rng(0).normal(size=c["mask"].shape), 0)
    values = values.astype(np.float32)
    scores = np.where(c["mask"], c["scores"], 0)
    n = c["mask"].sum(1)
    # One list per row: rax's per-list values; "mean" divides each by its size.
    rax_lists = jax.jit(functools.partial(rax.listmle_loss, reduce_fn=None))
    per_list = np.asarray(rax_lists(scores, values, where=c["mask"]))
    opt = dict(segments=c["mask"].astype(np.int32), tiebreak=c["tiebreak"])
    total, count = pl_jit(
        c["scores"], values, mask=c["mask"], reduction="sum", ties="stable", **opt
    )
    np.testing.assert_allclose(total, per_list.sum(), rtol=1e-5)
    assert count == (n >= 2).sum()
    mean, _ = pl_jit(c["scores"], values, mask=c["mask"], reduction="mean", ties="stable", **opt)
    np.testing.assert_allclose(mean, (per_list / np.maximum(n, 1)).sum(), rtol=1e-5)
    # Packed lists: rax's segmented ListMLE summed over the batch.
    rax_sum = jax.jit(functools.partial(rax.listmle_loss, reduce_fn=jnp.sum))
    opt["segments"] = c["segments"]
    total, _ = pl_jit(c["scores"], values, mask=c["mask"], reduction="sum", ties="stable", **opt)
    want = rax_sum(scores, values, where=c["mask"], segments=c["segments"])
    np.testing.assert_allclose(total, want, rtol=1e-5)


def test_pl_drop_tied_is_option_c_on_block_ends():
    """One list, values [3, 2, 2, 2, 1]: kept terms are slots 0 and 3 (tie-block ends) and the
    last (always 0)."""
    s = np.array([[0.3, -1.0, 2.0, 0.5, 0.1]], np.float32)
    v = np.array([[3, 2, 2, 2, 1]], np.float32)
    m = np.ones_like(v, bool)
    got, count = pl_jit(s, v, mask=m, reduction="sum", ties="drop_tied")
    e = np.exp(s[0].astype(np.float64))
    # option C terms: the top item against all; the last tied item (slot 3) against itself + worse
    want = np.log(e.sum()) - s[0, 0] + np.log(e[3] + e[4]) - s[0, 3]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert count == 1
    all_tied = pl_jit(s, np.ones_like(v), mask=m, reduction="sum", ties="drop_tied")
    assert tuple(map(float, all_tied)) == (0.0, 0.0)


# --- BPR and pointwise -----------------------------------------------------------------------


@pytest.mark.parametrize("weighting", ["none", "zgap"])
@pytest.mark.parametrize("packed", [False, True])
def test_bpr_matches_reference(weighting, packed):
    for seed in range(4):
        c = make_case(seed, packed=packed)
        seg = c["segments"] if packed else None
        got_sum, got_count = bpr_jit(
            c["scores"],
            c["values"],
            mask=c["mask"],
            segments=seg,
            z=c["z"],
            weighting=weighting,
            weight_cap=1.5,
        )
        want_sum, want_count = ref.bpr_loss_ref(
            c["scores"], c["values"], c["mask"], seg, c["z"], weighting, 1.5
        )
        assert got_count == want_count
        np.testing.assert_allclose(got_sum, want_sum, rtol=1e-5)


@functools.partial(jax.jit, static_argnames=("weighting",))
def _bpr_grad(scores, values, mask, segments, z, *, weighting):
    def loss(s):
        return losses.bpr_loss(
            s, values, mask=mask, segments=segments, z=z, weighting=weighting, weight_cap=1.5
        )[0]

    return jax.grad(loss)(scores)


@pytest.mark.parametrize("weighting,x64", [("none", False), ("zgap", False), ("zgap", True)])
def test_bpr_gradient_matches_finite_differences(weighting, x64):
    c = make_case(5, rows=5, size=8)
    args = (c["values"], c["mask"], c["segments"], c["z"])
    want = ref.fd_grad(
        lambda s: ref.bpr_loss_ref(s, *args, weighting=weighting, weight_cap=1.5)[0], c["scores"]
    )
    with jax.enable_x64(x64):
        got = _bpr_grad(
            jnp.asarray(c["scores"], jnp.float64 if x64 else jnp.float32),
            *args,
            weighting=weighting,
        )
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-9 if x64 else 1e-6)


def test_bpr_equals_rax_pairwise_logistic():
    c = make_case(7)
    scores = np.where(c["mask"], c["scores"], 0)
    values = np.where(c["mask"], c["values"], 0)
    rax_sum = jax.jit(functools.partial(rax.pairwise_logistic_loss, reduce_fn=jnp.sum))
    rax_mean = jax.jit(functools.partial(rax.pairwise_logistic_loss, reduce_fn=jnp.mean))
    for seg in (c["mask"].astype(np.int32), c["segments"]):
        total, count = bpr_jit(
            c["scores"],
            c["values"],
            mask=c["mask"],
            segments=seg,
            z=c["z"],
            weighting="none",
            weight_cap=1.5,
        )
        want = rax_sum(scores, values, where=c["mask"], segments=seg)
        np.testing.assert_allclose(total, want, rtol=1e-5)
        # rax's mean is over all valid pairs of the batch: our sum / count.
        want = rax_mean(scores, values, where=c["mask"], segments=seg)
        np.testing.assert_allclose(total / count, want, rtol=1e-5)


def test_bpr_pair_sampling_is_uniform_over_valid_pairs():
    c = make_case(2, rows=4, size=6)
    _, v, mask, seg = losses._prepare(c["scores"], c["values"], c["mask"], c["segments"])
    valid = (
        mask[:, :, None]
        & mask[:, None, :]
        & (seg[:, :, None] == seg[:, None, :])
        & (v[:, :, None] > v[:, None, :])
    )
    draws = 20000
    i, j, ok = jax.jit(losses._sample_pairs, static_argnums=2)(jax.random.key(0), valid, draws)
    valid, i, j, ok = map(np.asarray, (valid, i, j, ok))
    assert valid.sum(axis=(1, 2)).min() == 0  # a row without pairs is covered
    for r in range(valid.shape[0]):
        num = valid[r].sum()
        assert ok[r].all() == (num > 0) and ok[r].any() == (num > 0)
        if num == 0:
            continue
        assert valid[r, i[r], j[r]].all()
        freq = np.zeros(valid[r].shape)
        np.add.at(freq, (i[r], j[r]), 1)
        p = 1 / num
        assert np.abs(freq[valid[r]] - draws * p).max() < 5 * np.sqrt(draws * p * (1 - p))


def test_bpr_sampled():
    c = make_case(4)
    kw = dict(mask=c["mask"], segments=c["segments"], num_pairs=16)
    a = bpr_jit(c["scores"], c["values"], pair_key=jax.random.key(1), **kw)
    b = bpr_jit(c["scores"], c["values"], pair_key=jax.random.key(1), **kw)
    d = bpr_jit(c["scores"], c["values"], pair_key=jax.random.key(2), **kw)
    assert a[0] == b[0] and a[0] != d[0]
    row_pairs = [
        ref.bpr_loss_ref(*(c[k][r : r + 1] for k in ("scores", "values", "mask", "segments")))[1]
        for r in range(c["mask"].shape[0])
    ]
    assert a[1] == 16 * sum(n > 0 for n in row_pairs)  # counted draws: rows with pairs only
    # One valid pair: every draw is that pair; gradients are finite and zero on padding.
    s = np.array([[0.5, -0.2, 9.0]], np.float32)
    v = np.array([[2.0, 1.0, 0.0]], np.float32)
    m = np.array([[True, True, False]])

    def loss(x):
        return losses.bpr_loss(x, v, mask=m, pair_key=jax.random.key(0), num_pairs=5)

    (total, count), grad = jax.jit(lambda x: (loss(x), jax.grad(lambda y: loss(y)[0])(x)))(s)
    np.testing.assert_allclose(total, 5 * np.log1p(np.exp(-0.7)), rtol=1e-6)
    assert count == 5
    assert np.all(np.isfinite(grad)) and grad[0, 2] == 0


def test_bpr_sampled_zgap_weights_are_capped():
    """Kills the mutant "sampled BPR z-gap loses its weight cap" (losses.py, the ``num_pairs``
    branch). Each row holds exactly one valid pair, so every draw is that pair and the sampled
    sum is ``num_pairs`` times the all-pairs reference (tests/reference.py), with z gaps above
    and below the cap."""
    s = np.array([[0.5, -0.2, 9.0], [1.0, 0.3, -4.0], [-0.4, 0.6, 2.0]], np.float32)
    v = np.array([[2.0, 1.0, 0.0], [0.0, 1.0, 5.0], [3.0, 1.0, 0.0]], np.float32)
    m = np.array([[True, True, False], [True, True, False], [True, True, False]])
    z = np.array(
        [[3.0, -2.0, 7.0], [0.1, 0.9, -6.0], [0.2, -1.0, 4.0]], np.float32
    )  # gaps 5, .8, 1.2
    cap, draws = 1.5, 7
    total, count = bpr_jit(s, v, mask=m, z=z, weighting="zgap", weight_cap=cap,
                           pair_key=jax.random.key(0), num_pairs=draws)  # fmt: skip
    want_sum, want_count = ref.bpr_loss_ref(s, v, m, None, z, "zgap", cap)
    assert want_count == 3 and count == draws * 3
    np.testing.assert_allclose(total, draws * want_sum, rtol=1e-5)
    by_hand = sum(
        min(gap, cap) * np.log1p(np.exp(-d)) for gap, d in ((5.0, 0.7), (0.8, -0.7), (1.2, -1.0))
    )
    np.testing.assert_allclose(total, draws * by_hand, rtol=1e-5)
    # a row without any valid pair (all values tied) adds nothing, however many draws
    tied = np.array([[1.0, 1.0, 1.0]], np.float32)
    total2, count2 = bpr_jit(np.r_[s, s[:1]], np.r_[v, tied], mask=np.r_[m, m[:1]],
                             z=np.r_[z, z[:1]], weighting="zgap", weight_cap=cap,
                             pair_key=jax.random.key(0), num_pairs=draws)  # fmt: skip
    assert count2 == draws * 3
    np.testing.assert_allclose(total2, draws * want_sum, rtol=1e-5)
    # the default cap is upstream's alpha = 3 (the 5.0 gap is capped to 3, the others kept)
    total, _ = bpr_jit(s, v, mask=m, z=z, weighting="zgap", pair_key=jax.random.key(0),
                       num_pairs=draws)  # fmt: skip
    np.testing.assert_allclose(total, draws * ref.bpr_loss_ref(s, v, m, None, z, "zgap", 3.0)[0],
                               rtol=1e-5)  # fmt: skip


def test_pointwise_matches_reference():
    c = make_case(9)
    pred = np.random.default_rng(1).normal(size=c["z"].shape).astype(np.float32)
    got = jax.jit(losses.pointwise_loss)(pred, c["z"], mask=c["mask"])
    want = ref.mse_ref(pred, c["z"], c["mask"])
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
    assert got[1] == want[1]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float64"])
def test_sums_and_counts_keep_the_scores_float_dtype_under_x64(dtype):
    """Kills losses.x_pointwise_loss__mutmut_7 / _27 and x_bpr_loss__mutmut_30 / _80 / _137
    (``.astype(None)`` for the squared errors, the z weights and the counts): under x64 the
    default float is float64, so float32 or bfloat16 inputs would come back float64. Sums and
    counts are in ``result_type(scores, float32)`` (float32 for float32/bfloat16, float64 for
    float64), whatever the dtype of the targets (z given as float64 here), with the values of
    the float64 references."""
    c = make_case(3)
    want_dt = np.float64 if dtype == "float64" else np.float32
    z64 = c["z"].astype(np.float64)
    with jax.enable_x64(True):
        s = jnp.asarray(c["scores"], dtype)
        pt = losses.pointwise_loss(s, z64, mask=c["mask"])
        want = ref.mse_ref(np.asarray(s, np.float64), c["z"], c["mask"])
        bprs = {
            "dense": losses.bpr_loss(
                s, c["values"], mask=c["mask"], segments=c["segments"], z=z64, weighting="zgap"
            ),
            "sampled": losses.bpr_loss(
                s,
                c["values"],
                mask=c["mask"],
                segments=c["segments"],
                z=z64,
                weighting="zgap",
                pair_key=jax.random.key(0),
                num_pairs=5,
            ),
            "sampled_plain": losses.bpr_loss(
                s, c["values"], mask=c["mask"], pair_key=jax.random.key(1), num_pairs=5
            ),
        }
    for name, (total, count) in {"pointwise": pt, **bprs}.items():
        assert total.dtype == want_dt and count.dtype == want_dt, (name, total.dtype, count.dtype)
    np.testing.assert_allclose(float(pt[0]), want[0], rtol=1e-5)
    assert float(pt[1]) == want[1]
    want_bpr = ref.bpr_loss_ref(np.asarray(s, np.float64), c["values"], c["mask"], c["segments"],
                                c["z"], "zgap", 3.0)  # fmt: skip
    np.testing.assert_allclose(float(bprs["dense"][0]), want_bpr[0], rtol=1e-5)
    assert float(bprs["dense"][1]) == want_bpr[1]


# --- invariances -----------------------------------------------------------------------------
# All calls pass segments and tiebreak arrays, so they share compilations with the tests above.


def _all_losses(c: dict) -> list[float]:
    out = []
    opt = dict(mask=c["mask"], segments=c["segments"], tiebreak=c["tiebreak"])
    for reduction, ties in PL_OPTIONS:
        out += pl_jit(c["scores"], c["values"], reduction=reduction, ties=ties, **opt)
    for weighting in ("none", "zgap"):
        out += bpr_jit(
            c["scores"],
            c["values"],
            mask=c["mask"],
            segments=c["segments"],
            z=c["z"],
            weighting=weighting,
            weight_cap=1.5,
        )
    out += jax.jit(losses.pointwise_loss)(c["scores"], c["z"], mask=c["mask"])
    return [float(x) for x in out]


def _scatter_slots(c: dict, cols: np.ndarray, new_size: int, rng) -> dict:
    """Move row ``r``'s slots to columns ``cols[r]`` of rows of ``new_size``; the rest is
    padding holding garbage (NaN, 1e30, random tiebreaks)."""
    rows = c["mask"].shape[0]
    out = {
        "mask": np.zeros((rows, new_size), bool),
        "segments": np.zeros((rows, new_size), np.int32),
        "tiebreak": rng.integers(0, 99, (rows, new_size)).astype(np.int32),
    }
    for k in ("values", "scores", "z"):
        out[k] = np.where(rng.random((rows, new_size)) < 0.5, np.nan, 1e30).astype(np.float32)
    for k in out:
        for r in range(rows):
            out[k][r, cols[r]] = c[k][r]
    return out


def test_padding_slots_change_nothing():
    """Interleaved padding keeps the valid slots' order, so slot-order tiebreaks still agree."""
    rng = np.random.default_rng(0)
    c = make_case(1)
    rows, size = c["mask"].shape
    c["tiebreak"] = np.tile(np.arange(size, dtype=np.int32), (rows, 1))
    new_size = size + 6
    cols = np.stack([np.sort(rng.choice(new_size, size, replace=False)) for _ in range(rows)])
    np.testing.assert_allclose(
        _all_losses(_scatter_slots(c, cols, new_size, rng)), _all_losses(c), rtol=1e-6
    )


def test_permuting_items_with_their_tiebreak_changes_nothing():
    rng = np.random.default_rng(0)
    c = make_case(2)
    rows, size = c["mask"].shape
    c["tiebreak"][-1] = rng.permutation(size)  # model ids are unique inside a list
    cols = np.stack([rng.permutation(size) for _ in range(rows)])
    np.testing.assert_allclose(
        _all_losses(_scatter_slots(c, cols, size, rng)), _all_losses(c), rtol=1e-6
    )


def test_packing_equals_one_list_per_row():
    rng = np.random.default_rng(0)
    lengths = [3, 1, 5, 0, 4, 7, 6]
    rows, size, packed_size = 7, 10, 16  # the shapes of the tests above
    padded = {
        "mask": np.zeros((rows, size), bool),
        "values": rng.integers(0, 3, (rows, size)).astype(np.float32),
        "scores": rng.normal(size=(rows, size)).astype(np.float32),
        "z": rng.normal(size=(rows, size)).astype(np.float32),
        "tiebreak": np.tile(np.arange(size, dtype=np.int32), (rows, 1)),
    }
    for r, m in enumerate(lengths):
        padded["mask"][r, :m] = True
    padded["segments"] = padded["mask"].astype(np.int32)
    # Pack greedily into rows of 16 slots: lists contiguous, segment ids 1, 2, ... per row;
    # the tiebreak is the slot inside the original list (same tie order as one list per row).
    packed = {k: np.zeros((rows, packed_size), v.dtype) for k, v in padded.items()}
    row, col, seg = 0, 0, 0
    for r, m in enumerate(lengths):
        if col + m > packed_size:
            row, col, seg = row + 1, 0, 0
        seg += 1
        for k in ("values", "scores", "z", "tiebreak"):
            packed[k][row, col : col + m] = padded[k][r, :m]
        packed["mask"][row, col : col + m] = True
        packed["segments"][row, col : col + m] = seg
        col += m
    assert row < 3
    np.testing.assert_allclose(_all_losses(packed), _all_losses(padded), rtol=1e-6)


# --- padding-only batches, the combined loss, errors -----------------------------------------


def test_fully_padded_batch_is_zero_with_finite_grads():
    c = make_case(0)
    batch = {
        "mask": np.zeros_like(c["mask"]),
        "segment": np.zeros_like(c["segments"]),
        "value": c["values"],
        "z": c["z"],
    }

    def total(s):
        return losses.ranking_loss(
            s,
            s,
            batch,
            weights={"listwise": 0.5, "pairwise": 1.0, "pointwise": 0.1},
            pl_reduction="mean",
            pl_ties="drop_tied",
            bpr_weighting="zgap",
            bpr_weight_cap=3.0,
        )

    (value, parts), grad = jax.jit(jax.value_and_grad(total, has_aux=True))(c["scores"])
    assert float(value) == 0 and all(float(x) == 0 for x in parts.values())
    np.testing.assert_array_equal(grad, 0)


def test_ranking_loss_combines_means_with_traced_weights():
    c = make_case(6)
    batch = {"mask": c["mask"], "segment": c["segments"], "value": c["values"], "z": c["z"]}
    z_hat = np.random.default_rng(0).normal(size=c["z"].shape).astype(np.float32)
    fn = jax.jit(
        functools.partial(
            losses.ranking_loss,
            pl_reduction="sum",
            pl_ties="stable",
            bpr_weighting="zgap",
            bpr_weight_cap=2.0,
        )
    )
    pl = ref.pl_loss_ref(c["scores"], c["values"], c["mask"], c["segments"], reduction="sum")
    bpr = ref.bpr_loss_ref(c["scores"], c["values"], c["mask"], c["segments"], c["z"], "zgap", 2.0)
    mse = ref.mse_ref(z_hat, c["z"], c["mask"])
    for lam in ([0.5, 1.0, 0.1], [1.0, 0.0, 2.0]):
        weights = dict(zip(losses.LOSS_NAMES, map(jnp.float32, lam)))
        total, parts = fn(c["scores"], z_hat, batch, weights=weights)
        want = sum(w * s / max(n, 1) for w, (s, n) in zip(lam, (pl, bpr, mse)))
        np.testing.assert_allclose(total, want, rtol=1e-5)
        for name, (s, n) in zip(losses.LOSS_NAMES, (pl, bpr, mse)):
            np.testing.assert_allclose(parts[f"{name}_sum"], s, rtol=1e-5)
            assert parts[f"{name}_count"] == n
    assert fn._cache_size() == 1  # weights are traced: one compilation for the sweep


def test_bad_options_raise():
    c = make_case(0)
    args = (c["scores"], c["values"])
    with pytest.raises(ValueError):
        losses.plackett_luce_loss(*args, mask=c["mask"], reduction="avg")
    with pytest.raises(ValueError):
        losses.plackett_luce_loss(*args, mask=c["mask"], ties="random")
    with pytest.raises(TypeError):
        losses.plackett_luce_loss(*args, mask=c["mask"].astype(np.int32))
    with pytest.raises(ValueError):
        losses.bpr_loss(*args, mask=c["mask"], weighting="zgap")
    with pytest.raises(ValueError):
        losses.bpr_loss(*args, mask=c["mask"], num_pairs=4)
    batch = {"mask": c["mask"], "segment": c["segments"], "value": c["values"], "z": c["z"]}
    with pytest.raises(ValueError):
        losses.ranking_loss(
            c["scores"],
            c["scores"],
            batch,
            weights={"listwise": 1.0},
            pl_reduction="mean",
            pl_ties="stable",
            bpr_weighting="none",
            bpr_weight_cap=3.0,
        )
