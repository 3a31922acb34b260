"""Hyper-parameter sweeps declared in config files: the declaration, its expansion into runs
(names, trainer flags parsed as the trainer will parse them), each run's status, and the
aggregation of finished runs. Running them (locally, or as shell/SLURM scripts) is
``launch/sweep.py`` with ``launch/executor.py``.

A config file declares its sweep next to ``get_config`` (big_vision's ``get_hyper`` style)::

    def get_sweep(h):
        return h.product([
            h.sweep("config.loss.weights.pairwise", [0.0, 0.5, 1.0]),
            h.sweep("config.model.dropout", [0.0, 0.1, 0.3]),
        ])

``h.sweep`` gives one point per value, ``h.product`` the cartesian product of its factors (the
first factor outermost), ``h.zip`` pairs factors of equal length element-wise, ``h.chain``
concatenates and ``h.fixed`` sets one value everywhere; they nest freely. A point is a dict
``{"config.a.b": value}``; values may be floats, ints, bools, strings, None or tuples.

Each point becomes a run ``ROOT/<name>`` (``pairwise=0.5,dropout=0.1``: keys shortened to their
shortest unique suffix, values written exactly) trained by ``python -m modellens_jax.train
--config=FILE[:preset] --workdir=ROOT/<name> --config.loss.weights.pairwise=0.5 ...``. Every
point's overrides are parsed by ``config_flags`` exactly as the trainer will parse them before
anything starts (a typo or a wrong type stops the sweep up front), and the parsed values are
checked against the declared ones. A run is finished when ``ROOT/<name>/train_summary.json``
records the configured number of steps (or an early stop). The best validation metrics of every
finished run go to ``ROOT/sweep.csv`` and ``ROOT/sweep.md``, and for a 2-D sweep a heat map of
the judge metric to ``ROOT/sweep_heatmap.png`` (matplotlib, the ``plots`` extra).

Vectorised sweeps: when every key the sweep varies is a loss weight or a dropout rate
(``experiments.members.MEMBER_KEYS``; keys set to one value everywhere may be anything), the
unfinished runs can be grouped into ``MembersJob``s, each ONE ``python -m modellens_jax.members
--config=FILE[:preset] --workdir=ROOT --members='[{...}, ...]' --names='[...]'`` job of up to N
runs, one jitted program with a leading member axis. Each member is written as the ordinary run
``ROOT/<name>``, so skipping finished runs and the aggregation are unchanged. A members job does
not resume: an interrupted one is trained again from the start. The job's output goes to
``ROOT/members-<hash>.log`` (each member's ``log.txt`` points there).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import itertools
import json
import math
import os
import re
import shlex
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from modellens_jax import config as config_lib
from modellens_jax import config_check

Point = dict[str, Any]

TRAIN_MODULE = "modellens_jax.train"
MEMBERS_MODULE = "modellens_jax.members"
SUMMARY = "train_summary.json"  # rundir.SUMMARY (not imported: planning does not load jax)
PID_FILE = "sweep.pid"
LOG_FILE = "log.txt"
MAX_NAME = 120  # characters; longer names are cut and suffixed with a hash of the point
_SAFE = re.compile(r"[^A-Za-z0-9._+-]")
_CONFIG_FLAGS = ("--config.", "--noconfig.")  # overrides (--noconfig.x sets a bool to False)


class SweepError(ValueError):
    """A sweep declaration or override that cannot be run (the message says which point)."""


# --- declaring sweeps ---------------------------------------------------------------------------
def _plain(value: Any, key: str) -> Any:
    """Checks a swept value is a plain, flag-renderable value (numpy scalars are unwrapped)."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()  # numpy scalar
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (tuple, list)):
        return type(value)(_plain(v, key) for v in value)
    if isinstance(value, dict):
        return {str(k): _plain(v, key) for k, v in value.items()}
    raise SweepError(f"{key}: value {value!r} of type {type(value).__name__} cannot be a flag")


def _merge(points: Iterable[Point]) -> Point:
    out: Point = {}
    for p in points:
        for k, v in p.items():
            if k in out:
                raise SweepError(f"{k} is set by two factors of one product/zip")
            out[k] = v
    return out


