"""``python -m modellens_jax.serve --bundle=B [--bench]``: verify a bundle (and print its
summary), or benchmark ranking ``--n_candidates`` synthetic unseen models (JSON).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from absl import flags

from modellens_jax import cli
from modellens_jax.serving.bundle import bucket, verify
from modellens_jax.serving.recommender import Recommender


# --- benchmark ------------------------------------------------------------------------------
def _timed(fn: Callable[[], Any], repeats: int) -> dict[str, float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    t = np.asarray(times) * 1e3
    return {
        "median_ms": float(np.median(t)),
        "min_ms": float(t.min()),
        "max_ms": float(t.max()),
        "repeats": repeats,
    }


def bench_rank(
    bundle: str | os.PathLike | Recommender,
    n_candidates: int = 47_000,
    *,
    repeats: int = 5,
    top_k: int = 10,
    seed: int = 0,
) -> dict[str, Any]:
    """Latency of ranking ``n_candidates`` synthetic unseen models for one dataset.

    ``cached``: the pool's model side is precomputed (what a server keeps between queries),
    so a query runs the context half, the trunk over [1, U] and top-k. ``uncached``: the whole
    scorer, model side included. Both include the host-side top-k; compile time (first call)
    is reported apart. Description vectors are random unit vectors (no encoder needed)."""
    rec = bundle if isinstance(bundle, Recommender) else Recommender.load(bundle)
    rng = np.random.default_rng(seed)
    fams = rec.bundle.vocab["families"][1:] or ["unknown"]
    rows = [
        {
            "model": f"synthetic/bench-model-{i}-{p:.2g}b",
            "family": fams[rng.integers(len(fams))],
            "params": f"{p:.4g}",
        }
        for i, p in enumerate(np.exp(rng.uniform(np.log(0.01), np.log(400), n_candidates)))
    ]
    desc = None
    if rec.features["model_desc"]:
        desc = rng.normal(size=(n_candidates, rec.model_desc_dim)).astype(np.float32)
        desc /= np.linalg.norm(desc, axis=1, keepdims=True)
    t0 = time.perf_counter()
    pool = rec.candidates(rows, model_desc=desc)
    featurize_s = time.perf_counter() - t0
    dataset = rec.bundle.vocab["datasets"][0] if rec.bundle.vocab["datasets"] else None
    task = rec.bundle.vocab["tasks"][1] if len(rec.bundle.vocab["tasks"]) > 1 else None
    metric = rec.bundle.vocab["metrics"][1] if len(rec.bundle.vocab["metrics"]) > 1 else None
    query = {"dataset": dataset, "task": task, "metric": metric, "top_k": top_k, "candidates": pool}

    def first(fn: Callable[[], Any]) -> float:
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t

    def side() -> None:
        pool._side = None
        jax.block_until_ready(rec.model_side(pool))

    compile_s = {
        "uncached_first_call_s": first(lambda: rec.rank(**query, cached=False)),
        "model_side_first_call_s": first(side),
        "cached_first_call_s": first(lambda: rec.rank(**query, cached=True)),
    }
    dev = jax.devices()[0]
    return {
        "n_candidates": n_candidates,
        "padded_to": bucket(n_candidates),
        "hidden_dim": int(rec.bundle.inputs["hidden_dim"]),
        "features": [k for k, on in rec.features.items() if on],
        "device": f"{dev.platform}:{getattr(dev, 'device_kind', '')}",
        "host_cpus": os.cpu_count(),
        "load_average_1m": os.getloadavg()[0],
        "featurize_s": featurize_s,
        "compile": compile_s,
        "model_side_precompute": _timed(side, repeats),
        "cached": _timed(lambda: rec.rank(**query, cached=True), repeats),
        "uncached": _timed(lambda: rec.rank(**query, cached=False), repeats),
    }


def _define(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("bundle", None, "Bundle directory (from modellens_jax.export).",
                        required=True, flag_values=fv)  # fmt: skip
    flags.DEFINE_bool("bench", False, "Benchmark rank latency (JSON) instead of verifying.",
                      flag_values=fv)  # fmt: skip
    flags.DEFINE_integer("n_candidates", 47_000, "Synthetic unseen candidates to rank.",
                         lower_bound=1, flag_values=fv)  # fmt: skip
    flags.DEFINE_integer("repeats", 5, "Timed repeats of each measurement.", lower_bound=1,
                         flag_values=fv)  # fmt: skip


def _run(fv: flags.FlagValues) -> None:
    if fv.bench:
        print(json.dumps(bench_rank(fv.bundle, fv.n_candidates, repeats=fv.repeats), indent=1))
        return
    manifest = verify(fv.bundle)
    src, counts = manifest.get("source", {}), manifest.get("counts", {})
    print(
        f"{fv.bundle}: ok ({len(manifest['files'])} files verified; step {src.get('step')}; "
        f"{counts.get('models')} models, {counts.get('datasets')} datasets)"
    )


main = cli.command(_define, _run, __doc__)

if __name__ == "__main__":
    sys.exit(main())
