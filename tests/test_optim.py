"""Lazy row-wise AdamW equals dense AdamW when every row of the big tables is touched."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from modellens_jax import losses, optim
from modellens_jax.model import FeatureSizes
from tests.batches import synthetic_batch

ROOT = Path(__file__).resolve().parents[1]
SIZES = FeatureSizes(num_model_ids=6, name_buckets=8, num_size_buckets=23, num_families=7,
                     num_dataset_ids=4, num_tasks=5, num_metrics=6, model_desc_dim=12,
                     dataset_desc_dim=12)  # fmt: skip
# Biases shared by every score of a list get only rounding-noise gradients under ranking losses,
# which Adam normalises into +-lr steps; they are left out of the comparison.
SHIFT_INVARIANT = ("['prior_out']['bias']", "['rank_head']['bias']")


def _config(sparse: bool):
    spec = importlib.util.spec_from_file_location("_cfg", ROOT / "configs/default.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    c = mod.get_config("tiny")
    c.optim.sparse_embeddings, c.optim.weight_decay, c.optim.warmup_steps = sparse, 0.01, 0
    return c


def _loss(m, batch):
    out = m(batch, train=False)
    w = {"listwise": 0.5, "pairwise": 1.0, "pointwise": 0.1}
    return losses.ranking_loss(out["score"], out["z_hat"], batch, weights=w, pl_reduction="sum",
                               pl_ties="stable", bpr_weighting="zgap", bpr_weight_cap=3.0)  # fmt: skip


def test_sparse_equals_dense_when_all_rows_are_touched():
    rng = np.random.default_rng(0)
    b = synthetic_batch(rng, rows=4, list_size=8, num_models=16, num_groups=6,
                        vocab={"model_id": 6, "name_buckets": 8, "dataset_id": 4})  # fmt: skip
    b["name_mask"][:] = True
    b["model_id"][:6], b["name_tokens"][:8, 0], b["dataset_id"][:4] = range(6), range(8), range(4)
    b = {k: jnp.asarray(v) for k, v in b.items()}
    params = {}
    for sparse in (False, True):
        c = _config(sparse)
        graphdef, state = nnx.split(optim.create(c, SIZES, seed=0))

        @jax.jit
        def step(state, b, c=c, sparse=sparse, graphdef=graphdef):
            m, o = nnx.merge(graphdef, state)
            if sparse:
                optim.sparse_update(m, o, b, _loss, c)
            else:
                (_, _), g = nnx.value_and_grad(_loss, has_aux=True)(m, b)
                o.update(m, g)
            return nnx.state((m, o))

        for _ in range(4):
            state = step(state, b)
        params[sparse] = nnx.state(nnx.merge(graphdef, state)[0], nnx.Param)
    diffs = jax.tree.map(lambda x, y: float(jnp.max(jnp.abs(x - y))), params[False], params[True])
    for path, d in jax.tree_util.tree_leaves_with_path(diffs):
        if not jax.tree_util.keystr(path).startswith(SHIFT_INVARIANT):
            assert d < 1e-6, (jax.tree_util.keystr(path), d)


def test_untouched_rows_are_not_updated():
    """Lazy semantics: a table row no batch uses keeps its value and zero moments."""
    rng = np.random.default_rng(1)
    b = synthetic_batch(rng, rows=4, list_size=8, num_models=16, num_groups=6,
                        vocab={"model_id": 3, "name_buckets": 8, "dataset_id": 4})  # fmt: skip
    b = {k: jnp.asarray(v) for k, v in b.items()}
    c = _config(True)
    model, opt = optim.create(c, SIZES, seed=0)
    before = np.asarray(model.model_id_embed.embedding[...])
    optim.sparse_update(model, opt, b, _loss, c)
    after = np.asarray(model.model_id_embed.embedding[...])
    np.testing.assert_array_equal(before[3:], after[3:])  # ids 3..5 never appear
    assert not np.array_equal(before[:3], after[:3])
    assert np.all(np.asarray(model.model_id_embed.nu[...])[3:] == 0)


def _tiny(**optim_overrides):
    c = _config(False)
    for k, v in optim_overrides.items():
        c.optim[k] = v
    return c


def _expected_lr(t, *, lr, steps, warm, floor=0.05):
    """The documented schedule written out by hand: linear warm-up from 0, then a half cosine
    from ``lr`` down to ``floor * lr`` at the last step, constant after."""
    if t < warm:
        return lr * t / warm
    frac = min(t - warm, steps - warm) / (steps - warm)
    return floor * lr + (lr - floor * lr) * 0.5 * (1 + math.cos(math.pi * frac))


def test_cosine_schedule_matches_the_hand_computed_curve():
    """Kills the mutant "cosine floor 5% -> 50%" (optim.py schedule): values are compared with a
    schedule computed independently of optax, with and without warm-up."""
    for warm in (0, 10):
        c = _tiny(learning_rate=1e-3, warmup_steps=warm, decay="cosine")
        c.train.steps = 100
        sched = optim.schedule(c)
        for t in (0, 1, 5, 10, 30, 55, 80, 99, 100, 150):
            want = _expected_lr(t, lr=1e-3, steps=100, warm=warm)
            assert float(sched(t)) == pytest.approx(want, rel=1e-5, abs=1e-12), (warm, t)
        assert float(sched(100)) == pytest.approx(5e-5, rel=1e-5)  # the 5 % floor
    c = _tiny(learning_rate=1e-3, warmup_steps=10, decay="constant")
    c.train.steps = 100
    sched = optim.schedule(c)
    assert [float(sched(t)) for t in (0, 5, 10, 99)] == pytest.approx([0, 5e-4, 1e-3, 1e-3])
    c.optim.warmup_steps = 0
    assert [float(optim.schedule(c)(t)) for t in (0, 50)] == pytest.approx([1e-3, 1e-3])


@pytest.mark.parametrize(
    "steps,warmup,want_warm",
    [(0, 5, 0), (1, 5, 0), (2, 5, 1), (3, 5, 2), (10, 20, 9), (10, 9, 9), (10, 3, 3)],
)
def test_schedule_clamps_the_warm_up_below_the_run_length(steps, warmup, want_warm):
    """Found by tests/mutation/run.py: warm-up is capped at ``steps - 1`` (a run of 0 or 1
    steps has none and starts at the full rate), and the cosine still ends at the floor."""
    c = _tiny(learning_rate=1e-3, warmup_steps=warmup, decay="cosine")
    c.train.steps = steps
    sched = optim.schedule(c)
    n = max(steps, 1)
    for t in range(n + 2):
        want = _expected_lr(t, lr=1e-3, steps=n, warm=want_warm)
        assert float(sched(t)) == pytest.approx(want, rel=1e-5, abs=1e-12), t
    assert float(sched(0)) == (0.0 if want_warm else pytest.approx(1e-3))


# Which parameters get weight decay, listed by path (the docstring's rule: kernels and
# embedding tables yes, biases and the temperature no).
def _decayed_by_path(path: str) -> bool:
    if path.endswith("['bias']") or path == "['temperature']":
        return False
    assert path.endswith(("['kernel']", "['embedding']")) or "['kernels']" in path, path
    return True


def test_weight_decay_mask_by_parameter_path():
    """Kills the mutant "weight decay on biases (ndim >= 1)" (optim.py decay_mask). With zero
    gradients AdamW's step is exactly ``-lr * wd * p`` on decayed parameters and nothing
    elsewhere, so one update shows which parameters the mask covers."""
    lr, wd = 1e-2, 0.5
    c = _tiny(learning_rate=lr, weight_decay=wd, warmup_steps=0, decay="constant")
    model, opt = optim.create(c, SIZES, seed=0)
    params = nnx.state(model, nnx.Param)
    ones = jax.tree.map(jnp.ones_like, params)
    nnx.update(model, ones)  # biases start at zero, where decay would be invisible
    opt.update(model, jax.tree.map(jnp.zeros_like, ones))
    after = nnx.state(model, nnx.Param)
    seen = set()
    for path, x in jax.tree_util.tree_leaves_with_path(after):
        name = jax.tree_util.keystr(path).removesuffix(".value")
        want = 1.0 - lr * wd if _decayed_by_path(name) else 1.0
        np.testing.assert_allclose(np.asarray(x), want, rtol=1e-6, err_msg=name)
        seen.add(_decayed_by_path(name))
    assert seen == {True, False}


def test_dense_optimizer_clips_the_global_norm_by_default():
    """Found by tests/mutation/run.py (``clip: bool = False`` survived): the optimizer training
    builds clips the global gradient norm first. Adam is nearly scale-invariant on one step, so
    the check takes two: a first gradient over the clip norm is cut to it, so scaling it by 2
    changes nothing afterwards; without clipping it changes the moments and the second step."""
    c = _tiny(learning_rate=1e-2, weight_decay=0.0, warmup_steps=0, decay="constant")
    c.optim.clip_norm = 1.0
    rng = np.random.default_rng(0)
    g1, g2 = rng.normal(size=(2, 4, 3)).astype(np.float32)

    def two_steps(opt, scale):
        p = {"w": jnp.ones((4, 3))}
        state = opt.init(p)
        for g in (scale * g1, g2):
            u, state = opt.update({"w": jnp.asarray(g)}, state, p)
            p = optax.apply_updates(p, u)
        return np.asarray(p["w"])

    assert np.linalg.norm(10 * g1) > 1.0
    clipped = optim.make_optimizer(c)
    np.testing.assert_allclose(two_steps(clipped, 10.0), two_steps(clipped, 20.0), rtol=1e-6)
    free = optim.make_optimizer(c, clip=False)
    assert np.abs(two_steps(free, 10.0) - two_steps(free, 20.0)).max() > 1e-4


def test_dense_adamw_is_adam_with_the_sparse_tables_constants():
    """``make_optimizer`` leaves b1, b2 and eps at optax's defaults, which must stay the
    ``B1, B2, EPS`` of the sparse tables' Adam (the sparse-equals-dense test compares the two
    paths, not the constants): three steps against AdamW written out in numpy, with gradients
    small enough (~1e-7) that eps matters and decay on the kernel only."""
    lr, wd = 1e-2, 0.1
    c = _tiny(learning_rate=lr, weight_decay=wd, warmup_steps=0, decay="constant")
    opt = optim.make_optimizer(c, clip=False)
    rng = np.random.default_rng(4)
    p = {"w": rng.normal(size=(4, 3)), "b": rng.normal(size=3)}
    grads = [{k: 1e-7 * rng.normal(size=v.shape) for k, v in p.items()} for _ in range(3)]
    b1, b2, eps = 0.9, 0.999, 1e-8
    assert (optim.B1, optim.B2, optim.EPS) == (b1, b2, eps)
    params = {k: jnp.asarray(v, jnp.float32) for k, v in p.items()}
    state = opt.init(params)
    want = {k: v.copy() for k, v in p.items()}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v2 = {k: np.zeros_like(v) for k, v in p.items()}
    for t, g in enumerate(grads, 1):
        u, state = opt.update({k: jnp.asarray(x, jnp.float32) for k, x in g.items()}, state, params)
        params = optax.apply_updates(params, u)
        for k in p:
            m[k] = b1 * m[k] + (1 - b1) * g[k]
            v2[k] = b2 * v2[k] + (1 - b2) * g[k] ** 2
            step = (m[k] / (1 - b1**t)) / (np.sqrt(v2[k] / (1 - b2**t)) + eps)
            want[k] = want[k] - lr * (step + (wd * want[k] if k == "w" else 0.0))
    for k in p:
        np.testing.assert_allclose(np.asarray(params[k]), want[k], rtol=2e-5, atol=1e-6, err_msg=k)
