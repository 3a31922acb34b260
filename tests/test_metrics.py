"""Metrics against scipy and the slow references; padding invariance; exact aggregation."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import reference as ref
from scipy import stats

from modellens_jax import metrics

KS = (1, 3, 5, 10)
gm_jit = jax.jit(metrics.group_metrics, static_argnames="ks")


@pytest.fixture(autouse=True, scope="module")
def _fast_compiles():
    """Unoptimised XLA compiles: these tests compile many small programs and run them once."""
    old = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", old)


def make_groups(seed: int, rows: int = 8, size: int = 12) -> dict:
    """Random groups with padding (garbage in padded slots), ties in values and scores, a
    fully padded row, a single item, an all-tied truth, a constant prediction, a full row."""
    rng = np.random.default_rng(seed)
    mask = rng.random((rows, size)) < 0.7
    mask[0] = False  # fully padded
    mask[1] = False
    mask[1, 5] = True  # n = 1
    mask[2:5, :4] = True
    mask[5] = True  # n = size
    v = rng.integers(0, 5, (rows, size)).astype(np.float32)
    v[5] = rng.normal(size=size)
    v[2] = 3.0  # all-tied truth
    s = rng.normal(size=(rows, size)).astype(np.float32)
    s[6] = np.round(s[6])  # tied predictions
    s[3] = 0.5  # constant prediction
    garbage = np.array([np.nan, np.inf, -np.inf, 1e30], np.float32)
    for a in (v, s):
        a[~mask] = rng.choice(garbage, size=int((~mask).sum()))
    return dict(v=v, s=s, mask=mask)


def _check_against_reference(got: dict, c: dict) -> None:
    want = ref.group_metrics_ref(c["v"], c["s"], c["mask"], KS)
    for name, (val, valid) in got.items():
        val, valid = np.asarray(val), np.asarray(valid)
        for r, row in enumerate(want):
            assert bool(valid[r]) == (row[name] is not None), (name, r)
            if row[name] is not None:
                np.testing.assert_allclose(val[r], row[name], atol=2e-6, err_msg=f"{name} {r}")


@pytest.mark.parametrize("seed", range(4))
def test_group_metrics_match_reference(seed):
    c = make_groups(seed)
    got = gm_jit(c["v"], c["s"], mask=c["mask"], ks=KS)
    assert set(got) == {"weighted_tau", "weighted_tau_ref"} | {
        f"{m}@{k}" for m in ("ndcg", "hit", "recall") for k in KS
    }
    _check_against_reference(got, c)


def test_standalone_functions_agree_with_group_metrics():
    c = make_groups(2)

    @jax.jit
    def standalone(v, s, mask):
        out = {
            "weighted_tau": metrics.weighted_tau(v, s, mask=mask),
            "weighted_tau_ref": metrics.weighted_tau_ref(v, s, mask=mask),
        }
        for k in KS:
            out[f"ndcg@{k}"] = metrics.ndcg_at_k(v, s, k, mask=mask)
            out[f"hit@{k}"] = metrics.hit_at_k(v, s, k, mask=mask)
            out[f"recall@{k}"] = metrics.recall_at_k(v, s, k, mask=mask)
        return out

    got = standalone(c["v"], c["s"], c["mask"])
    want = gm_jit(c["v"], c["s"], mask=c["mask"], ks=KS)
    assert got.keys() == want.keys()
    for name in want:
        np.testing.assert_array_equal(got[name][1], want[name][1])
        np.testing.assert_allclose(got[name][0], want[name][0], atol=1e-7, err_msg=name)


@pytest.mark.parametrize("seed", range(4))
def test_weighted_tau_matches_scipy(seed):
    c = make_groups(seed)
    got = gm_jit(c["v"], c["s"], mask=c["mask"], ks=KS)
    tau, tau_valid = map(np.asarray, got["weighted_tau"])
    tref, tref_valid = map(np.asarray, got["weighted_tau_ref"])
    for r in range(c["mask"].shape[0]):
        v = c["v"][r][c["mask"][r]].astype(np.float64)
        s = c["s"][r][c["mask"][r]].astype(np.float64)
        assert tref_valid[r] == (len(v) >= 2)
        if len(v) < 2:
            assert not tau_valid[r]
            continue
        want = stats.weightedtau(v, s, rank=None).statistic
        if np.isfinite(want):
            assert tau_valid[r]
            np.testing.assert_allclose(tau[r], want, atol=2e-6)
        elif len(set(v)) < 2:
            assert not tau_valid[r]  # no true order: excluded
        else:
            assert tau_valid[r] and tau[r] == 0  # constant prediction: 0, not NaN
        x, y = ref.ranks_desc(v), ref.ranks_desc(s)
        np.testing.assert_allclose(tref[r], stats.weightedtau(x, y, rank=None).statistic, atol=2e-6)


def test_weighted_tau_with_many_ties_matches_scipy():
    """The package's ``metrics.weighted_tau`` (not only tests/reference.py) on short lists of
    heavily tied integer values and scores, one list at a time, against scipy."""
    rng = np.random.default_rng(0)
    tau_jit = jax.jit(metrics.weighted_tau)
    checked = 0
    for _ in range(20):
        n = int(rng.integers(2, 12))
        x = rng.integers(0, 4, n).astype(float)
        y = rng.integers(0, 4, n).astype(float)
        want = stats.weightedtau(x, y, rank=None).statistic
        np.testing.assert_allclose(ref.weighted_tau_formula(x, y), want, atol=1e-12)
        pad = 12 - n  # padded slots hold garbage that must not count
        v = np.concatenate([x, rng.normal(size=pad)])[None].astype(np.float32)
        s = np.concatenate([y, rng.normal(size=pad)])[None].astype(np.float32)
        mask = (np.arange(12) < n)[None]
        tau, valid = map(np.asarray, tau_jit(v, s, mask=mask))
        if np.isfinite(want):
            assert valid[0]
            np.testing.assert_allclose(tau[0], want, atol=2e-6)
            checked += 1
        elif len(set(x)) < 2:
            assert not valid[0]
        else:
            assert valid[0] and tau[0] == 0
    assert checked >= 15


def test_documented_top_and_bottom_swaps():
    """method.md §10a: 10 items; swapping the top two gives 0.886 (top-weighted) and 0.984
    (upstream's rank call); swapping the bottom two gives the reverse."""
    v = np.arange(10, 0, -1, dtype=np.float32)[None]
    top, bottom = v.copy(), v.copy()
    top[0, [0, 1]] = top[0, [1, 0]]
    bottom[0, [8, 9]] = bottom[0, [9, 8]]
    m = np.ones_like(v, bool)
    for s, want_tau, want_ref in ((top, 0.886, 0.984), (bottom, 0.984, 0.886)):
        got = gm_jit(v, s, mask=m, ks=(1,))
        tau, valid = got["weighted_tau"]
        assert valid[0] and got["weighted_tau_ref"][1][0]
        np.testing.assert_allclose(tau[0], want_tau, atol=5e-4)
        np.testing.assert_allclose(got["weighted_tau_ref"][0][0], want_ref, atol=5e-4)
    np.testing.assert_allclose(
        gm_jit(v, top, mask=m, ks=(1,))["weighted_tau"][0][0], 0.8861943, atol=1e-6
    )


def test_ties_break_by_slot():
    """Tied scores rank in slot order; the best item is the first slot among tied maxima."""
    m = np.ones((1, 4), bool)

    def hit_rec(v, s):
        got = gm_jit(np.array([v], np.float32), np.array([s], np.float32), mask=m, ks=(1, 2))
        return [float(got[name][0][0]) for name in ("hit@1", "hit@2", "recall@1")]

    s = [5.0, 5.0, 1.0, 0.0]  # slots 0 and 1 tie on top: slot 0 ranks first
    assert hit_rec([1.0, 3.0, 2.0, 0.0], s) == [0.0, 1.0, 0.0]
    assert hit_rec([3.0, 1.0, 2.0, 0.0], s) == [1.0, 1.0, 1.0]
    # best = slot 1, the first of the tied maxima; the other tied maximum ranks first
    assert hit_rec([1.0, 3.0, 3.0, 0.0], [0.0, 1.0, 5.0, 0.0]) == [0.0, 1.0, 0.0]


def _scatter_slots(c: dict, size: int, rng) -> dict:
    rows, old = c["mask"].shape
    out = {
        "mask": np.zeros((rows, size), bool),
        "v": np.full((rows, size), np.nan, np.float32),
        "s": np.full((rows, size), 1e30, np.float32),
    }
    for r in range(rows):
        cols = np.sort(rng.choice(size, old, replace=False))
        for k in out:
            out[k][r, cols] = c[k][r]
    return out


def test_padding_slots_change_nothing():
    rng = np.random.default_rng(0)
    c = make_groups(1)
    padded = _scatter_slots(c, 17, rng)
    got = gm_jit(padded["v"], padded["s"], mask=padded["mask"], ks=KS)
    want = gm_jit(c["v"], c["s"], mask=c["mask"], ks=KS)
    for name in want:
        np.testing.assert_array_equal(got[name][1], want[name][1])
        np.testing.assert_allclose(got[name][0], want[name][0], atol=1e-6, err_msg=name)
    _check_against_reference(got, padded)


def _accumulate(batches: list[dict]) -> dict[str, float]:
    """The harness's path: per-group metrics of each batch, its real rows kept, aggregated."""
    per: dict[str, list] = {"n": []}
    for b in batches:
        out = jax.device_get(gm_jit(b["v"], b["s"], mask=b["mask"], ks=KS))
        real = b["mask"].sum(1) > 0
        per["n"].append(b["mask"].sum(1)[real])
        for name, (val, valid) in out.items():
            per.setdefault(name, []).append(np.where(valid, val, np.nan)[real])
    return metrics.aggregate({k: np.concatenate(v) for k, v in per.items()}, KS)


def test_accumulation_is_independent_of_batching():
    """Three batches of 8 groups, against a shuffled split with fully padded rows mixed in,
    against the reference means (plain and pair-count weighted)."""
    rng = np.random.default_rng(0)
    parts = [make_groups(seed) for seed in range(3)]
    groups = {k: np.concatenate([p[k] for p in parts]) for k in ("v", "s", "mask")}
    first = _accumulate(parts)

    order = rng.permutation(24 + 8)  # 8 fully padded rows interleaved
    empty = make_groups(9)
    empty["mask"][:] = False
    pool = {k: np.concatenate([groups[k], empty[k]]) for k in groups}
    shuffled = [{k: pool[k][order[i : i + 8]] for k in pool} for i in range(0, 32, 8)]
    second = _accumulate(shuffled)
    assert first.keys() == second.keys()
    for name in first:
        np.testing.assert_allclose(second[name], first[name], rtol=1e-6, err_msg=name)

    rows = ref.group_metrics_ref(groups["v"], groups["s"], groups["mask"], KS)
    n = groups["mask"].sum(1)
    for name in rows[0]:
        vals = [(row[name], n[r]) for r, row in enumerate(rows) if row[name] is not None]
        np.testing.assert_allclose(first[name], np.mean([x for x, _ in vals]), rtol=1e-6)
        if name in metrics.TAU_METRICS:
            pairs = np.array([m * (m - 1) / 2 for _, m in vals])
            want = np.dot([x for x, _ in vals], pairs) / pairs.sum()
            np.testing.assert_allclose(first[f"{name}_pairs"], want, rtol=1e-6)
    assert first["num_groups"] == (n >= 1).sum()  # every real group, a single item included
    for k in KS:
        assert first[f"num_groups@{k}"] == (n >= max(k, 2)).sum()


def test_empty_aggregate_and_all_padding():
    c = make_groups(0)
    c["mask"][:] = False
    out = _accumulate([c])
    assert out["num_groups"] == 0 and np.isnan(out["weighted_tau"])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_hit_keeps_the_input_float_dtype_under_x64(dtype):
    """Kills metrics.x__hit__mutmut_17 (``hit.astype(None)``): under x64 the default float is
    float64, so float32 groups would get float64 hits. Each metric's values are in
    ``result_type(v, s, float32)``, as hit@K's numpy reference values."""
    c = make_groups(5)
    want = ref.group_metrics_ref(c["v"], c["s"], c["mask"], KS)
    with jax.enable_x64(True):
        v, s = np.asarray(c["v"], dtype), np.asarray(c["s"], dtype)
        got = {k: metrics.hit_at_k(v, s, k, mask=c["mask"]) for k in KS}
    for k, (val, valid) in got.items():
        assert val.dtype == np.dtype(dtype), (k, val.dtype)
        for r, row in enumerate(want):
            assert bool(valid[r]) == (row[f"hit@{k}"] is not None)
            if row[f"hit@{k}"] is not None:
                assert float(val[r]) == row[f"hit@{k}"], (k, r)