class Hyper:
    """The ``h`` handed to a config file's ``get_sweep(h)``; every method returns a list of
    points (dicts ``{"config.x.y": value}``) and accepts such lists, so calls nest."""

    @staticmethod
    def sweep(key: str, values: Iterable[Any]) -> list[Point]:
        """One point per value of ``key`` (a ``config.``-prefixed dotted path)."""
        if not isinstance(key, str) or not key.startswith("config.") or key == "config.":
            raise SweepError(f"sweep key {key!r} must be a 'config.'-prefixed path")
        if isinstance(values, (str, bytes, dict)):
            raise SweepError(f"{key}: values must be a list of values, not {values!r}")
        values = list(values)
        if not values:
            raise SweepError(f"{key}: empty list of values")
        return [{key: _plain(v, key)} for v in values]

    @classmethod
    def fixed(cls, key: str, value: Any) -> list[Point]:
        """One point setting ``key`` to ``value`` (use inside a product)."""
        return cls.sweep(key, [value])

    @staticmethod
    def product(factors: Sequence[list[Point]]) -> list[Point]:
        """Cartesian product of the factors, the first one outermost."""
        return [_merge(combo) for combo in itertools.product(*factors)]

    @staticmethod
    def zip(factors: Sequence[list[Point]]) -> list[Point]:
        """Element-wise union of factors of equal length."""
        lengths = {len(f) for f in factors}
        if len(lengths) > 1:
            raise SweepError(f"h.zip of factors with different lengths {sorted(lengths)}")
        return [_merge(combo) for combo in zip(*factors)]

    @staticmethod
    def chain(factors: Sequence[list[Point]]) -> list[Point]:
        """The points of every factor, one after the other."""
        return [dict(p) for f in factors for p in f]


def split_spec(config_spec: str) -> tuple[str, str | None]:
    """``configs/x.py:tiny`` -> (``configs/x.py``, ``tiny``)."""
    path, sep, arg = config_spec.partition(":")
    return path, (arg if sep else None)


def load_sweep(config_spec: str) -> list[Point]:
    """The points of the ``get_sweep(h)`` declared in the config file of ``config_spec``."""
    path, _ = split_spec(config_spec)
    module = config_lib.load_module(path, "sweep")
    get_sweep = getattr(module, "get_sweep", None)
    if get_sweep is None:
        raise SweepError(f"{path} has no get_sweep(h)")
    points = get_sweep(Hyper())
    if not isinstance(points, list) or not all(isinstance(p, dict) for p in points):
        raise SweepError(f"{path}: get_sweep(h) must return a list of points (dicts)")
    if not points:
        raise SweepError(f"{path}: get_sweep(h) returned no points")
    return points


# --- names ------------------------------------------------------------------------------------
def short_labels(keys: Sequence[str]) -> dict[str, str]:
    """Each key's shortest dotted suffix (without ``config.``) that no other key ends with."""
    paths = {k: k.removeprefix("config.").split(".") for k in keys}
    out = {}
    for k, parts in paths.items():
        for n in range(1, len(parts) + 1):
            label = ".".join(parts[-n:])
            if not any(o != k and ".".join(q[-n:]) == label for o, q in paths.items()):
                break
        out[k] = label
    return out


def format_value(value: Any) -> str:
    """A value as it appears in a run name: exact for numbers, filesystem-safe characters."""
    if isinstance(value, bool) or value is None:
        text = str(value).lower()
    elif isinstance(value, float):
        text = repr(value)
    elif isinstance(value, (tuple, list)):
        text = "_".join(format_value(v) for v in value) or "empty"
    elif isinstance(value, dict):
        text = "_".join(f"{k}-{format_value(v)}" for k, v in value.items()) or "empty"
    else:
        text = str(value)
    return _SAFE.sub("_", text) or "empty"


def _point_hash(point: Point) -> str:
    blob = json.dumps(sorted((k, repr(v)) for k, v in point.items()))
    return hashlib.sha1(blob.encode()).hexdigest()[:8]


def run_names(points: Sequence[Point]) -> list[str]:
    """Readable, filesystem-safe, unique names (also case-insensitively) for the points."""
    seen_points = {}
    for i, p in enumerate(points):
        key = _point_hash(p)
        if key in seen_points and points[seen_points[key]] == p:
            raise SweepError(f"duplicate sweep point {p} (points {seen_points[key]} and {i})")
        seen_points[key] = i
    keys = list(dict.fromkeys(k for p in points for k in p))
    labels = short_labels(keys)
    names = []
    for p in points:
        name = ",".join(f"{labels[k]}={format_value(v)}" for k, v in p.items()) or "base"
        if len(name) > MAX_NAME:
            name = f"{name[: MAX_NAME - 9].rstrip(',=')}_{_point_hash(p)}"
        names.append(name)
    counts: dict[str, int] = {}
    for n in names:
        counts[n.lower()] = counts.get(n.lower(), 0) + 1
    return [
        f"{n}_{_point_hash(p)}" if counts[n.lower()] > 1 else n
        for n, p in zip(names, points, strict=True)
    ]


