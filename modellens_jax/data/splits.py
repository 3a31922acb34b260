"""Seeded, reproducible held-out splits for the three evaluation settings.

One assignment per record serves all three settings, so a single trained model is evaluated on
each: ``split`` (TRAIN / VAL / TEST) and ``setting`` (which setting a held-out record tests).

- unseen datasets: whole datasets held out, stratified by (task, modality) so every stratum
  contributes in proportion (a random quantile per dataset inside its stratum);
- unseen models: a temporal hold-out: the newest dated models are TEST, the next newest VAL
  (fractions of the dated models' records); models without a release date always train;
- performance completion: of the remaining records (seen model and seen dataset), a random
  fraction is masked; a model or dataset whose every remaining record was drawn gets one of
  them back into TRAIN, so completion always asks about a model and a dataset seen in training.

Precedence when a record falls in several: test dataset > test model > val dataset > val model >
completion draw. Held-out models and datasets never get a learned ID (they have no train record).

The **backtest** protocol (``data.split.protocol="backtest"``, :func:`assign_backtest`) replays
arrival instead: per dated source, models released after a cut-off date are new (TEST), a seeded
share of each source's datasets is new, and a record of a new model on a new dataset tests the
fourth setting, ``unseen_both``. Inside what is known at the cut-off, the newest models, a share
of datasets and a share of records form the validation split used for checkpoint selection.
"""

from __future__ import annotations

import numpy as np

TRAIN, VAL, TEST = 0, 1, 2
SPLITS = {"train": TRAIN, "val": VAL, "test": TEST}
COMPLETION, UNSEEN_DATASET, UNSEEN_MODEL, UNSEEN_BOTH = 0, 1, 2, 3
SETTINGS = {  # the random protocol's settings
    "completion": COMPLETION,
    "unseen_dataset": UNSEEN_DATASET,
    "unseen_model": UNSEEN_MODEL,
}
ALL_SETTINGS = {**SETTINGS, "unseen_both": UNSEEN_BOTH}  # a new dataset and new models
PROTOCOLS = ("random", "backtest")


def settings_of(corpus) -> dict[str, int]:
    """The settings a compiled corpus's split protocol produces (``unseen_both`` only in
    backtest folds)."""
    cfg = corpus.manifest.get("data_config") or {}
    protocol = (cfg.get("split") or {}).get("protocol", "random")
    return ALL_SETTINGS if protocol == "backtest" else SETTINGS


NEVER = np.iinfo(np.int32).max  # a cut-off day no release passes (undated or undated source)


FRACTIONS = tuple(f"{a}_{b}" for a in ("completion", "dataset", "model") for b in ("val", "test"))


def check_fractions(fr: dict[str, float]) -> None:
    """Each fraction in (0, 1) and each val + test pair below 1 (ValueError naming the key)."""
    missing = [k for k in FRACTIONS if k not in fr]
    if missing:
        raise ValueError(f"config data.split is missing {missing}")
    for k in FRACTIONS:
        v = fr[k]
        if not (0.0 < float(v) < 1.0):
            raise ValueError(f"config data.split.{k}={v}: must be inside (0, 1)")
    for a in ("completion", "dataset", "model"):
        v, t = float(fr[f"{a}_val"]), float(fr[f"{a}_test"])
        if v + t >= 1.0:
            raise ValueError(
                f"config data.split.{a}_val + {a}_test = {v} + {t} = {v + t:g}: must be < 1"
            )


def stratified_holdout(strata: np.ndarray, val: float, test: float, rng) -> np.ndarray:
    """Per item TRAIN/VAL/TEST; inside each stratum items are ordered by a random key and the
    jittered quantile (rank + u) / n decides, so small strata still hold out in expectation."""
    n = len(strata)
    out = np.full(n, TRAIN, np.int8)
    key = rng.random(n)
    u = rng.random(n)
    order = np.lexsort((key, strata))
    s_sorted = strata[order]
    starts = np.r_[0, np.flatnonzero(s_sorted[1:] != s_sorted[:-1]) + 1]
    sizes = np.diff(np.r_[starts, n])
    rank = np.arange(n) - np.repeat(starts, sizes)
    q = (rank + u[order]) / np.repeat(sizes, sizes)
    out[order[q < test]] = TEST
    out[order[(q >= test) & (q < test + val)]] = VAL
    return out


