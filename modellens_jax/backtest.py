"""Arrival backtests: how the recommender would have done on the models and datasets that came
after each cut-off, against the baselines, with seeds and intervals.

  python -m modellens_jax.backtest --config=configs/default.py --workdir=runs/backtest \
      [--folds=val|test]        # --config=configs/default.py:quick: the few-minute variant

A **fold** is a cut-off share ``q`` (``backtest.val_cutoffs`` / ``backtest.test_cutoffs``): in
every dated source, the models released after the day by which ``q`` of the source's records
had arrived are new, and those after the horizon share are dropped (the validation folds' horizon
is the first test cut-off, so choosing a config on them never sees a test fold's new models).
A seeded per-source share of datasets is new. Four settings: ``completion`` (known model and
dataset, masked records), ``unseen_dataset`` (known models on new datasets), ``unseen_model``
(new models on known datasets), ``unseen_both`` (new models on new datasets). Undated models
always train. Each (fold, split seed) is one corpus (``data.split.protocol="backtest"``, see
``modellens_jax.data.splits``); each training seed trains from scratch on it, selecting its
checkpoint on the fold's own validation split (the newest known models, a share of known
datasets and records); the baselines are fit on the same training records.

**Figures.** Per setting and scorer: the mean over (fold, split seed, training seed) runs of
the mean τ_w over groups, with a 95 % bootstrap interval (groups resampled inside each fold);
"A beats B" is a paired bootstrap of the per-group differences over the same groups. A ranker
that gives a group one score (or NaN) counts τ_w 0 there; so does, for every scorer alike, a
group whose true values all tie (τ undefined).

**Seed ensembles** (``ensemble.members = N > 1``, e.g. ``--config=configs/default.py:ensemble``):
each training seed trains the N-member ensemble in one program; ``modellens`` is the members'
mean score, ``modellens_single`` each member alone (its τ averaged over the members: the
expected single model, on the same groups and training data), ``modellens_3`` the first three
members' ensemble when N > 3; these variants are compared with ``modellens`` (paired) and never
count as baselines. The report adds whether low confidence predicts large rank error
(``modellens_jax.uncertainty``: Spearman of the members' spread, and of the served confidence,
against |rank error|, per setting; a calibration table and ``calibration.png``).

**Test discipline.** ``--folds=val`` is for choosing settings. ``--folds=test`` appends a line
to ``WORKDIR/test_reads.jsonl`` (time, commit, config hash, folds) every time it reads the test
folds, so the number of looks is on record. Finished runs are reused when the command is re-run
(same config), so an interrupted backtest resumes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from modellens_jax import evaluate, report, rundir
from modellens_jax.data import competence, splits

MODEL_NAME = report.MODEL_NAME
JUDGE = "weighted_tau"
SINGLE = f"{MODEL_NAME}_single"  # a seed ensemble's members alone (their mean τ)


def is_variant(name: str) -> bool:
    """The trained model's own variants (ensemble members, sub-ensembles): never baselines."""
    return name.startswith(f"{MODEL_NAME}_")


# --- statistics (pure) -------------------------------------------------------------------------
def run_mean(units: Sequence[np.ndarray]) -> float:
    """Mean over units (folds × split seeds) of the mean over each unit's groups (NaN-free)."""
    means = [float(np.mean(u)) for u in units if len(u)]
    return float(np.mean(means)) if means else float("nan")


def bootstrap(
    units: Sequence[np.ndarray], *, resamples: int = 1000, seed: int = 0
) -> tuple[float, float, float]:
    """(mean, 2.5 %, 97.5 %) of :func:`run_mean`, groups resampled with replacement inside
    each unit. ``units`` may be per-group differences (a paired comparison)."""
    units = [np.asarray(u, np.float64) for u in units if len(u)]
    if not units:
        return (float("nan"),) * 3
    rng = np.random.default_rng(seed)
    stats = np.zeros(resamples)
    for u in units:
        idx = rng.integers(0, len(u), (resamples, len(u)))
        stats += u[idx].mean(1)
    stats /= len(units)
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return run_mean(units), float(lo), float(hi)