# --- flags ------------------------------------------------------------------------------------
def render_value(value: Any, current: Any = None) -> str:
    """The text after ``--config.x=`` that ``config_flags`` parses back to ``value``; ``current``
    is the field's value in the config (its type picks the parser: a ``str`` field takes the
    text literally, a ``None`` field parses a Python literal)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if isinstance(current, str) else repr(value)
    if isinstance(value, float):
        return repr(value)
    return repr(value)  # int, None, tuple, list, dict: Python literals


def render_flags(point: Point, config: Any = None) -> list[str]:
    """``--config.a.b=v`` flags for a point (argv items: no shell quoting needed)."""
    out = []
    for key, value in point.items():
        path = key.removeprefix("config.")
        current = _get(config, path) if config is not None else None
        out.append(f"--config.{path}={render_value(value, current)}")
    return out


def _get(config: Any, path: str) -> Any:
    from ml_collections.config_flags import config_path

    try:
        return config_path.get_value(path, config)
    except (KeyError, AttributeError) as e:
        raise SweepError(f"config.{path} is not a field of the config ({e})") from None


def resolve_config(config_spec: str, args: Sequence[str] = ()):
    """The locked ``ConfigDict`` the trainer gets for ``--config=config_spec`` plus the
    ``--config.*`` items of ``args`` (other flags are ignored), parsed by ``config_flags``."""
    from absl import flags
    from ml_collections import config_flags

    argv = ["sweep", f"--config={config_spec}", *(a for a in args if a.startswith(_CONFIG_FLAGS))]
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file(
        "config", None, "config", flag_values=fv, lock_config=True, sys_argv=argv
    )
    cfg_args = argv[2:]
    try:
        fv(argv)
    except Exception as e:  # absl and ml_collections raise assorted types
        raise SweepError(f"{' '.join(cfg_args) or config_spec}: {e}") from None
    return fv["config"].value


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if hasattr(a, "to_dict"):
        a = a.to_dict()
    return a == b and isinstance(a, bool) == isinstance(b, bool)


# --- runs -------------------------------------------------------------------------------------
@dataclasses.dataclass
class Run:
    """One point of a sweep: where it runs and the exact trainer arguments."""

    name: str
    point: Point
    workdir: Path
    args: list[str]  # everything after "python -m modellens_jax.train"
    steps: int  # train.steps after the overrides
    patience: int = 0
    eval_every: int = 0

    module = TRAIN_MODULE

    def command(self, python: str = sys.executable) -> list[str]:
        return [python, "-m", self.module, *self.args]

    # the job interface shared with MembersJob (what execute and the emitters use)
    @property
    def runs(self) -> list[Run]:
        return [self]

    @property
    def log_path(self) -> Path:
        return self.workdir / LOG_FILE


@dataclasses.dataclass
class MembersJob:
    """Runs trained together by one ``python -m modellens_jax.members`` job (``--vectorize``)."""

    name: str  # members-<hash of the member names>: stable across re-runs of the sweep
    runs: list[Run]
    workdir: Path  # the sweep root (members go to ROOT/<name>)
    args: list[str]  # everything after "python -m modellens_jax.members"

    module = MEMBERS_MODULE

    def command(self, python: str = sys.executable) -> list[str]:
        return [python, "-m", self.module, *self.args]

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"


def split_extra(extra: str | Sequence[str]) -> list[str]:
    args = shlex.split(extra) if isinstance(extra, str) else list(extra)
    for a in args:
        if a == "--config" or a.startswith("--config="):
            raise SweepError(f"--extra may not set the config file itself ({a})")
        if a == "--workdir" or a.startswith("--workdir="):
            raise SweepError(f"--extra may not set the workdir ({a}): it is ROOT/<name>")
    return args


def plan(config_spec: str, root: str | os.PathLike, extra: str | Sequence[str] = ()) -> list[Run]:
    """Expands the sweep of ``config_spec`` into runs under ``root``; every point's flags are
    parsed like the trainer will parse them and must give back the declared values."""
    points = load_sweep(config_spec)
    names = run_names(points)
    extra_args = split_extra(extra)
    extra_keys = {
        a.split("=", 1)[0].removeprefix("--no").removeprefix("--").removeprefix("config.")
        for a in extra_args
        if a.startswith(_CONFIG_FLAGS)
    }
    base = resolve_config(config_spec, extra_args)
    runs = []
    for name, point in zip(names, points, strict=True):
        clash = extra_keys & {k.removeprefix("config.") for k in point}
        if clash:
            raise SweepError(f"--extra sets {sorted(clash)}, which the sweep varies")
        flags_ = render_flags(point, base)
        try:
            cfg = resolve_config(config_spec, [*flags_, *extra_args])
        except SweepError as e:
            raise SweepError(f"run {name}: {e}") from None
        try:  # the trainer's own checks, before any run starts
            config_check.validate(cfg, check_mesh=False, partial=True)
        except config_check.ConfigError as e:
            raise SweepError(f"run {name}: {e}") from None
        for key, value in point.items():
            got = _get(cfg, key.removeprefix("config."))
            if not _same(got, value):
                raise SweepError(
                    f"run {name}: {key} parses back as {got!r}, not {value!r} "
                    f"(check the type of the field)"
                )
        workdir = Path(root) / name
        args = [f"--config={config_spec}", f"--workdir={workdir}", *flags_, *extra_args]
        tr = cfg.train
        runs.append(Run(
            name, point, workdir, args, int(tr.steps),
            int(tr.get("early_stop_patience", 0) or 0), int(tr.get("eval_every", 0) or 0),
        ))  # fmt: skip
    return runs


# --- vectorised sweeps -------------------------------------------------------------------------
def member_keys() -> frozenset[str]:
    """The vectorisable keys (``config.``-less), from ``experiments.members`` (imports jax)."""
    from modellens_jax.experiments import members

    return frozenset(members.MEMBER_KEYS)


_MISSING = object()


def vectorisable_split(points: Sequence[Point], keys: frozenset[str]) -> tuple[list[str], Point]:
    """(the varying keys, all vectorisable; the keys set to one value in every point). Raises a
    SweepError naming the first key that varies and cannot be vectorised."""
    all_keys = list(dict.fromkeys(k for p in points for k in p))
    varying, fixed = [], {}
    for k in all_keys:
        values = [p.get(k, _MISSING) for p in points]
        if all(v is not _MISSING for v in values) and all(_same(v, values[0]) for v in values):
            fixed[k] = values[0]
        elif k.removeprefix("config.") in keys:
            varying.append(k)
        else:
            raise SweepError(
                f"--vectorize: the sweep varies {k}, which cannot be vectorised (only "
                f"{', '.join(sorted('config.' + x for x in keys))} can); run it without --vectorize"
            )
    return varying, fixed


def members_jobs(
    runs: Sequence[Run],
    todo: Sequence[Run],
    config_spec: str,
    root: str | os.PathLike,
    extra: str | Sequence[str] = (),
    *,
    per_job: int = 0,
    keys: frozenset[str] | None = None,
    base: Any = None,
) -> list[MembersJob]:
    """Groups the unfinished runs ``todo`` of the sweep ``runs`` into members jobs of up to
    ``per_job`` runs each (0: one job), in sweep order. ``keys`` are the vectorisable keys
    (default: ``members.MEMBER_KEYS``), ``base`` the config with ``extra`` applied (for
    rendering the flags of keys fixed across the sweep; resolved when not given)."""
    if per_job < 0:
        raise SweepError(f"--members_per_job must be >= 0, not {per_job}")
    keys = member_keys() if keys is None else keys
    varying, fixed = vectorisable_split([r.point for r in runs], keys)
    if not todo:
        return []
    extra_args = split_extra(extra)
    if fixed and base is None:
        base = resolve_config(config_spec, extra_args)
    fixed_flags = render_flags(fixed, base) if fixed else []
    size = per_job or len(todo)
    jobs = []
    for i in range(0, len(todo), size):
        group = list(todo[i : i + size])
        overrides = [
            {k.removeprefix("config."): r.point[k] for k in varying if k in r.point} for r in group
        ]
        names = [r.name for r in group]
        digest = hashlib.sha1(json.dumps(names).encode()).hexdigest()[:8]
        args = [
            f"--config={config_spec}", f"--workdir={Path(root)}",
            f"--members={json.dumps(overrides, separators=(',', ':'))}",
            f"--names={json.dumps(names, separators=(',', ':'))}",
            *fixed_flags, *extra_args,
        ]  # fmt: skip
        jobs.append(MembersJob(f"members-{digest}", group, Path(root), args))
    return jobs


def read_summary(run: Run) -> dict[str, Any] | None:
    try:
        return json.loads((run.workdir / SUMMARY).read_text())
    except (OSError, ValueError):
        return None


def is_finished(run: Run, summary: dict[str, Any] | None) -> bool:
    """The summary records the configured step count, or an early stop of this config (train.py
    stops at an evaluation ``patience`` evaluations after the best one)."""
    if not summary or not isinstance(summary.get("step"), int):
        return False
    step = summary["step"]
    if step == run.steps or summary.get("stopped_early"):
        return True
    best = summary.get("best") or {}
    return bool(
        run.patience and run.eval_every and step < run.steps and step % run.eval_every == 0
        and isinstance(best.get("step"), int)
        and step - best["step"] >= run.patience * run.eval_every
    )  # fmt: skip


def _running_pid(run: Run) -> int | None:
    """The pid of a live trainer a sweep started for this run (from ``sweep.pid``), if any."""
    f = run.workdir / PID_FILE
    try:
        pid = int(f.read_text().split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return None
    cmdline = Path(f"/proc/{pid}/cmdline")
    try:  # guard against a recycled pid (the cmdline reads empty while a process execs)
        args = cmdline.read_bytes() if cmdline.exists() else b""
    except OSError:
        return None
    ours = f"--workdir={run.workdir}".encode() in args or (  # its trainer, or a members job
        f"--workdir={run.workdir.parent}\0".encode() in args
        and json.dumps(run.name).encode() in args
    )
    if args and not ours:
        return None
    return pid


def status(run: Run) -> str:
    """done | running | partial (has checkpoints or an older summary) | pending."""
    summary = read_summary(run)
    if is_finished(run, summary):
        return "done"
    if _running_pid(run) is not None:
        return "running"
    ckpt = run.workdir / "checkpoints"
    if summary is not None or (ckpt.is_dir() and any(ckpt.iterdir())):
        return "partial"
    return "pending"


# --- aggregation ------------------------------------------------------------------------------
def _fmt(x: Any, digits: int | None = 4) -> str:
    """A metric cell: empty for None/NaN, floats rounded to ``digits`` (None: exact)."""
    if isinstance(x, float):
        return "" if math.isnan(x) else repr(x) if digits is None else f"{x:.{digits}f}"
    return "" if x is None else str(x)


def _label_value(v: Any) -> str:
    """A swept value as a table cell: strings bare, bools lower-case, the rest as literals."""
    return v if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else repr(v)


def _cell(x: Any, is_label: bool, digits: int | None = 4) -> str:
    return _label_value(x) if is_label and x is not None else _fmt(x, digits)


def aggregate(
    runs: Sequence[Run],
    root: str | os.PathLike,
    *,
    judge: str = "weighted_tau",
    title: str = "",
    failed: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Collects the best validation metrics of every run into ``ROOT/sweep.csv`` and
    ``ROOT/sweep.md`` (plus ``ROOT/sweep_heatmap.png`` for a sweep over two keys); returns the
    rows (one per run, in sweep order)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(k for r in runs for k in r.point))
    labels = short_labels(keys)
    rows, metric_cols = [], {}
    for r in runs:
        summary = read_summary(r)
        st = status(r)
        if st != "done" and r.name in failed:
            st = "failed"
        row: dict[str, Any] = {"run": r.name, "status": st}
        row.update({labels[k]: r.point.get(k) for k in keys})
        row.update(step=None, best_step=None, judge=math.nan)
        if st == "done" and summary:
            best = summary.get("best") or {}
            row.update(step=summary.get("step"), best_step=best.get("step"))
            row["judge"] = float(best["judge"]) if best.get("judge") is not None else math.nan
            for setting, metrics in (best.get("val") or {}).items():
                for m, v in metrics.items():
                    col = f"{setting}/{m}"
                    metric_cols[col] = None
                    row[col] = float(v) if v is not None else math.nan
        rows.append(row)
    label_cols = set(labels.values())
    columns = ["run", "status", *(labels[k] for k in keys), "step", "best_step", "judge",
               *metric_cols]  # fmt: skip

    with open(root / "sweep.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, restval="")
        w.writeheader()
        for row in rows:
            w.writerow({c: _cell(row.get(c), c in label_cols, digits=None) for c in columns})

    # --- markdown: the judge metric and ndcg@10 of each setting --------------------------------
    settings = list(dict.fromkeys(c.split("/", 1)[0] for c in metric_cols))
    md_metrics = [f"{s}/{m}" for s in settings for m in (judge, "ndcg@10") if f"{s}/{m}" in metric_cols]  # fmt: skip
    md_cols = ["run", *(labels[k] for k in keys), "status", "best_step", "judge", *md_metrics]
    done = [r for r in rows if not math.isnan(r["judge"])]
    counts = {s: sum(r["status"] == s for r in rows) for s in dict.fromkeys(r["status"] for r in rows)}  # fmt: skip
    out = [f"# Sweep {title}".rstrip(), "",
           f"{len(rows)} runs in `{root}`: " + ", ".join(f"{n} {s}" for s, n in counts.items())
           + f". Judge: validation {judge} averaged over the settings (higher is better)."]  # fmt: skip
    if done:
        b = max(done, key=lambda r: r["judge"])
        out.append(f"Best: **{b['run']}** (judge {b['judge']:.4f} at step {b['best_step']}).")
    out += ["", "| " + " | ".join(md_cols) + " |", "|" + "---|" * len(md_cols)]
    for row in rows:
        out.append("| " + " | ".join(_cell(row.get(c), c in label_cols) for c in md_cols) + " |")

    # --- 2-D sweeps: judge grid and heat map ----------------------------------------------------
    varying = [k for k in keys if len({repr(r.point.get(k)) for r in runs}) > 1]
    if len(varying) == 2:
        ky, kx = varying
        ys = list(dict.fromkeys(repr(r.point.get(ky)) for r in runs))
        xs = list(dict.fromkeys(repr(r.point.get(kx)) for r in runs))
        val = {ky: {repr(r.point.get(ky)): r.point.get(ky) for r in runs},
               kx: {repr(r.point.get(kx)): r.point.get(kx) for r in runs}}  # fmt: skip
        grid = [[math.nan] * len(xs) for _ in ys]
        for r, row in zip(runs, rows, strict=True):
            grid[ys.index(repr(r.point.get(ky)))][xs.index(repr(r.point.get(kx)))] = row["judge"]
        ylab = [_label_value(val[ky][y]) for y in ys]
        xlab = [_label_value(val[kx][x]) for x in xs]
        out += ["", f"## Judge by {labels[ky]} (rows) × {labels[kx]} (columns)", "",
                f"| {labels[ky]} \\ {labels[kx]} | " + " | ".join(xlab) + " |",
                "|" + "---|" * (len(xs) + 1)]  # fmt: skip
        for yl, line in zip(ylab, grid, strict=True):
            out.append(f"| {yl} | " + " | ".join(_fmt(v) or "–" for v in line) + " |")
        png = root / "sweep_heatmap.png"
        if write_heatmap(png, grid, ylab, xlab, labels[ky], labels[kx], f"validation {judge} (mean over settings)"):  # fmt: skip
            out += ["", f"![judge heat map]({png.name})"]
        else:
            out += ["", "(no heat map: install matplotlib, e.g. `pip install -e '.[plots]'`)"]
    else:
        (root / "sweep_heatmap.png").unlink(missing_ok=True)  # from an earlier 2-D sweep
    (root / "sweep.md").write_text("\n".join(out) + "\n")
    return rows


def write_heatmap(
    path: Path, grid: list[list[float]], ylabels, xlabels, ylabel: str, xlabel: str, title: str
) -> bool:
    """A labelled heat map PNG of ``grid`` (NaN cells grey); False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import numpy as np
    except ImportError:
        return False
    a = np.array(grid, dtype=float)
    fig, ax = plt.subplots(figsize=(1.2 * len(xlabels) + 2.5, 0.9 * len(ylabels) + 1.8), dpi=100)
    cmap = plt.get_cmap("viridis").copy()
    cmap.set_bad("#d0d0d0")
    im = ax.imshow(np.ma.masked_invalid(a), cmap=cmap, aspect="auto")
    ax.set_xticks(range(len(xlabels)), labels=xlabels)
    ax.set_yticks(range(len(ylabels)), labels=ylabels)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    finite = a[np.isfinite(a)]
    mid = (finite.min() + finite.max()) / 2 if finite.size else 0.0
    for (i, j), v in np.ndenumerate(a):
        text = "n/a" if not np.isfinite(v) else f"{v:.4f}"
        color = "black" if not np.isfinite(v) or v > mid else "white"
        ax.text(j, i, text, ha="center", va="center", color=color, fontsize=9)
    if finite.size:
        fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True