def temporal_holdout(
    days: np.ndarray, val: float, test: float, rng, weights: np.ndarray | None = None
) -> np.ndarray:
    """Newest dated models TEST, the next newest VAL, undated (-1) always TRAIN. Fractions count
    ``weights`` (records per model), so a few record-heavy new models cannot swallow the corpus."""
    out = np.full(len(days), TRAIN, np.int8)
    dated = np.flatnonzero(days >= 0)
    if len(dated) == 0:
        return out
    order = dated[np.lexsort((rng.random(len(dated)), -days[dated]))]
    w = np.ones(len(days)) if weights is None else np.asarray(weights, np.float64)
    before = np.cumsum(w[order]) - w[order]  # weight of strictly newer models
    frac = before / max(w[order].sum(), 1e-12)
    out[order[frac < test + val]] = VAL
    out[order[frac < test]] = TEST
    return out


def assign(
    *,
    rec_model: np.ndarray,
    rec_dataset: np.ndarray,
    dataset_stratum: np.ndarray,
    model_days: np.ndarray,
    fractions: dict[str, float],
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Returns per-record ``split`` and ``setting`` (int8)."""
    check_fractions(fractions)
    rng = np.random.default_rng(seed)
    ds = stratified_holdout(
        dataset_stratum, fractions["dataset_val"], fractions["dataset_test"], rng
    )
    records_per_model = np.bincount(rec_model, minlength=len(model_days))
    ms = temporal_holdout(
        model_days, fractions["model_val"], fractions["model_test"], rng, records_per_model
    )
    d, m = ds[rec_dataset], ms[rec_model]
    n = len(rec_model)
    u = rng.random(n)
    split = np.full(n, TRAIN, np.int8)
    setting = np.full(n, COMPLETION, np.int8)
    ct, cv = fractions["completion_test"], fractions["completion_val"]
    split[u < ct] = TEST
    split[(u >= ct) & (u < ct + cv)] = VAL
    for cond, sp, st in (
        (m == VAL, VAL, UNSEEN_MODEL),
        (d == VAL, VAL, UNSEEN_DATASET),
        (m == TEST, TEST, UNSEEN_MODEL),
        (d == TEST, TEST, UNSEEN_DATASET),
    ):
        split[cond] = sp
        setting[cond] = st
    _return_completion_entities(split, setting, u, rec_model, rec_dataset)
    return split, setting


# --- arrival backtests ------------------------------------------------------------------------------
def check_backtest(cutoff: float, horizon: float) -> None:
    """``0 < cutoff < horizon <= 1`` (ValueError naming the key)."""
    for k, v in (("cutoff", cutoff), ("horizon", horizon)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 < float(v) <= 1.0:
            raise ValueError(f"config data.split.{k}={v!r}: must be inside (0, 1]")
    if not float(cutoff) < float(horizon):
        raise ValueError(
            f"config data.split.cutoff={cutoff} must be < data.split.horizon={horizon}"
        )


def quantile_days(
    days: np.ndarray, source: np.ndarray, weights: np.ndarray, q: float, num_sources: int
) -> np.ndarray:
    """Per source: the release day by which a share ``q`` of its dated models' records had
    arrived (models ordered by release day; ``NEVER`` for a source without dated models, or for
    ``q >= 1``). A model released strictly after its source's day is after the cut-off."""
    out = np.full(num_sources, NEVER, np.int64)
    if q >= 1.0:
        return out
    days, source = np.asarray(days, np.int64), np.asarray(source, np.int64)
    w = np.asarray(weights, np.float64)
    for s in range(num_sources):
        sel = np.flatnonzero((source == s) & (days >= 0) & (w > 0))
        if not len(sel):
            continue
        order = sel[np.argsort(days[sel], kind="stable")]
        cum = np.cumsum(w[order])
        i = int(np.searchsorted(cum, q * cum[-1], side="left"))
        out[s] = days[order[min(i, len(order) - 1)]]
    return out


def assign_backtest(
    *,
    rec_model: np.ndarray,
    rec_dataset: np.ndarray,
    dataset_stratum: np.ndarray,
    model_days: np.ndarray,
    model_cutoff_day: np.ndarray,
    fractions: dict[str, float],
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-record ``split`` and ``setting`` of one backtest fold.

    TEST models are the dated models released after their source's cut-off
    (``model_days > model_cutoff_day``); TEST datasets a seeded share ``dataset_test`` of each
    stratum (source, task, modality). What is known at the cut-off gives the validation split:
    the newest known models (``model_val`` of their records), ``dataset_val`` of the datasets and
    ``completion_val`` of the remaining records; ``completion_test`` of them tests completion.
    A held-out record's split is the later of its model's and its dataset's; its setting says
    which of the two has no training record (``UNSEEN_BOTH`` when neither has)."""
    check_fractions(fractions)
    rng = np.random.default_rng(seed)
    ds = stratified_holdout(
        dataset_stratum, fractions["dataset_val"], fractions["dataset_test"], rng
    )
    days = np.asarray(model_days, np.int64)
    new = (days >= 0) & (days > np.asarray(model_cutoff_day, np.int64))
    records_per_model = np.bincount(rec_model, minlength=len(days))
    ms = temporal_holdout(
        np.where(new, -1, days), fractions["model_val"], 0.0, rng, records_per_model
    )
    ms[new] = TEST
    d, m = ds[rec_dataset], ms[rec_model]
    n = len(rec_model)
    u = rng.random(n)
    ct, cv = fractions["completion_test"], fractions["completion_val"]
    split = np.where(u < ct, TEST, np.where(u < ct + cv, VAL, TRAIN)).astype(np.int8)
    held_m, held_d = m != TRAIN, d != TRAIN
    held = held_m | held_d
    split[held] = np.maximum(m, d)[held]
    setting = np.select(
        [held_m & held_d, held_m, held_d], [UNSEEN_BOTH, UNSEEN_MODEL, UNSEEN_DATASET],
        COMPLETION,
    ).astype(np.int8)  # fmt: skip
    _return_completion_entities(split, setting, u, rec_model, rec_dataset)
    # What training has seen decides the setting (a known model whose only records are on new
    # datasets is as new as a model released after the cut-off).
    seen_m = np.zeros(len(days), bool)
    seen_m[rec_model[split == TRAIN]] = True
    seen_d = np.zeros(int(rec_dataset.max(initial=0)) + 1, bool)
    seen_d[rec_dataset[split == TRAIN]] = True
    sm, sd = seen_m[rec_model], seen_d[rec_dataset]
    setting[held] = np.select(
        [~sm & ~sd, ~sm, ~sd], [UNSEEN_BOTH, UNSEEN_MODEL, UNSEEN_DATASET], COMPLETION
    )[held]
    return split, setting


def _return_completion_entities(split, setting, u, rec_model, rec_dataset) -> None:
    """Completion must test seen entities: a model (then a dataset) with completion-masked
    records but no training record gets its masked record with the smallest draw back into
    TRAIN (in place). Returning records only adds training records, so the second pass keeps
    the first's fix."""
    n = len(split)
    for ent in (rec_model, rec_dataset):
        has_train = np.zeros(int(ent.max()) + 1 if n else 0, bool)
        has_train[ent[split == TRAIN]] = True
        cand = np.flatnonzero((split != TRAIN) & (setting == COMPLETION) & ~has_train[ent])
        if len(cand):
            cand = cand[np.argsort(u[cand], kind="stable")]
            _, first = np.unique(ent[cand], return_index=True)
            split[cand[first]] = TRAIN
