"""The device mesh and how state and batches are laid out on it.

Mesh axes are ("data", "model"). Batches shard their leading axis over "data". Parameters are
replicated except the large ID tables (``model.PARAMETERS``), whose embedding columns shard over
"model" (``model.partition_spec``), so a model-parallel axis spreads the biggest memory.
Optimizer moments follow their parameter (same path suffix).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from modellens_jax.model import partition_spec


def make_mesh(data: int = -1, model: int = 1, devices: Sequence | None = None) -> jax.sharding.Mesh:
    """A ("data", "model") mesh; -1 on an axis means all remaining devices.

    A mesh smaller than the device count takes the first ``data * model`` devices (a 1x1 mesh on
    an 8-device host is one device). In a multi-process run the mesh must span every device:
    each process feeds its own devices."""
    devices = list(devices if devices is not None else jax.devices())
    n = len(devices)
    if model == -1 and data == -1:
        raise ValueError("config mesh: at most one of mesh.data / mesh.model may be -1")
    if model == -1:
        model = n // data if data > 0 else 0
    if data == -1:
        data = n // model if model > 0 else 0
    if data < 1 or model < 1:
        raise ValueError(f"config mesh {data}x{model}: axis sizes must be >= 1 (or -1)")
    if data * model > n:
        raise ValueError(f"config mesh {data}x{model} needs {data * model} devices; have {n}")
    if data * model < n and jax.process_count() > 1:
        raise ValueError(
            f"config mesh {data}x{model} uses {data * model} of {n} devices; a multi-process "
            "run must use them all (mesh.data=-1)"
        )
    auto = jax.sharding.AxisType.Auto
    return jax.make_mesh(
        (data, model), ("data", "model"), (auto, auto), devices=devices[: data * model]
    )


def _path_keys(path) -> list[str]:
    return [str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path]


def state_shardings(state, mesh: jax.sharding.Mesh):
    """NamedShardings for every leaf of ``state`` by ``model.partition_spec``; a 2-D table whose
    column count the "model" axis does not divide falls back to replication."""

    def pick(path, leaf):
        shape = getattr(leaf, "shape", ())
        spec = partition_spec(_path_keys(path))
        ok = len(shape) == len(spec) and all(
            ax is None or shape[i] % mesh.shape[ax] == 0 for i, ax in enumerate(spec)
        )
        return NamedSharding(mesh, spec if ok else P())

    return jax.tree_util.tree_map_with_path(pick, state)


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
    """Leading axis over "data", the rest whole."""
    return NamedSharding(mesh, P("data"))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_blocks(config, n_data: int) -> int:
    """Shard-local blocks per global batch (``data/batch.py``): ``input.blocks``, where 0 means
    one per data shard (``n_data``, the mesh's data axis)."""
    blocks = int(config.input.get("blocks", 1))
    return n_data if blocks == 0 else blocks


def process_block(mesh: jax.sharding.Mesh, rows: int) -> tuple[int, int]:
    """(block, blocks): this process's rows of a ``rows``-row global batch sharded over "data"
    are block ``block`` of ``blocks`` equal contiguous blocks. The models and groups blocks of a
    global batch are the process-local blocks concatenated in this order, so the pipeline offsets
    ``model_slot``/``group_slot`` by it. Every process must feed its own block."""
    index_map = batch_sharding(mesh).addressable_devices_indices_map((rows,))
    spans = sorted({sl[0].indices(rows)[:2] for sl in index_map.values()})
    start, stop = spans[0][0], spans[-1][1]
    covered = sum(b - a for a, b in spans)
    if covered != stop - start:
        raise ValueError(f"this process's devices hold non-contiguous batch rows {spans}")
    local = stop - start
    if rows % local or start % local:
        raise ValueError(f"process rows [{start}, {stop}) do not tile a {rows}-row batch")
    blocks = rows // local
    if blocks != jax.process_count():
        raise ValueError(
            f"the mesh {dict(mesh.shape)} gives {blocks} distinct batch blocks for "
            f"{jax.process_count()} processes: each process must hold its own slice of the data "
            "axis (put the processes' devices along mesh.data)"
        )
    return start // local, blocks


def to_global(batch: dict[str, np.ndarray], mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
    """Process-local batch -> global arrays sharded over "data" (multi-host safe)."""
    sh = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sh, v) for k, v in batch.items()}


def to_replicated(batch: dict[str, np.ndarray], mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
    """A batch every process holds whole (evaluation) -> replicated global arrays."""
    sh = replicated(mesh)
    return {
        k: jax.make_array_from_callback(v.shape, sh, lambda i, v=v: v[i]) for k, v in batch.items()
    }
