"""``python -m modellens_jax.bench [--preset=paper|default] [--steps=N] [--members=N]``: one JSON
line of training and scoring throughput through the real pipeline and the real jitted step.

paper    a synthetic corpus at the paper's scale and shape (47K models, 9.6K groups, 1.59M
         records, heavy-tailed groups; cached under ~/.cache/modellens_jax/bench) and the
         paper's dimensions (backbone input 6,016 -> 512 -> 512)
default  the shipped corpus with configs/default.py

Records/s counts real records passed through the scorer (padding excluded), once per forward
pass. FLOPs come from XLA's cost analysis of the compiled step; the peak is the device's
nominal dense peak (a measured matmul peak on CPU).

``--members=N`` adds the vectorised-sweep comparison (``experiments.members``): the train step
under ``jax.vmap`` over N members (per-member loss weights and dropout rates as arrays, stacked
parameters and optimizer state) against the single step exactly as ``train.py`` runs it (both
built by ``train_state.jit_train_step``), both on the same ``--steps`` batches already on the
device (no input pipeline in either timing), in alternating rounds (``--member_rounds``; the
fastest round of each counts, which damps the noise of a shared machine).
``member_records_per_s`` is N x real records per second of the vmapped step,
``single_records_per_s`` real records per second of the single step, and ``speedup`` their
ratio: training the N members together is faster than N separate runs when it is above 1.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import time
from collections.abc import Collection
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import flags
from flax import nnx

from modellens_jax import cli, rundir, sharding
from modellens_jax import train_state as ts
from modellens_jax.data import pipeline, synthetic

CACHE = os.path.expanduser("~/.cache/modellens_jax/bench")

# Nominal dense peak FLOP/s by device kind and compute dtype.
PEAKS = {
    ("H100", "float32"): 67e12,  # SXM, no tensor cores (TF32 is off by default in XLA f32)
    ("H100", "bfloat16"): 989e12,
    ("H200", "float32"): 67e12,
    ("H200", "bfloat16"): 989e12,
    ("A100", "float32"): 19.5e12,
    ("A100", "bfloat16"): 312e12,
}


def device_peak(dtype: str) -> tuple[float, str]:
    """(peak FLOP/s, how it was obtained) for the first device."""
    kind = jax.devices()[0].device_kind
    for (name, dt), peak in PEAKS.items():
        if name in kind and dt == dtype:
            return peak, f"nominal {name} {dt}"
    n = 2048
    a = jnp.ones((n, n), jnp.dtype(dtype))
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    t0 = time.perf_counter()
    for _ in range(5):
        r = f(a)
    r.block_until_ready()
    return 2 * n**3 * 5 / (time.perf_counter() - t0), f"measured {n}x{n} matmul on {kind}"


def bench_config(
    preset: str, base: ml_collections.ConfigDict, given: Collection[str] = ()
) -> ml_collections.ConfigDict:
    """The preset's config: ``paper`` sets the paper's dimensions and, unless ``given`` (the
    ``--config.*`` overrides on the command line) names it, the sparse embedding update."""
    c = base
    if preset == "paper":
        c.model.update(model_id_dim=1536, name_dim=512, dataset_id_dim=256, task_dim=256,
                       metric_dim=256, size_dim=64, family_dim=64, hidden_dim=512)  # fmt: skip
        if "optim.sparse_embeddings" not in given:  # as the config's paper preset (optim.py)
            c.optim.sparse_embeddings = True
    return c


def load_tables(preset: str, config, cache: str = CACHE) -> pipeline.FeatureTables:
    """The preset's feature tables: the synthetic paper-scale corpus or the shipped one."""
    if preset == "paper":
        s = synthetic.PAPER_SCALE
        out = Path(cache) / "paper-v1"
        corp = synthetic.make_corpus(out, models=s["models"], datasets=s["datasets"],
                                     records=s["records"], tasks=s["tasks"],
                                     metrics=s["metrics"], families=s["families"])  # fmt: skip
        md = synthetic.random_embeddings(s["models"], s["desc_dim"], 1)
        dd = synthetic.random_embeddings(s["datasets"], s["desc_dim"], 2)
        return pipeline.FeatureTables(corp, md, dd)
    work = Path(cache) / "default"
    return rundir.load_data(config, work, verbose=False)[1]


