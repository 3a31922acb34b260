"""Optimisation: the AdamW schedule, the (model, optimizer) pair, and sparse embedding updates.

``optim.sparse_embeddings = True`` switches the three large ID/token tables (model ID, name
tokens, dataset ID) to *lazy* AdamW: each step gathers only the rows the batch uses, takes
gradients with respect to those rows (no dense ``[rows, dim]`` gradient), and updates their
parameters and moments in place. The semantics differ from dense AdamW in two documented ways:
rows a batch does not touch keep their moments and get no weight decay that step (as
TensorFlow's LazyAdam), and bias correction uses the global step. Everything else (dense layers,
small tables, the temperature) is updated by optax's AdamW as usual, and gradient clipping uses
the global norm over dense and row gradients together.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from modellens_jax.model import ID_TABLES, FeatureSizes, Scorer

B1, B2, EPS = 0.9, 0.999, 1e-8


class LazyMoment(nnx.Variable):
    """Row-wise Adam moment of an embedding table updated lazily (not an optax state)."""


def schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
    """Linear warm-up, then cosine decay to 5% (or constant). An update's fine-tune (``update``)
    sets ``optim.step_offset`` to the optimizer steps it starts from: its schedule starts there."""
    offset = int(config.optim.get("step_offset", 0))
    if offset:
        base = _schedule(config)
        return lambda count: base(count - offset)
    return _schedule(config)


def _schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
    o = config.optim
    steps = max(int(config.train.steps), 1)
    warm = min(int(o.warmup_steps), steps - 1)  # warmup_steps >= 0 (config_check)
    lr = float(o.learning_rate)
    if o.decay == "cosine":
        if warm:
            return optax.warmup_cosine_decay_schedule(0.0, lr, warm, steps, lr * 0.05)
        return optax.cosine_decay_schedule(lr, steps, 0.05)
    if o.decay == "constant":
        if warm:
            return optax.join_schedules(
                [optax.linear_schedule(0.0, lr, warm), optax.constant_schedule(lr)], [warm]
            )
        return optax.constant_schedule(lr)
    raise ValueError(f"config optim.decay={o.decay!r}: expected cosine or constant")


def make_optimizer(config: ml_collections.ConfigDict, *, clip: bool = True):
    """AdamW over the schedule, global-norm clipping first. Weight decay applies to kernels
    and embedding tables (ndim >= 2), not to biases or the temperature."""

    def decay_mask(params):
        return jax.tree.map(lambda x: x.ndim >= 2, params)

    # optax's b1, b2, eps defaults are B1, B2, EPS (tests/test_optim.py checks they stay so)
    adamw = optax.adamw(schedule(config), weight_decay=float(config.optim.weight_decay),
                        mask=decay_mask)  # fmt: skip
    if not clip:
        return adamw
    return optax.chain(optax.clip_by_global_norm(float(config.optim.clip_norm)), adamw)


def _tables(model: Scorer) -> dict[str, nnx.Embed]:
    return {n: getattr(model, n) for n in ID_TABLES if hasattr(model, n)}


def _is_table(path, _) -> bool:
    return len(path) >= 2 and path[0] in ID_TABLES and path[-1] == "embedding"


TABLE_FILTER = nnx.All(nnx.Param, _is_table)
DENSE_FILTER = nnx.All(nnx.Param, nnx.Not(_is_table))


def create(
    config: ml_collections.ConfigDict, sizes: FeatureSizes, *, seed: int | None = None
) -> tuple[Scorer, nnx.Optimizer]:
    """The scorer and its optimizer, as training, export and evaluation all rebuild them."""
    model = Scorer(config.model, sizes, rngs=nnx.Rngs(int(config.seed if seed is None else seed)))
    if bool(config.optim.sparse_embeddings):
        for table in _tables(model).values():
            table.mu = LazyMoment(jnp.zeros_like(table.embedding[...]))
            table.nu = LazyMoment(jnp.zeros_like(table.embedding[...]))
        opt = nnx.Optimizer(model, make_optimizer(config, clip=False), wrt=DENSE_FILTER)
    else:
        opt = nnx.Optimizer(model, make_optimizer(config), wrt=nnx.Param)
    return model, opt


def strip_lazy_moments(model: Scorer) -> Scorer:
    """Removes the sparse optimizer's moments from ``model`` (in place), leaving only what
    inference and export need."""
    for table in _tables(model).values():
        for name in ("mu", "nu"):
            if hasattr(table, name):
                delattr(table, name)
    return model


def _unique_rows(ids: jax.Array, num_rows: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(row ids [K], new ids shaped like ``ids``, valid [K]) with row 0 always at position 0;
    K = min(ids.size + 1, num_rows) (fixed), unused positions (after the sorted rows) hold
    ``num_rows`` and are invalid. The new ids are a binary search of ``ids`` in the row ids, an
    elementwise map that keeps the batch's sharding (an inverse from ``unique`` would be
    replicated and make every device run the whole batch's model side)."""
    flat = jnp.concatenate([jnp.zeros((1,), ids.dtype), ids.reshape(-1)])
    k = min(flat.shape[0], num_rows)
    uids = jnp.unique(flat, size=k, fill_value=num_rows)
    new_ids = jnp.searchsorted(uids, ids, method="scan_unrolled").astype(jnp.int32)
    return uids, new_ids, uids < num_rows


