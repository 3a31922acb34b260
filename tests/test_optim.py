"""Lazy row-wise AdamW equals dense AdamW when every row of the big tables is touched."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from modellens_jax import losses, optim
from modellens_jax.data.batch import synthetic_batch
from modellens_jax.model import FeatureSizes

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
