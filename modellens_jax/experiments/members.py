"""Vectorised sweeps: N sweep points that differ only in loss weights and dropout rates, trained
as ONE jitted program (``launch/sweep.py --vectorize`` starts it).

``python -m modellens_jax.members --config=configs/default.py --workdir=ROOT
--members='[{"loss.weights.pairwise": 0.5, "model.dropout": 0.1}, ...]'``

Parameters and optimizer state get a leading member axis; the step is the ordinary train step
under ``jax.vmap`` (``train_state.jit_train_step(..., members=True)``) with per-member loss
weights and dropout rates passed as arrays (the scorer takes rates per call), and every member
sees the same batches and the same dropout keys as its separate run would. Seed members
(``seeds=``, the seed ensemble of ``modellens_jax.ensemble``) differ instead in their seed:
each starts from its own initialisation and draws its own dropout and ID-dropout keys, while all
read the one data stream of the base config's seed. Every ``train.eval_every`` steps (and at
the last) each member is validated as ``train`` does and keeps its best state by the
validation judge. At the end each member is written as an ordinary run directory
(``ROOT/<name>/``: config.json, corpus link, its best and last checkpoints, train_summary.json),
so ``evaluate``, ``export`` and the sweep aggregation treat it like any other run.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import flags

from modellens_jax import (
    checkpointing,
    cli,
    config_check,
    ensemble,
    evaluate,
    jobguard,
    rundir,
    sharding,
)
from modellens_jax import train_state as ts
from modellens_jax.data import pipeline, splits

WEIGHT_KEYS = {f"loss.weights.{k}": k for k in ("listwise", "pairwise", "pointwise")}
RATE_KEYS = {f"model.{k}": k for k in ("dropout", "model_id_dropout", "dataset_id_dropout")}
MEMBER_KEYS = frozenset(WEIGHT_KEYS) | frozenset(RATE_KEYS)


def _strip(key: str) -> str:
    return key.removeprefix("config.")


def member_config(config: ml_collections.ConfigDict, overrides: dict[str, Any]):
    """``config`` with one member's overrides applied (what its separate run would use)."""
    c = ml_collections.ConfigDict(config.to_dict())
    for k, v in overrides.items():
        k = _strip(k)
        if k not in MEMBER_KEYS:
            raise cli.UsageError(
                f"member key {k!r} cannot be vectorised (only {sorted(MEMBER_KEYS)}); "
                "run that sweep point as a separate job"
            )
        node = c
        *path, last = k.split(".")
        for p in path:
            node = node[p]
        node[last] = type(node[last])(v)
    return c


def member_name(overrides: dict[str, Any]) -> str:
    return ",".join(f"{_strip(k).rsplit('.', 1)[-1]}={v}" for k, v in overrides.items()) or "base"


def member_arrays(configs: list[ml_collections.ConfigDict]) -> tuple[dict, dict]:
    """Per-member loss weights and rates as [N] float32 arrays."""
    weights = {
        k: jnp.asarray([float(c.loss.weights[k]) for c in configs], jnp.float32)
        for k in WEIGHT_KEYS.values()
    }
    rates = {
        k: jnp.asarray([float(c.model[k]) for c in configs], jnp.float32)
        for k in RATE_KEYS.values()
    }
    return weights, rates


def vectorised(config: ml_collections.ConfigDict, graphdef, state, mesh, n: int, *,
               member_keys: bool = False):  # fmt: skip
    """(stacked state, stacked accumulators, jitted vmapped step) for ``n`` members starting
    from ``state`` (one state, or a list of ``n``: seed members); the step is ``step(state,
    acc, batch, weights, key, rates)`` with a leading member axis on state, accumulators,
    weights and rates (and the key with ``member_keys``)."""
    repl = sharding.replicated(mesh)
    states = state if isinstance(state, list) else [state] * n
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *states)
    state_sh = jax.tree.map(lambda _: repl, stacked)
    vstep = ts.jit_train_step(graphdef, config, mesh, state_sh, members=True,
                              member_keys=member_keys)  # fmt: skip
    acc = jax.tree.map(lambda x: jnp.stack([x] * n), ts.acc_zeros())
    return jax.device_put(stacked, state_sh), jax.device_put(acc, repl), vstep


