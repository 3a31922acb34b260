"""Orbax checkpoints: model + optimizer state, data-iterator state and metadata in one step.

The only module that imports orbax. A step holds ``state`` (the NNX state pytree, restored onto
the current mesh whatever mesh wrote it), ``data`` (the Grain iterator state, one file per
process: every process reads its own shard of the stream) and ``meta`` (config hash, corpus
fingerprint, process and worker counts, the loop's early-stopping state and a checksum per state
leaf).

A checkpoint is refused (``CheckpointMismatch``) when its metadata says it came from another
config, corpus or process layout. A newest checkpoint that cannot be read, or whose restored
state does not match the checksums written with it (truncated or overwritten files), is skipped
with a message, the previous good one restored, and the bad step moved aside to
``<checkpoints>.corrupt/`` so that training can write that step again.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import grain
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from orbax.checkpoint import checkpoint_managers as policies

log = logging.getLogger(__name__)


class _NoMetricsFilter(logging.Filter):
    """Drops orbax's per-save warning for checkpoints saved between validations (those carry
    no metrics by design; only validated steps compete for best-K)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "did not provide metrics" not in record.getMessage()


logging.getLogger("absl").addFilter(_NoMetricsFilter())


class CheckpointMismatch(ValueError):
    """A checkpoint written by another config, corpus or process layout."""


class CheckpointCorrupted(ValueError):
    """No checkpoint in the directory could be read back intact."""


class _IteratorState:
    """A recorded data-iterator state in the shape grain's checkpoint handler expects.

    The prefetch thread runs ahead of the step, so the live iterator's state is not the one to
    save: the loop records the state *after* the last consumed batch and saves that. Grain's
    handler writes one ``process_<i>-of-<n>.json`` per process (JSON bytes; not a
    ``DatasetIterator``, so it goes through ``get_state()`` / ``set_state(bytes)``)."""

    def __init__(self, state: Any = None):
        self.state = state

    def get_state(self) -> bytes:
        return json.dumps(self.state).encode()

    def set_state(self, state: bytes) -> None:
        self.state = json.loads(state)

    def start_prefetch(self) -> None:  # called by grain's handler after set_state
        pass


def _metric_key(m: dict | None, judge: str = "judge") -> tuple[float, int]:
    """Ranking key of a checkpoint's metrics: higher ``m[judge]`` first, then the earlier step
    (ties keep the first step that reached the value, the one the loop reports as best)."""
    m = m or {}
    j = float(m.get(judge, float("-inf")))
    return (j if np.isfinite(j) else float("-inf"), -int(m.get("step", 0)))


