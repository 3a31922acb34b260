"""What clusters do to jobs: preemption signals and shared work directories (standard library
only, so every command can import it).

* :class:`StopSignals` turns SIGTERM / SIGINT (what a preempted TPU VM, SLURM's
  ``--signal=TERM@120`` or Kubernetes sends) into a flag the training loop reads after each step:
  the loop finishes that step, saves a checkpoint, waits for every asynchronous save and exits
  with :data:`EXIT_INTERRUPTED`. A second signal while that happens gets the default behaviour
  (the process dies at once).
* :class:`WorkdirLock` is an exclusive lock file for a run (``train`` and ``members`` on their
  workdir, ``export`` on its bundle, ``launch/sweep.py`` on its root). It records pid, host and
  command; a lock whose process is gone (same host, pid not alive or reused) is stale and taken
  over with a warning. A second job on the same directory is refused (:class:`WorkdirLocked`,
  exit 2) with one line naming the holder.

Exit statuses of the commands (``sysexits.h`` where one fits):
  0 done · 2 bad input, bad config or a locked workdir · 3 diverged, mismatched or unreadable
  checkpoints · 74 (EX_IOERR) a checkpoint or bundle could not be written (disk full, I/O error;
  the previous checkpoint is intact and temporary files are removed) · 75 (EX_TEMPFAIL)
  stopped by SIGTERM/SIGINT after saving a checkpoint: rerun the same command to resume.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
import uuid
from pathlib import Path

EXIT_USAGE = 2  # bad input: a flag, a config, a corpus row, a query, a locked workdir
EXIT_RUN = 3  # a run that cannot go on: diverged, mismatched or corrupted checkpoints
EXIT_IOERR = 74  # an output that cannot be written
EXIT_INTERRUPTED = 75  # stopped by a signal after saving; rerun to resume


class TrainingDiverged(RuntimeError):
    """A non-finite loss; the last good checkpoint is left intact."""


class WorkdirLocked(ValueError):
    """Another live job holds the lock of this directory."""


class Interrupted(Exception):
    """Stopped by a signal after the checkpoint of ``step`` was saved (and waited for)."""

    def __init__(self, message: str, step: int, signame: str):
        super().__init__(message)
        self.step, self.signame = step, signame


class StopSignals:
    """Context manager: while active, SIGTERM and SIGINT set :attr:`requested` (the name of the
    first signal) instead of killing the process; the previous handlers come back on exit.

    Only the main thread can install handlers; elsewhere this is a no-op (``requested`` stays
    None). After the first signal the default handlers are restored, so a second one kills."""

    SIGNALS = ("SIGTERM", "SIGINT")

    def __init__(self):
        self.requested: str | None = None
        self._old: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        del frame
        if self.requested is None:
            self.requested = signal.Signals(signum).name
        for s in self._old:  # a second signal: the default action
            signal.signal(s, signal.SIG_DFL if s != signal.SIGINT else signal.default_int_handler)

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                s = getattr(signal, name)
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)
        self._old.clear()


def _proc_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    if start is not None:
        now = _proc_start(pid)
        if now is not None and now != start:
            return False  # the pid was reused by another process
    return True


def describe(holder: dict) -> str:
    return (
        f"pid {holder.get('pid')} on {holder.get('host')} ({holder.get('command', '?')}, since "
        f"{holder.get('started', '?')})"
    )


class WorkdirLock:
    """``with WorkdirLock(directory, "train"):`` holds ``directory/.<name>.lock`` for the block.

    The lock file is written whole to a temporary name and hard-linked into place, so it never
    exists half-written and two jobs cannot both create it. ``enabled=False`` (the non-zero
    processes of a multi-process run: process 0 holds the run's lock) makes it a no-op."""

    def __init__(self, directory: str | os.PathLike, command: str, *, name: str = "workdir",
                 enabled: bool = True, say=print):  # fmt: skip
        self.directory = Path(directory)
        self.path = self.directory / f".{name}.lock"
        self.command, self.enabled, self.say = command, enabled, say
        self.held = False

    def holder(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {"pid": "?", "host": "?", "command": "unreadable lock file"}

    def acquire(self) -> None:
        if not self.enabled or self.held:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        pid = os.getpid()
        me = {
            "pid": pid,
            "host": socket.gethostname(),
            "command": self.command,
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "proc_start": _proc_start(pid),
        }
        tmp = self.directory / f".{self.path.name}.{uuid.uuid4().hex[:8]}"
        tmp.write_text(json.dumps(me))
        try:
            for _ in range(3):
                try:
                    os.link(tmp, self.path)
                    self.held = True
                    return
                except FileExistsError:
                    pass
                h = self.holder()
                if h is None:
                    continue  # released meanwhile
                same_host = h.get("host") == me["host"]
                if (
                    same_host
                    and isinstance(h.get("pid"), int)
                    and not _alive(h["pid"], h.get("proc_start"))
                ):
                    self.say(f"warning: {self.path}: stale lock of {describe(h)} (no such process); "
                             "taking it over")  # fmt: skip
                    self.path.unlink(missing_ok=True)
                    continue
                raise WorkdirLocked(
                    f"{self.directory}: in use by {describe(h)} (lock {self.path}); wait for it, "
                    "use another directory, or delete the lock file if that job is gone"
                )
            raise WorkdirLocked(f"{self.path}: could not take the lock (contended)")
        finally:
            tmp.unlink(missing_ok=True)

    def release(self) -> None:
        if self.held:
            h = self.holder()
            if h is not None and h.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> WorkdirLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
