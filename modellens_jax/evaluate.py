"""Evaluation: any scorer over the held-out groups of a split and setting -> ranking metrics.

A scorer is a function from a batch (``modellens_jax.data.batch``, one group per row) to scores
``[R, L]``: the trained model, or a baseline (``modellens_jax.baselines``). Metrics are computed
per group on device, kept per group (for breakdowns) and aggregated as sums and counts (exact
across batches and padding).

**Tie order.** Evaluation batches list a group's records in corpus order, which is the
ground-truth order (value descending). The metrics rank with a stable sort, so tied *predicted*
scores would rank in truth order and a constant scorer would get NDCG = Hit = 1. ``evaluate``
therefore permutes the records of each row by a seeded hash of (group, slot) before scoring:
ties break in an order unrelated to the truth, the same in every run and on every mesh
(``tie_seed=None`` keeps corpus order, for parity checks only).

Command::

  python -m modellens_jax.evaluate --workdir=DIR [--split=test|val] [--out=DIR/eval]
      [--baselines=all|none|a,b] [--step=N]

restores the best checkpoint of ``DIR`` (else the newest), evaluates it and the baselines on the
three settings of the split, prints a markdown report and writes ``report.md``,
``report.json`` and ``report.png`` (matplotlib, optional extra ``[eval]``) under ``--out``.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from modellens_jax import metrics
from modellens_jax.data import batch as batch_lib
from modellens_jax.data import competence, pipeline, splits

KS = (1, 10)
Scorer = Callable[[dict[str, np.ndarray]], Any]
CONTRACT_KEYS = batch_lib.RECORD_KEYS + batch_lib.MODEL_KEYS + batch_lib.GROUP_KEYS
SCORED_KEYS = (*CONTRACT_KEYS, "competence")  # what the trained scorer reads (when present)
MODEL_NAME = "modellens"  # the trained model's row in reports

# (key in the aggregate, column title) of the report tables.
REPORT_METRICS = (
    ("weighted_tau", "τ_w"),
    ("weighted_tau_pairs", "τ_w pairs"),
    ("weighted_tau_ref", "τ_ref"),
    ("weighted_tau_ref_pairs", "τ_ref pairs"),
    ("ndcg@1", "NDCG@1"),
    ("ndcg@10", "NDCG@10"),
    ("hit@1", "Hit@1"),
    ("hit@10", "Hit@10"),
    ("recall@10", "Rec@10"),
)


@functools.partial(jax.jit, static_argnames=("ks",))
def _per_group(value, score, mask, ks=KS):
    return metrics.group_metrics(value, score, mask=mask, ks=ks)


# --- tie order and record indices --------------------------------------------------------------
def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.uint64)
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def slot_permutation(gid: np.ndarray, mask: np.ndarray, seed: int) -> np.ndarray:
    """``[R, L]`` per-row permutation of the real slots (padding stays last, in place): a
    function of (seed, group id, slot) only, so independent of batching and device count."""
    _R, L = mask.shape
    with np.errstate(over="ignore"):
        key = (np.asarray(gid, np.int64).astype(np.uint64)[:, None] << np.uint64(24)) + np.arange(
            L, dtype=np.uint64
        )[None]
        key = _splitmix64(key ^ _splitmix64(np.uint64(seed)))
    key = np.where(mask, key >> np.uint64(1), np.uint64(np.iinfo(np.uint64).max))
    return np.argsort(key, axis=1, kind="stable")


def _slot_records(
    tables: pipeline.FeatureTables,
    lists: dict[int, np.ndarray],
    gid: np.ndarray,
    batch_value: np.ndarray,
) -> np.ndarray:
    """Corpus record index per slot of an evaluation batch (-1 = padding); checked against the
    batch's values (``eval_batches`` lays each group's records out in corpus order)."""
    rec = np.full(batch_value.shape, -1, np.int32)
    for r, g in enumerate(gid):
        if g >= 0:
            x = lists[int(g)]
            rec[r, : len(x)] = x
    if not np.array_equal(np.where(rec >= 0, tables.rec_value[np.maximum(rec, 0)], 0), batch_value):
        raise AssertionError("evaluation batch rows are not the groups' records in corpus order")
    return rec


def evaluate(
    scorer: Scorer,
    tables: pipeline.FeatureTables,
    split: int,
    setting: int | None,
    *,
    ks: tuple[int, ...] = KS,
    slots_per_batch: int = 8192,
    tie_seed: int | None = 0,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Returns (aggregate metrics, per-group arrays incl. ``group`` and ``n``).

    Scorers with a true ``needs_records`` attribute also get ``batch["record"]`` (``[R, L]``
    int32 corpus record index, -1 = padding; the baselines' lookup key)."""
    per: dict[str, list[np.ndarray]] = {"group": [], "n": []}
    lists = None
    if getattr(scorer, "needs_records", False):
        groups, recs = pipeline.lists_by_group(tables.corpus, split, setting)
        lists = dict(zip(groups.tolist(), recs))
    for batch, gid in pipeline.eval_batches(
        tables, split, setting, slots_per_batch=slots_per_batch
    ):
        if lists is not None:
            batch["record"] = _slot_records(tables, lists, gid, batch["value"])
        if tie_seed is not None:
            perm = slot_permutation(gid, batch["mask"], tie_seed)
            for k in (*batch_lib.RECORD_KEYS, *batch_lib.COMPETENCE_KEYS, "record"):
                if k in batch:
                    p = perm if batch[k].ndim == 2 else perm[..., None]
                    batch[k] = np.take_along_axis(batch[k], p, 1)
        s = np.asarray(scorer(batch), np.float32)
        # A row with a NaN/inf score is scored as constant: it ranks nothing, so τ = 0 (a
        # constant ranker's τ is 0 by definition, see metrics.weighted_tau), never skipped.
        bad = ~np.all(np.isfinite(s) | ~batch["mask"].astype(bool), axis=1, keepdims=True)
        s = np.where(bad, 0.0, s).astype(np.float32)
        out = jax.device_get(_per_group(batch["value"], s, batch["mask"], ks=ks))
        real = gid >= 0
        per["group"].append(gid[real])
        per["n"].append(batch["mask"].sum(1)[real])
        for name, (val, valid) in out.items():
            per.setdefault(name, []).append(np.where(valid, val, np.nan)[real])
    groups = {k: np.concatenate(v) if v else np.zeros(0) for k, v in per.items()}
    return aggregate(groups, ks), groups