class Checkpointer:
    """Keeps the latest ``keep_latest`` steps and the best ``keep_best`` by validation metric
    (``metrics={judge: value, "step": step}`` passed to :meth:`save`; higher is better)."""

    def __init__(self, directory: str | Path, *, keep_latest: int = 2, keep_best: int = 1,
                 judge: str = "judge", async_save: bool = True):  # fmt: skip
        self.directory = Path(directory).absolute()
        self.judge = judge
        keep = [policies.LatestN(max(int(keep_latest), 1))]
        if keep_best > 0:
            keep.append(
                policies.BestN(
                    get_metric_fn=lambda m: _metric_key(m, judge), reverse=False, n=keep_best,
                    keep_checkpoints_without_metrics=False,
                )
            )  # fmt: skip
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                preservation_policy=policies.AnyPreservationPolicy(keep),
                # Without a best_fn orbax keeps metrics in memory only: after a restart the
                # best checkpoint has none and BestN would let it be deleted.
                best_fn=lambda m: _metric_key(m, judge),
                best_mode="max",
                enable_async_checkpointing=async_save,
                create=True,
            ),
        )

    def save(self, step: int, state: Any, data_state: Any, meta: dict,
             metrics: dict[str, float] | None = None) -> None:  # fmt: skip
        """Saves asynchronously (returns once the state is copied off the devices); ``metrics``
        (validation) feed the best-K policy. ``meta`` should hold ``state_audit(state)``'s
        checksums under ``"checksums"`` so a damaged copy is caught at restore."""
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data=grain.checkpoint.CheckpointSave(_IteratorState(data_state)),
                meta=ocp.args.JsonSave(meta),
            ),
            metrics=metrics,
        )

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def best_step(self) -> int | None:
        """The step with the best validation metrics (None when no step has metrics)."""
        scored = [(s, self.manager.metrics(s)) for s in self.steps()]
        scored = [(s, m) for s, m in scored if m]
        return max(scored, key=lambda sm: _metric_key(sm[1], self.judge))[0] if scored else None

    def read_meta(self, step: int) -> dict:
        return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))[
            "meta"
        ]

    def restore(self, abstract_state: Any, expect: dict[str, Any], step: int | None = None, *,
                config_json: str | None = None, say=print):  # fmt: skip
        """Restores ``step`` (default: newest intact) onto the shardings of ``abstract_state``.

        ``expect`` maps metadata keys (config hash, corpus fingerprint, ...) to required values;
        ``config_json`` (this run's config) lets a config mismatch name the differing keys.
        Returns (step, state, data_state, meta) or None when there is no checkpoint.
        """
        candidates = [step] if step is not None else self.steps()[::-1]
        bad: list[tuple[int, str]] = []
        for s in candidates:
            try:
                meta = self.read_meta(s)
            except Exception as e:  # unreadable metadata: treat as corrupted
                bad.append((s, f"metadata unreadable ({type(e).__name__}: {e})"))
                say(f"warning: checkpoint step {s} is corrupted: {bad[-1][1]}; "
                    "falling back to an older checkpoint")  # fmt: skip
                continue
            self._check(s, meta, expect, config_json)
            try:
                out = self.manager.restore(
                    s,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(abstract_state),
                        data=grain.checkpoint.CheckpointRestore(_IteratorState()),
                    ),
                )
                problem = _verify(out["state"], meta)
            except Exception as e:  # first line only: tensorstore errors embed a long spec
                first = (str(e).strip().splitlines() or [""])[0]
                problem = f"{type(e).__name__}: {first[:200]}"
            if problem:
                bad.append((s, problem))
                say(f"warning: checkpoint step {s} is corrupted or incomplete ({problem}); "
                    "falling back to an older checkpoint")  # fmt: skip
                continue
            if bad:
                self._set_aside([b for b, _ in bad], say)
                say(f"restored step {s} instead of the newer, corrupted "
                    f"step(s) {[b for b, _ in bad]}")  # fmt: skip
            return s, out["state"], out["data"].state, meta
        if bad:
            raise CheckpointCorrupted(
                f"{self.directory}: no checkpoint could be read back intact: "
                + "; ".join(f"step {s}: {why}" for s, why in bad)
                + ". Move the directory aside to start afresh."
            )
        return None

    def _check(self, s: int, meta: dict, expect: dict[str, Any], config_json: str | None):
        for k, want in expect.items():
            have = meta.get(k)
            if have == want:
                continue
            detail = ""
            if k == "config_hash" and config_json and meta.get("config"):
                diff = config_diff(meta["config"], config_json)
                if diff:
                    detail = "; differing config keys: " + ", ".join(diff[:8])
            raise CheckpointMismatch(
                f"{self.directory}/{s} was written by another run: its {k} is {have!r} but this "
                f"run's is {want!r}{detail}. Resume with the matching config/corpus, or use "
                "another --workdir."
            )

    def _set_aside(self, steps: list[int], say) -> None:
        """Moves corrupted step directories out of the manager's way (process 0 only)."""
        if jax.process_index() == 0:
            dest = self.directory.parent / f"{self.directory.name}.corrupt"
            dest.mkdir(parents=True, exist_ok=True)
            for s in steps:
                src = self.directory / str(s)
                if src.exists():
                    target = dest / f"{s}-{time.strftime('%Y%m%d-%H%M%S')}"
                    shutil.move(str(src), str(target))
                    say(f"  moved corrupted checkpoint step {s} to {target}")
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("checkpoint_set_aside")
        self.manager.reload()

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def config_diff(saved_json: str, current_json: str, sections=None) -> list[str]:
    """Dotted keys whose values differ between two config JSONs (``a.b: old -> new``)."""

    def flat(d, prefix=""):
        out = {}
        for k, v in d.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict):
                out.update(flat(v, key + "."))
            else:
                out[key] = v
        return out

    a, b = flat(json.loads(saved_json)), flat(json.loads(current_json))
    keys = sorted(set(a) | set(b))
    if sections is not None:
        keys = [k for k in keys if k.split(".")[0] in sections]
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in keys if a.get(k) != b.get(k)]


def abstract_like(state: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs of ``state`` bound to concrete ``shardings`` (for restore targets)."""
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings
    )


# --- integrity ----------------------------------------------------------------------------------
def _leaf_checksum(x: jax.Array) -> jax.Array:
    """Position-weighted sum of the leaf's bits mod 2^32: any changed element changes it (odd
    weights are invertible mod 2^32), and integer sums do not depend on reduction order, so the
    value is the same on every mesh."""
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    if x.dtype == jnp.bool_:
        u = x.astype(jnp.uint32)
    else:
        width = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}[x.dtype.itemsize]
        u = jax.lax.bitcast_convert_type(x, width).astype(jnp.uint32)
    u = u.reshape(-1)
    w = jnp.arange(u.size, dtype=jnp.uint32) * jnp.uint32(2) + jnp.uint32(1)
    return jnp.sum(u * w, dtype=jnp.uint32)


def _audit(state):
    leaves = jax.tree.leaves(state)
    sums = jnp.stack([_leaf_checksum(x) for x in leaves]) if leaves else jnp.zeros(0, jnp.uint32)
    finite = [jnp.all(jnp.isfinite(x)) for x in leaves if jnp.issubdtype(x.dtype, jnp.floating)]
    return jnp.all(jnp.stack(finite)) if finite else jnp.bool_(True), sums


def state_audit(state: Any) -> tuple[bool, list[int]]:
    """(every floating leaf finite, one checksum per leaf) of a (possibly sharded) state."""
    leaves = jax.tree.leaves(state)
    mesh = next((x.sharding.mesh for x in leaves if isinstance(x.sharding, NamedSharding)), None)
    kw = {}
    if mesh is not None:
        kw["out_shardings"] = NamedSharding(mesh, P())
    finite, sums = jax.jit(_audit, **kw)(state)
    finite = np.asarray(finite.addressable_data(0))
    sums = np.asarray(sums.addressable_data(0))
    return bool(finite), [int(v) for v in sums]


def _verify(state: Any, meta: dict) -> str | None:
    """Why a restored state is not the one that was saved (None when it is, or when the
    checkpoint predates checksums)."""
    want = meta.get("checksums")
    if want is None:
        return None
    _, have = state_audit(state)
    if len(have) != len(want):
        return f"{len(have)} state leaves restored, {len(want)} saved"
    bad = [i for i, (a, b) in enumerate(zip(have, want)) if a != b]
    if bad:
        return f"checksum mismatch in {len(bad)} of {len(want)} state leaves"
    return None
