"""Vectorised sweeps: N members in one program equal their separate runs; sparse embedding
updates train through the real step."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx
from test_train import corpus_dir, make_workdir, tiny_config  # noqa: F401

from modellens_jax import rundir, train, train_state
from modellens_jax.experiments import members

MEMBERS = [
    {"loss.weights.pairwise": 0.0, "model.dropout": 0.0},
    {"loss.weights.pairwise": 1.0, "model.dropout": 0.0},
    {"loss.weights.pairwise": 0.0, "model.dropout": 0.3},
    {"loss.weights.pairwise": 1.0, "model.dropout": 0.3, "model.model_id_dropout": 0.5},
]


def _params(graphdef, state):
    return nnx.state(nnx.merge(graphdef, state)[0], nnx.Param)


# Biases added to every score of a list: ranking losses are invariant to them, so their gradient
# is pure rounding noise (~1e-9) that Adam normalises into +-lr steps; float-level differences
# between the vmapped and the single program flip those signs. They are excluded from the
# parameter comparison (every other parameter must agree to 1e-5).
SHIFT_INVARIANT = ("['prior_out']['bias']", "['rank_head']['bias']")


def test_four_members_equal_their_separate_runs(corpus_dir, tmp_path):  # noqa: F811
    """The vmapped step over 4 members gives each member the parameters of its own run (same
    seed, same batches, its own loss weights and dropout rates through the ordinary step)."""
    from modellens_jax import sharding
    from modellens_jax.data import pipeline

    base = tiny_config(mesh__data=1)
    _, tables = rundir.load_data(base, make_workdir(corpus_dir, tmp_path / "w"), verbose=False)
    mesh = sharding.make_mesh(1, 1)
    graphdef, state, _ = train_state.init_state(base, train_state.feature_sizes(base, tables), mesh)
    ds, _ = pipeline.train_dataset(tables, rows=8, list_size=16, pack=True, seed=0)
    it = iter(ds)
    batches = [next(it) for _ in range(3)]
    configs = [members.member_config(base, m) for m in MEMBERS]
    weights, rates = members.member_arrays(configs)
    key = jax.random.key(0)
    step = train_state.make_train_step(graphdef, base)
    single = jax.jit(step)
    acc0 = train_state.acc_zeros()
    stacked = jax.tree.map(lambda x: jax.numpy.stack([x] * len(MEMBERS)), (state, acc0))
    vstep = jax.jit(jax.vmap(step, in_axes=(0, 0, None, 0, None, 0)))
    for b in batches:
        stacked = vstep(*stacked, b, weights, key, rates)
    for i, cfg in enumerate(configs):
        st, acc = state, acc0
        w_i = train_state.loss_weights(cfg)
        r_i = {k: v[i] for k, v in rates.items()}
        for b in batches:
            st, acc = single(st, acc, b, w_i, key, r_i)
        a = _params(graphdef, st)
        b = _params(graphdef, jax.tree.map(lambda x, i=i: x[i], stacked[0]))
        diffs = jax.tree.map(
            lambda x, y: float(np.max(np.abs(np.asarray(x) - np.asarray(y)))), a, b
        )
        leaves = [
            (jax.tree_util.keystr(p), d)
            for p, d in jax.tree_util.tree_leaves_with_path(diffs)
            if not jax.tree_util.keystr(p).startswith(SHIFT_INVARIANT)
        ]
        worst = max(leaves, key=lambda kv: kv[1])
        assert worst[1] < 1e-5, (i, MEMBERS[i], worst)
        np.testing.assert_allclose(acc["loss_sum"], stacked[1]["loss_sum"][i], rtol=1e-5)
    # members really differ (the check above is not vacuous)
    p0, p1 = (_params(graphdef, jax.tree.map(lambda x, i=i: x[i], stacked[0])) for i in (0, 1))
    assert not np.allclose(np.asarray(p0["second"]["kernel"]), np.asarray(p1["second"]["kernel"]))


def test_train_members_writes_ordinary_runs(corpus_dir, tmp_path):  # noqa: F811
    """The command path: members written as run directories that evaluate can restore."""
    base = tiny_config(train__steps=2, mesh__data=1)
    root = make_workdir(corpus_dir, tmp_path / "sweep")
    members.train_members(base, root, MEMBERS[:2], verbose=False)
    for m in MEMBERS[:2]:
        wd = root / members.member_name(m)
        assert (wd / "train_summary.json").exists()
        r = rundir.restore(wd)
        cfg, step = r.config, r.step
        assert step == 2 and cfg.loss.weights.pairwise == m["loss.weights.pairwise"]


def test_non_vectorisable_key_is_refused():
    with pytest.raises(ValueError, match="cannot be vectorised"):
        members.member_config(tiny_config(), {"model.hidden_dim": 64})


def test_sparse_embeddings_train_and_resume(corpus_dir, tmp_path):  # noqa: F811
    """Lazy row-wise AdamW through the real trainer: finite, learns, and resumes bit-exactly."""
    cfg = tiny_config(optim__sparse_embeddings=True, train__steps=4, mesh__data=1)
    straight = train.train_and_evaluate(
        cfg, make_workdir(corpus_dir, tmp_path / "a"), verbose=False
    )
    wd = make_workdir(corpus_dir, tmp_path / "b")
    train.train_and_evaluate(cfg, wd, verbose=False, stop_after=2)
    resumed = train.train_and_evaluate(cfg, wd, verbose=False)
    a, b = _params(straight.graphdef, straight.state), _params(resumed.graphdef, resumed.state)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(a))
    # the sparse optimizer's moments stay out of the exported bundle
    from modellens_jax import export
    from modellens_jax.serving import recommender

    bundle = export.export(wd, tmp_path / "bundle", platforms=["cpu"])
    rec = recommender.Recommender.load(bundle)
    ranked = rec.rank(task="Retrieval", metric="ndcg_at_10", top_k=3)
    assert len(ranked) == 3