def aggregate(groups: dict[str, np.ndarray], ks: tuple[int, ...] = KS) -> dict[str, float]:
    """Plain means over valid groups, pair-count-weighted means for the tau variants, and the
    number of groups per K (a group enters the @K means only when n >= K)."""
    n = groups["n"].astype(np.float64)
    pairs = n * (n - 1) / 2
    out: dict[str, float] = {"num_groups": float(len(n))}
    for name, vals in groups.items():
        if name in ("group", "n"):
            continue
        ok = np.isfinite(vals)
        out[name] = float(vals[ok].mean()) if ok.any() else float("nan")
        if name in metrics.TAU_METRICS:
            w = pairs[ok]
            out[f"{name}_pairs"] = (
                float((vals[ok] * w).sum() / w.sum()) if ok.any() else float("nan")
            )
    for k in ks:
        out[f"num_groups@{k}"] = float(np.isfinite(groups.get(f"ndcg@{k}", np.zeros(0))).sum())
    return out


def evaluate_settings(
    scorer: Scorer, tables: pipeline.FeatureTables, split: int, **kw
) -> dict[str, dict[str, float]]:
    """Aggregate metrics for each setting of ``split``."""
    return {
        name: evaluate(scorer, tables, split, setting, **kw)[0]
        for name, setting in splits.settings_of(tables.corpus).items()
    }


def judge_value(results: dict[str, dict[str, float]], judge: str) -> float:
    """Mean of ``judge`` over the settings that have groups (the early-stopping criterion)."""
    vals = [
        r[judge] for r in results.values() if r.get("num_groups", 0) > 0 and np.isfinite(r[judge])
    ]
    return float(np.mean(vals)) if vals else float("nan")


