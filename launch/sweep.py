"""Runs the ``get_sweep(h)`` of a config file: expands it into runs ``ROOT/<name>``, trains the
unfinished ones (or prints their commands / a cluster script), and aggregates the results.

  python launch/sweep.py --config=configs/sweep_example.py:tiny --workdir=ROOT [--parallel=N]
      [--gpus=0,1] [--dry_run | --emit=shell|slurm] [--extra='--config.train.steps=20']
      [--vectorize [--members_per_job=N]] [--aggregate_only]

Finished runs are skipped, unfinished ones resume from their checkpoints; two sweeps on one root
are refused. ``--vectorize`` trains the runs as ``python -m modellens_jax.members`` jobs (every
key the sweep varies must be a loss weight or a dropout rate). The declaration, naming and
aggregation are ``modellens_jax.experiments.sweep``; the process handling and the scripts
``launch/executor.py``. Exit status: 0 all runs finished, 1 some did not, 2 bad input, 130
interrupted. (``python -m modellens_jax.sweep`` runs this file.)
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from absl import flags
from ml_collections import config_flags

from modellens_jax import cli, jobguard
from modellens_jax.experiments import sweep
from modellens_jax.experiments.sweep import LOG_FILE, MembersJob, Run, SweepError

if str(Path(__file__).resolve().parent) not in sys.path:  # loaded by path, not run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent))
import executor  # launch/executor.py, next to this file


def _define(fv: flags.FlagValues) -> None:
    cli.config_flag(fv)
    flags.DEFINE_string("workdir", None, "Sweep root; runs go to ROOT/<name>.", required=True,
                        flag_values=fv)  # fmt: skip
    flags.DEFINE_integer("parallel", 1, "Runs at a time (local); with --emit=slurm the array's "
                         "task limit.", flag_values=fv)  # fmt: skip
    flags.DEFINE_bool("dry_run", False, "Print the commands, run nothing.", flag_values=fv)
    flags.DEFINE_enum("emit", None, ["shell", "slurm"], "Print a script for a cluster.",
                      flag_values=fv)  # fmt: skip
    flags.DEFINE_string("extra", "", "Flags added to every run, e.g. '--config.train.steps=20 "
                        "--config.model.use_model_desc=False'.", flag_values=fv)  # fmt: skip
    flags.DEFINE_string("python", None, "Interpreter for the runs (default: this one; in "
                        "emitted scripts $PYTHON or python).", flag_values=fv)  # fmt: skip
    flags.DEFINE_string("gpus", "", "Comma-separated GPU ids: one run per GPU at a time (sets "
                        "CUDA_VISIBLE_DEVICES; overrides --parallel).", flag_values=fv)  # fmt: skip
    flags.DEFINE_multi_string("sbatch", [], "Extra #SBATCH line for --emit=slurm, e.g. "
                              "--sbatch='--gres=gpu:1' (repeatable).", flag_values=fv)  # fmt: skip
    flags.DEFINE_bool("aggregate_only", False, "Only write the table.", flag_values=fv)
    flags.DEFINE_bool("vectorize", False, "Train the runs together as `python -m "
                      "modellens_jax.members` jobs (every varying key must be a loss weight or "
                      "a dropout rate).", flag_values=fv)  # fmt: skip
    flags.DEFINE_integer("members_per_job", 0, "With --vectorize: at most N runs per members "
                         "job (0: all in one job).", flag_values=fv)  # fmt: skip


def _run(fv: flags.FlagValues) -> int:
    spec = config_flags.get_config_filename(fv["config"])
    if config_flags.get_override_values(fv["config"]):
        raise cli.UsageError("--config.x=y overrides of a sweep go in --extra (applied to every "
                             "run)")  # fmt: skip
    root = Path(fv.workdir)
    runs = sweep.plan(spec, root, fv.extra)
    base = sweep.resolve_config(spec, sweep.split_extra(fv.extra))
    judge = str(base.train.judge)
    if fv.vectorize:
        sweep.vectorisable_split([r.point for r in runs], sweep.member_keys())  # fail first
    elif fv.members_per_job:
        raise SweepError("--members_per_job needs --vectorize")
    title = f"`{spec}`" + (f" with `{fv.extra}`" if fv.extra.strip() else "")
    states = {r.name: sweep.status(r) for r in runs}
    todo = [r for r in runs if states[r.name] in ("pending", "partial")]
    done = [r for r in runs if states[r.name] == "done"]
    busy = [r for r in runs if states[r.name] == "running"]
    summary = (f"{len(runs)} runs: {len(done)} finished (skipped), {len(busy)} running "
               f"elsewhere, {len(todo)} to run")  # fmt: skip
    jobs: list[Run | MembersJob] = list(todo)
    if fv.vectorize:
        jobs = list(sweep.members_jobs(runs, todo, spec, root, fv.extra,
                                       per_job=fv.members_per_job, base=base))  # fmt: skip
        summary += f" in {len(jobs)} vectorised job(s)"

    if fv.emit:
        header = f"sweep {spec} -> {root}: {summary}"
        python = fv.python or "python"
        if fv.emit == "shell":
            print(executor.emit_shell(jobs, done, header, python), end="")
        else:
            print(executor.emit_slurm(jobs, done, header, python, root=root,
                                      parallel=fv.parallel, sbatch=fv.sbatch,
                                      job_name=f"sweep-{Path(sweep.split_spec(spec)[0]).stem}"),
                  end="")  # fmt: skip
        return 0
    python = fv.python or sys.executable
    if fv.dry_run:
        _print_dry_run(spec, root, summary, runs, todo, jobs, states, python, fv.vectorize)
        return 0

    print(f"sweep {spec} -> {root}: {summary}", flush=True)
    codes: dict[str, int] = {}
    interrupted = False
    if todo and not fv.aggregate_only:
        gpus = [g.strip() for g in fv.gpus.split(",") if g.strip()]
        lock = jobguard.WorkdirLock(root, "sweep", name="sweep",
                                    say=lambda s: print(s, file=sys.stderr))  # fmt: skip
        lock.acquire()  # two sweeps on one root: the second is refused (WorkdirLocked, exit 2)
        try:
            codes = executor.execute(jobs, parallel=fv.parallel, python=python, gpus=gpus,
                                     say=lambda s: print(s, flush=True))  # fmt: skip
        except KeyboardInterrupt:
            interrupted = True
        finally:
            lock.release()
    failed = [n for n, c in codes.items() if c != 0]
    rows = sweep.aggregate(runs, root, judge=judge, title=title, failed=failed)
    print((root / "sweep.md").read_text())
    print(f"wrote {root / 'sweep.csv'}, {root / 'sweep.md'}"
          + (f", {root / 'sweep_heatmap.png'}" if (root / "sweep_heatmap.png").exists() else ""))  # fmt: skip
    if interrupted:
        return 130
    unfinished = [r["run"] for r in rows if r["status"] != "done"]
    if unfinished:
        print(f"{len(unfinished)} run(s) not finished: {', '.join(unfinished)}", file=sys.stderr)
        return 1
    return 0


def _print_dry_run(spec, root, summary, runs, todo, jobs, states, python, vectorize) -> None:
    """The commands the sweep would run, each after a comment naming its run(s) and log."""
    print(f"# sweep {spec} -> {root}: {summary}")
    if vectorize:
        for r in runs:
            if r not in todo:
                print(f"# skip {r.name}: {states[r.name]}")
        for job in jobs:
            restart = [r.name for r in job.runs if states[r.name] == "partial"]
            note = f"; restarts {', '.join(restart)} from scratch" if restart else ""
            print(f"# {job.name}: {len(job.runs)} member(s) ({', '.join(r.name for r in job.runs)})"
                  f"{note}: log {job.log_path}")  # fmt: skip
            print(shlex.join(job.command(python)))
        return
    for r in runs:
        if r in todo:
            resume = " (resumes)" if states[r.name] == "partial" else ""
            print(f"# {r.name}{resume}: log {r.workdir / LOG_FILE}")
            print(shlex.join(r.command(python)))
        else:
            print(f"# skip {r.name}: {states[r.name]}")


main = cli.command(_define, _run, __doc__)

if __name__ == "__main__":
    sys.exit(main())