def run(preset: str, config, steps: int, warmup: int, n_members: int = 0, rounds: int = 2,
        cache: str = CACHE, scoring: bool = True) -> dict:  # fmt: skip
    """The benchmark's JSON fields (see the module docstring)."""
    tables = load_tables(preset, config, cache)
    sizes = ts.feature_sizes(config, tables)
    mesh = sharding.make_mesh(int(config.mesh.data), int(config.mesh.model))
    rows, L = int(config.input.groups_per_batch), int(config.input.list_size)
    num_models = int(config.input.max_models_per_batch) or rows * L
    graphdef, state, state_sh = ts.init_state(config, sizes, mesh)
    nbytes = lambda t: int(sum(x.nbytes for x in jax.tree.leaves(t)))  # noqa: E731
    param_bytes = nbytes(nnx.state(nnx.merge(graphdef, state)[0], nnx.Param))
    state_bytes = nbytes(state)

    on_device = bool(config.input.get("device_tables", False)) and n_members == 0
    ds, _ = pipeline.train_dataset(tables, rows=rows, list_size=L, pack=bool(config.input.pack),
                                   seed=0, num_models=num_models,
                                   num_groups=int(config.input.max_groups_per_batch),
                                   device_tables=on_device,
                                   blocks=sharding.batch_blocks(config, int(mesh.shape["data"])))  # fmt: skip
    prefetch = ts.DevicePrefetch(iter(ds), mesh, int(config.input.prefetch))
    repl = sharding.replicated(mesh)
    step_fn = ts.jit_train_step(graphdef, config, mesh, state_sh, tables=on_device)
    extra = (ts.device_tables(tables, mesh),) if on_device else ()  # the step's last argument
    weights, key = ts.loss_weights(config), jax.random.key(0)
    acc = jax.device_put(ts.acc_zeros(), repl)

    batch, *_ = prefetch.next()
    t0 = time.perf_counter()
    compiled = step_fn.lower(state, acc, batch, weights, key, *extra).compile()
    compile_s = time.perf_counter() - t0
    memory = memory_analysis(compiled)
    print(f"compiled step: {json.dumps(memory)}", file=sys.stderr, flush=True)
    h2d_bytes = sum(int(x.nbytes) for x in jax.tree.leaves(batch))
    flops = compiled_flops(compiled)
    for _ in range(warmup):
        state, acc = step_fn(state, acc, batch, weights, key, *extra)
        batch, *_ = prefetch.next()
    jax.block_until_ready(acc)
    compiles_warm = step_fn._cache_size()

    times, waits, real, slots = [], 0.0, 0, 0
    host0 = prefetch.host_seconds
    t_start = time.perf_counter()
    for _ in range(steps):
        t0 = time.perf_counter()
        batch, _, n_real, n_all = prefetch.next()
        waits += time.perf_counter() - t0
        state, acc = step_fn(state, acc, batch, weights, key, *extra)
        jax.block_until_ready(acc)
        times.append(time.perf_counter() - t0)
        real, slots = real + n_real, slots + n_all
    wall = time.perf_counter() - t_start
    member_batches = [prefetch.next() for _ in range(steps)] if n_members > 0 else []
    prefetch.close()
    host_s = prefetch.host_seconds - host0
    ceiling = pipeline_ceiling(ds, steps)
    peak, peak_src = device_peak(str(config.model.compute_dtype))
    a = jax.device_get(acc)
    out = {
        "preset": preset,
        "device": jax.devices()[0].device_kind,
        "devices": jax.device_count(),
        "mesh": dict(mesh.shape),
        "batch": [rows, L],
        "records_per_s": real / wall,
        "steps_per_s": steps / wall,
        "fill_ratio": real / max(slots, 1),
        "data_wait_frac": waits / wall,
        "host_input_s_per_step": host_s / steps,
        "host_to_device_bytes_per_record": h2d_bytes / max(real / steps, 1),
        "pipeline_records_per_s": ceiling,
        "pipeline_ceiling_ratio": ceiling / (real / wall),
        "memory": memory,
        "compiles": step_fn._cache_size(),
        "recompiles_after_warmup": step_fn._cache_size() - compiles_warm,
        "step_ms_p50": 1e3 * float(np.percentile(times, 50)),
        "step_ms_p90": 1e3 * float(np.percentile(times, 90)),
        "step_ms_p99": 1e3 * float(np.percentile(times, 99)),
        "compile_s": compile_s,
        "flops_per_step": flops,
        "flops_per_s": flops * steps / wall,
        "mfu": flops * steps / wall / peak,
        "peak_flops_per_s": peak,
        "peak_source": peak_src,
        "param_bytes": param_bytes,
        "optimizer_bytes": state_bytes - param_bytes,
        "loss_finite": bool(a["nonfinite"] == 0),
        "compute_dtype": str(config.model.compute_dtype),
    }
    if n_members > 0:
        batches = [(b, n_real) for b, _, n_real, _ in member_batches]
        res, state = members_throughput(config, graphdef, state, step_fn, mesh, batches,
                                        n_members, rounds)  # fmt: skip
        out.update(res)
    if scoring:
        out.update(scoring_latency(graphdef, state, tables, n_candidates=47_000))
    return out


