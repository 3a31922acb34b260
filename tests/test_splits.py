"""Splits: seeded, reproducible, leak-free held-out datasets and models, temporal and stratified.

What ``splits.assign`` guarantees (and these tests check):
  - the same seed gives identical arrays, another seed different ones;
  - a held-out dataset (model) has no TRAIN record, so its learned id is 0 ([UNK]);
  - unseen-model hold-out is temporal: every VAL model is at least as new as every dated model
    with a training record, every TEST model at least as new as every VAL model (ties on the
    same day may fall on either side), and models without a date always train; the fractions
    count records of dated models;
  - unseen datasets are stratified by (task, modality): a stratum of n datasets holds out
    floor(n * test) or that + 1 datasets for test;
  - completion records always have a model and a dataset with a training record.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import ml_collections
import numpy as np
import pandas as pd
import pytest

from modellens_jax.data import corpus, schema, splits
from modellens_jax.data.splits import COMPLETION, TEST, TRAIN, UNSEEN_DATASET, UNSEEN_MODEL, VAL

ROOT = Path(__file__).resolve().parents[1]

FRACTIONS = {
    "completion_val": 0.05,
    "completion_test": 0.10,
    "dataset_val": 0.05,
    "dataset_test": 0.10,
    "model_val": 0.05,
    "model_test": 0.10,
}
STRATA = [  # task, modality, number of datasets
    ("Image Classification", "image", 60),
    ("Object Detection", "image", 40),
    ("Text Classification", "text", 30),
    ("Retrieval", "text", 20),
    ("Speech Recognition", "audio", 6),
    ("Depth Estimation", "image", 2),
]


def data_cfg(source, **overrides) -> ml_collections.ConfigDict:
    spec = importlib.util.spec_from_file_location("_default_config", ROOT / "configs/default.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cfg = mod.get_config().data
    cfg.source = str(source)
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = cfg
        for p in parents:
            node = node[p]
        node[leaf] = value
    return cfg


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """~2,500 records: 158 datasets in 6 (task, modality) strata, 200 models (160 dated, with
    same-day ties), one metric per dataset, 8-25 models per group."""
    rng = np.random.default_rng(123)
    d = tmp_path_factory.mktemp("splits_corpus")
    models = [f"org{i % 7}/model-{i}" for i in range(200)]
    day0 = np.datetime64("2020-01-01")
    days = rng.integers(0, 1500, size=200)
    days[10:20] = days[9]  # ties
    dates = [str(day0 + np.timedelta64(int(x), "D")) if i < 160 else "" for i, x in enumerate(days)]
    pd.DataFrame(
        {
            "model": models,
            "family": [m.split("/")[1].split("-")[0] for m in models],
            "params": [f"{x:.3f}" for x in rng.uniform(0.01, 70, 200)],
            "model_desp": "",
            "release_date": dates,
            "source": "synthetic",
        }
    ).to_csv(d / "models.csv", index=False)
    ds_rows, rec_rows = [], []
    for task, modality, n in STRATA:
        for j in range(n):
            name = f"{task} set {j}"
            ds_rows.append([name, task, f"{name} description", modality, "synthetic"])
            chosen = rng.choice(200, size=rng.integers(8, 26), replace=False)
            for m in chosen:
                rec_rows.append(
                    [
                        task,
                        name,
                        models[m],
                        "accuracy",
                        f"{rng.uniform(0, 100):.2f}",
                        "",
                        "1",
                        "synthetic",
                        "",
                    ]
                )
    pd.DataFrame(ds_rows, columns=list(schema.DATASET_COLUMNS)).to_csv(
        d / "datasets.csv", index=False
    )
    pd.DataFrame(rec_rows, columns=list(schema.LEADERBOARD_RECORD_COLUMNS)).to_csv(
        d / "records.csv", index=False
    )
    compiled = corpus.build(data_cfg(d))
    return d, compiled


def _views(compiled):
    a = compiled.arrays
    rec_dataset = a["group_dataset"][a["rec_group"]]
    return a, rec_dataset


# --- reproducibility ---------------------------------------------------------------------------
def test_assign_same_seed_same_arrays_other_seed_different():
    rng = np.random.default_rng(0)
    kw = dict(
        rec_model=rng.integers(0, 50, 2000),
        rec_dataset=rng.integers(0, 80, 2000),
        dataset_stratum=rng.integers(0, 5, 80),
        model_days=np.where(rng.random(50) < 0.8, rng.integers(0, 1000, 50), -1),
        fractions=FRACTIONS,
    )
    s0, t0 = splits.assign(**kw, seed=0)
    s0b, t0b = splits.assign(**kw, seed=0)
    s1, _ = splits.assign(**kw, seed=1)
    assert s0.dtype == t0.dtype == np.int8
    assert np.array_equal(s0, s0b) and np.array_equal(t0, t0b)
    assert not np.array_equal(s0, s1)


def test_compiled_splits_reproducible_and_seeded(synthetic):
    src, compiled = synthetic
    again = corpus.build(data_cfg(src))
    fp = corpus.fingerprint(compiled.arrays, compiled.vocab, compiled.texts)
    assert corpus.fingerprint(again.arrays, again.vocab, again.texts) == fp
    other = corpus.build(data_cfg(src, **{"split.seed": 7}))
    assert not np.array_equal(other.arrays["rec_split"], compiled.arrays["rec_split"])
    assert np.array_equal(other.arrays["rec_value"], compiled.arrays["rec_value"])


def test_splits_are_stored_with_the_corpus(synthetic, tmp_path):
    _, compiled = synthetic
    corpus.write_corpus(compiled, tmp_path / "c", config={"split": {"seed": 0}})
    c = corpus.load_corpus(tmp_path / "c")
    assert np.array_equal(c["rec_split"], compiled.arrays["rec_split"])
    assert np.array_equal(c["rec_setting"], compiled.arrays["rec_setting"])


# --- leakage -----------------------------------------------------------------------------------
def test_settings_are_consistent(synthetic):
    a, _ = _views(synthetic[1])
    split, setting = a["rec_split"], a["rec_setting"]
    assert set(np.unique(split)) == {TRAIN, VAL, TEST}
    assert np.all(setting[split == TRAIN] == COMPLETION)
    for st in (COMPLETION, UNSEEN_DATASET, UNSEEN_MODEL):
        for sp in (VAL, TEST):
            assert ((split == sp) & (setting == st)).sum() > 0, (sp, st)


def test_held_out_datasets_have_no_train_record_and_unk_id(synthetic):
    a, rec_dataset = _views(synthetic[1])
    held = np.unique(rec_dataset[a["rec_setting"] == UNSEEN_DATASET])
    assert len(held) > 0
    train_ds = np.unique(rec_dataset[a["rec_split"] == TRAIN])
    assert not np.intersect1d(held, train_ds).size
    assert np.all(a["dataset_id"][held] == 0)
    assert np.all(a["dataset_id"][train_ds] > 0)
    # a TEST dataset is held out entirely (all its records test it)
    test_ds = np.unique(
        rec_dataset[(a["rec_setting"] == UNSEEN_DATASET) & (a["rec_split"] == TEST)]
    )
    assert np.all((a["rec_split"] == TEST)[np.isin(rec_dataset, test_ds)])


def test_held_out_models_have_no_train_record_and_unk_id(synthetic):
    a, _ = _views(synthetic[1])
    held = np.unique(a["rec_model"][a["rec_setting"] == UNSEEN_MODEL])
    assert len(held) > 0
    train_models = np.unique(a["rec_model"][a["rec_split"] == TRAIN])
    assert not np.intersect1d(held, train_models).size
    assert np.all(a["model_id"][held] == 0)
    # learned ids: 1..K for models with a training record, contiguous, in vocabulary order
    ids = a["model_id"][train_models]
    assert np.array_equal(np.sort(ids), np.arange(1, len(train_models) + 1))
    assert np.all(np.diff(ids) > 0)


def test_completion_records_have_a_seen_model_and_dataset(synthetic):
    a, rec_dataset = _views(synthetic[1])
    comp = (a["rec_split"] != TRAIN) & (a["rec_setting"] == COMPLETION)
    assert comp.sum() > 0
    assert np.all(a["model_id"][a["rec_model"][comp]] > 0)
    assert np.all(a["dataset_id"][rec_dataset[comp]] > 0)


def test_completion_never_leaves_an_entity_without_training_records():
    # every model has exactly one record: masking it would make the model unseen
    n = 500
    split, setting = splits.assign(
        rec_model=np.arange(n),
        rec_dataset=np.arange(n) % 5,
        dataset_stratum=np.zeros(5, np.int64),
        model_days=np.full(n, -1, np.int32),
        fractions={**FRACTIONS, "dataset_val": 0.01, "dataset_test": 0.01},
        seed=0,
    )
    comp = (setting == COMPLETION) & (split != TRAIN)
    assert comp.sum() == 0  # no model keeps a training record otherwise
    # The same draws with two records per model: now completion does hold records out (so the
    # zero above is the guard at work, not completion masking switched off), and each held-out
    # record's model and dataset keep a training record.
    rec_model = np.arange(n) // 2
    split, setting = splits.assign(
        rec_model=rec_model,
        rec_dataset=np.arange(n) % 5,
        dataset_stratum=np.zeros(5, np.int64),
        model_days=np.full(n // 2, -1, np.int32),
        fractions={**FRACTIONS, "dataset_val": 0.01, "dataset_test": 0.01},
        seed=0,
    )
    comp = (setting == COMPLETION) & (split != TRAIN)
    ct, cv = FRACTIONS["completion_test"], FRACTIONS["completion_val"]
    assert 0.5 * (ct + cv) * n < comp.sum() <= (ct + cv) * n * 1.5
    assert (split[comp] == TEST).sum() > (split[comp] == VAL).sum() > 0
    trained = np.zeros(n // 2, bool)
    trained[rec_model[split == TRAIN]] = True
    assert trained[rec_model[comp]].all()


# --- temporal hold-out of models ---------------------------------------------------------------
def test_unseen_models_are_the_newest(synthetic):
    a, _ = _views(synthetic[1])
    day = a["model_release_day"]
    split, setting, model = a["rec_split"], a["rec_setting"], a["rec_model"]
    test_m = np.unique(model[(setting == UNSEEN_MODEL) & (split == TEST)])
    val_m = np.unique(model[(setting == UNSEEN_MODEL) & (split == VAL)])
    train_m = np.unique(model[split == TRAIN])
    dated_train = train_m[day[train_m] >= 0]
    assert len(test_m) and len(val_m) and len(dated_train)
    assert np.all(day[test_m] >= 0) and np.all(day[val_m] >= 0)  # undated never held out
    assert day[dated_train].max() <= day[val_m].min()
    assert day[val_m].max() <= day[test_m].min()
    undated = np.flatnonzero(day < 0)
    assert len(undated) and np.isin(undated, train_m).all()


def test_temporal_holdout_fractions_count_records():
    rng = np.random.default_rng(0)
    days = np.r_[rng.permutation(100), np.full(20, -1)]
    weights = rng.integers(1, 20, size=120)
    out = splits.temporal_holdout(days, 0.05, 0.10, rng, weights)
    assert np.all(out[100:] == TRAIN)
    dated_w = weights[:100].sum()
    w_test = weights[out == TEST].sum() / dated_w
    w_val = weights[out == VAL].sum() / dated_w
    wmax = weights.max() / dated_w
    assert 0.10 <= w_test < 0.10 + wmax + 1e-12
    assert abs(w_val - 0.05) <= 2 * wmax
    assert (
        days[out == TEST].min() > days[out == VAL].max() > days[(out == TRAIN) & (days >= 0)].max()
    )


def test_temporal_holdout_exact_boundaries():
    """Hand-computed cases (found by tests/mutation/run.py): day 0 is a date, a single dated
    model is held out, fractions are half-open ``[0, test)`` then ``[test, test + val)`` of the
    weight of strictly newer models, weights default to one per model and fractional weights
    are normalised by their sum."""
    rng = np.random.default_rng(0)
    T_, V_, R_ = TEST, VAL, TRAIN
    # day 0 (2000-01-01) is a release date like any other; one dated model is the newest
    assert splits.temporal_holdout(np.array([0, -1]), 0.25, 0.5, rng).tolist() == [T_, R_]
    # four models, equal weights: newer-weight fractions 0, .25, .5, .75 (newest first)
    days = np.array([10, 20, 30, 40])
    got = splits.temporal_holdout(days, 0.25, 0.25, rng)
    assert got.tolist() == [R_, R_, V_, T_]
    # record weights: the newest model carries 7 of 10 records
    got = splits.temporal_holdout(days, 0.25, 0.5, rng, np.array([1, 1, 1, 7]))
    assert got.tolist() == [R_, R_, V_, T_]  # fractions 0.9, 0.8, 0.7, 0
    assert splits.temporal_holdout(days, 0.25, 0.5, rng).tolist() == [R_, V_, T_, T_]
    # fractional weights: fractions of their sum (0, 1/3, 2/3 for three equal weights)
    got = splits.temporal_holdout(days[:3], 0.3, 0.3, rng, np.full(3, 0.1))
    assert got.tolist() == [R_, V_, T_]


def test_temporal_holdout_without_dates_holds_out_nothing():
    out = splits.temporal_holdout(np.full(10, -1), 0.05, 0.10, np.random.default_rng(0))
    assert np.all(out == TRAIN)


# --- stratified hold-out of datasets -----------------------------------------------------------
@pytest.mark.parametrize("seed", range(5))
def test_stratified_holdout_per_stratum_counts(seed):
    sizes = [1, 3, 10, 37, 100, 250]
    strata = np.repeat(np.arange(len(sizes)), sizes)
    strata = np.random.default_rng(seed).permutation(strata)
    out = splits.stratified_holdout(strata, 0.05, 0.10, np.random.default_rng(seed))
    for s, n in enumerate(sizes):
        got = out[strata == s]
        n_test, n_val = int((got == TEST).sum()), int((got == VAL).sum())
        assert int(np.floor(n * 0.10)) <= n_test <= int(np.floor(n * 0.10)) + 1, (n, n_test)
        assert abs(n_val - n * 0.05) < 2, (n, n_val)


def test_compiled_dataset_holdout_is_stratified(synthetic):
    _, compiled = synthetic
    a, rec_dataset = _views(compiled)
    names = compiled.vocab["datasets"]
    test_ds = set(rec_dataset[(a["rec_setting"] == UNSEEN_DATASET) & (a["rec_split"] == TEST)])
    total_test = 0
    for task, _modality, n in STRATA:
        ids = [i for i, name in enumerate(names) if name.startswith(f"{task} set ")]
        assert len(ids) == n
        k = sum(i in test_ds for i in ids)
        total_test += k
        assert np.floor(n * 0.10) <= k <= np.floor(n * 0.10) + 1, (task, n, k)
    assert abs(total_test / len(names) - 0.10) < 0.03


def test_fractions_roughly_as_configured(synthetic):
    a, _ = _views(synthetic[1])
    split, setting = a["rec_split"], a["rec_setting"]
    n = len(split)
    # completion: of the records neither held-out model nor dataset touches
    eligible = (setting == COMPLETION).sum()
    comp_test = ((setting == COMPLETION) & (split == TEST)).sum() / eligible
    comp_val = ((setting == COMPLETION) & (split == VAL)).sum() / eligible
    assert abs(comp_test - 0.10) < 0.03 and abs(comp_val - 0.05) < 0.025
    # unseen models: about model_test of the dated models' records are theirs
    day = a["model_release_day"]
    dated = day[a["rec_model"]] >= 0
    test_models = np.unique(a["rec_model"][(setting == UNSEEN_MODEL) & (split == TEST)])
    share = np.isin(a["rec_model"], test_models)[dated].mean()
    assert 0.08 <= share < 0.16
    # overall: most records train
    assert 0.5 < (split == TRAIN).sum() / n < 0.8


def test_temporal_holdout_counts_float32_weights_in_float64():
    """Kills splits.x_temporal_holdout__mutmut_24 / _26 (weights kept in their own dtype):
    summed in float32, the weight of newer models stops growing next to a 1e8 weight (spacing
    8), so ten 3-record models would all get the same fraction. Counted in float64 they get
    the hand-computed fractions ``(1e8 + 3(i - 1)) / (1e8 + 30)``."""
    days = np.arange(110, -1, -10)[:11]  # newest first: the 1e8-record model, then ten of 3
    weights = np.r_[1e8, np.full(10, 3.0)].astype(np.float32)
    total = 1e8 + 30
    test, val = 1 - 22.5 / total, 6 / total  # B1-B3 test (1 - 30/T .. 1 - 24/T), B4-B5 val
    out = splits.temporal_holdout(days, val, test, np.random.default_rng(0), weights)
    assert out.tolist() == [TEST] * 4 + [VAL] * 2 + [TRAIN] * 5


def test_temporal_holdout_returns_int8_codes():
    """Kills splits.x_temporal_holdout__mutmut_4 / _7 (``np.full`` without ``np.int8``): the
    split codes are int8, as every split array of the corpus, with dates and without."""
    rng = np.random.default_rng(0)
    assert splits.temporal_holdout(np.array([3, 1, -1, 2]), 0.25, 0.25, rng).dtype == np.int8
    assert splits.temporal_holdout(np.full(3, -1), 0.25, 0.25, rng).dtype == np.int8