def train_members(
    config: ml_collections.ConfigDict,
    workdir: str | os.PathLike,
    members: list[dict[str, Any]],
    *,
    names: list[str] | None = None,
    seeds: list[int] | None = None,
    verbose: bool = True,
) -> list[Any]:
    """Trains every member for ``config.train.steps`` in one program; returns their best
    states (by the validation judge). Member ``i`` is written to ``ROOT/names[i]`` (default:
    ``member_name(members[i])``); ``seeds[i]`` (seed members) is its seed for initialisation
    and dropout keys, the data stream staying the base config's."""
    names = names or [member_name(m) for m in members]
    if len(names) != len(members) or len(set(names)) != len(names):
        raise cli.UsageError(f"--names must give {len(members)} distinct names, got {names}")
    if seeds is not None and len(seeds) != len(members):
        raise cli.UsageError(f"seeds must give one seed per member ({len(members)}), got {seeds}")
    root = Path(workdir)
    configs = [member_config(config, m) for m in members]
    for i, s in enumerate(seeds or []):
        configs[i].seed = int(s)
    for cfg in [config, *configs]:
        config_check.validate(cfg)
    # Every member's run directory, for the whole job (not the root: a sweep runs several
    # members jobs on one root at once, each with its own members).
    locks = [jobguard.WorkdirLock(root / n, f"members (member {n})") for n in names]
    with contextlib.ExitStack() as stack:
        for lk in locks:
            stack.enter_context(lk)
        return _train_members(config, root, configs, names, verbose, seeds is not None)


def train_ensemble(
    config: ml_collections.ConfigDict, workdir: str | os.PathLike, *, verbose: bool = True
) -> dict[str, Any]:
    """The seed ensemble of ``config`` (``ensemble.members`` members, ``ensemble.member_seeds``)
    trained in one program into ``workdir`` (layout: ``modellens_jax.ensemble``); returns its
    ``ensemble.json``. A finished ensemble of the same config there is reused, not retrained."""
    n = ensemble.size(config)
    if n < 2:
        raise cli.UsageError(f"config ensemble.members={n}: an ensemble needs at least 2 members")
    workdir = Path(workdir)
    if ensemble.finished(workdir, config):
        if verbose:
            print(f"{workdir}: finished ensemble of this config found, reused")
        return ensemble.read_manifest(workdir)
    config_check.validate(config, process_count=jax.process_count())
    seeds = ensemble.member_seeds(config)
    workdir.mkdir(parents=True, exist_ok=True)
    with jobguard.WorkdirLock(workdir, "ensemble"):
        (workdir / ensemble.MANIFEST).unlink(missing_ok=True)  # another config's ensemble
        single = ml_collections.ConfigDict(config.to_dict())
        single.ensemble.members = 1  # each member is an ordinary run
        train_members(single, workdir, [{}] * n, names=ensemble.member_dirs(seeds), seeds=seeds,
                      verbose=verbose)  # fmt: skip
        _fit_cold_start(config, workdir, ensemble.member_dirs(seeds), verbose)
        return ensemble.write_manifest(workdir, config)


def _fit_cold_start(config, workdir: Path, dirs: list[str], verbose: bool) -> None:
    """The ensemble's cold-start prior (``WORKDIR/cold_start.json``), fitted to the members'
    mean score on validation, as ``train.fit_cold_start`` fits a single run's."""
    from modellens_jax import cold_start

    (workdir / cold_start.FILE).unlink(missing_ok=True)
    if not config.cold_start.fit:
        return
    runs = [rundir.restore(workdir / d) for d in dirs]
    first = evaluate.ModelScorer(runs[0].graphdef, runs[0].state, runs[0].mesh)
    scorer = evaluate.EnsembleScorer([first, *(first.with_state(r.state) for r in runs[1:])])
    cs = cold_start.fit(
        scorer, runs[0].tables,
        evaluate.validator(str(config.train.judge), cold_start.COLD_SETTINGS),
        **cold_start.grids(config),
    )  # fmt: skip
    if jax.process_index() == 0:
        cold_start.save(workdir, cs)
    if verbose:
        print(f"cold-start prior of the ensemble: {cold_start.describe(cs)}")