def compiled_flops(compiled) -> float:
    """XLA's FLOP count of a compiled program (per device; 0 where the backend gives none)."""
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost.get("flops", 0.0)) if cost else 0.0


def memory_analysis(compiled) -> dict[str, int]:
    """The compiled step's memory (bytes): arguments, outputs, temporaries, generated code."""
    m = compiled.memory_analysis()
    fields = ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes",
              "alias_size_in_bytes", "generated_code_size_in_bytes")  # fmt: skip
    return {f.removesuffix("_size_in_bytes"): int(getattr(m, f, 0) or 0) for f in fields}


def pipeline_ceiling(ds, steps: int) -> float:
    """Real records per second the host pipeline produces with the step removed (a fresh
    iterator over the same stream, batches built and dropped)."""
    it = iter(ds)
    next(it)  # first-element set-up
    t0, real = time.perf_counter(), 0
    for _ in range(max(steps, 1)):
        real += int(next(it)["mask"].sum())
    return real / (time.perf_counter() - t0)


def rows_sweep(preset: str, config, rows: list[int], steps: int, warmup: int, cache: str) -> dict:
    """The step at several rows per step (``groups_per_batch = rows / list_size``): per size the
    records per step and step time, and the least-squares line ``step = fixed + per_record x
    records``, i.e. the fixed per-step cost (intercept) and the per-record cost (slope)."""
    L = int(config.input.list_size)
    points = []
    for r in rows:
        c = ml_collections.ConfigDict(config.to_dict())
        c.input.groups_per_batch = max(1, r // L)
        c.input.max_models_per_batch = c.input.max_groups_per_batch = 0
        res = run(preset, c, steps, warmup, cache=cache, scoring=False)
        points.append({"rows": r, "records_per_step": res["records_per_s"] / res["steps_per_s"],
                       "step_ms_p50": res["step_ms_p50"], "records_per_s": res["records_per_s"],
                       "host_to_device_bytes_per_record": res["host_to_device_bytes_per_record"],
                       "pipeline_ceiling_ratio": res["pipeline_ceiling_ratio"],
                       "data_wait_frac": res["data_wait_frac"]})  # fmt: skip
        print(json.dumps(points[-1]), file=sys.stderr, flush=True)
    x = np.array([p["records_per_step"] for p in points])
    y = np.array([p["step_ms_p50"] for p in points])
    slope, fixed = np.polyfit(x, y, 1) if len(points) > 1 else (float("nan"), float("nan"))
    for p in points:
        p["fixed_frac"] = float(fixed / p["step_ms_p50"])
    return {"preset": preset, "sweep": points, "fixed_ms_per_step": float(fixed),
            "per_record_us": float(slope * 1e3), "best_records_per_s": float(max(
                p["records_per_s"] for p in points))}  # fmt: skip


COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "f16": 2, "bf16": 2, "s16": 2, "u16": 2, "f32": 4,
                "s32": 4, "u32": 4, "f64": 8, "s64": 8, "u64": 8}  # fmt: skip
