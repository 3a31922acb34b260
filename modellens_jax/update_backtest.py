"""Incremental updates against full retrains on the arrival backtests:

  python -m modellens_jax.update_backtest --config=configs/default.py --workdir=runs/update_bt \
      [--pairs=2] [--split_seeds=0] [--train_seeds=0]

For each consecutive pair of validation cut-offs (``backtest.val_cutoffs``, horizon
``backtest.val_horizon``; the test folds are never read) and each split and training seed: a
full run trained at cut-off k is copied and updated (``modellens_jax.update`` with
``--cutoff`` = k+1: the records the fold holds as arrivals after k up to k+1 move into training;
``updates.*`` of the config set the fine-tune), and a full run is trained from scratch at k+1.
Both are scored per setting (mean τ_w over groups, as ``backtest``) on the same records: the fold
k+1's evaluation records that the run at k had not trained on (its completion draw differs from
k+1's; a record it trained on stays in training after the update). Wall times: the update command's whole run (merge, fine-tune, swap) against the
retrain's prepare + training. Finished runs are reused on rerun; the table goes to
``WORKDIR/update_backtest.md`` and ``.json``.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from modellens_jax import backtest, cli, evaluate, report, rundir, train, update
from modellens_jax.data import competence, ingest, splits
from modellens_jax.data import corpus as corpus_lib


def _full(config, wd: Path, cutoff: float, horizon: float, split_seed: int, seed: int,
          say) -> dict[str, Any]:  # fmt: skip
    """A run trained from scratch at ``cutoff`` (cached in ``wd/timing.json``)."""
    from modellens_jax import prepare

    done = wd / "timing.json"
    if done.is_file():
        return json.loads(done.read_text())
    if wd.exists():
        shutil.rmtree(wd)
    cfg = backtest.fold_config(config, cutoff, horizon, split_seed)
    cfg.seed = int(seed)
    t0 = time.perf_counter()
    prepare.prepare(cfg.data, wd / "corpus", verbose=False)
    res = train.train_and_evaluate(cfg, wd, verbose=False)
    doc = {"wall_s": time.perf_counter() - t0, "steps": res.step}
    done.write_text(json.dumps(doc))
    say(f"{wd.name}: trained {res.step} steps in {doc['wall_s']:.0f}s")
    return doc


def _updated(src: Path, wd: Path, config, cutoff: float, say) -> dict[str, Any]:
    """A copy of the run ``src`` updated to ``cutoff`` (cached in ``wd/timing.json``)."""
    done = wd / "timing.json"
    if done.is_file():
        return json.loads(done.read_text())
    if wd.exists():
        shutil.rmtree(wd)
    wd.mkdir(parents=True)
    for name in update.RUN_ENTRIES:
        if (src / name).is_dir():
            shutil.copytree(src / name, wd / name)
        elif (src / name).is_file():
            shutil.copy2(src / name, wd / name)
    records = ingest.resolve_source(str(config.data.source))
    t0 = time.perf_counter()
    entry = update.run(wd, records, config.updates, cutoff=cutoff, verbose=False)
    doc = {"wall_s": time.perf_counter() - t0, "steps": entry["steps"],
           "counts": entry["counts"]}  # fmt: skip
    done.write_text(json.dumps(doc))
    say(f"{wd.name}: updated ({entry['steps']} steps) in {doc['wall_s']:.0f}s")
    return doc


def _keys(c) -> np.ndarray:
    """Per record of corpus ``c``: 'dataset|task|metric|model|split|setting'."""
    v = c.vocab
    g = np.asarray(c["rec_group"])
    parts = [np.asarray(v["datasets"], object)[np.asarray(c["group_dataset"])[g]],
             np.asarray(v["tasks"], object)[np.asarray(c["group_task"])[g]],
             np.asarray(v["metrics"], object)[np.asarray(c["group_metric"])[g]],
             np.asarray(v["models"], object)[np.asarray(c["rec_model"])],
             np.asarray(c["rec_split"]).astype(str), np.asarray(c["rec_setting"]).astype(str)]  # fmt: skip
    return np.array(["|".join(map(str, t)) for t in zip(*parts)], object)


def _scores(wd: Path, evaluated: set[str] | None = None) -> dict[str, dict[str, float]]:
    """Mean τ_w over the evaluation groups of each setting (and their count); ``evaluated``
    (``_keys``) restricts the evaluation records to those."""
    run = rundir.restore(wd)
    if evaluated is not None:
        c = run.tables.corpus
        out = ~np.isin(_keys(c), list(evaluated))
        split = np.asarray(c["rec_split"]).copy()
        split[out & (split == splits.TEST)] = splits.VAL  # not evaluated below
        c.arrays["rec_split"] = split
    per = backtest._per_group(evaluate.ModelScorer.of(run), run.tables,
                              competence.group_sources(run.tables.corpus))  # fmt: skip
    return {s: {"tau": float(np.mean(v["tau"])) if v["tau"] else float("nan"),
                "groups": len(v["tau"])} for s, v in per.items()}  # fmt: skip


def run(config: ml_collections.ConfigDict, workdir: str | Path, *, pairs: int = 0,
        split_seeds=(0,), train_seeds=(0,), verbose: bool = True) -> list[dict[str, Any]]:  # fmt: skip
    """Every (pair, split seed, training seed); returns their rows (see the module docstring)."""
    backtest.check_config(config)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    say = print if verbose else (lambda *a, **k: None)
    cuts = [float(q) for q in config.backtest.val_cutoffs]
    horizon = float(config.backtest.val_horizon)
    chain = list(zip(cuts[:-1], cuts[1:]))[: pairs or None]
    rows = []
    for s in split_seeds:
        for t in train_seeds:
            base = workdir / f"split{s}-seed{t}"
            for k, k1 in chain:
                full_k = base / f"full-cut{k:g}"
                _full(config, full_k, k, horizon, s, t, say)
                full_k1 = base / f"full-cut{k1:g}"
                retrain = _full(config, full_k1, k1, horizon, s, t, say)
                upd_dir = base / f"update-cut{k:g}-to{k1:g}"
                upd = _updated(full_k, upd_dir, config, k1, say)
                # Both on the same records: the k+1 fold's evaluation records the run at k had
                # not trained on (the update keeps those in training; see update --cutoff).
                test = str(splits.TEST)
                both = {k for k in _keys(corpus_lib.load_corpus(upd_dir / "corpus"))
                        if k.split("|")[4] == test}  # fmt: skip
                a, b = _scores(upd_dir, both), _scores(full_k1, both)
                row = {"cutoffs": [k, k1], "split_seed": s, "train_seed": t,
                       "update_wall_s": upd["wall_s"], "retrain_wall_s": retrain["wall_s"],
                       "update_steps": upd["steps"], "retrain_steps": retrain["steps"],
                       "settings": {n: {"update": a[n]["tau"], "retrain": b[n]["tau"],
                                        "groups": b[n]["groups"], "update_groups": a[n]["groups"]}
                                    for n in splits.ALL_SETTINGS}}  # fmt: skip
                rows.append(row)
                (workdir / "update_backtest.json").write_text(
                    json.dumps(report.json_safe(rows), indent=1)
                )
                (workdir / "update_backtest.md").write_text(format_markdown(rows) + "\n")
                say(format_markdown(rows[-1:]))
    return rows


def format_markdown(rows: list[dict[str, Any]]) -> str:
    """One line per (pair, seeds): τ_w of update and retrain per setting, Δ, wall times."""
    names = list(splits.ALL_SETTINGS)
    head = ["cut-offs (split, seed)", *[f"{n}: update / retrain (Δ)" for n in names],
            "wall update / retrain (ratio)"]  # fmt: skip
    out = []
    for r in rows:
        cells = [
            f"{r['cutoffs'][0]:g} → {r['cutoffs'][1]:g} ({r['split_seed']}, {r['train_seed']})"
        ]
        for n in names:
            c = r["settings"][n]
            cells.append(f"{c['update']:.3f} / {c['retrain']:.3f} ({c['update'] - c['retrain']:+.3f})"
                         f" [{c['groups']}]")  # fmt: skip
        ratio = r["update_wall_s"] / max(r["retrain_wall_s"], 1e-9)
        cells.append(
            f"{r['update_wall_s']:.0f}s / {r['retrain_wall_s']:.0f}s ({100 * ratio:.0f} %)"
        )
        out.append(cells)
    return "\n".join(report.table(head, out))


def _define(fv) -> None:
    from absl import flags

    cli.config_flag(fv)
    flags.DEFINE_string("workdir", None, "Output directory.", required=True, flag_values=fv)
    flags.DEFINE_integer("pairs", 0, "Consecutive cut-off pairs to measure (0 = all).",
                         flag_values=fv)  # fmt: skip
    flags.DEFINE_list("split_seeds", ["0"], "Split seeds.", flag_values=fv)
    flags.DEFINE_list("train_seeds", ["0"], "Training seeds.", flag_values=fv)


def _run(fv) -> None:
    run(fv.config, fv.workdir, pairs=fv.pairs, split_seeds=[int(s) for s in fv.split_seeds],
        train_seeds=[int(s) for s in fv.train_seeds])  # fmt: skip


main = cli.command(_define, _run, __doc__)

if __name__ == "__main__":
    sys.exit(main())