def verdict(lo: float, hi: float, a: str, b: str) -> str:
    """The paired comparison in words: who wins when the 95 % interval of A − B excludes 0."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "no groups"
    if lo > 0:
        return f"{a} beats {b}"
    if hi < 0:
        return f"{b} beats {a}"
    return "no significant difference"


# --- folds and runs ----------------------------------------------------------------------------
def fold_config(
    config: ml_collections.ConfigDict, cutoff: float, horizon: float, split_seed: int
) -> ml_collections.ConfigDict:
    """The config of one fold: the backtest split protocol at ``cutoff``/``horizon``."""
    c = ml_collections.ConfigDict(config.to_dict())
    c.data.split.protocol = "backtest"
    c.data.split.cutoff = float(cutoff)
    c.data.split.horizon = float(horizon)
    c.data.split.seed = int(split_seed)
    return c


def folds(config: ml_collections.ConfigDict, which: str) -> list[tuple[float, float, int]]:
    """(cutoff, horizon, split seed) of every unit of the ``val`` or ``test`` folds."""
    b = config.backtest
    if which not in ("val", "test"):
        raise ValueError(f"--folds={which!r}: expected val or test")
    cuts = tuple(b.val_cutoffs if which == "val" else b.test_cutoffs)
    horizon = float(b.val_horizon if which == "val" else b.test_horizon)
    return [(float(q), horizon, int(s)) for q in cuts for s in b.split_seeds]


def check_config(config: ml_collections.ConfigDict) -> None:
    """The training config (``config_check``) and the backtest section are valid (ConfigError
    naming the key, before anything runs)."""
    from modellens_jax.config_check import ConfigError, validate

    validate(config)
    b = config.backtest
    for key in ("val_cutoffs", "test_cutoffs", "split_seeds", "train_seeds"):
        if not len(tuple(b[key])):
            raise ConfigError(f"config backtest.{key}: must not be empty")
    try:
        for which in ("val", "test"):
            h = float(b[f"{which}_horizon"])
            for q in b[f"{which}_cutoffs"]:
                splits.check_backtest(float(q), h)
    except ValueError as e:
        msg = str(e).replace("data.split.cutoff", f"backtest.{which}_cutoffs")
        raise ConfigError(msg.replace("data.split.horizon", f"backtest.{which}_horizon")) from None
    if max(b.val_cutoffs) >= min(b.test_cutoffs) or b.val_horizon > min(b.test_cutoffs):
        raise ConfigError(
            f"config backtest: validation folds (cut-offs {tuple(b.val_cutoffs)}, horizon "
            f"{b.val_horizon}) must end by the first test cut-off {min(b.test_cutoffs)}"
        )
    if int(b.bootstrap) < 100:
        raise ConfigError(f"config backtest.bootstrap={b.bootstrap}: must be >= 100")


def _unit_name(cutoff: float, split_seed: int) -> str:
    return f"cut{cutoff:g}-split{split_seed}"


def _per_group(scorer, tables, sources: np.ndarray) -> dict[str, dict[str, list]]:
    """Per setting of the fold: the test groups' ids, τ_w and source names."""
    names = tables.corpus.vocab["sources"]
    out = {}
    for name, setting in splits.ALL_SETTINGS.items():
        _, g = evaluate.evaluate(scorer, tables, splits.TEST, setting)
        gid = g["group"].astype(np.int64)
        tau = np.nan_to_num(g.get(JUDGE, np.zeros(len(gid))), nan=0.0)
        out[name] = {
            "group": gid.tolist(),
            "tau": tau.astype(float).tolist(),
            "source": [names[int(s)] for s in sources[gid]],
        }
    return out


def _write_json(path: Path, doc: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report.json_safe(doc), allow_nan=False) + "\n")
    os.replace(tmp, path)