_SHAPE = re.compile(r"\b(" + "|".join(_DTYPE_BYTES) + r")\[([0-9,]*)\]")
_OP = re.compile(r"=\s*(.*?)\s(" + "|".join(COLLECTIVES) + r")(-start)?\(")


def collectives(hlo: str) -> dict[str, dict[str, int]]:
    """Per collective kind in a compiled program's HLO text: how many and the bytes of their
    results per device (an async ``-start``/``-done`` pair counts once)."""
    out = {k: {"count": 0, "bytes": 0} for k in COLLECTIVES}
    for line in hlo.splitlines():
        m = _OP.search(line)
        if m is None:
            continue
        nbytes = sum(_DTYPE_BYTES[dt] * math.prod(int(d) for d in dims.split(",") if d)
                     for dt, dims in _SHAPE.findall(m.group(1)))  # fmt: skip
        out[m.group(2)]["count"] += 1
        out[m.group(2)]["bytes"] += nbytes
    return out


def _abstract(tree, sh):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sh), tree)


def communication(config, tables: pipeline.FeatureTables, meshes: list[tuple[int, int]]) -> list:
    """The train step compiled (not run) on each ``(data, model)`` mesh at a fixed batch per
    data shard (weak scaling: ``groups_per_batch`` x data rows in all), unblocked and with one
    shard-local block per data shard (``input.blocks``), and the collectives of each compiled
    program. State, batch and device tables are abstract: no mesh-sized memory is allocated.
    Needs ``data x model`` devices (on CPU: ``XLA_FLAGS=--xla_force_host_platform_device_count=N``)."""
    need = max(d * m for d, m in meshes)
    if jax.device_count() < need:
        raise cli.UsageError(
            f"--comm_meshes needs {need} devices, have {jax.device_count()}: on CPU set "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={need}"
        )
    sizes = ts.feature_sizes(config, tables)
    tabs = jax.eval_shape(lambda: ts.device_tables(tables, sharding.make_mesh(1, 1)))
    out = []
    for data, model in meshes:
        for blocks in sorted({1, data}):
            mesh = sharding.make_mesh(data, model)
            c = ml_collections.ConfigDict(config.to_dict())
            c.input.groups_per_batch = int(config.input.groups_per_batch) * data
            rows, L = int(c.input.groups_per_batch), int(c.input.list_size)
            ds, _ = pipeline.train_dataset(tables, rows=rows, list_size=L, pack=bool(c.input.pack),
                                           seed=0, num_models=rows * L, device_tables=True,
                                           num_groups=int(c.input.max_groups_per_batch) * data,
                                           blocks=blocks)  # fmt: skip
            graphdef, state = ts.abstract_state(c, sizes, mesh)
            state_sh = jax.tree.map(lambda x: x.sharding, state)
            step_fn = ts.jit_train_step(graphdef, c, mesh, state_sh, tables=True)
            repl, bsh = sharding.replicated(mesh), sharding.batch_sharding(mesh)
            args = (
                state,
                _abstract(ts.acc_zeros(), repl),
                _abstract(next(iter(ds)), bsh),
                _abstract(ts.loss_weights(c), repl),
                jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=repl),
                _abstract(tabs, repl),
            )
            t0 = time.perf_counter()
            compiled = step_fn.lower(*args).compile()
            ops = collectives(compiled.as_text())
            row = {"mesh": [data, model], "devices": data * model, "blocks": blocks,
                   "global_batch": [rows, L], "compile_s": time.perf_counter() - t0,
                   "flops_per_device": compiled_flops(compiled),
                   "collective_bytes_per_device": sum(v["bytes"] for v in ops.values()),
                   "collectives": {k: v for k, v in ops.items() if v["count"]}}  # fmt: skip
            print(json.dumps(row), file=sys.stderr, flush=True)
            out.append(row)
    return out