# --- breakdowns --------------------------------------------------------------------------------
def group_sources(tables: pipeline.FeatureTables) -> np.ndarray:
    """Per group: its records' source (the most frequent one if they mix; ties -> lower id)."""
    return competence.group_sources(tables.corpus)


def group_modalities(tables: pipeline.FeatureTables) -> np.ndarray:
    """Per group: the modality of its dataset."""
    return np.asarray(tables.corpus["dataset_modality"])[tables.group_dataset]


def breakdown(
    groups: dict[str, np.ndarray], key: np.ndarray, names: list[str], ks=KS
) -> dict[str, dict[str, float]]:
    """Aggregates over the groups sharing each value of ``key`` (indexed by group id)."""
    k = np.asarray(key)[groups["group"].astype(np.int64)] if len(groups["group"]) else []
    out = {}
    for v in np.unique(k):
        sel = k == v
        out[names[int(v)]] = aggregate({n: a[sel] for n, a in groups.items()}, ks)
    return out


def evaluate_report(
    scorer: Scorer, tables: pipeline.FeatureTables, split: int, **kw
) -> dict[str, dict[str, Any]]:
    """Per setting: ``overall`` aggregate and ``by_source`` / ``by_modality`` breakdowns."""
    src, mod = group_sources(tables), group_modalities(tables)
    vocab = tables.corpus.vocab
    out = {}
    for name, setting in splits.settings_of(tables.corpus).items():
        agg, groups = evaluate(scorer, tables, split, setting, **kw)
        out[name] = {
            "overall": agg,
            "by_source": breakdown(groups, src, vocab["sources"]),
            "by_modality": breakdown(groups, mod, vocab["modalities"]),
        }
    return out


def compare(
    scorers: Mapping[str, Scorer], tables: pipeline.FeatureTables, split: int, *,
    say: Callable[[str], None] = lambda s: None, **kw,
) -> dict[str, dict[str, dict[str, Any]]]:  # fmt: skip
    """:func:`evaluate_report` for each named scorer, on the same groups."""
    out = {}
    for name, scorer in scorers.items():
        t0 = time.perf_counter()
        out[name] = evaluate_report(scorer, tables, split, **kw)
        say(f"evaluated {name} in {time.perf_counter() - t0:.1f}s")
    return out


# --- the trained model ----------------------------------------------------------------------
def load_run_config(workdir: str | Path) -> ml_collections.ConfigDict:
    """The config a run was trained with (``WORKDIR/config.json``)."""
    path = Path(workdir) / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{path}: not a training run directory (no config.json)")
    return ml_collections.ConfigDict(json.loads(path.read_text()))


def abstract_state(config: ml_collections.ConfigDict, sizes, mesh: jax.sharding.Mesh):
    """``(graphdef, abstract state)`` as training builds it (``train.abstract_state``)."""
    from modellens_jax import train

    return train.abstract_state(config, sizes, mesh)


