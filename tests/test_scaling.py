"""Data-parallel scaling of the train step on 8 fake CPU devices: shard-local batch blocks
(``data/batch.py``) score exactly as one block, and with one block per data shard the compiled
step's per-device work and communication stay flat as the data axis grows (weak scaling), which
``python -m modellens_jax.bench --comm_meshes=...`` reports at the paper's dimensions."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from test_train import LR, assert_states_close, corpus_dir, make_workdir, no_eval, tiny_config  # noqa: F401

from modellens_jax import config_check, losses, optim, rundir, sharding, train, train_state
from modellens_jax.data import pipeline
from modellens_jax.experiments import bench


@pytest.fixture(scope="module")
def tables(corpus_dir):  # noqa: F811
    return rundir.load_data(tiny_config(), corpus_dir.parent, verbose=False)[1]


def _rows(tables, n_rows: int, list_size: int) -> list[list[np.ndarray]]:
    """``n_rows`` rows of one or two training lists each (some rows packed)."""
    src = pipeline.TrainLists(tables.corpus, list_size=list_size, seed=0)
    items = iter(src[i] for i in range(len(src)))
    rows = []
    while len(rows) < n_rows:
        a = next(items)
        b = next(items)
        rows.append([a, b] if len(a) + len(b) <= list_size else [a])
    return rows


def test_shard_local_blocks_score_and_train_as_one_block(tables):
    R, L, B = 8, 16, 4
    rows = _rows(tables, R, L)
    one = pipeline.Featurize(tables, rows=R, list_size=L, num_models=R * L, num_groups=2 * R)
    four = pipeline.Featurize(tables, rows=R, list_size=L, num_models=R * L, num_groups=2 * R,
                              blocks=B)  # fmt: skip
    b1, b4 = one.map(rows), four.map(rows)
    assert "blocks" not in b1 and b4["blocks"].shape == (R, B)
    for k in ("mask", "segment", "value", "z"):
        np.testing.assert_array_equal(b1[k], b4[k], err_msg=k)
    mask = b1["mask"]
    assert mask.sum() > R  # real records, some rows packed
    # every row's slots stay inside its own block of the models and groups blocks
    for i in range(B):
        rs = slice(i * R // B, (i + 1) * R // B)
        ms, gs = b4["model_slot"][rs][mask[rs]], b4["group_slot"][rs][mask[rs]]
        assert ms.min() >= i * R * L // B and ms.max() < (i + 1) * R * L // B
        assert gs.min() >= i * 2 * R // B and gs.max() < (i + 1) * 2 * R // B
    # ... and point at the same model and group as the one-block batch does
    for key, slot in (("model_id", "model_slot"), ("family", "model_slot"),
                      ("dataset_id", "group_slot"), ("task", "group_slot")):  # fmt: skip
        np.testing.assert_array_equal(b4[key][b4[slot]][mask], b1[key][b1[slot]][mask], key)

    config = tiny_config()
    model, _ = optim.create(config, train_state.feature_sizes(config, tables))
    j1, j4 = (jax.tree.map(jnp.asarray, b) for b in (b1, b4))
    key = jax.random.key(3)
    for kw in ({}, {"train": True, "key": key}):  # the same ID-dropout and dropout draws
        s1, s4 = model(j1, **kw)["score"], model(j4, **kw)["score"]
        np.testing.assert_allclose(np.asarray(s4)[mask], np.asarray(s1)[mask], rtol=1e-5,
                                   atol=1e-5)  # fmt: skip

    def loss(m, b):
        out = m(b, train=True, key=key)
        return losses.ranking_loss(
            out["score"], out["z_hat"], b, weights=train_state.loss_weights(config),
            pl_reduction="sum", pl_ties="stable", bpr_weighting="zgap", bpr_weight_cap=3.0,
        )[0]  # fmt: skip

    g1 = nnx.grad(loss)(model, j1)
    g4 = nnx.grad(loss)(model, j4)
    for x, y in zip(jax.tree.leaves(g1), jax.tree.leaves(g4)):
        np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("sparse", [False, True])
def test_blocked_step_on_8_shards_equals_one_device(tables, sparse):
    """One train step (dense or sparse update) on a batch of 8 shard-local blocks: the 8-device
    data-parallel mesh and one device reach the same state and losses."""
    config = tiny_config(optim__warmup_steps=0, optim__sparse_embeddings=sparse)
    sizes = train_state.feature_sizes(config, tables)
    ds, _ = pipeline.train_dataset(tables, rows=8, list_size=16, pack=True, seed=0, blocks=8)
    batch = next(iter(ds))
    assert batch["blocks"].shape == (8, 8)
    weights, key = train_state.loss_weights(config), jax.random.key(0)
    out = {}
    for shape in ((1, 1), (8, 1)):
        mesh = sharding.make_mesh(*shape)
        graphdef, state, state_sh = train_state.init_state(config, sizes, mesh)
        step = train_state.jit_train_step(graphdef, config, mesh, state_sh)
        acc = jax.device_put(train_state.acc_zeros(), sharding.replicated(mesh))
        st, acc = step(state, acc, sharding.to_global(batch, mesh), weights, key)
        out[shape] = jax.device_get((acc, st))
    (acc1, st1), (acc8, st8) = out[1, 1], out[8, 1]
    assert acc1["nonfinite"] == 0
    for k in ("loss_sum", "grad_norm_sum"):
        np.testing.assert_allclose(acc8[k], acc1[k], rtol=1e-5, atol=1e-5, err_msg=k)
    assert_states_close(st8, st1, atol=1e-5, offset_atol=2 * LR)


def test_blocks_must_divide_the_batch(tables):
    with pytest.raises(ValueError, match="does not split into 3 blocks"):
        pipeline.Featurize(tables, rows=8, list_size=16, blocks=3)


def test_training_with_one_block_per_data_shard(no_eval, corpus_dir, tmp_path):  # noqa: F811
    """``input.blocks=0`` on the 8-device mesh: the trainer builds 8 shard-local blocks, the step
    compiles once and trains; the config check refuses blocks that do not divide the batch."""
    wd = make_workdir(corpus_dir, tmp_path / "run")
    res = train.train_and_evaluate(tiny_config(input__blocks=0), wd, verbose=False)
    assert res.step == 6 and res.compiles == 1
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(res.state))
    with pytest.raises(config_check.ConfigError, match=r"groups_per_batch=8: must be divisible"):
        config_check.validate(tiny_config(input__blocks=3), device_count=8, process_count=1)


def test_collectives_counts_ops_and_bytes():
    mesh = sharding.make_mesh(8, 1)
    x = jax.device_put(jnp.ones((8, 4), jnp.float32), NamedSharding(mesh, P("data")))
    f = jax.jit(lambda a: (jnp.sum(a), a * 2), out_shardings=(NamedSharding(mesh, P()),) * 2)
    ops = bench.collectives(f.lower(x).compile().as_text())
    assert ops["all-reduce"]["count"] >= 1 and ops["all-reduce"]["bytes"] >= 4
    assert ops["all-gather"]["count"] == 1 and ops["all-gather"]["bytes"] == 8 * 4 * 4


@pytest.mark.parametrize("sparse", [False, True])
def test_weak_scaling_with_one_block_per_shard(tables, sparse):
    """Per data shard the same batch; 2 -> 8 shards. The compiled step's per-device FLOPs stay
    flat (with the sparse update too, whose row ids must keep the batch's sharding, or every
    device runs the whole batch's model side). With one block per shard no activation crosses
    shards: only the gradient all-reduce is left; unblocked, the model and context sides are
    all-gathered, and those bytes grow with the global batch."""
    config = tiny_config(
        input__groups_per_batch=2,
        optim__sparse_embeddings=sparse,
        model__hidden_dim=256,
        model__model_id_dim=64,
    )  # the model side dominates
    rows = bench.communication(config, tables, [(2, 1), (8, 1)])
    by = {(r["mesh"][0], r["blocks"]): r for r in rows}
    assert set(by) == {(2, 1), (2, 2), (8, 1), (8, 8)}
    for b in ((1, 1), (2, 8)):  # unblocked and one block per shard
        assert by[8, b[1]]["flops_per_device"] < 1.25 * by[2, b[0]]["flops_per_device"]

    def gathered(r):
        return r["collectives"].get("all-gather", {}).get("bytes", 0)

    assert gathered(by[8, 1]) > 3 * gathered(by[2, 1]) > 0
    if not sparse:  # (the sparse update all-gathers the batch's row ids: small, but not flat)
        assert gathered(by[8, 8]) == gathered(by[2, 2]) == 0
        assert by[8, 8]["collectives"] == by[2, 2]["collectives"]  # the gradient all-reduce