def member_overrides(config, n: int) -> list[dict]:
    """N distinct sweep points over vectorisable keys (pairwise weight x dropout rate)."""
    d0 = float(config.model.dropout)
    return [
        {"loss.weights.pairwise": round(i / max(n - 1, 1), 4),
         "model.dropout": d0 if i % 2 == 0 else min(d0 + 0.1, 0.5)}
        for i in range(n)
    ]  # fmt: skip


def members_throughput(config, graphdef, state, step_fn, mesh, batches, n: int, rounds: int):
    """Vectorised step over ``n`` members (as ``members.train_members`` builds it) vs the single
    step ``step_fn`` (as ``train.py`` runs it), on the same device-resident ``batches``; returns
    (the result fields, the single run's state)."""
    from modellens_jax.experiments import members

    configs = [members.member_config(config, m) for m in member_overrides(config, n)]
    weights, rates = members.member_arrays(configs)
    repl = sharding.replicated(mesh)
    stacked, vacc, vstep = members.vectorised(config, graphdef, state, mesh, n)
    w1, key = ts.loss_weights(config), jax.random.key(0)
    acc = jax.device_put(ts.acc_zeros(), repl)
    b0 = batches[0][0]
    t0 = time.perf_counter()
    vcompiled = vstep.lower(stacked, vacc, b0, weights, key, rates).compile()
    vcompile_s = time.perf_counter() - t0
    vflops = compiled_flops(vcompiled)
    # Warm-up: two calls each, since the second call sees accumulators committed by the first
    # (members.py passes them without a sharding, as here) and may compile again.
    for _ in range(2):
        stacked, vacc = vstep(stacked, vacc, b0, weights, key, rates)
        state, acc = step_fn(state, acc, b0, w1, key)
    jax.block_until_ready((vacc, acc))
    warm_compiles = vstep._cache_size()
    real = sum(r for _, r in batches)
    single_t, member_t = [], []
    for _ in range(max(1, rounds)):
        t0 = time.perf_counter()
        for b, _ in batches:
            state, acc = step_fn(state, acc, b, w1, key)
        jax.block_until_ready(acc)
        single_t.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for b, _ in batches:
            stacked, vacc = vstep(stacked, vacc, b, weights, key, rates)
        jax.block_until_ready(vacc)
        member_t.append(time.perf_counter() - t0)
    va = jax.device_get(vacc)
    single_rps = real / min(single_t)
    member_rps = n * real / min(member_t)
    result = {
        "members": n,
        "member_records_per_s": member_rps,
        "single_records_per_s": single_rps,
        "speedup": member_rps / single_rps,
        "member_step_ms": 1e3 * min(member_t) / len(batches),
        "single_step_ms": 1e3 * min(single_t) / len(batches),
        "member_round_s": member_t,
        "single_round_s": single_t,
        "member_compile_s": vcompile_s,
        "member_flops_per_step": vflops,
        "member_state_bytes": int(sum(x.nbytes for x in jax.tree.leaves(stacked))),
        "member_loss_finite": bool(np.all(va["nonfinite"] == 0)),
        "member_compiles": vstep._cache_size(),  # the AOT compile above is not counted
        "member_recompiles_after_warmup": vstep._cache_size() - warm_compiles,
    }
    return result, state