def restore_state(
    workdir: str | Path,
    *,
    step: int | None = None,
    mesh: jax.sharding.Mesh | None = None,
    config: ml_collections.ConfigDict | None = None,
    verbose: bool = False,
):
    """Restores a trained run: ``(config, tables, graphdef, state, step)``.

    ``step`` defaults to the best checkpoint by validation judge, else the newest intact one.
    The model and optimizer are rebuilt exactly as ``train`` builds them and the checkpoint's
    corpus fingerprint must match ``WORKDIR/corpus``. ``mesh`` defaults to the run's mesh
    config over the local devices."""
    from modellens_jax import checkpointing, sharding, train

    workdir = Path(workdir)
    say = print if verbose else (lambda *a, **k: None)
    ckpt = checkpointing.Checkpointer(workdir / "checkpoints", async_save=False)
    try:
        steps = ckpt.steps()
        if not steps:
            raise FileNotFoundError(f"{workdir / 'checkpoints'}: no checkpoint to evaluate")
        chosen = step if step is not None else ckpt.best_step()
        if config is None:
            try:  # the exact config that wrote the checkpoint
                config = ml_collections.ConfigDict(
                    json.loads(
                        ckpt.read_meta(chosen if chosen is not None else steps[-1])["config"]
                    )
                )
            except Exception:
                config = load_run_config(workdir)
        corpus, tables = train.load_data(config, workdir, verbose=verbose)
        if mesh is None:
            mesh = sharding.make_mesh(int(config.mesh.data), int(config.mesh.model))
        graphdef, abstract = abstract_state(config, train.feature_sizes(config, tables), mesh)
        expect = {"corpus_fingerprint": corpus.fingerprint}
        restored = None
        if chosen is not None:
            try:
                restored = ckpt.restore(abstract, expect, step=chosen, say=say)
            except checkpointing.CheckpointCorrupted:
                if step is not None:
                    raise
                say(f"best step {chosen} unreadable; using the newest intact checkpoint")
        if restored is None:
            restored = ckpt.restore(abstract, expect, say=say)
        if restored is None:
            raise FileNotFoundError(f"{workdir / 'checkpoints'}: no checkpoint to evaluate")
        got_step, state, _, _ = restored
    finally:
        ckpt.close()
    return config, tables, graphdef, state, int(got_step)


_SCORE_JITS: dict[tuple[str, jax.sharding.Mesh], Any] = {}


def _score_jit(graphdef, mesh: jax.sharding.Mesh):
    """One jitted inference function per (architecture, mesh): scorers of several states of
    one architecture (checkpoints, perturbed copies) share compilations. The state keeps the
    shardings it was restored with; the batch and the scores are replicated. (GraphDefs are not
    hashable: their repr, which spells out the whole structure, is the key.)"""
    from modellens_jax import sharding, train

    key = (repr(graphdef), mesh)
    if key not in _SCORE_JITS:
        if len(_SCORE_JITS) >= 8:
            _SCORE_JITS.pop(next(iter(_SCORE_JITS)))
        _SCORE_JITS[key] = jax.jit(
            train.make_score_fn(graphdef), out_shardings=sharding.replicated(mesh)
        )
    return _SCORE_JITS[key]


