"""Runs a sweep's jobs (``experiments.sweep.Run`` trainers and ``MembersJob``s): locally as child
processes, ``parallel`` at a time or one per GPU, with their logs, pid files and signal handling;
or as a bash script or a SLURM job array for a cluster. Used by ``launch/sweep.py``."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from modellens_jax.experiments.sweep import PID_FILE, MembersJob, Run


class _Interrupted(Exception):
    pass


def _raise_interrupt(signum, frame):
    raise _Interrupted(signal.Signals(signum).name)


def execute(
    runs: Sequence[Run | MembersJob],
    *,
    parallel: int = 1,
    python: str = sys.executable,
    gpus: Sequence[str] = (),
    poll_s: float = 0.2,
    say=print,
) -> dict[str, int]:
    """Runs the trainer for each run (or members job), ``parallel`` at a time (one GPU each when
    ``gpus`` is given), appending output to ``ROOT/<name>/log.txt`` (a members job's to
    ``ROOT/members-<hash>.log``); returns the exit code per run name (a members job's for each of
    its runs). On SIGINT/SIGTERM the trainers it started are terminated (they resume, or a
    members job restarts, on the next sweep)."""
    slots = [str(g) for g in gpus] or [None] * max(1, parallel)
    free = list(range(len(slots)))
    queue = list(runs)
    running: dict[subprocess.Popen, tuple[Run | MembersJob, float, Any, int]] = {}
    codes: dict[str, int] = {}
    total, started = len(runs), 0
    old_term = signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, _raise_interrupt)
    except ValueError:  # not the main thread
        old_term = None
    try:
        while queue or running:
            while queue and free:
                run, slot = queue.pop(0), free.pop(0)
                started += 1
                run.workdir.mkdir(parents=True, exist_ok=True)
                now = time.strftime("%Y-%m-%d %H:%M:%S")
                for r in run.runs:
                    r.workdir.mkdir(parents=True, exist_ok=True)
                    if r.log_path != run.log_path:  # a member: point its log at the job's
                        with open(r.log_path, "a") as f:
                            f.write(f"\n# {now} trained in {run.name}: log {run.log_path}\n")
                env = dict(os.environ)
                if slots[slot] is not None:
                    env["CUDA_VISIBLE_DEVICES"] = slots[slot]
                cmd = run.command(python)
                log = open(run.log_path, "a")  # closed when the run exits
                log.write(f"\n# {now} {shlex.join(cmd)}\n")
                log.flush()
                proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
                for r in run.runs:
                    (r.workdir / PID_FILE).write_text(f"{proc.pid}\n")
                running[proc] = (run, time.time(), log, slot)
                gpu = f" on GPU {slots[slot]}" if slots[slot] is not None else ""
                what = run.name if isinstance(run, Run) else f"{run.name} ({len(run.runs)} members)"
                say(f"[{started}/{total}] start {what}{gpu} (log {run.log_path})")
            time.sleep(poll_s)
            for proc in [p for p in running if p.poll() is not None]:
                run, t0, log, slot = running.pop(proc)
                log.close()
                for r in run.runs:
                    (r.workdir / PID_FILE).unlink(missing_ok=True)
                    codes[r.name] = proc.returncode
                free.append(slot)
                dt = time.time() - t0
                if proc.returncode == 0:
                    say(f"      done  {run.name} in {dt:.0f}s")
                else:
                    tail = run.log_path.read_text(errors="replace").splitlines()
                    say(f"      FAILED {run.name} (exit {proc.returncode}) after {dt:.0f}s; "
                        "end of its log:\n        " + "\n        ".join(tail[-15:]))  # fmt: skip
    except (KeyboardInterrupt, _Interrupted):
        say(f"interrupted: stopping {len(running)} run(s); re-run the sweep to resume them")
        for proc in running:
            proc.terminate()
        deadline = time.time() + 30
        for proc, (run, _, log, _) in running.items():
            try:
                proc.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()
            for r in run.runs:
                (r.workdir / PID_FILE).unlink(missing_ok=True)
        raise KeyboardInterrupt from None
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
    return codes


# --- cluster scripts --------------------------------------------------------------------------
PY = '"$PYTHON"'


def _cmd_line(run: Run | MembersJob, python: str) -> str:
    """The run's (or members job's) command with its output appended to its log."""
    log = shlex.quote(str(run.log_path))
    return f"{python} -m {run.module} {shlex.join(run.args)} >>{log} 2>&1"


def emit_shell(
    runs: Sequence[Run | MembersJob], skipped: Sequence[Run], header: str, python: str
) -> str:
    """A bash script running the unfinished runs one after the other (failures are reported at
    the end; re-running the sweep afterwards skips what finished and writes the table)."""
    lines = ["#!/usr/bin/env bash", f"# {header}", "set -uo pipefail",
             f"PYTHON=${{PYTHON:-{python}}}", "failed=0"]  # fmt: skip
    lines += [f"# skip {r.name}: finished" for r in skipped]
    for r in runs:
        failed = shlex.quote(f"FAILED {r.name}")
        lines.append(f"echo {shlex.quote('== ' + r.name)}")
        lines.append(f"mkdir -p {shlex.quote(str(r.workdir))}")
        lines.append(f"{_cmd_line(r, PY)} || {{ echo {failed} >&2; failed=$((failed + 1)); }}")
    lines += ['if [ "$failed" -gt 0 ]; then echo "$failed run(s) failed" >&2; exit 1; fi']
    return "\n".join(lines) + "\n"


def emit_slurm(
    runs: Sequence[Run | MembersJob],
    skipped: Sequence[Run],
    header: str,
    python: str,
    *,
    root: Path,
    parallel: int = 0,
    sbatch: Sequence[str] = (),
    job_name: str = "sweep",
) -> str:
    """An sbatch job array with one task per unfinished run."""
    lines = ["#!/usr/bin/env bash", f"# {header}"]
    if not runs:
        return "\n".join([*lines, "# nothing to run: every run is finished", "exit 0"]) + "\n"
    limit = f"%{parallel}" if parallel > 0 else ""
    lines += [
        f"#SBATCH --job-name={job_name}",
        f"#SBATCH --array=0-{len(runs) - 1}{limit}",
        f"#SBATCH --output={root}/slurm-%A_%a.out",
        f"#SBATCH --chdir={Path.cwd()}",
        *(f"#SBATCH {opt}" for opt in sbatch),
        "set -euo pipefail",
        f"PYTHON=${{PYTHON:-{python}}}",
    ]
    lines += [f"# skip {r.name}: finished" for r in skipped]
    lines.append('case "$SLURM_ARRAY_TASK_ID" in')
    for i, r in enumerate(runs):
        mkdir = f"mkdir -p {shlex.quote(str(r.workdir))}"
        lines.append(f"  {i}) {mkdir} && {_cmd_line(r, 'exec ' + PY)} ;;")
    lines += ['  *) echo "no run for task $SLURM_ARRAY_TASK_ID" >&2; exit 2 ;;', "esac"]
    return "\n".join(lines) + "\n"
