"""Orbax checkpoints: model + optimizer state, data-iterator state and metadata in one step.

The only module that imports orbax. A checkpoint is refused when its metadata says it came from
another config or corpus; an unreadable (truncated, corrupted) newest checkpoint is skipped with
a message and the previous good one restored.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

log = logging.getLogger(__name__)


class CheckpointMismatch(ValueError):
    """A checkpoint written by another config, corpus or process layout."""


class Checkpointer:
    """Keeps the latest ``keep_latest`` steps and the best ``keep_best`` by ``judge``."""

    def __init__(self, directory: str | Path, *, keep_latest: int = 2, keep_best: int = 1,
                 judge: str = "weighted_tau", async_save: bool = True):  # fmt: skip
        self.directory = Path(directory).absolute()
        self.judge = judge
        keep = [policies.LatestN(keep_latest)]
        if keep_best > 0:
            keep.append(
                policies.BestN(
                    get_metric_fn=lambda m: m.get(judge, float("-inf")),
                    reverse=False, n=keep_best, keep_checkpoints_without_metrics=False,
                )
            )  # fmt: skip
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                preservation_policy=policies.AnyPreservationPolicy(keep),
                enable_async_checkpointing=async_save,
                create=True,
            ),
        )

    def save(self, step: int, state: Any, data_state: dict, meta: dict,
             metrics: dict[str, float] | None = None) -> None:  # fmt: skip
        """Saves asynchronously; ``metrics`` (validation) feed the best-K policy."""
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data=ocp.args.JsonSave(data_state),
                meta=ocp.args.JsonSave(meta),
            ),
            metrics=metrics,
        )

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def best_step(self) -> int | None:
        return self.manager.best_step()

    def read_meta(self, step: int) -> dict:
        return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))[
            "meta"
        ]

    def restore(self, abstract_state: Any, expect: dict[str, Any], step: int | None = None):
        """Restores ``step`` (default: newest readable) onto the shardings of ``abstract_state``.

        ``expect`` maps metadata keys (config hash, corpus fingerprint, ...) to required values.
        Returns (step, state, data_state, meta) or None when there is no checkpoint.
        """
        candidates = [step] if step is not None else self.steps()[::-1]
        errors = []
        for s in candidates:
            try:
                meta = self.read_meta(s)
            except Exception as e:  # unreadable metadata: treat as corrupted
                errors.append(f"step {s}: {type(e).__name__}: {e}")
                log.warning("checkpoint step %d unreadable (%s); trying an older one", s, e)
                continue
            for k, want in expect.items():
                if meta.get(k) != want:
                    raise CheckpointMismatch(
                        f"{self.directory}/{s}: checkpoint {k} = {meta.get(k)!r} but this run "
                        f"has {want!r}; use another workdir or the matching config/corpus"
                    )
            try:
                out = self.manager.restore(
                    s,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(abstract_state),
                        data=ocp.args.JsonRestore(),
                    ),
                )
            except Exception as e:
                errors.append(f"step {s}: {type(e).__name__}: {e}")
                msg = f"checkpoint step {s} is corrupted or incomplete ({type(e).__name__}); "
                print(f"warning: {msg}falling back to an older checkpoint", flush=True)
                log.warning("%s%s", msg, e)
                continue
            return s, out["state"], out["data"], meta
        if errors:
            raise CheckpointMismatch(f"{self.directory}: no readable checkpoint: {errors}")
        return None

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def abstract_like(state: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs of ``state`` bound to concrete ``shardings`` (for restore targets)."""
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings
    )