class ModelScorer:
    """The trained scorer as an evaluation scorer: jitted on ``mesh`` with the state's
    shardings, the batch replicated (any row count), scores returned to the host."""

    needs_records = False

    def __init__(self, graphdef, state, mesh: jax.sharding.Mesh):
        from modellens_jax import sharding

        self.state, self.mesh = state, mesh
        self._to_device = functools.partial(sharding.to_replicated, mesh=mesh)
        self._fn = _score_jit(graphdef, mesh)

    def __call__(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        b = self._to_device({k: batch[k] for k in SCORED_KEYS if k in batch})
        return np.asarray(self._fn(self.state, b).addressable_data(0))


# --- reports -----------------------------------------------------------------------------------
def _fmt(x: float, digits: int = 3) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def present_settings(results: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The settings of a report, in the canonical order (``unseen_both`` in backtests only)."""
    first = next(iter(results.values()), {})
    return [s for s in splits.ALL_SETTINGS if s in first]


def format_markdown(
    results: Mapping[str, Mapping[str, Mapping[str, Any]]],
    *,
    title: str,
    notes: Mapping[str, str] | None = None,
    preamble: list[str] | None = None,
) -> str:
    """Markdown report of :func:`compare` output (scorer -> setting -> report)."""
    names = list(results)
    settings = present_settings(results)
    lines = [f"# {title}", "", *list(preamble or [])]
    lines += [
        "## τ_w by setting",
        "",
        "Top-weighted weighted Kendall τ (method.md §10a), plain mean over groups; the best "
        "per setting in bold.",
        "",
    ]
    best = {
        s: max(
            (results[n][s]["overall"].get("weighted_tau", float("nan")) for n in names),
            key=lambda v: v if math.isfinite(v) else -math.inf,
        )
        for s in settings
    }
    rows = []
    for n in names:
        cells = [n]
        for s in settings:
            v = results[n][s]["overall"].get("weighted_tau", float("nan"))
            cells.append(f"**{_fmt(v)}**" if math.isfinite(v) and v == best[s] else _fmt(v))
        rows.append(cells)
    lines += [*_table(["scorer", *settings], rows), ""]
    for s in settings:
        first = results[names[0]][s]["overall"]
        lines += [
            f"## {s}: {int(first.get('num_groups', 0))} groups "
            f"({int(first.get('num_groups@10', 0))} with ≥ 10 models)",
            "",
        ]
        rows = [
            [n] + [_fmt(results[n][s]["overall"].get(k, float("nan"))) for k, _ in REPORT_METRICS]
            for n in names
        ]
        lines += [*_table(["scorer", *[t for _, t in REPORT_METRICS]], rows), ""]
    for kind, label in (("by_source", "source"), ("by_modality", "modality")):
        lines += [f"## τ_w by {label} (groups in parentheses)", ""]
        for s in settings:
            keys = list(results[names[0]][s][kind])
            if not keys:
                continue
            rows = []
            for key in keys:
                ng = int(results[names[0]][s][kind][key].get("num_groups", 0))
                rows.append(
                    [f"{key} ({ng})"]
                    + [
                        _fmt(results[n][s][kind].get(key, {}).get("weighted_tau", float("nan")))
                        for n in names
                    ]
                )
            lines += [f"**{s}**", "", *_table([label, *names], rows), ""]
    if notes:
        lines += ["## Notes", ""] + [f"- **{k}**: {v}" for k, v in notes.items()] + [""]
    return "\n".join(lines)


def write_chart(results: Mapping[str, Mapping[str, Mapping[str, Any]]], path: Path,
                title: str = "") -> bool:  # fmt: skip
    """Grouped bars of τ_w and NDCG@10 per setting and scorer; False when matplotlib is
    missing (optional extra ``[eval]``)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    names = list(results)
    settings = present_settings(results)
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), constrained_layout=True)
    width = 0.8 / max(len(names), 1)
    x = np.arange(len(settings))
    cmap = plt.get_cmap("tab10")
    for ax, (key, label) in zip(axes, (("weighted_tau", "τ_w"), ("ndcg@10", "NDCG@10"))):
        for i, n in enumerate(names):
            vals = [results[n][s]["overall"].get(key, float("nan")) for s in settings]
            ax.bar(x + (i - (len(names) - 1) / 2) * width, np.nan_to_num(vals), width,
                   label=n, color=cmap(i % 10), edgecolor="black" if n == MODEL_NAME else None)  # fmt: skip
        ax.set_xticks(x, settings)
        ax.set_ylabel(label)
        ax.axhline(0, color="black", linewidth=0.6)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8, ncol=2)
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _json_safe(x: Any) -> Any:
    """NaN/inf -> None, numpy scalars -> Python (strict JSON)."""
    if isinstance(x, Mapping):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def write_reports(
    out_dir: str | Path,
    results: Mapping[str, Any],
    *,
    title: str,
    meta: Mapping[str, Any],
    notes: Mapping[str, str] | None = None,
    preamble: list[str] | None = None,
    stem: str = "report",
) -> tuple[str, dict[str, Path]]:
    """Writes ``<stem>.md``, ``<stem>.json`` and ``<stem>.png`` (when matplotlib is installed);
    returns (markdown, written paths)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    notes = dict(notes or {})
    paths = {"md": out / f"{stem}.md", "json": out / f"{stem}.json", "png": out / f"{stem}.png"}
    if not write_chart(results, paths["png"], title):
        notes["chart"] = (
            "no PNG chart: matplotlib is not installed (pip install 'modellens-jax[eval]')"
        )
        del paths["png"]
    md = format_markdown(results, title=title, notes=notes, preamble=preamble)
    paths["md"].write_text(md + "\n")
    doc = _json_safe({**meta, "notes": notes, "results": results})
    paths["json"].write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n")
    return md, paths


def baseline_tables(tables: pipeline.FeatureTables) -> tuple[pipeline.FeatureTables, str | None]:
    """Tables for the baselines: the run's own, or (when the run does not use descriptions) the
    corpus's description embeddings if they have been computed; with a note when there are
    none."""
    if tables.model_desc.shape[1] and tables.dataset_desc.shape[1]:
        return tables, None
    cdir = Path(tables.corpus.dir)
    if (cdir / "embeddings" / "manifest.json").exists():
        from modellens_jax import embed

        md, dd = embed.load_corpus_embeddings(cdir)
        return pipeline.FeatureTables(tables.corpus, md, dd), None
    return tables, (
        "the corpus has no description embeddings (run `python -m modellens_jax.embed` on "
        f"{cdir}): text_similarity is skipped and gbr uses no description features"
    )


def run(
    workdir: str | Path,
    *,
    split: str = "test",
    out: str | Path | None = None,
    baselines: str = "all",
    step: int | None = None,
    seed: int = 0,
    verbose: bool = True,
) -> dict[str, Any]:
    """The ``evaluate`` command as a function; returns the JSON report."""
    from modellens_jax import baselines as baselines_lib

    say = print if verbose else (lambda *a, **k: None)
    if split not in ("test", "val"):
        raise ValueError(f"--split={split!r}: expected test or val")
    names = baselines_lib.parse_names(baselines)
    workdir = Path(workdir)
    config, tables, graphdef, state, got = restore_state(workdir, step=step)
    mesh = jax.tree.leaves(state)[0].sharding.mesh
    say(f"restored {workdir} step {got}; evaluating the {split} split")
    scorers: dict[str, Scorer] = {MODEL_NAME: ModelScorer(graphdef, state, mesh)}
    notes: dict[str, str] = {}
    if names:
        btables, note = baseline_tables(tables)
        if note:
            notes["descriptions"] = note
        fitted, skipped = baselines_lib.fit_all(btables, names, seed=seed, say=say)
        scorers.update(fitted)
        notes.update({f"{k} skipped": v for k, v in skipped.items()})
        if "popularity" in fitted:
            notes["popularity"] = (
                "the corpus has no popularity column; the proxy is the number of training "
                "records of the model (unseen models all tie at 0)"
            )
    results = compare(scorers, tables, splits.SPLITS[split], say=say)
    counts = tables.corpus.manifest["report"].get("splits", {})
    preamble = [
        f"Run `{workdir}`, checkpoint step {got}; corpus `{config.data.source}` "
        f"(fingerprint {tables.corpus.fingerprint[:12]}), split **{split}**. Baselines are fit on "
        "the training records only; every scorer is evaluated on the same groups.",
        "",
    ]
    meta = {
        "workdir": str(workdir),
        "step": got,
        "split": split,
        "corpus_fingerprint": tables.corpus.fingerprint,
        "record_counts": counts,
        "baselines": {
            n: getattr(s, "description", "") for n, s in scorers.items() if n != MODEL_NAME
        },
    }
    out = Path(out) if out else workdir / "eval"
    md, paths = write_reports(out, results, title=f"Evaluation ({split} split)", meta=meta,
                              notes=notes, preamble=preamble)  # fmt: skip
    say(md)
    say("wrote " + ", ".join(str(p) for p in paths.values()))
    return {**meta, "notes": notes, "results": results}


# --- command ------------------------------------------------------------------------------------
def define_flags() -> None:
    from absl import flags

    flags.DEFINE_string("workdir", None, "Training run directory.", required=True)
    flags.DEFINE_enum("split", "test", ["test", "val"], "Held-out split to evaluate.")
    flags.DEFINE_string("out", None, "Output directory (default WORKDIR/eval).")
    flags.DEFINE_string("baselines", "all", "all, none, or a comma list of baseline names.")
    flags.DEFINE_integer("step", None, "Checkpoint step (default: best, else newest).")
    flags.DEFINE_integer("seed", 0, "Seed of the random baseline.")


def main(argv) -> None:
    del argv
    from absl import flags

    f = flags.FLAGS
    run(f.workdir, split=f.split, out=f.out, baselines=f.baselines, step=f.step, seed=f.seed)


if __name__ == "__main__":
    from modellens_jax import cli

    define_flags()
    cli.run(main)
