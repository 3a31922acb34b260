"""Vectorised sweeps: N sweep points that differ only in loss weights and dropout rates, trained
as ONE jitted program (``launch/sweep.py --vectorize`` starts it).

``python -m modellens_jax.members --config=configs/default.py --workdir=ROOT
--members='[{"loss.weights.pairwise": 0.5, "model.dropout": 0.1}, ...]'``

Parameters and optimizer state get a leading member axis; the step is the ordinary train step
under ``jax.vmap`` (``train_state.jit_train_step(..., members=True)``) with per-member loss
weights and dropout rates passed as arrays (the scorer takes rates per call), and every member
sees the same batches and the same dropout keys as its separate run would. At the end each
member is written as an ordinary run directory (``ROOT/<name>/``: config.json, corpus link,
checkpoints, train_summary.json), so ``evaluate``, ``export`` and the sweep aggregation treat it
like any other run.
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

from modellens_jax import checkpointing, cli, config_check, evaluate, jobguard, rundir, sharding
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


def vectorised(config: ml_collections.ConfigDict, graphdef, state, mesh, n: int):
    """(stacked state, stacked accumulators, jitted vmapped step) for ``n`` members starting
    from ``state``; the step is ``step(state, acc, batch, weights, key, rates)`` with a leading
    member axis on state, accumulators, weights and rates."""
    repl = sharding.replicated(mesh)
    stacked = jax.tree.map(lambda x: jnp.stack([x] * n), state)
    state_sh = jax.tree.map(lambda _: repl, stacked)
    vstep = ts.jit_train_step(graphdef, config, mesh, state_sh, members=True)
    acc = jax.tree.map(lambda x: jnp.stack([x] * n), ts.acc_zeros())
    return jax.device_put(stacked, state_sh), jax.device_put(acc, repl), vstep


def train_members(
    config: ml_collections.ConfigDict,
    workdir: str | os.PathLike,
    members: list[dict[str, Any]],
    *,
    names: list[str] | None = None,
    verbose: bool = True,
) -> list[Any]:
    """Trains every member for ``config.train.steps`` in one program; returns their states.
    Member ``i`` is written to ``ROOT/names[i]`` (default: ``member_name(members[i])``)."""
    names = names or [member_name(m) for m in members]
    if len(names) != len(members) or len(set(names)) != len(names):
        raise cli.UsageError(f"--names must give {len(members)} distinct names, got {names}")
    root = Path(workdir)
    configs = [member_config(config, m) for m in members]
    for cfg in [config, *configs]:
        config_check.validate(cfg)
    # Every member's run directory, for the whole job (not the root: a sweep runs several
    # members jobs on one root at once, each with its own members).
    locks = [jobguard.WorkdirLock(root / n, f"members (member {n})") for n in names]
    with contextlib.ExitStack() as stack:
        for lk in locks:
            stack.enter_context(lk)
        return _train_members(config, root, configs, names, verbose)


def _train_members(config, root: Path, configs, names, verbose: bool) -> list[Any]:
    say = print if (verbose and jax.process_index() == 0) else (lambda *a, **k: None)
    n = len(configs)
    corpus, tables = rundir.load_data(config, root, verbose=verbose)
    sizes = ts.feature_sizes(config, tables)
    mesh = sharding.make_mesh(int(config.mesh.data), int(config.mesh.model))
    rows, L = int(config.input.groups_per_batch), int(config.input.list_size)

    graphdef, state, _ = ts.init_state(config, sizes, mesh, ts.untrained_rows(sizes, tables))
    stacked, acc, vstep = vectorised(config, graphdef, state, mesh, n)
    weights, rates = member_arrays(configs)

    ds, _ = pipeline.train_dataset(
        tables, rows=rows, list_size=L, pack=bool(config.input.pack), seed=int(config.seed),
        num_models=int(config.input.max_models_per_batch),
        num_groups=int(config.input.max_groups_per_batch),
    )  # fmt: skip
    prefetch = ts.DevicePrefetch(iter(ds), mesh, int(config.input.prefetch))
    base_key = jax.random.key(int(config.seed))
    total = int(config.train.steps)
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
    finally:
        prefetch.close()

    states = [jax.tree.map(lambda x, i=i: x[i], stacked) for i in range(n)]
    for cfg, name, st in zip(configs, names, states):
        _write_member(cfg, root / name, corpus, tables, graphdef, st, data_state, total, mesh)
    return states


def _write_member(cfg, wd: Path, corpus, tables, graphdef, state, data_state, step, mesh):
    """One member as an ordinary run directory (checkpoint, config, validation summary)."""
    wd.mkdir(parents=True, exist_ok=True)
    if not (wd / "corpus").exists():
        os.symlink(Path(corpus.dir).absolute(), wd / "corpus")
    (wd / "config.json").write_text(cfg.to_json_best_effort(indent=1))
    scorer = evaluate.ModelScorer(graphdef, state, mesh)
    res = evaluate.evaluate_settings(scorer, tables, splits.VAL)
    judge = evaluate.judge_value(res, str(cfg.train.judge))
    meta = {**rundir.checkpoint_meta(cfg, corpus), "step": step, "mesh": dict(mesh.shape),
            "config": cfg.to_json_best_effort()}  # fmt: skip
    ckpt = checkpointing.Checkpointer(wd / "checkpoints", keep_latest=1, keep_best=1,
                                      judge="judge")  # fmt: skip
    try:
        ckpt.save(step, state, data_state, meta, {"judge": judge})
    finally:
        ckpt.close()
    summary = {"step": step, "best": {"step": step, "judge": judge, "val": res},
               "vectorised": True}  # fmt: skip
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
