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
"""

from __future__ import annotations

import numpy as np

TRAIN, VAL, TEST = 0, 1, 2
SPLITS = {"train": TRAIN, "val": VAL, "test": TEST}
COMPLETION, UNSEEN_DATASET, UNSEEN_MODEL = 0, 1, 2
SETTINGS = {
    "completion": COMPLETION,
    "unseen_dataset": UNSEEN_DATASET,
    "unseen_model": UNSEEN_MODEL,
}


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
    out[order[frac < test]] = TEST
    out[order[(frac >= test) & (frac < test + val)]] = VAL
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
    # Completion must test seen entities: a model (then a dataset) with completion-masked records
    # but no training record gets its masked record with the smallest draw back into TRAIN.
    # Returning records only adds training records, so the second pass keeps the first's fix.
    for ent in (rec_model, rec_dataset):
        has_train = np.zeros(int(ent.max()) + 1 if n else 0, bool)
        has_train[ent[split == TRAIN]] = True
        cand = np.flatnonzero((split != TRAIN) & (setting == COMPLETION) & ~has_train[ent])
        if len(cand):
            cand = cand[np.argsort(u[cand], kind="stable")]
            _, first = np.unique(ent[cand], return_index=True)
            split[cand[first]] = TRAIN
    return split, setting
