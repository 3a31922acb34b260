"""Orbax checkpoints: model + optimizer state, data-iterator state and metadata in one step.

The only module that imports orbax. A step holds ``state`` (the NNX state pytree, restored onto
the current mesh whatever mesh wrote it), ``data`` (the Grain iterator state, one file per
process: every process reads its own shard of the stream) and ``meta`` (config hash, corpus
fingerprint, process and worker counts, the loop's early-stopping state and a checksum per state
leaf).

Every item is checksummed: the state per leaf (``meta["checksums"]``), the iterator state in its
own file (``{"sha256": ..., "state": ...}``, so each process checks its own) and the metadata by
``meta["meta_sha256"]`` over the rest of it; any mismatch counts as a corrupted step.

A save that fails (disk full, I/O error; orbax writes asynchronously, so the error may surface at
the next save or at ``close``) raises ``CheckpointWriteError`` naming the step and the last good
checkpoint, after removing the step's temporary directory: the previous checkpoints are intact
and a rerun resumes from them.

A checkpoint is refused (``CheckpointMismatch``) when its metadata says it came from another
config, corpus or process layout. A newest checkpoint that cannot be read, or whose restored
state does not match the checksums written with it (truncated or overwritten files), is skipped
with a message, the previous good one restored, and the bad step moved aside to
``<checkpoints>.corrupt/`` so that training can write that step again.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
import sys
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
    no metrics by design; only validated steps compete for best-K), and the error records (with
    tracebacks, one per background thread) orbax logs when a save fails: the failure reaches the
    caller as one CheckpointWriteError line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and "/orbax/" in (record.pathname or ""):
            return False
        return "did not provide metrics" not in record.getMessage()


logging.getLogger("absl").addFilter(_NoMetricsFilter())


def _quiet_closed_loops(hook):
    """A ``sys.excepthook`` that drops 'Event loop is closed' (tensorstore completing a write of
    a failed save after orbax closed its event loop: ~36 tracebacks per failed save on a full
    disk, printed through the hook by C code), and passes everything else on."""

    def quiet(tp, value, tb):
        if tp is RuntimeError and str(value) == "Event loop is closed":
            return
        hook(tp, value, tb)

    quiet.modellens_quiet = True
    return quiet


def _quiet_unraisable(hook):
    """The same for ``sys.unraisablehook`` (pybind11 reports a callback's error that way)."""

    def quiet(u):
        if u.exc_type is RuntimeError and str(u.exc_value) == "Event loop is closed":
            return
        hook(u)

    quiet.modellens_quiet = True
    return quiet


if not getattr(sys.excepthook, "modellens_quiet", False):
    sys.excepthook = _quiet_closed_loops(sys.excepthook)
if not getattr(sys.unraisablehook, "modellens_quiet", False):
    sys.unraisablehook = _quiet_unraisable(sys.unraisablehook)


class CheckpointMismatch(ValueError):
    """A checkpoint written by another config, corpus or process layout."""


class CheckpointCorrupted(ValueError):
    """No checkpoint in the directory could be read back intact."""


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written (disk full, I/O error); earlier ones are intact."""


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def seal_meta(meta: dict) -> dict:
    """``meta`` (JSON-normalised) with ``meta_sha256`` over the rest of it."""
    meta = json.loads(json.dumps({k: v for k, v in meta.items() if k != "meta_sha256"}))
    return {**meta, "meta_sha256": _digest(meta)}


def meta_problem(meta: dict) -> str | None:
    """Why ``meta`` is not what was saved (None when it is, or when it predates checksums)."""
    want = meta.get("meta_sha256")
    if want is None:
        return None
    if _digest({k: v for k, v in meta.items() if k != "meta_sha256"}) != want:
        return "metadata checksum mismatch (meta edited or damaged)"
    return None


def _first_line(e: BaseException) -> str:
    first = (str(e).strip().splitlines() or [""])[0]
    return f"{type(e).__name__}: {first[:200]}"


def io_reason(e: BaseException) -> str:
    """The operating-system error under orbax's / tensorstore's wrappers, as 'strerror (ENAME)'
    (tensorstore reports it inside a ValueError as ``[os_error_code='28']``), else the first
    line of the message."""
    seen, cur = set(), e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno:
            return f"{os.strerror(cur.errno)} ({errno.errorcode.get(cur.errno, cur.errno)})"
        m = re.search(r"os_error_code='?(\d+)|os error (\d+)", str(cur))
        if m:
            code = int(m.group(1) or m.group(2))
            return f"{os.strerror(code)} ({errno.errorcode.get(code, code)})"
        cur = cur.__cause__ or cur.__context__
    return _first_line(e)


class _IteratorState:
    """A recorded data-iterator state in the shape grain's checkpoint handler expects.

    The prefetch thread runs ahead of the step, so the live iterator's state is not the one to
    save: the loop records the state *after* the last consumed batch and saves that. Grain's
    handler writes one ``process_<i>-of-<n>.json`` per process (JSON bytes; not a
    ``DatasetIterator``, so it goes through ``get_state()`` / ``set_state(bytes)``)."""

    def __init__(self, state: Any = None):
        self.state = state
        self.sealed = False  # the file carried a checksum
        self.problem: str | None = None

    def get_state(self) -> bytes:
        return json.dumps({"sha256": _digest(self.state), "state": self.state}).encode()

    def set_state(self, state: bytes) -> None:
        obj = json.loads(state)
        if isinstance(obj, dict) and set(obj) == {"sha256", "state"}:
            self.sealed, self.state = True, obj["state"]
            if _digest(self.state) != obj["sha256"]:
                self.problem = "data-iterator state checksum mismatch (edited or damaged)"
        else:  # written before iterator checksums
            self.state = obj

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
        self._pending: int | None = None
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
        checksums under ``"checksums"`` so a damaged copy is caught at restore.

        Raises :class:`CheckpointWriteError` when this save, or the previous asynchronous one,
        cannot be written."""
        meta = seal_meta({**meta, "iterator_sealed": True})
        self._pending = step
        try:
            self.manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state),
                    data=grain.checkpoint.CheckpointSave(_IteratorState(data_state)),
                    meta=ocp.args.JsonSave(meta),
                ),
                metrics=metrics,
            )
        except Exception as e:
            self._write_failed(e)

    def _write_failed(self, e: BaseException) -> None:
        """Waits for the other saves in flight, removes what the failed one left, then raises
        CheckpointWriteError."""
        try:
            self.manager.wait_until_finished()
        except Exception:  # the failed save itself, reported below
            pass
        self._remove_temporaries()
        try:
            self.manager.reload()
        except Exception:
            pass
        good = [s for s in self._final_steps() if s != self._pending]
        last = f"step {good[-1]} ({self.directory / str(good[-1])})" if good else "none"
        raise CheckpointWriteError(
            f"could not write the checkpoint of step {self._pending} in {self.directory} "
            f"({io_reason(e)}); the last good checkpoint is {last}; temporary "
            "files removed. Free space (or fix the filesystem) and rerun to resume."
        ) from e

    def _final_steps(self) -> list[int]:
        """Steps with a finalized directory on disk (orbax's commit marker written)."""
        out = []
        if self.directory.is_dir():
            for d in self.directory.iterdir():
                if d.name.isdigit() and d.is_dir() and _finalized(d):
                    out.append(int(d.name))
        return sorted(out)

    def _remove_temporaries(self) -> None:
        if jax.process_index() != 0 or not self.directory.is_dir():
            return
        for d in self.directory.iterdir():
            if ".orbax-checkpoint-tmp" in d.name or (d.name.isdigit() and not _finalized(d)):
                shutil.rmtree(d, ignore_errors=True)

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
                why = meta_problem(meta)
            except Exception as e:  # unreadable metadata: treat as corrupted
                why = f"metadata unreadable ({type(e).__name__}: {e})"
            if why:
                bad.append((s, why))
                say(f"warning: checkpoint step {s} is corrupted: {why}; "
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
                data = out["data"]
                if not problem and data.problem:
                    problem = data.problem
                if not problem and meta.get("iterator_sealed") and not data.sealed:
                    problem = "data-iterator state without its checksum (edited or damaged)"
            except Exception as e:  # first line only: tensorstore errors embed a long spec
                problem = _first_line(e)
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
        try:
            self.manager.wait_until_finished()
        except Exception as e:
            self._write_failed(e)

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Waits for every asynchronous save, then closes (CheckpointWriteError if one failed)."""
        try:
            self.wait()
        finally:
            try:
                self.manager.close()
            except Exception as e:  # the failed save's error, raised again: already reported
                log.debug("closing the checkpoint manager: %s", e)


def _finalized(d: Path) -> bool:
    """Whether orbax finished the step directory ``d`` (its commit marker is there)."""
    return (d / "_CHECKPOINT_METADATA").exists() or (d / "commit_success.txt").exists()


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
        u = x  # promotes to uint32 in the product below
    else:
        width = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}[x.dtype.itemsize]
        u = jax.lax.bitcast_convert_type(x, width).astype(jnp.uint32)
    u = u.reshape(-1)
    w = jax.lax.iota(jnp.uint32, u.size) * 2 + 1  # 2i + 1 mod 2^32
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