def scoring_latency(graphdef, state, tables: pipeline.FeatureTables, n_candidates: int) -> dict:
    """Latency of scoring one dataset against ``n_candidates`` models: with the model side
    cached (serving) and computed from scratch."""
    model, _ = nnx.merge(graphdef, state)
    rng = np.random.default_rng(0)
    c = tables.corpus
    idx = rng.integers(0, len(c.model_names), n_candidates)
    models = {k: jnp.asarray(v[idx]) for k, v in tables.model_cols.items()}
    models["model_desc"] = jnp.asarray(np.asarray(tables.model_desc[np.sort(idx)], np.float32))
    groups = {k: jnp.asarray(v[:1]) for k, v in tables.group_cols.items()}
    groups["dataset_desc"] = jnp.asarray(np.asarray(tables.dataset_desc[:1], np.float32))
    gd_m, st_m = nnx.split(model)

    @jax.jit
    def full(st, models, groups):
        return nnx.merge(gd_m, st).score_all(models, groups)["score"]

    @jax.jit
    def sides(st, models):
        m = nnx.merge(gd_m, st)
        return m.model_side(models), m.model_prior(models)

    @jax.jit
    def cached(st, mside, prior, groups):
        m = nnx.merge(gd_m, st)
        return m.score_sides(mside, m.context_side(groups), prior)["score"]

    def timeit(f, *a, n=10):
        jax.block_until_ready(f(*a))
        t0 = time.perf_counter()
        for _ in range(n):
            r = f(*a)
        jax.block_until_ready(r)
        return (time.perf_counter() - t0) / n * 1e3

    mside, prior = sides(st_m, models)
    return {
        "score_47k_ms_cached": timeit(cached, st_m, mside, prior, groups),
        "score_47k_ms_full": timeit(full, st_m, models, groups),
    }


def _define(fv: flags.FlagValues) -> None:
    cli.config_flag(fv)
    flags.DEFINE_enum("preset", "paper", ["paper", "default"], "Benchmark preset.",
                      flag_values=fv)  # fmt: skip
    flags.DEFINE_integer("steps", 30, "Timed steps (after warm-up).", flag_values=fv)
    flags.DEFINE_integer("warmup", 3, "Warm-up steps (compile + first runs).", flag_values=fv)
    flags.DEFINE_string("cache", CACHE, "Synthetic corpus cache.", flag_values=fv)
    flags.DEFINE_integer("members", 0, "Also time the vectorised step over N sweep members vs "
                         "the single step (0: off).", flag_values=fv)  # fmt: skip
    flags.DEFINE_integer("member_rounds", 2, "Alternating single/vectorised timing rounds for "
                         "--members.", flag_values=fv)  # fmt: skip
    flags.DEFINE_list("rows", [], "Rows per step to sweep (e.g. 2048,8192,32768): prints the "
                      "fixed per-step cost and the per-record cost instead.", flag_values=fv)  # fmt: skip
    flags.DEFINE_list("comm_meshes", [], "Compile (not run) the step on these DATAxMODEL meshes "
                      "(e.g. 8x1,32x1) and print each one's collectives instead.", flag_values=fv)  # fmt: skip


def _run(fv: flags.FlagValues) -> None:
    given = {
        a.split("=")[0].removeprefix("--config.") for a in fv.argv if a.startswith("--config.")
    }
    config = bench_config(fv.preset, fv.config, given)
    if fv.comm_meshes:
        try:
            meshes = [tuple(int(a) for a in m.lower().split("x")) for m in fv.comm_meshes]
            if any(len(m) != 2 or min(m) < 1 for m in meshes):
                raise ValueError
        except ValueError as e:
            raise cli.UsageError(
                f"--comm_meshes={','.join(fv.comm_meshes)}: expected DATAxMODEL, e.g. 8x1,32x1"
            ) from e
        rows = communication(config, load_tables(fv.preset, config, fv.cache), meshes)
        print(json.dumps({"preset": fv.preset, "communication": rows,
                          "sparse_embeddings": bool(config.optim.sparse_embeddings)}))  # fmt: skip
        return
    if fv.rows:
        try:
            rows = [int(r) for r in fv.rows]
        except ValueError as e:
            raise cli.UsageError(f"--rows={','.join(fv.rows)}: expected integers") from e
        print(json.dumps(rows_sweep(fv.preset, config, rows, fv.steps, fv.warmup, fv.cache)))
        return
    res = run(fv.preset, config, fv.steps, fv.warmup, fv.members, fv.member_rounds,
              cache=fv.cache)  # fmt: skip
    print(json.dumps(res), flush=True)
    sys.stdout.flush()


main = cli.command(_define, _run, __doc__)

if __name__ == "__main__":
    sys.exit(main())
