"""Multi-process start-up: ``jax.distributed.initialize`` when a run spans several processes.

On TPU pods (and SLURM / Open MPI clusters JAX recognises) ``initialize()`` auto-detects
everything; elsewhere pass ``--coordinator=host:port --num_processes=N --process_id=i``.
"""

from __future__ import annotations

import os

import jax
from absl import flags


def define_flags(fv: flags.FlagValues) -> None:
    """The multi-process flags of the commands that train."""
    flags.DEFINE_string("coordinator", None, "host:port of process 0 (multi-process runs).",
                        flag_values=fv)  # fmt: skip
    flags.DEFINE_integer("num_processes", None, "Total number of processes.", flag_values=fv)
    flags.DEFINE_integer("process_id", None, "This process's index.", flag_values=fv)
    flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() with "
                      "auto-detection (TPU pods, SLURM).", flag_values=fv)  # fmt: skip


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    auto: bool = False,
) -> None:
    """Initialises the JAX distributed runtime when asked; a no-op for single-process runs and
    when the runtime is already up (a launcher or test harness initialised it)."""
    if jax.distributed.is_initialized():
        return
    if coordinator or num_processes:
        if not (coordinator and num_processes and process_id is not None):
            raise ValueError(
                "a multi-process run needs all of --coordinator=host:port, --num_processes=N "
                "and --process_id=i (or --distributed for auto-detection on TPU pods / SLURM)"
            )
        jax.distributed.initialize(
            coordinator_address=coordinator,
            num_processes=num_processes,
            process_id=process_id,
            initialization_timeout=120,
        )
    elif auto or os.environ.get("MODELLENS_DISTRIBUTED") == "1":
        jax.distributed.initialize()


def initialize_from_flags(f: flags.FlagValues) -> None:
    """``initialize`` with the values of ``define_flags``'s flags."""
    initialize(f.coordinator, f.num_processes, f.process_id, f.distributed)
