"""The training loop: ``python -m modellens_jax.train --config=configs/default.py --workdir=DIR``.

Setup order matters and is marked by banners: data (compiled corpus + frozen embeddings) ->
mesh -> model and optimizer (split once into a graphdef and a state pytree) -> shardings ->
restore (config and corpus checked first) -> jitted step (donated state, explicit shardings)
-> loop with device-prefetched input, periodic validation, checkpoints and metric writing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import queue
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from modellens_jax import checkpointing, config_check, evaluate, jobguard, losses, optim, sharding
from modellens_jax.data import corpus as corpus_lib
from modellens_jax.data import pipeline, splits
from modellens_jax.metric_writer import MetricWriter
from modellens_jax.model import FeatureSizes, zero_rows

STRUCTURAL_SECTIONS = ("data", "embed", "model", "loss", "input", "optim", "seed")


class TrainingDiverged(RuntimeError):
    """A non-finite loss; the last good checkpoint is left intact."""


def config_hash(config: ml_collections.ConfigDict) -> str:
    """Hash of the config sections that must match for a checkpoint to resume.

    ``train.steps`` is not in it (extending a run is allowed), but a resume with another
    ``steps`` is announced and recorded (``steps_changes`` in the checkpoint metadata): under
    cosine decay it changes the learning-rate schedule of the steps still to run."""
    d = json.loads(config.to_json_best_effort())
    sub = {k: d[k] for k in STRUCTURAL_SECTIONS if k in d}
    return hashlib.sha256(json.dumps(sub, sort_keys=True).encode()).hexdigest()[:16]


# --- data ---------------------------------------------------------------------------------------
def load_data(config: ml_collections.ConfigDict, workdir: str | Path, *, verbose: bool = True):
    """The compiled corpus under ``workdir/corpus`` (prepared if absent) and its feature tables
    (frozen description embeddings computed or taken from the cache if absent)."""
    cdir = Path(workdir) / "corpus"
    # Process 0 decides and prepares; every process passes the barrier (a process deciding on
    # its own could see the corpus process 0 just wrote and skip a barrier process 0 waits at).
    if jax.process_index() == 0 and not (cdir / "manifest.json").exists():
        from modellens_jax import prepare

        prepare.prepare(config.data, cdir, verbose=verbose)
    _barrier("prepare")
    corpus = corpus_lib.load_corpus(cdir)
    m_cfg = config.model
    need = m_cfg.use_model_desc or m_cfg.use_dataset_desc
    if need:
        from modellens_jax import embed

        if jax.process_index() == 0 and not (cdir / "embeddings" / "manifest.json").exists():
            embed.embed_corpus(cdir, encoder=config.embed.encoder, dtype=config.embed.dtype,
                               batch_size=config.embed.batch_size,
                               max_length=config.embed.max_length, verbose=verbose)  # fmt: skip
        _barrier("embed")
        model_desc, dataset_desc = embed.load_corpus_embeddings(cdir)
    if not (need and m_cfg.use_model_desc):
        model_desc = np.zeros((len(corpus.model_names), 0), np.float32)
    if not (need and m_cfg.use_dataset_desc):
        dataset_desc = np.zeros((len(corpus.vocab["datasets"]), 0), np.float32)
    tables = pipeline.FeatureTables(corpus, model_desc, dataset_desc)
    if m_cfg.get("use_competence", False):
        tables.attach_competence()
    return corpus, tables


def _barrier(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def feature_sizes(
    config: ml_collections.ConfigDict, tables: pipeline.FeatureTables
) -> FeatureSizes:
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


# --- model, optimizer, step ---------------------------------------------------------------------
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


# --- input prefetch -----------------------------------------------------------------------------
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


# --- the loop -----------------------------------------------------------------------------------
@dataclasses.dataclass
class TrainResult:
    step: int
    state: Any
    graphdef: Any
    history: list[dict[str, Any]]
    best: dict[str, Any] | None
    compiles: int


ACC_KEYS = ("loss_sum", "loss_count", "grad_norm_sum", "records", "nonfinite", "steps",
            "listwise_sum", "listwise_count", "pairwise_sum", "pairwise_count",
            "pointwise_sum", "pointwise_count")  # fmt: skip


def _acc_zeros(keys=ACC_KEYS) -> dict[str, jax.Array]:
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


def _host_scores(x: jax.Array) -> np.ndarray:
    """A replicated (possibly multi-process) array as numpy: every process holds it whole."""
    return np.asarray(x.addressable_data(0))


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str | Path, *, verbose: bool = True,
    stop_after: int | None = None,
) -> TrainResult:  # fmt: skip
    """Trains (resuming from ``workdir`` if it holds checkpoints); ``stop_after`` simulates an
    interruption after that many steps of this call (tests).

    The config is validated first (``config_check.ConfigError``); the workdir is locked for the
    run (``jobguard.WorkdirLocked`` if another job holds it). SIGTERM / SIGINT finish the
    current step, save its checkpoint, wait for every save and raise ``jobguard.Interrupted``;
    a checkpoint that cannot be written raises ``checkpointing.CheckpointWriteError``."""
    config_check.validate(config, process_count=jax.process_count())
    workdir = Path(workdir)
    say = print if (verbose and jax.process_index() == 0) else (lambda *a, **k: None)
    lock = jobguard.WorkdirLock(
        workdir, "train", enabled=jax.process_index() == 0,
        say=lambda m: print(m, file=sys.stderr, flush=True),
    )  # fmt: skip
    with lock, jobguard.StopSignals() as stop:
        return _train_and_evaluate(config, workdir, say, verbose, stop_after, stop)


def _stop_requested(stop: jobguard.StopSignals) -> str | None:
    """The signal that asked this run to stop (agreed over processes: any one's counts)."""
    if jax.process_count() == 1:
        return stop.requested
    from jax.experimental import multihost_utils

    names = jobguard.StopSignals.SIGNALS
    code = names.index(stop.requested) + 1 if stop.requested else 0
    got = int(np.max(multihost_utils.process_allgather(np.int32(code))))
    return names[got - 1] if got else None


def _train_and_evaluate(config, workdir: Path, say, verbose: bool, stop_after: int | None,
                        stop: jobguard.StopSignals) -> TrainResult:  # fmt: skip
    workdir.mkdir(parents=True, exist_ok=True)

    # --- data ----------------------------------------------------------------------------
    corpus, tables = load_data(config, workdir, verbose=verbose)
    sizes = feature_sizes(config, tables)

    # --- mesh ----------------------------------------------------------------------------
    mesh = sharding.make_mesh(int(config.mesh.data), int(config.mesh.model))
    n_proc = jax.process_count()
    rows = int(config.input.groups_per_batch)  # divisibility: config_check.validate
    L = int(config.input.list_size)
    num_models = int(config.input.max_models_per_batch) or rows * L
    # Where this process's rows sit in the global batch (the models/groups blocks are the
    # concatenation of the process-local blocks in this order; slot offsets follow it).
    block, _ = sharding.process_block(mesh, rows)
    say(f"mesh {dict(mesh.shape)} on {mesh.devices.size} of {jax.device_count()} devices, "
        f"{n_proc} process(es)")  # fmt: skip

    # --- model and optimizer ---------------------------------------------------------------
    graphdef, state, state_sh = init_state(config, sizes, mesh, untrained_rows(sizes, tables))

    # --- data stream -----------------------------------------------------------------------
    max_groups = int(config.input.get("max_groups_per_batch", 0))
    ds, _ = pipeline.train_dataset(
        tables, rows=rows // n_proc, list_size=L, pack=bool(config.input.pack),
        seed=int(config.seed), process_index=jax.process_index(), process_count=n_proc,
        num_models=num_models // n_proc, num_groups=max_groups // n_proc,
        worker_count=int(config.input.worker_count), slot_block=block,
    )  # fmt: skip
    it = iter(ds)

    # --- restore -------------------------------------------------------------------------
    config_json = config.to_json_best_effort()
    meta = {
        "config_hash": config_hash(config),
        "corpus_fingerprint": corpus.fingerprint,
        "process_count": n_proc,
        "worker_count": int(config.input.worker_count),
    }
    ckpt = checkpointing.Checkpointer(
        workdir / "checkpoints", keep_latest=int(config.train.keep_latest),
        keep_best=int(config.train.keep_best), judge="judge",
    )  # fmt: skip
    history: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    evals_since_best = 0
    start = 0
    try:
        restored = ckpt.restore(
            checkpointing.abstract_like(state, state_sh), meta, config_json=config_json, say=say
        )
    except BaseException:
        ckpt.close()
        raise
    if restored is not None:
        start, state, data_state, saved = restored
        it.set_state(data_state)
        loop = saved.get("loop") or {}
        best, evals_since_best = loop.get("best"), int(loop.get("evals_since_best", 0))
        say(f"resumed from step {start} ({workdir / 'checkpoints'})")
        steps_changes = list(saved.get("steps_changes", []))
        try:
            saved_steps = int(json.loads(saved.get("config") or "{}")["train"]["steps"])
        except (KeyError, TypeError, ValueError):
            saved_steps = None
        now_steps = int(config.train.steps)
        if saved_steps is not None and saved_steps != now_steps:
            steps_changes.append({"at_step": start, "from": saved_steps, "to": now_steps})
            sched = ("the cosine learning-rate schedule now decays over the new total, so the "
                     "run differs from a straight one" if config.optim.decay == "cosine"
                     else "the schedule does not depend on it")  # fmt: skip
            if jax.process_index() == 0:
                print(f"warning: train.steps changed from {saved_steps} to {now_steps} on resume "
                      f"at step {start}: {sched} (recorded as steps_changes in the checkpoint "
                      "metadata)", file=sys.stderr, flush=True)  # fmt: skip
        if start >= now_steps:
            say(f"nothing to do: the checkpoint is at step {start} >= train.steps={now_steps}")
        meta["steps_changes"] = steps_changes
    if jax.process_index() == 0:
        (workdir / "config.json").write_text(config.to_json_best_effort(indent=1))

    # --- step ------------------------------------------------------------------------------
    weights = loss_weights(config)
    base_key = jax.random.key(int(config.seed))
    repl = sharding.replicated(mesh)
    batch_sh = sharding.batch_sharding(mesh)
    step_fn = jax.jit(
        make_train_step(graphdef, config),
        in_shardings=(state_sh, repl, batch_sh, repl, repl),
        out_shardings=(state_sh, repl),
        donate_argnums=(0, 1),
    )
    score_fn = jax.jit(make_score_fn(graphdef), in_shardings=(state_sh, repl), out_shardings=repl)

    def model_scorer(batch):
        return _host_scores(score_fn(state, sharding.to_replicated(batch, mesh)))

    def save(step: int, metrics: dict[str, float] | None) -> None:
        finite, checksums = checkpointing.state_audit(state)
        if not finite:  # never write a poisoned state: the last good checkpoint stays newest
            raise TrainingDiverged(
                f"non-finite parameters at step {step}; not saved. The last good checkpoint "
                f"({ckpt.steps()[-1:] or 'none'}) is intact."
            )
        loop = {"best": best, "evals_since_best": evals_since_best}
        ckpt.save(step, state, last_data_state, {
            **meta, "step": step, "mesh": dict(mesh.shape), "config": config_json,
            "loop": json.loads(json.dumps(loop, default=float)), "checksums": checksums,
        }, None if metrics is None else {**metrics, "step": step})  # fmt: skip

    logging.getLogger("tensorboardX").setLevel(logging.WARNING)  # tag-renaming chatter
    writer = MetricWriter(workdir)
    total = int(config.train.steps)
    end = total if stop_after is None else min(total, start + stop_after)
    prefetch = DevicePrefetch(it, mesh, int(config.input.prefetch))
    acc = jax.device_put(_acc_zeros(), repl)
    last_data_state = None
    t_window, wait_window, fill_real, fill_all = time.perf_counter(), 0.0, 0, 0
    t_start = time.perf_counter()
    compiles_after_warmup = None
    final_step = start
    interrupted: str | None = None
    if start == 0 and bool(config.train.eval_at_start):  # the curve's starting point
        res0 = evaluate.evaluate_settings(model_scorer, tables, splits.VAL)
        judge0 = evaluate.judge_value(res0, str(config.train.judge))
        writer.write(0, {"val/judge": judge0,
                         **{f"val/{s}/{k}": v for s, r in res0.items() for k, v in r.items()}})  # fmt: skip
        history.append({"step": 0, "judge": judge0})
        say(f"  val {config.train.judge} before training: mean {judge0:.4f}")
        t_window = t_start = time.perf_counter()
    try:
        for step in range(start + 1, end + 1):
            t0 = time.perf_counter()
            batch, data_state, n_real, n_all = prefetch.next()
            wait_window += time.perf_counter() - t0
            fill_real, fill_all = fill_real + n_real, fill_all + n_all
            state, acc = step_fn(state, acc, batch, weights, base_key)
            last_data_state = data_state
            if step == start + 1:
                compiles_after_warmup = step_fn._cache_size()
            interrupted = _stop_requested(stop)  # finish this step, save it, stop
            log_now = step % int(config.train.log_every) == 0 or step == end
            eval_now = step % int(config.train.eval_every) == 0 or step == total
            ckpt_now = (step % int(config.train.checkpoint_every) == 0 or step == end or eval_now
                        or interrupted is not None)  # fmt: skip
            if not (log_now or eval_now or ckpt_now):
                continue
            # --- host sync point: read accumulated sums ----------------------------------
            a = jax.device_get(acc)
            acc = jax.device_put(_acc_zeros(), repl)
            if a["nonfinite"] > 0:
                raise TrainingDiverged(
                    f"non-finite loss or gradients in the {int(a['steps'])} steps ending at step "
                    f"{step}; stopping. The last good checkpoint "
                    f"({ckpt.steps()[-1:] or 'none'}) is intact."
                )
            final_step = step
            now = time.perf_counter()
            dt = now - t_window
            n_steps = max(a["steps"], 1)
            row = {
                "loss": a["loss_sum"] / n_steps,
                "grad_norm": a["grad_norm_sum"] / n_steps,
                "records_per_s": a["records"] / dt,
                "steps_per_s": n_steps / dt,
                "data_wait_frac": wait_window / dt,
                "fill_ratio": fill_real / max(fill_all, 1),
                "compiles": step_fn._cache_size(),
            }
            for k in ("listwise", "pairwise", "pointwise"):
                row[f"loss_{k}"] = a[f"{k}_sum"] / max(a[f"{k}_count"], 1)
            eta = (now - t_start) / max(step - start, 1) * (total - step)
            say(f"step {step}/{total} loss {row['loss']:.4f} (list {row['loss_listwise']:.3f} "
                f"pair {row['loss_pairwise']:.3f} point {row['loss_pointwise']:.3f}) "
                f"{row['records_per_s']:,.0f} rec/s wait {100 * row['data_wait_frac']:.1f}% "
                f"fill {row['fill_ratio']:.2f} ETA {eta:,.0f}s", flush=True)  # fmt: skip
            writer.write(step, {f"train/{k}": v for k, v in row.items()})
            metrics_for_ckpt = None
            if eval_now:
                res = evaluate.evaluate_settings(model_scorer, tables, splits.VAL)
                judge = evaluate.judge_value(res, str(config.train.judge))
                flat = {f"val/{s}/{k}": v for s, r in res.items() for k, v in r.items()}
                flat["val/judge"] = judge
                writer.write(step, flat)
                history.append({"step": step, "judge": judge, **flat, **row})
                say(f"  val {config.train.judge}: " + "  ".join(
                    f"{s} {r.get(config.train.judge, float('nan')):.4f}" for s, r in res.items()) + f"  mean {judge:.4f}")  # fmt: skip
                metrics_for_ckpt = {"judge": judge}
                # NaN (no scorable group) never counts as best, and never blocks a later one.
                if best is None or (np.isfinite(judge) and not judge <= best["judge"]):
                    best, evals_since_best = {"step": step, "judge": judge, "val": res}, 0
                else:
                    evals_since_best += 1
            patience = int(config.train.early_stop_patience)
            stop_early = bool(patience) and evals_since_best >= patience
            if ckpt_now or stop_early:
                save(step, metrics_for_ckpt)
            # The timing window restarts after the host work (eval, checkpoint) so that
            # records/s and data-wait measure training steps only.
            t_window, wait_window, fill_real, fill_all = time.perf_counter(), 0.0, 0, 0
            if interrupted is not None:
                break
            if stop_early:
                say(f"early stop at step {step}: no improvement in {patience} evaluations "
                    f"(best {best['judge']:.4f} at step {best['step']})")  # fmt: skip
                break
    finally:
        prefetch.close()
        try:
            ckpt.close()  # waits for async saves: the next run sees every checkpoint
        finally:
            writer.close()
    if interrupted is not None:
        raise jobguard.Interrupted(
            f"interrupted by {interrupted} at step {final_step}/{total}: checkpoint {final_step} "
            f"saved in {workdir / 'checkpoints'}; rerun the same command to resume",
            final_step, interrupted,
        )  # fmt: skip
    compiles = step_fn._cache_size()
    if compiles_after_warmup is not None and compiles != compiles_after_warmup:
        say(f"warning: the step recompiled after warm-up ({compiles_after_warmup} -> {compiles})")
    if jax.process_index() == 0:
        (workdir / "train_summary.json").write_text(json.dumps(
            {"step": final_step, "best": best, "compiles": compiles}, indent=1, default=float))  # fmt: skip
    return TrainResult(final_step, state, graphdef, history, best, compiles)


# --- command --------------------------------------------------------------------------------
def define_flags() -> None:
    """The command's flags: ``--config`` (+ overrides), ``--workdir`` and the distributed ones."""
    from absl import flags

    from modellens_jax import cli, distributed

    cli.define_config_flag()
    flags.DEFINE_string(
        "workdir", None, "Run directory (checkpoints, metrics, corpus).", required=True
    )
    distributed.define_flags()


def main(argv):
    del argv
    from absl import flags

    from modellens_jax import distributed

    distributed.initialize_from_flags()
    config = flags.FLAGS["config"].value
    workdir = flags.FLAGS["workdir"].value
    return run_guarded(lambda: train_and_evaluate(config, workdir))


def run_guarded(fn) -> int:
    """Runs ``fn`` and maps what clusters do to jobs to one line and an exit status
    (``jobguard``'s table): 3 diverged / refused / unreadable checkpoints, 74 a checkpoint that
    could not be written, 75 stopped by a signal after saving. Usage errors (bad config, locked
    workdir) propagate to ``cli.run`` (exit 2)."""
    try:
        fn()
    except (TrainingDiverged, checkpointing.CheckpointMismatch,
            checkpointing.CheckpointCorrupted) as e:  # fmt: skip
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 3
    except checkpointing.CheckpointWriteError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return jobguard.EXIT_IOERR
    except jobguard.Interrupted as e:
        print(str(e), file=sys.stderr, flush=True)
        return jobguard.EXIT_INTERRUPTED
    return 0


if __name__ == "__main__":
    from modellens_jax import cli

    define_flags()
    cli.run(main)