def run_unit(
    config: ml_collections.ConfigDict,
    unit_dir: Path,
    cutoff: float,
    horizon: float,
    split_seed: int,
    *,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """One (fold, split seed): prepare its corpus, train every training seed, evaluate them and
    the baselines on the fold's test groups. Cached in ``unit_dir/result.json``."""
    from modellens_jax import baselines, ensemble, prepare, train, uncertainty
    from modellens_jax.experiments import members

    unit_dir.mkdir(parents=True, exist_ok=True)
    done = unit_dir / "result.json"
    fcfg = fold_config(config, cutoff, horizon, split_seed)
    key = hashlib.sha256(fcfg.to_json_best_effort(sort_keys=True).encode()).hexdigest()[:16]
    if done.exists():
        doc = json.loads(done.read_text())
        if doc.get("config_key") == key:
            say(f"{unit_dir.name}: done earlier, reused")
            return doc
    cdir = unit_dir / "corpus"
    if not (cdir / "manifest.json").exists():
        prepare.prepare(fcfg.data, cdir, verbose=False)
    result: dict[str, Any] = {"config_key": key, "cutoff": cutoff, "horizon": horizon,
                              "split_seed": split_seed, "scorers": {}}  # fmt: skip
    seeds = [int(s) for s in config.backtest.train_seeds]
    for seed in seeds:
        wd = unit_dir / f"seed{seed}"
        wd.mkdir(exist_ok=True)
        if not (wd / "corpus").exists():
            (wd / "corpus").symlink_to("../corpus")
        tcfg = ml_collections.ConfigDict(fcfg.to_dict())
        tcfg.seed = seed
        t0 = time.perf_counter()
        if ensemble.size(tcfg) > 1:  # the seed ensemble, its members alone, its confidence
            members.train_ensemble(tcfg, wd, verbose=False)
            ens = ensemble.restore(wd)
            tables, step = ens.tables, [m.step for m in ens.members]
            sources = competence.group_sources(tables.corpus)
            scorer = evaluate.EnsembleScorer.of(ens)
            per = _per_group(scorer, tables, sources)
            variants = {SINGLE: [_per_group(m, tables, sources) for m in scorer.scorers]}
            if len(scorer.scorers) > 3:
                three = evaluate.EnsembleScorer(scorer.scorers[:3])
                variants[f"{MODEL_NAME}_3"] = [_per_group(three, tables, sources)]
            for name, runs in variants.items():
                result["scorers"].setdefault(name, []).extend(runs)
            result.setdefault("uncertainty", []).append({
                name: uncertainty.summarise(uncertainty.records(scorer, tables, splits.TEST, st))
                for name, st in splits.ALL_SETTINGS.items()
            })  # fmt: skip
            steps_run = int(tcfg.train.steps)
        else:
            steps_run = train.train_and_evaluate(tcfg, wd, verbose=False).step
            run = rundir.restore(wd)
            tables, step = run.tables, run.step
            sources = competence.group_sources(tables.corpus)
            per = _per_group(evaluate.ModelScorer.of(run), tables, sources)
        result["scorers"].setdefault(MODEL_NAME, []).append(per)
        say(f"{unit_dir.name} seed {seed}: {steps_run} steps in {time.perf_counter() - t0:.0f}s, "
            f"best checkpoint step {step}")  # fmt: skip
    btables, _ = evaluate.baseline_tables(tables)
    manifest = tables.corpus.manifest["report"]
    result["corpus"] = {"fingerprint": tables.corpus.fingerprint,
                        "splits": manifest.get("splits"), "backtest": manifest.get("backtest")}  # fmt: skip
    for seed in seeds:
        t0 = time.perf_counter()
        fitted, skipped = baselines.fit_all(btables, config.backtest.baselines, seed=seed)
        for name, b in fitted.items():
            result["scorers"].setdefault(name, []).append(_per_group(b, tables, sources))
        result.setdefault("skipped", {}).update(skipped)
        say(f"{unit_dir.name} baselines (seed {seed}) in {time.perf_counter() - t0:.0f}s")
    _write_json(done, result)
    return result


# --- aggregation -------------------------------------------------------------------------------
def _unit_groups(unit: Mapping[str, Any], scorer: str, setting: str, source: str | None = None):
    """(group ids, τ averaged over the scorer's training seeds) of one unit and setting."""
    runs = unit["scorers"][scorer]
    first = runs[0][setting]
    sel = np.array([source is None or s == source for s in first["source"]], bool)
    tau = np.mean([np.asarray(r[setting]["tau"], np.float64) for r in runs], 0)
    return np.asarray(first["group"])[sel], tau[sel] if len(tau) else tau


def summarise(units: Sequence[Mapping[str, Any]], *, resamples: int = 1000) -> dict[str, Any]:
    """Per setting: every scorer's mean and interval, the best baseline, the paired comparison of
    the trained model with it (and with every baseline), and the per-source breakdown."""
    scorers = list(units[0]["scorers"])
    out: dict[str, Any] = {}
    for setting in splits.ALL_SETTINGS:
        per = {s: [_unit_groups(u, s, setting)[1] for u in units] for s in scorers}
        rows = {s: dict(zip(("mean", "lo", "hi"), bootstrap(per[s], resamples=resamples)))
                for s in scorers}  # fmt: skip
        n_groups = [len(x) for x in per[scorers[0]]]
        base = [s for s in scorers if s != MODEL_NAME and not is_variant(s)]
        best = max(base, key=lambda s: rows[s]["mean"] if math.isfinite(rows[s]["mean"]) else -9)
        paired = {}
        if MODEL_NAME in per:
            for b in [s for s in scorers if s != MODEL_NAME]:
                diff = [a - c for a, c in zip(per[MODEL_NAME], per[b])]
                m, lo, hi = bootstrap(diff, resamples=resamples, seed=1)
                paired[b] = {
                    "mean": m,
                    "lo": lo,
                    "hi": hi,
                    "verdict": verdict(lo, hi, MODEL_NAME, b),
                }
        sources = sorted({s for u in units for s in u["scorers"][scorers[0]][0][setting]["source"]})
        by_source = {}
        for src in sources:
            cells = {s: [_unit_groups(u, s, setting, src)[1] for u in units] for s in scorers}
            by_source[src] = {
                "groups": int(sum(len(x) for x in cells[scorers[0]])),
                **{s: run_mean(cells[s]) for s in scorers},
            }
        out[setting] = {"groups_per_unit": n_groups, "scorers": rows, "best_baseline": best,
                        "paired": paired, "by_source": by_source}  # fmt: skip
        parts = [p[setting] for u in units for p in u.get("uncertainty", [])]
        if parts:
            out[setting]["uncertainty"] = _uncertainty(parts, resamples)
    return out


def _uncertainty(parts: Sequence[Mapping[str, Any]], resamples: int) -> dict[str, Any]:
    """One setting's confidence analysis over every unit and training seed."""
    from modellens_jax import uncertainty

    u = uncertainty.combine(parts)
    for key in ("per_group_spread", "per_group_confidence"):
        vals = u.pop(key, [])
        u[key] = dict(zip(("mean", "lo", "hi"), uncertainty.mean_interval(vals, resamples=resamples)),
                      groups=len(vals))  # fmt: skip
    return u


def _ci(r: Mapping[str, float]) -> str:
    f = report.fmt
    return f"{f(r['mean'])} [{f(r['lo'])}, {f(r['hi'])}]"


def format_markdown(summary: Mapping[str, Any], *, title: str, preamble: Sequence[str]) -> str:
    """The backtest table (intervals, best baseline bold), paired comparisons, per source."""
    settings = [s for s in summary if sum(summary[s]["groups_per_unit"])]
    scorers = list(summary[settings[0]]["scorers"]) if settings else []
    lines = [f"# {title}", "", *preamble, ""]
    head = ["scorer", *[f"{s} ({sum(summary[s]['groups_per_unit'])} groups)" for s in settings]]
    rows = []
    for sc in scorers:
        cells = [sc]
        for s in settings:
            text = _ci(summary[s]["scorers"][sc])
            bold = sc == MODEL_NAME or sc == summary[s]["best_baseline"]
            cells.append(f"**{text}**" if bold else text)
        rows.append(cells)
    if MODEL_NAME in scorers:
        cells = ["Δ modellens − best baseline (paired)"]
        for s in settings:
            b = summary[s]["best_baseline"]
            p = summary[s]["paired"][b]
            cells.append(
                f"{p['mean']:+.3f} [{p['lo']:+.3f}, {p['hi']:+.3f}] vs {b}: {p['verdict']}"
            )
        rows.append(cells)
        for v in [sc for sc in scorers if is_variant(sc)]:
            cells = [f"Δ modellens − {v} (paired)"]
            for s in settings:
                p = summary[s]["paired"][v]
                cells.append(f"{p['mean']:+.3f} [{p['lo']:+.3f}, {p['hi']:+.3f}]: {p['verdict']}")
            rows.append(cells)
    lines += [
        "τ_w (top-weighted weighted Kendall τ): mean over folds × split seeds × training seeds "
        "of the mean over groups, 95 % bootstrap interval over groups in brackets; the trained "
        "model and the best baseline per setting in bold.",
        "",
        *report.table(head, rows),
        "",
    ]
    lines += _uncertainty_markdown(summary, settings)
    for s in settings:
        srcs = summary[s]["by_source"]
        best = summary[s]["best_baseline"]
        cols = [c for c in dict.fromkeys([MODEL_NAME, best, "lambdarank"]) if c in scorers]
        total = max(sum(v["groups"] for v in srcs.values()), 1)
        rows = [[f"{src} ({v['groups']}, {100 * v['groups'] / total:.0f}%)",
                 *[report.fmt(v[c]) for c in cols]] for src, v in srcs.items()]  # fmt: skip
        lines += [f"**{s}** by source (groups over all runs' units, share)", "",
                  *report.table(["source", *cols], rows), ""]  # fmt: skip
    return "\n".join(lines)


def _uncertainty_markdown(summary: Mapping[str, Any], settings: Sequence[str]) -> list[str]:
    """The confidence section: Spearman correlations and the calibration table, per setting."""
    have = [s for s in settings if summary[s].get("uncertainty", {}).get("records")]
    if not have:
        return []
    f = report.fmt

    def ci(r: Mapping[str, float]) -> str:
        return f"{f(r['mean'])} [{f(r['lo'])}, {f(r['hi'])}] ({r['groups']} groups)"

    rows = [[s, ci(summary[s]["uncertainty"]["per_group_spread"]),
             ci(summary[s]["uncertainty"]["per_group_confidence"]),
             f(summary[s]["uncertainty"]["pooled_rel_spread"]),
             f(summary[s]["uncertainty"]["pooled_confidence"])] for s in have]  # fmt: skip
    head = ["setting", "ρ(spread, |err|) per group", "ρ(confidence, |err|) per group",
            "ρ pooled (rel. spread)", "ρ pooled (confidence)"]  # fmt: skip
    lines = [
        "**Does low confidence predict large rank error?** Per record of the groups above: the "
        "members' spread (std of the score over members) and the served confidence against "
        "|predicted rank − true rank|. Per group: Spearman's ρ inside each group of ≥ 5 "
        "records, mean over groups [95 % bootstrap over groups]; pooled: ρ over all records of "
        "the spread relative to the group's score spread, and of the confidence, against the "
        "rank error over n − 1 (mean over units). A useful confidence has ρ(spread) > 0 and "
        "ρ(confidence) < 0.",
        "",
        *report.table(head, rows),
        "",
        "Calibration: mean |rank error| / (n − 1) per bin of the served confidence (records).",
        "",
    ]
    bins = summary[have[0]]["uncertainty"]["bins_confidence"]
    head = ["setting", *[f"{b['lo']:.1f}–{min(b['hi'], 1.0):.1f}" for b in bins]]
    rows = [[s, *[f"{f(b['mean'])} ({b['count']})" if b["count"] else "–"
                  for b in summary[s]["uncertainty"]["bins_confidence"]]] for s in have]  # fmt: skip
    return [*lines, *report.table(head, rows), ""]


def write_calibration_plot(summary: Mapping[str, Any], path: Path) -> bool:
    """``calibration.png``: mean normalised |rank error| per bin of relative spread and of
    confidence, one line per setting; False when matplotlib is missing or nothing to plot."""
    have = [s for s in summary if summary[s].get("uncertainty", {}).get("records")]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    if not have:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, label in ((axes[0], "bins_rel_spread", "member spread / group score spread"),
                           (axes[1], "bins_confidence", "served confidence")):  # fmt: skip
        for s in have:
            bins = [b for b in summary[s]["uncertainty"][key] if b["count"]]
            # the open last bin (hi = inf, None once read back from JSON) at its lower edge
            x = [b["lo"] if b["hi"] is None or math.isinf(b["hi"]) else (b["lo"] + b["hi"]) / 2
                 for b in bins]  # fmt: skip
            ax.plot(x, [b["mean"] for b in bins], marker="o", label=s)
        ax.set_xlabel(f"{label} (bin centre)")
        ax.set_ylabel("mean |rank error| / (n − 1)")
        ax.grid(alpha=0.3)
    axes[0].set_xscale("symlog", linthresh=0.05)
    axes[1].legend()
    fig.suptitle("Does low confidence predict large rank error? (seed ensemble)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent, timeout=10)  # fmt: skip
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def record_test_read(workdir: Path, config: ml_collections.ConfigDict, units: list) -> int:
    """Appends one line to ``workdir/test_reads.jsonl``; returns how many reads it now holds."""
    path = workdir / "test_reads.jsonl"
    line = {
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": _commit(),
        "config_hash": hashlib.sha256(
            config.to_json_best_effort(sort_keys=True).encode()
        ).hexdigest()[:16],
        "units": [_unit_name(q, s) for q, _, s in units],
    }
    with path.open("a") as f:
        f.write(json.dumps(line) + "\n")
    return sum(1 for _ in path.open())


def run(
    config: ml_collections.ConfigDict, workdir: str | Path, *, which: str = "val",
    verbose: bool = True,
) -> dict[str, Any]:  # fmt: skip
    """The ``backtest`` command as a function; returns the summary."""
    check_config(config)
    workdir = Path(workdir)
    say = print if verbose else (lambda *a, **k: None)
    units = folds(config, which)
    root = workdir / which
    root.mkdir(parents=True, exist_ok=True)
    if which == "test":
        n = record_test_read(workdir, config, units)
        say(f"reading the test folds: read number {n} recorded in {workdir / 'test_reads.jsonl'}")
    t0 = time.perf_counter()
    results = []
    for i, (q, h, s) in enumerate(units):
        results.append(run_unit(config, root / _unit_name(q, s), q, h, s, say=say))
        el = time.perf_counter() - t0
        say(f"[backtest {which}] unit {i + 1}/{len(units)} done, {el:.0f}s elapsed, "
            f"ETA {el / (i + 1) * (len(units) - i - 1):.0f}s")  # fmt: skip
    summary = summarise(results, resamples=int(config.backtest.bootstrap))
    preamble = [
        f"Folds **{which}**: cut-offs {tuple(config.backtest[f'{which}_cutoffs'])} (share of each "
        f"dated source's records by release date), horizon {config.backtest[f'{which}_horizon']}, "
        f"split seeds {tuple(config.backtest.split_seeds)}, training seeds "
        f"{tuple(config.backtest.train_seeds)}; {config.train.steps} training steps per run; "
        f"{time.perf_counter() - t0:.0f}s for this command.",
    ]
    md = format_markdown(summary, title=f"Arrival backtest ({which} folds)", preamble=preamble)
    (root / "backtest.md").write_text(md + "\n")
    if write_calibration_plot(summary, root / "calibration.png"):
        say(f"wrote {root / 'calibration.png'}")
    _write_json(root / "backtest.json", {"folds": which, "units": [_unit_name(q, s) for q, _, s
                                         in units], "summary": summary})  # fmt: skip
    say(md)
    say(f"wrote {root / 'backtest.md'} and {root / 'backtest.json'}")
    return summary


# --- command ------------------------------------------------------------------------------------
def _define(fv) -> None:
    from absl import flags

    from modellens_jax import cli

    cli.config_flag(fv)
    flags.DEFINE_string("workdir", None, "Backtest directory.", required=True, flag_values=fv)
    flags.DEFINE_enum("folds", "val", ["val", "test"], "Validation folds (for choosing) or "
                      "test folds (each read is recorded in WORKDIR/test_reads.jsonl).",
                      flag_values=fv)  # fmt: skip


def _run(fv) -> None:
    run(fv.config, fv.workdir, which=fv.folds)


def main(argv: Sequence[str] | None = None) -> int:
    """The ``backtest`` command: ``main(argv) -> exit status`` (``cli.command``)."""
    from modellens_jax import cli

    return cli.command(_define, _run, __doc__)(argv)


if __name__ == "__main__":
    import sys

    sys.exit(main())
