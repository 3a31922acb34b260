"""The training loop: ``python -m modellens_jax.train --config=configs/default.py --workdir=DIR``.

Setup order matters and is marked by banners: data (compiled corpus + frozen embeddings) ->
mesh -> model and optimizer (split once into a graphdef and a state pytree) -> shardings ->
restore (config and corpus checked first) -> jitted step (donated state, explicit shardings)
-> loop with device-prefetched input, periodic validation, checkpoints and metric writing.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from modellens_jax import checkpointing, cli, config_check, jobguard, rundir, sharding, train_state
from modellens_jax.data import pipeline
from modellens_jax.jobguard import TrainingDiverged
from modellens_jax.metric_writer import MetricWriter
from modellens_jax.train_state import DevicePrefetch, acc_zeros

Validate = Callable[[Callable[[dict], np.ndarray], Any], "tuple[float, dict]"]
# (graphdef, freshly initialised state, state shardings) -> the state a run without checkpoints
# starts from (``update`` passes the parent run's state, its tables extended).
InitialState = Callable[[Any, Any, Any], Any]


# --- the loop -----------------------------------------------------------------------------------
@dataclasses.dataclass
class TrainResult:
    step: int
    state: Any
    graphdef: Any
    history: list[dict[str, Any]]
    best: dict[str, Any] | None
    compiles: int
    stopped_early: bool = False


def _host_scores(x: jax.Array) -> np.ndarray:
    """A replicated (possibly multi-process) array as numpy: every process holds it whole."""
    return np.asarray(x.addressable_data(0))


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str | Path, *, verbose: bool = True,
    stop_after: int | None = None, validate: Validate | None = None,
    initial_state: InitialState | None = None,
) -> TrainResult:  # fmt: skip
    """Trains (resuming from ``workdir`` if it holds checkpoints); ``stop_after`` simulates an
    interruption after that many steps of this call (tests). ``validate(scorer, tables) ->
    (judge, results)`` scores the validation split (default: ``evaluate.validator`` with the
    config's ``train.judge``); it drives checkpoint selection and early stopping.
    ``initial_state`` replaces the random initialisation when there is no checkpoint to resume.

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
    if validate is None:
        from modellens_jax import evaluate

        validate = evaluate.validator(str(config.train.judge))
    with lock, jobguard.StopSignals() as stop:
        result = _train_and_evaluate(config, workdir, say, verbose, stop_after, stop, validate,
                                     initial_state)  # fmt: skip
        if result.step >= int(config.train.steps) or result.stopped_early:
            fit_cold_start(config, workdir, say)
        return result


def fit_cold_start(config: ml_collections.ConfigDict, workdir: Path, say=print) -> None:
    """Fits the cold-start prior (``cold_start.fit``) to the run's best checkpoint on its
    validation split and writes ``WORKDIR/cold_start.json`` (every process fits, the same way;
    process 0 writes). With ``cold_start.fit`` off, no prior is written (and an old one goes)."""
    from modellens_jax import cold_start, evaluate

    path = workdir / cold_start.FILE
    if not config.cold_start.fit:
        if jax.process_index() == 0:
            path.unlink(missing_ok=True)
        return
    t0 = time.perf_counter()
    run = rundir.restore(workdir)
    cs = cold_start.fit(
        evaluate.ModelScorer(run.graphdef, run.state, run.mesh), run.tables,
        evaluate.validator(str(config.train.judge), cold_start.COLD_SETTINGS),
        **cold_start.grids(config),
    )  # fmt: skip
    cs = dataclasses.replace(cs, fit={**cs.fit, "step": run.step})
    if jax.process_index() == 0:
        cold_start.save(workdir, cs)
    say(f"cold-start prior fitted to step {run.step} in {time.perf_counter() - t0:.0f}s: "
        f"{cold_start.describe(cs)}")  # fmt: skip


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
                        stop: jobguard.StopSignals, validate: Validate,
                        initial_state: InitialState | None = None) -> TrainResult:  # fmt: skip
    workdir.mkdir(parents=True, exist_ok=True)

    # --- data ----------------------------------------------------------------------------
    corpus, tables = rundir.load_data(config, workdir, verbose=verbose)
    sizes = train_state.feature_sizes(config, tables)

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
    graphdef, state, state_sh = train_state.init_state(
        config, sizes, mesh, train_state.untrained_rows(sizes, tables)
    )
    if initial_state is not None:
        state = initial_state(graphdef, state, state_sh)

    # --- data stream -----------------------------------------------------------------------
    # Feature tables on the devices (loaded once): batches then carry row indices only.
    dev_tables = (train_state.device_tables(tables, mesh)
                  if config.input.get("device_tables", False) else None)  # fmt: skip
    max_groups = int(config.input.get("max_groups_per_batch", 0))
    ds, _ = pipeline.train_dataset(
        tables, rows=rows // n_proc, list_size=L, pack=bool(config.input.pack),
        seed=int(config.seed), process_index=jax.process_index(), process_count=n_proc,
        num_models=num_models // n_proc, num_groups=max_groups // n_proc,
        worker_count=int(config.input.worker_count), slot_block=block,
        records=rundir.finetune_records(corpus),
        device_tables=dev_tables is not None,
        blocks=max(1, sharding.batch_blocks(config, int(mesh.shape["data"])) // n_proc),
    )  # fmt: skip
    it = iter(ds)

    # --- restore -------------------------------------------------------------------------
    config_json = config.to_json_best_effort()
    meta = rundir.checkpoint_meta(config, corpus)
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
    weights = train_state.loss_weights(config)
    base_key = jax.random.key(int(config.seed))
    repl = sharding.replicated(mesh)
    step_fn = train_state.jit_train_step(graphdef, config, mesh, state_sh,
                                         tables=dev_tables is not None)  # fmt: skip
    step_extra = () if dev_tables is None else (dev_tables,)
    score_fn = train_state.jit_score(graphdef, mesh, state_sh)

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
    acc = jax.device_put(acc_zeros(), repl)
    last_data_state = None
    t_window, wait_window, fill_real, fill_all = time.perf_counter(), 0.0, 0, 0
    t_start = time.perf_counter()
    compiles_after_warmup = None
    final_step = start
    interrupted: str | None = None
    stop_early = False
    if start == 0 and bool(config.train.eval_at_start):  # the curve's starting point
        judge0, res0 = validate(model_scorer, tables)
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
            state, acc = step_fn(state, acc, batch, weights, base_key, *step_extra)
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
            acc = jax.device_put(acc_zeros(), repl)
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
                judge, res = validate(model_scorer, tables)
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
        rundir.write_summary(workdir, {"step": final_step, "best": best, "compiles": compiles})
    return TrainResult(final_step, state, graphdef, history, best, compiles, stop_early)


# --- command --------------------------------------------------------------------------------
def _define(fv) -> None:
    from absl import flags

    from modellens_jax import distributed

    cli.config_flag(fv)
    flags.DEFINE_string("workdir", None, "Run directory (checkpoints, metrics, corpus).",
                        required=True, flag_values=fv)  # fmt: skip
    distributed.define_flags(fv)


def _run(fv) -> None:
    from modellens_jax import distributed

    distributed.initialize_from_flags(fv)
    train_and_evaluate(fv.config, fv.workdir)


main = cli.command(_define, _run, __doc__)

if __name__ == "__main__":
    sys.exit(main())
