"""Evaluation: any scorer over the held-out groups of a split and setting -> ranking metrics.

A scorer is a function from a batch (``modellens_jax.data.batch``, one group per row) to scores
``[R, L]``: the trained model, or a baseline (``modellens_jax.baselines``). Metrics are computed
per group on device, kept per group (for breakdowns) and aggregated by ``metrics.aggregate`` (exact
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
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from modellens_jax import cli, metrics, report
from modellens_jax.data import batch as batch_lib
from modellens_jax.data import competence, pipeline, splits
from modellens_jax.report import MODEL_NAME

KS = (1, 10)
Scorer = Callable[[dict[str, np.ndarray]], Any]
CONTRACT_KEYS = batch_lib.RECORD_KEYS + batch_lib.MODEL_KEYS + batch_lib.GROUP_KEYS
SCORED_KEYS = (*CONTRACT_KEYS, "competence")  # what the trained scorer reads (when present)


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
    return metrics.aggregate(groups, ks), groups


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


def validator(
    judge: str, settings: Sequence[str] | None = None
) -> Callable[[Scorer, pipeline.FeatureTables], tuple[float, dict]]:
    """The trainer's validation: ``(scorer, tables) -> (judge value, per-setting results)`` on
    the validation split (checkpoint selection and early stopping; ``settings`` restricts it
    to those of the split's settings, e.g. the cold-start fit's)."""

    def validate(scorer: Scorer, tables: pipeline.FeatureTables) -> tuple[float, dict]:
        res = {
            name: evaluate(scorer, tables, splits.VAL, setting)[0]
            for name, setting in splits.settings_of(tables.corpus).items()
            if settings is None or name in settings
        }
        return judge_value(res, judge), res

    return validate


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
        out[names[int(v)]] = metrics.aggregate({n: a[sel] for n, a in groups.items()}, ks)
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
class ModelScorer:
    """The trained scorer as an evaluation scorer: jitted on ``mesh`` with the state's
    shardings, the batch replicated (any row count), scores returned to the host."""

    needs_records = False

    def __init__(self, graphdef, state, mesh: jax.sharding.Mesh, *,
                 cold: Any = None, _fn=None):  # fmt: skip
        from modellens_jax import sharding, train_state

        self.graphdef, self.state, self.mesh, self.cold = graphdef, state, mesh, cold
        self._to_device = functools.partial(sharding.to_replicated, mesh=mesh)
        self._fn = _fn if _fn is not None else train_state.jit_score(graphdef, mesh)

    @classmethod
    def of(cls, run) -> ModelScorer:
        """The scorer of a restored run (``rundir.restore``) with its fitted cold-start prior
        (``cold_start``: added to the network's scores of models without a learned ID)."""
        return cls(run.graphdef, run.state, run.mesh, cold=run.cold)

    def with_state(self, state) -> ModelScorer:
        """The same architecture with another state (a checkpoint, a perturbed copy), sharing
        this scorer's compiled function (and no cold-start prior: it was fitted to a state)."""
        return ModelScorer(self.graphdef, state, self.mesh, _fn=self._fn)

    def network(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        """The network's scores ``[R, L]`` alone (no cold-start prior)."""
        b = self._to_device({k: batch[k] for k in SCORED_KEYS if k in batch})
        return np.asarray(self._fn(self.state, b).addressable_data(0))

    def __call__(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        s = self.network(batch)
        return s if self.cold is None else s + self.cold.batch_prior(batch)


class EnsembleScorer:
    """A seed ensemble's members as one evaluation scorer: the mean of the members' scores
    (:meth:`members` gives each member's, for their spread). The members share one compiled
    function (same architecture)."""

    needs_records = False

    def __init__(self, scorers: Sequence[ModelScorer], *,
                 cold: Any = None):  # fmt: skip
        if not scorers:
            raise ValueError("an ensemble needs at least one member")
        self.scorers = list(scorers)
        self.cold = cold

    @classmethod
    def of(cls, ens) -> EnsembleScorer:
        """The scorer of a restored ensemble (``ensemble.restore``), with its fitted prior."""
        first = ModelScorer.of(ens.members[0])
        return cls([first, *(first.with_state(m.state) for m in ens.members[1:])],
                   cold=ens.cold)  # fmt: skip

    def members(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        """``[N, R, L]``: every member's network scores of the batch (the prior, the same for
        every member, is not in them)."""
        return np.stack([s.network(batch) for s in self.scorers])

    def __call__(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        s = self.members(batch).mean(0)
        return s if self.cold is None else s + self.cold.batch_prior(batch)


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
    from modellens_jax import ensemble, rundir

    if ensemble.is_ensemble(workdir):  # the members' mean score, each at its best checkpoint
        if step is not None:
            raise cli.UsageError(f"--step={step}: {workdir} is a seed ensemble; each member uses "
                                 "its best validation checkpoint")  # fmt: skip
        ens = ensemble.restore(workdir)
        config, tables = ens.config, ens.tables
        got: Any = [m.step for m in ens.members]
        model: Scorer = EnsembleScorer.of(ens)
        say(f"restored the {len(got)}-member seed ensemble {workdir} (steps {got})")
    else:
        run = rundir.restore(workdir, step=step)
        config, tables, got = run.config, run.tables, run.step
        model = ModelScorer.of(run)
        say(f"restored {workdir} step {got}; evaluating the {split} split")
    scorers: dict[str, Scorer] = {MODEL_NAME: model}
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
    what = (f"seed ensemble of {len(got)} members (mean score; best checkpoints at steps {got})"
            if isinstance(got, list) else f"checkpoint step {got}")  # fmt: skip
    preamble = [
        f"Run `{workdir}`, {what}; corpus `{config.data.source}` "
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
    md, paths = report.write_reports(out, results, title=f"Evaluation ({split} split)", meta=meta,
                              notes=notes, preamble=preamble)  # fmt: skip
    say(md)
    say("wrote " + ", ".join(str(p) for p in paths.values()))
    return {**meta, "notes": notes, "results": results}


# --- command ------------------------------------------------------------------------------------
def _define(fv) -> None:
    from absl import flags

    flags.DEFINE_string("workdir", None, "Training run directory.", required=True, flag_values=fv)
    flags.DEFINE_enum("split", "test", ["test", "val"], "Held-out split to evaluate.",
                      flag_values=fv)  # fmt: skip
    flags.DEFINE_string("out", None, "Output directory (default WORKDIR/eval).", flag_values=fv)
    flags.DEFINE_string("baselines", "all", "all, none, or a comma list of baseline names.",
                        flag_values=fv)  # fmt: skip
    flags.DEFINE_integer("step", None, "Checkpoint step (default: best, else newest).",
                         flag_values=fv)  # fmt: skip
    flags.DEFINE_integer("seed", 0, "Seed of the random baseline.", flag_values=fv)


def _run(fv) -> None:
    run(fv.workdir, split=fv.split, out=fv.out, baselines=fv.baselines, step=fv.step,
        seed=fv.seed)  # fmt: skip


main = cli.command(_define, _run, __doc__)

if __name__ == "__main__":
    sys.exit(main())
