"""One process of the two-process ``jax.distributed`` test (``tests/test_train.py``).

Usage: ``python tests/multiprocess_worker.py --coordinator=HOST:PORT --num_processes=N
--process_id=I --workdir=DIR --config=configs/default.py:tiny [--config.x=y ...]``

It starts the distributed runtime, checks that the global batch assembled from the
process-local batches has the layout the pipeline assumes (the models and groups blocks are the
concatenation of the process-local blocks, in process order, and every slot of a process's rows
points into its own block), prints ``LAYOUT OK``, then runs the real training command
(``modellens_jax.train`` as ``__main__``, same arguments) in this process.
"""

from __future__ import annotations

import importlib.util
import os
import runpy
import sys
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import numpy as np


def _arg(name: str, default: str | None = None) -> str | None:
    for a in sys.argv[1:]:
        if a.startswith(f"--{name}="):
            return a.split("=", 1)[1]
    return default


def _config(spec: str):
    path, _, preset = spec.partition(":")
    mod_spec = importlib.util.spec_from_file_location("_worker_config", path)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    config = module.get_config(preset or None)
    for a in sys.argv[1:]:  # the overrides the layout depends on
        if a.startswith("--config.model.use_") or a.startswith("--config.input."):
            key, value = a[len("--config.") :].split("=", 1)
            section, field = key.split(".", 1)
            old = config[section][field]
            config[section][field] = (value.lower() == "true") if isinstance(old, bool) else (
                type(old)(value)
            )  # fmt: skip
    return config


def check_layout(config, workdir: Path) -> None:
    from jax.experimental import multihost_utils

    from modellens_jax import rundir, sharding
    from modellens_jax.data import pipeline

    pid, n = jax.process_index(), jax.process_count()
    _, tables = rundir.load_data(config, workdir, verbose=False)
    mesh = sharding.make_mesh(-1, 1)
    rows, L = int(config.input.groups_per_batch), int(config.input.list_size)
    U = int(config.input.max_models_per_batch) or rows * L
    block, blocks = sharding.process_block(mesh, rows)
    assert (block, blocks) == (pid, n), (block, blocks, pid, n)
    ds, _ = pipeline.train_dataset(
        tables, rows=rows // n, list_size=L, pack=True, seed=0, process_index=pid,
        process_count=n, num_models=U // n, slot_block=block,
    )  # fmt: skip
    local = next(iter(ds))
    full = {
        k: np.asarray(multihost_utils.process_allgather(v, tiled=True))
        for k, v in sharding.to_global(local, mesh).items()
    }
    r_loc, u_loc = rows // n, U // n
    s_loc = local["task"].shape[0]
    r0, u0, s0 = block * r_loc, block * u_loc, block * s_loc
    assert full["model_id"].shape[0] == U and full["task"].shape[0] == s_loc * n
    for k in ("mask", "model_slot", "group_slot", "value"):
        assert np.array_equal(full[k][r0 : r0 + r_loc], local[k]), k
    assert np.array_equal(full["model_id"][u0 : u0 + u_loc], local["model_id"])
    assert np.array_equal(full["task"][s0 : s0 + s_loc], local["task"])
    m = local["mask"]
    ms, gs = local["model_slot"][m], local["group_slot"][m]
    assert ms.min() >= u0 and ms.max() < u0 + u_loc, (ms.min(), ms.max(), u0)
    assert gs.min() >= s0 and gs.max() < s0 + s_loc, (gs.min(), gs.max(), s0)
    # What the step gathers through the global slots is this process's own features.
    assert np.array_equal(full["model_id"][ms], local["model_id"][ms - u0])
    assert np.array_equal(full["dataset_id"][gs], local["dataset_id"][gs - s0])
    print(f"LAYOUT OK process {pid}: rows {r0}+{r_loc}, models {u0}+{u_loc}", flush=True)


def main() -> None:
    from absl import flags

    jax.distributed.initialize(
        coordinator_address=_arg("coordinator"),
        num_processes=int(_arg("num_processes")),
        process_id=int(_arg("process_id")),
        initialization_timeout=60,
    )
    if not flags.FLAGS.is_parsed():  # grain reads absl flags (google/grain#1355)
        flags.FLAGS(sys.argv[:1])
    check_layout(_config(_arg("config")), Path(_arg("workdir")))
    sys.argv = ["modellens_jax.train", *sys.argv[1:]]
    runpy.run_module("modellens_jax.train", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