def sparse_update(
    model: Scorer,
    opt: nnx.Optimizer,
    batch: dict[str, jax.Array],
    loss_fn: Callable[[Scorer, dict[str, jax.Array]], tuple[jax.Array, Any]],
    config: ml_collections.ConfigDict,
) -> tuple[jax.Array, Any, jax.Array]:
    """One optimisation step with lazy row updates of the big tables (in place on ``model`` and
    ``opt``). Returns (loss, aux, global gradient norm before clipping)."""
    tables = _tables(model)
    batch = dict(batch)
    plans = {}
    for name in tables:
        key = ID_TABLES[name]
        ids = batch[key]
        if key == "name_tokens":
            ids = jnp.where(batch["name_mask"], ids, 0)
        num_rows = tables[name].embedding[...].shape[0]
        uids, new_ids, valid = _unique_rows(ids, num_rows)
        plans[name] = (jnp.minimum(uids, num_rows - 1), valid)
        batch[key] = new_ids
    graph, dense, tbl, rest = nnx.split(model, DENSE_FILTER, TABLE_FILTER, ...)
    rows = jax.tree.map(lambda x: x, tbl)
    for name, (uids, _) in plans.items():
        rows[name]["embedding"] = tbl[name]["embedding"][uids]

    def f(dense, rows):
        return loss_fn(nnx.merge(graph, dense, rows, rest), batch)

    (loss, aux), (g_dense, g_rows) = jax.value_and_grad(f, argnums=(0, 1), has_aux=True)(
        dense, rows
    )
    norm = optax.tree.norm((g_dense, g_rows))
    scale = jnp.minimum(1.0, float(config.optim.clip_norm) / jnp.maximum(norm, 1e-12))
    opt.update(model, jax.tree.map(lambda g: g * scale, g_dense))
    t = opt.step[...].astype(jnp.float32)  # already incremented by the dense update
    lr = schedule(config)(opt.step[...] - 1)
    wd = float(config.optim.weight_decay)
    for name, (uids, valid) in plans.items():
        table = tables[name]
        g = g_rows[name]["embedding"] * scale
        p = rows[name]["embedding"]
        mu = B1 * table.mu[...][uids] + (1 - B1) * g
        nu = B2 * table.nu[...][uids] + (1 - B2) * g * g
        step = (mu / (1 - B1**t)) / (jnp.sqrt(nu / (1 - B2**t)) + EPS) + wd * p
        idx = jnp.where(valid, uids, table.embedding[...].shape[0])  # drop the fill rows
        table.embedding[...] = table.embedding[...].at[idx].set(p - lr * step, mode="drop")
        table.mu[...] = table.mu[...].at[idx].set(mu, mode="drop")
        table.nu[...] = table.nu[...].at[idx].set(nu, mode="drop")
    return loss, aux, norm
