"""The trainer's state and step, built once for every program that trains or scores:
feature sizes, the (model, optimizer) state created straight into its shardings or abstractly
(restore targets), the jitted train step (one member or a vmapped stack of members), the score
function, the step's metric accumulators and the device prefetch of its input."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from modellens_jax import checkpointing, losses, optim, sharding
from modellens_jax.data import pipeline
from modellens_jax.model import FeatureSizes, zero_rows


def feature_sizes(
    config: ml_collections.ConfigDict, tables: pipeline.FeatureTables
) -> FeatureSizes:
    """The table sizes of the scorer for ``tables`` (vocabularies, ID counts, embedding dims)."""
    c = tables.corpus
    return FeatureSizes(
        num_model_ids=int(np.max(c["model_id"])) + 1,
        name_buckets=int(config.data.name_buckets),
        num_size_buckets=len(config.data.size_edges) + 2,
        num_families=len(c.vocab["families"]),
        num_dataset_ids=int(np.max(c["dataset_id"])) + 1,
        num_tasks=len(c.vocab["tasks"]),
        num_metrics=len(c.vocab["metrics"]),
        model_desc_dim=int(tables.model_desc.shape[1]),
        dataset_desc_dim=int(tables.dataset_desc.shape[1]),
        competence_dim=0 if tables.competence is None else int(tables.competence.shape[1]),
    )


def loss_weights(config: ml_collections.ConfigDict) -> dict[str, jax.Array]:
    """Loss weights as arrays (traced, so sweep points share one compiled step)."""
    w = config.loss.weights
    return {k: jnp.float32(w[k]) for k in ("listwise", "pairwise", "pointwise")}


def make_train_step(graphdef, config: ml_collections.ConfigDict):
    """The pure step: (state, acc, batch, weights, base_key, rates=None) -> (state, acc).

    ``weights`` (loss weights) and ``rates`` (dropout / ID-dropout overrides) are arrays, so
    sweep points share one compiled step and ``jax.vmap`` trains several members at once."""
    loss_cfg = config.loss
    pl_reduction, pl_ties = str(loss_cfg.pl_reduction), str(loss_cfg.pl_ties)
    bpr_weighting, cap = str(loss_cfg.bpr_weighting), float(loss_cfg.bpr_weight_cap)
    sparse = bool(config.optim.sparse_embeddings)

    def step(state, acc, batch, weights, base_key, rates=None):
        model, opt = nnx.merge(graphdef, state)
        key = jax.random.fold_in(base_key, opt.step[...])

        def loss_fn(model, batch):
            out = model(batch, train=True, key=key, rates=rates)
            return losses.ranking_loss(
                out["score"], out["z_hat"], batch, weights=weights, pl_reduction=pl_reduction,
                pl_ties=pl_ties, bpr_weighting=bpr_weighting, bpr_weight_cap=cap,
            )  # fmt: skip

        if sparse:
            loss, comps, grad_norm = optim.sparse_update(model, opt, batch, loss_fn, config)
        else:
            (loss, comps), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model, batch)
            opt.update(model, grads)
            grad_norm = optax.tree.norm(grads)
        new = {
            **comps,
            "loss_sum": loss,
            "loss_count": jnp.float32(1),
            "grad_norm_sum": grad_norm,
            "records": jnp.sum(batch["mask"]).astype(jnp.float32),
            # A finite loss with non-finite gradients still poisons the parameters.
            "nonfinite": (~(jnp.isfinite(loss) & jnp.isfinite(grad_norm))).astype(jnp.float32),
            "steps": jnp.float32(1),
        }
        acc = {k: acc[k] + jnp.asarray(v, jnp.float32) for k, v in new.items()}
        return nnx.state((model, opt)), acc

    return step


def make_score_fn(graphdef):
    """(state, batch) -> scores, inference mode (no dropout, no ID dropout)."""

    def score(state, batch):
        model, _ = nnx.merge(graphdef, state)
        return model(batch, train=False)["score"]

    return score


class DevicePrefetch:
    """Pulls batches on a background thread and places them on the mesh ahead of the step.

    Each item carries the iterator state *after* its batch, so a checkpoint taken after
    consuming batch k resumes at batch k + 1 no matter how far the prefetch ran ahead."""

    def __init__(self, iterator, mesh, size: int = 2):
        self.it, self.mesh = iterator, mesh
        self.q: queue.Queue = queue.Queue(maxsize=max(size, 1))
        self.stop = threading.Event()
        self.host_seconds = 0.0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            while not self.stop.is_set():
                t0 = time.perf_counter()
                b = next(self.it)
                state = self.it.get_state()
                n_real = int(b["mask"].sum())
                dev = sharding.to_global(b, self.mesh)
                self.host_seconds += time.perf_counter() - t0
                while not self.stop.is_set():
                    try:
                        self.q.put((dev, state, n_real, b["mask"].size), timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except BaseException as e:  # surfaced on the consumer side
            self.q.put(e)

    def next(self):
        item = self.q.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self):
        self.stop.set()
        self.thread.join(timeout=5)


ACC_KEYS = ("loss_sum", "loss_count", "grad_norm_sum", "records", "nonfinite", "steps",
            "listwise_sum", "listwise_count", "pairwise_sum", "pairwise_count",
            "pointwise_sum", "pointwise_count")  # fmt: skip


def acc_zeros(keys=ACC_KEYS) -> dict[str, jax.Array]:
    return {k: jnp.zeros((), jnp.float32) for k in keys}


def abstract_state(config: ml_collections.ConfigDict, sizes: FeatureSizes, mesh: jax.sharding.Mesh):
    """(graphdef, abstract state bound to its shardings on ``mesh``): the model and optimizer
    as ``optim.create`` builds them, without allocating (restore targets for evaluate/export)."""
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: optim.create(config, sizes)))
    return graphdef, checkpointing.abstract_like(abstract, sharding.state_shardings(abstract, mesh))


def init_state(
    config: ml_collections.ConfigDict,
    sizes: FeatureSizes,
    mesh: jax.sharding.Mesh,
    untrained: Mapping[str, np.ndarray] | None = None,
):
    """(graphdef, state, state shardings): the model and optimizer built abstractly, then created
    by one jitted function straight into their shardings (no per-op eager compiles, no
    single-device copy of a large table). ``untrained`` rows start at zero (``zero_rows``)."""
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: optim.create(config, sizes)))
    state_sh = sharding.state_shardings(abstract, mesh)

    def create():
        model, opt = optim.create(config, sizes)
        zero_rows(model, untrained or {})
        return nnx.split((model, opt))[1]

    state = jax.jit(create, out_shardings=state_sh)()
    return graphdef, state, state_sh


def untrained_rows(sizes: FeatureSizes, tables: pipeline.FeatureTables) -> dict[str, np.ndarray]:
    """The embedding rows no training record reaches (``FeatureTables.untrained_rows``)."""
    return tables.untrained_rows(sizes.name_buckets, sizes.num_size_buckets)


def device_tables(tables: pipeline.FeatureTables, mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
    """The feature tables on the mesh, loaded once (replicated), for steps whose batches carry
    row indices only: every model input by model row, every context input by group row (the
    dataset description through the group's dataset), competence features by record."""
    t = tables
    d = {f"model/{k}": v for k, v in t.model_cols.items()}
    d["model/model_desc"] = np.asarray(t.model_desc)
    d.update({f"group/{k}": v for k, v in t.group_cols.items()})
    d["group/dataset"] = t.group_dataset.astype(np.int32)
    d["dataset/dataset_desc"] = np.asarray(t.dataset_desc)
    if t.competence is not None:
        d["record/competence"] = t.competence.astype(np.float32)
        d["record/competence_cold"] = t.competence_cold.astype(np.float32)
    return jax.device_put(d, sharding.replicated(mesh))


def expand(tables: Mapping[str, jax.Array], batch: Mapping[str, jax.Array]) -> dict:
    """A device-tables batch (``pipeline.ROW_KEYS``) with its rows gathered from ``tables``:
    the same arrays the host would have built."""
    out = {k: v for k, v in batch.items() if k not in pipeline.ROW_KEYS}
    m, g = batch["model_row"], batch["group_row"]
    for key, table in tables.items():
        kind, name = key.split("/")
        if kind == "model":
            out[name] = table[m]
        elif kind == "group" and name != "dataset":
            out[name] = table[g]
        elif kind == "record":
            mask = batch["mask"][..., None]
            out[name] = jnp.where(mask, table[batch["record"]], jnp.zeros((), table.dtype))
    out["dataset_desc"] = tables["dataset/dataset_desc"][tables["group/dataset"][g]]
    return out


def jit_train_step(graphdef, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                   state_sh, *, members: bool = False, member_keys: bool = False,
                   tables: bool = False):  # fmt: skip
    """The jitted step on ``mesh``: state sharded by ``state_sh`` and donated with the
    accumulators, the batch split over the data axis. ``members`` vmaps it over a leading member
    axis of state, accumulators, loss weights and rates (``(state, acc, batch, weights, key,
    rates)``), so N ablation members train in one program; ``member_keys`` gives the key a
    member axis too (seed members: their own dropout and ID-dropout draws). ``tables``: the
    batch carries row indices and the step takes the ``device_tables`` as a last argument and
    gathers the rows (``expand``); not with ``members``."""
    repl, batch_sh = sharding.replicated(mesh), sharding.batch_sharding(mesh)
    step = make_train_step(graphdef, config)
    shardings = (state_sh, repl, batch_sh, repl, repl)
    if tables:
        if members:
            raise ValueError("device tables are for the single step (members take host batches)")
        inner = step

        def step(state, acc, batch, weights, base_key, tabs):
            return inner(state, acc, expand(tabs, batch), weights, base_key)

        shardings = (*shardings, repl)
    if members:
        step = jax.vmap(step, in_axes=(0, 0, None, 0, 0 if member_keys else None, 0))
        shardings = (*shardings, repl)
    return jax.jit(step, in_shardings=shardings, out_shardings=(state_sh, repl),
                   donate_argnums=(0, 1))  # fmt: skip


def jit_score(graphdef, mesh: jax.sharding.Mesh, state_sh=None):
    """The jitted inference function ``(state, batch) -> scores``, scores replicated; the state
    keeps the shardings it has unless ``state_sh`` is given (the batch follows its placement)."""
    repl = sharding.replicated(mesh)
    kw = {} if state_sh is None else {"in_shardings": (state_sh, repl)}
    return jax.jit(make_score_fn(graphdef), out_shardings=repl, **kw)