def _train_members(config, root: Path, configs, names, verbose: bool, by_seed: bool) -> list[Any]:
    say = print if (verbose and jax.process_index() == 0) else (lambda *a, **k: None)
    n = len(configs)
    corpus, tables = rundir.load_data(config, root, verbose=verbose)
    sizes = ts.feature_sizes(config, tables)
    mesh = sharding.make_mesh(int(config.mesh.data), int(config.mesh.model))
    rows, L = int(config.input.groups_per_batch), int(config.input.list_size)

    untrained = ts.untrained_rows(sizes, tables)
    graphdef, state, _ = ts.init_state(config, sizes, mesh, untrained)
    if by_seed:  # each member from its own initialisation
        state = [ts.init_state(c, sizes, mesh, untrained)[1] for c in configs]
    stacked, acc, vstep = vectorised(config, graphdef, state, mesh, n, member_keys=by_seed)
    weights, rates = member_arrays(configs)

    ds, _ = pipeline.train_dataset(
        tables, rows=rows, list_size=L, pack=bool(config.input.pack), seed=int(config.seed),
        num_models=int(config.input.max_models_per_batch),
        num_groups=int(config.input.max_groups_per_batch),
    )  # fmt: skip
    prefetch = ts.DevicePrefetch(iter(ds), mesh, int(config.input.prefetch))
    keys = [jax.random.key(int(c.seed)) for c in configs]
    base_key = jnp.stack(keys) if by_seed else jax.random.key(int(config.seed))
    total, every = int(config.train.steps), int(config.train.eval_every)
    judge_name = str(config.train.judge)
    scorer = evaluate.ModelScorer(graphdef, jax.tree.map(lambda x: x[0], stacked), mesh)
    best: list[dict[str, Any] | None] = [None] * n  # {step, judge, val, state, data_state}
    t0 = time.perf_counter()
    try:
        for s in range(1, total + 1):
            batch, data_state, *_ = prefetch.next()
            stacked, acc = vstep(stacked, acc, batch, weights, base_key, rates)
            if s % int(config.train.log_every) == 0 or s == total:
                a = jax.device_get(acc)
                losses = a["loss_sum"] / np.maximum(a["steps"], 1)
                say(f"step {s}/{total} member losses {np.round(losses, 4).tolist()} "
                    f"{s / (time.perf_counter() - t0):.2f} steps/s")  # fmt: skip
                acc = jax.tree.map(jnp.zeros_like, acc)
            if s % every == 0 or s == total:  # validate every member as train does
                for i in range(n):
                    # a slice is a new buffer: it outlives the donated stack
                    st = jax.tree.map(lambda x, i=i: x[i], stacked)
                    res = evaluate.evaluate_settings(scorer.with_state(st), tables, splits.VAL)
                    judge = evaluate.judge_value(res, judge_name)
                    b = best[i]
                    if b is None or (np.isfinite(judge) and not judge <= b["judge"]):
                        best[i] = {"step": s, "judge": judge, "val": res,
                                   "state": st, "data_state": data_state}  # fmt: skip
                say(f"  val {judge_name} best per member: "
                    + "  ".join(f"{b['judge']:.4f}@{b['step']}" for b in best))  # fmt: skip
    finally:
        prefetch.close()

    last = [jax.tree.map(lambda x, i=i: x[i], stacked) for i in range(n)]
    for cfg, name, b, st in zip(configs, names, best, last):
        _write_member(cfg, root / name, corpus, tables, graphdef, b, (st, data_state, total),
                      mesh, data_seed=int(config.seed))  # fmt: skip
    return [b["state"] for b in best]


def _write_member(cfg, wd: Path, corpus, tables, graphdef, best, last, mesh, *, data_seed):
    """One member as an ordinary run directory: its best checkpoint by the validation judge
    and its last (when they differ), config and summary."""
    wd.mkdir(parents=True, exist_ok=True)
    if not (wd / "corpus").exists():
        os.symlink(Path(corpus.dir).absolute(), wd / "corpus")
    (wd / "config.json").write_text(cfg.to_json_best_effort(indent=1))
    meta = {**rundir.checkpoint_meta(cfg, corpus), "mesh": dict(mesh.shape),
            "config": cfg.to_json_best_effort()}  # fmt: skip
    state, data_state, step = last
    ckpt = checkpointing.Checkpointer(wd / "checkpoints", keep_latest=2, keep_best=1,
                                      judge="judge")  # fmt: skip
    try:
        for st, ds, at, metrics in ((best["state"], best["data_state"], best["step"],
                                     {"judge": best["judge"], "step": best["step"]}),
                                    (state, data_state, step, None)):  # fmt: skip
            if metrics is None and at == best["step"]:
                break
            checksums = checkpointing.state_audit(st)[1]
            ckpt.save(at, st, ds, {**meta, "step": at, "checksums": checksums}, metrics)
    finally:
        ckpt.close()
    summary = {"step": step, "best": {k: best[k] for k in ("step", "judge", "val")},
               "vectorised": True, "seed": int(cfg.seed), "data_seed": data_seed}  # fmt: skip
    rundir.write_summary(wd, summary)


def _define(fv: flags.FlagValues) -> None:
    cli.config_flag(fv)
    flags.DEFINE_string("workdir", None, "Sweep root; members go to ROOT/<name>.", required=True,
                        flag_values=fv)  # fmt: skip
    flags.DEFINE_string("members", None, "JSON list of {config key: value}, one per member.",
                        required=True, flag_values=fv)  # fmt: skip
    flags.DEFINE_string("names", None, "JSON list of member directory names (default: derived).",
                        flag_values=fv)  # fmt: skip


def _json_flag(name: str, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise cli.UsageError(f"--{name} is not JSON ({e})") from None


def _run(fv: flags.FlagValues) -> None:
    members = _json_flag("members", fv.members)
    if not isinstance(members, list) or not all(isinstance(m, dict) for m in members):
        raise cli.UsageError("--members must be a JSON list of objects {config key: value}")
    names = _json_flag("names", fv.names) if fv.names else None
    train_members(fv.config, fv.workdir, members, names=names)


main = cli.command(_define, _run, __doc__)

if __name__ == "__main__":
    sys.exit(main())
