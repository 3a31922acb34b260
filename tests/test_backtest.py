"""Arrival backtests: folds that never leak, competence features that never see their own group,
the LambdaRank baseline against a slow reference, the statistics, and the command end to end."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import ml_collections
import numpy as np
import pytest

from modellens_jax import backtest, baselines, evaluate
from modellens_jax.config_check import ConfigError
from modellens_jax.data import competence, corpus, pipeline, splits
from tests.test_baselines import make_corpus

TRAIN, VAL, TEST = splits.TRAIN, splits.VAL, splits.TEST
ROOT = Path(__file__).resolve().parents[1]


def _default():
    spec = importlib.util.spec_from_file_location("default_cfg", ROOT / "configs/default.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config


@pytest.fixture(scope="module")
def fold(tmp_path_factory):
    """The shipped corpus as one backtest fold: cut-off 0.7, horizon 0.85."""
    from modellens_jax import prepare

    cfg = backtest.fold_config(_default()(), cutoff=0.7, horizon=0.85, split_seed=3)
    out = tmp_path_factory.mktemp("fold") / "corpus"
    return prepare.prepare(cfg.data, out, verbose=False)


def _primary_source(c, ent, n):
    counts = np.zeros((n, len(c.vocab["sources"])), np.int64)
    np.add.at(counts, (np.asarray(ent), np.asarray(c["rec_source"], np.int64)), 1)
    return counts.argmax(1)


def test_fold_training_stream_holds_no_new_model_or_dataset(fold):
    c = fold
    split, setting = np.asarray(c["rec_split"]), np.asarray(c["rec_setting"])
    m, d = np.asarray(c["rec_model"]), np.asarray(c["group_dataset"])[np.asarray(c["rec_group"])]
    held = split != TRAIN
    new_model = held & np.isin(setting, [splits.UNSEEN_MODEL, splits.UNSEEN_BOTH])
    new_data = held & np.isin(setting, [splits.UNSEEN_DATASET, splits.UNSEEN_BOTH])
    assert new_model.sum() > 1000 and new_data.sum() > 1000
    assert ((split == TEST) & (setting == splits.UNSEEN_BOTH)).sum() > 100
    # the records the training stream draws from (every list of every epoch)
    lists = pipeline.TrainLists(c, list_size=64, seed=0).lists
    stream = np.concatenate(lists)
    assert np.all(split[stream] == TRAIN)
    assert not np.isin(m[stream], m[new_model]).any(), "a new model's record in training"
    assert not np.isin(d[stream], d[new_data]).any(), "a new dataset's record in training"
    # the settings say what training has not seen
    seen_m, seen_d = np.zeros(len(c.model_names), bool), np.zeros(len(c.vocab["datasets"]), bool)
    seen_m[m[split == TRAIN]] = True
    seen_d[d[split == TRAIN]] = True
    for st, want_m, want_d in ((splits.COMPLETION, True, True), (splits.UNSEEN_DATASET, True, False),
                               (splits.UNSEEN_MODEL, False, True), (splits.UNSEEN_BOTH, False, False)):  # fmt: skip
        sel = held & (setting == st)
        assert sel.any()
        assert np.all(seen_m[m[sel]] == want_m), st
        assert np.all(seen_d[d[sel]] == want_d), st
    # new models of the test split are exactly those released after their source's cut-off
    cut = c.manifest["report"]["backtest"]["cutoff"]
    days = np.asarray(c["model_release_day"], np.int64)
    src = _primary_source(c, m, len(c.model_names))
    names = c.vocab["sources"]
    cut_day = np.array([
        (np.datetime64(cut[names[s]]) - np.datetime64("1970-01-01")).astype(int) if cut.get(names[s])
        else np.iinfo(np.int64).max for s in src
    ])  # fmt: skip
    after = (days >= 0) & (days > cut_day)
    rec_after = after[m]
    assert rec_after.sum() > 1000
    assert np.all(split[rec_after] == TEST)
    assert np.all(np.isin(setting[rec_after], [splits.UNSEEN_MODEL, splits.UNSEEN_BOTH]))
    # the other new models of the test split are known models whose records are all held out
    test_new = np.unique(m[(split == TEST) & new_model])
    assert after[test_new].any() and not seen_m[test_new].any()
    # nothing released after the horizon is in the fold at all
    hor = c.manifest["report"]["backtest"]["horizon"]
    assert c.manifest["report"]["backtest"]["models_after_horizon_dropped"] > 0
    for s_name, day in hor.items():
        if day is None:
            continue
        s = names.index(s_name)
        lim = (np.datetime64(day) - np.datetime64("1970-01-01")).astype(int)
        assert not np.any((src == s) & (days > lim) & np.isin(np.arange(len(src)), m))


def test_backtest_fold_is_seeded_and_the_seed_matters(fold, tmp_path):
    from modellens_jax import prepare

    cfg = backtest.fold_config(_default()(), cutoff=0.7, horizon=0.85, split_seed=3)
    again = prepare.prepare(cfg.data, tmp_path / "a", verbose=False)
    assert again.fingerprint == fold.fingerprint
    cfg.data.split.seed = 4
    other = prepare.prepare(cfg.data, tmp_path / "b", verbose=False)
    assert other.fingerprint != fold.fingerprint


def test_backtest_config_errors():
    cfg = _default()()
    cfg.data.split.protocol = "backtest"
    cfg.data.split.cutoff = 1.5
    with pytest.raises(ValueError, match=r"data\.split\.cutoff=1\.5"):
        corpus.validate_data_config(cfg.data)
    cfg.data.split.cutoff, cfg.data.split.horizon = 0.9, 0.8
    with pytest.raises(ValueError, match=r"must be < data\.split\.horizon"):
        corpus.validate_data_config(cfg.data)
    cfg = _default()()
    cfg.backtest.val_horizon = 0.9  # would see the test folds' arrivals
    with pytest.raises(ConfigError, match="must end by the first test cut-off"):
        backtest.check_config(cfg)
    cfg = _default()()
    cfg.backtest.test_cutoffs = (1.5,)
    with pytest.raises(ConfigError, match=r"backtest\.test_cutoffs=1\.5: must be inside"):
        backtest.check_config(cfg)
    cfg = _default()()
    cfg.train.steps = 0  # the training config is validated too, before anything runs
    with pytest.raises(ConfigError, match=r"train\.steps=0"):
        backtest.check_config(cfg)


# --- competence features ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("bt_tiny") / "corpus", desc_dim=6, seed=1)


def slow_features(t, k=competence.NEIGHBOURS, cold=False):
    """Obviously-correct loops: every statistic of record r over the training records t' of
    other groups."""
    c = t.corpus
    split = np.asarray(c["rec_split"])
    m, g, z = t.rec_model, t.rec_group, t.rec_z.astype(np.float64)
    gd = t.group_dataset
    task = np.asarray(c["group_task"])
    src = competence.group_sources(c)
    mod = np.asarray(c["dataset_modality"])[gd]
    fam = np.asarray(c["model_family"])
    params = np.asarray(c["model_params"], np.float64)
    days = np.asarray(c["model_release_day"], np.float64)
    N = len(m)
    tr = [i for i in range(N) if split[i] == TRAIN]
    desc = np.asarray(t.dataset_desc, np.float64)
    e = desc / np.linalg.norm(desc, axis=1, keepdims=True)
    trained = sorted({int(gd[g[i]]) for i in tr})

    def mean(vals):
        return (float(np.mean(vals)), len(vals)) if vals else (np.nan, 0)

    out = np.zeros((N, len(competence.NAMES)))
    for r in range(N):
        other = [i for i in tr if g[i] != g[r]]
        # a cold record's model has no records at all
        mine = [i for i in other if m[i] == m[r] and not cold]
        f = {}
        f["model_mean_z"], n = mean([z[i] for i in mine])
        f["model_log_records"] = np.log1p(n)
        f["model_task_z"], _ = mean([z[i] for i in mine if task[g[i]] == task[g[r]]])
        f["model_source_z"], _ = mean([z[i] for i in mine if src[g[i]] == src[g[r]]])
        f["model_modality_z"], _ = mean([z[i] for i in mine if mod[g[i]] == mod[g[r]]])
        f["model_dataset_z"], _ = mean([z[i] for i in mine if gd[g[i]] == gd[g[r]]])
        sims = sorted((-float(e[gd[g[r]]] @ e[d]), d) for d in trained if d != gd[g[r]])[:k]
        num = den = tot = 0.0
        for s, d in sims:
            w = max(-s, 0.0)
            tot += w
            vals = [z[i] for i in tr if gd[g[i]] == d and m[i] == m[r] and not cold]
            if vals:
                num += w * np.mean(vals)
                den += w
        f["similar_datasets_z"] = num / den if den > 0 else np.nan
        f["similar_datasets_coverage"] = den / tot if tot > 0 else np.nan
        fam_other = [i for i in other if fam[m[i]] == fam[m[r]] and not (cold and m[i] == m[r])]
        f["family_mean_z"], nf = mean([z[i] for i in fam_other])
        f["family_task_z"], _ = mean([z[i] for i in fam_other if task[g[i]] == task[g[r]]])
        f["family_log_records"] = np.log1p(nf)
        ls = [
            np.log10(params[m[i]]) if params[m[i]] > 0 else np.nan for i in range(N) if g[i] == g[r]
        ]
        yr = [days[m[i]] / 365.25 if days[m[i]] >= 0 else np.nan for i in range(N) if g[i] == g[r]]
        x_s = np.log10(params[m[r]]) if params[m[r]] > 0 else np.nan
        x_r = days[m[r]] / 365.25 if days[m[r]] >= 0 else np.nan
        f["log_size"], f["release_years"] = x_s, x_r
        known_s = [v for v in ls if np.isfinite(v)]
        known_r = [v for v in yr if np.isfinite(v)]
        f["log_size_vs_group"] = x_s - np.mean(known_s) if np.isfinite(x_s) else np.nan
        f["release_vs_group"] = x_r - np.mean(known_r) if np.isfinite(x_r) else np.nan
        if np.isfinite(x_s):
            below = sum(v < x_s for v in known_s)
            ties = sum(v == x_s for v in known_s)
            f["size_percentile_in_group"] = (
                (below + (ties - 1) / 2) / (len(known_s) - 1) if len(known_s) > 1 else 0.5
            )
        else:
            f["size_percentile_in_group"] = np.nan
        out[r] = [f[n] for n in competence.NAMES]
    return out


@pytest.mark.parametrize("cold", [False, True])
def test_competence_features_equal_slow_loops(tiny, cold):
    fast = competence.features(tiny, cold=cold)
    slow = slow_features(tiny, cold=cold)
    np.testing.assert_allclose(fast, slow, rtol=1e-6, atol=1e-7, equal_nan=True)  # float32
    assert np.isfinite(fast).mean() > (0.3 if cold else 0.5)


def test_competence_features_of_a_group_exclude_that_group(tiny):
    """Changing every training value of group 1 changes no feature of group 1's records, and
    changes some feature of another group's records (so the check can fail)."""
    base = competence.features(tiny)
    t = pipeline.FeatureTables(tiny.corpus, tiny.model_desc, tiny.dataset_desc)
    in_g = t.rec_group == 1
    t.rec_z = np.where(in_g, t.rec_z * -3.0 + 1.0, t.rec_z).astype(np.float32)
    moved = competence.features(t)
    np.testing.assert_array_equal(base[in_g], moved[in_g])
    assert not np.allclose(np.nan_to_num(base[~in_g]), np.nan_to_num(moved[~in_g]))


def test_lambdarank_equals_a_ranker_on_the_slow_features(tiny):
    pytest.importorskip("lightgbm")
    got = baselines.fit("lambdarank", tiny, seed=0).record_scores
    stats = baselines.TrainStats(tiny)
    x, x_cold = (slow_features(tiny, cold=c).astype(np.float32) for c in (False, True))
    rows, labels, group = baselines.lambdarank_training_rows(stats, x, x_cold, seed=0)
    ranker = baselines.fit_ranker(rows, labels, group, seed=0)
    want = ranker.predict(x).astype(np.float32)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    assert np.std(got) > 0  # it learned something, not a constant


def test_relevance_grades_follow_the_within_group_order():
    z = np.array([0.1, 0.5, 0.5, -1.0, 3.0, 2.0])
    g = np.array([0, 0, 0, 0, 1, 1])
    y = baselines.relevance_grades(z, g, grades=31)
    assert y.tolist() == [10, 25, 25, 0, 30, 0]


# --- evaluation and statistics ------------------------------------------------------------------
def test_constant_and_nan_rankers_score_exactly_zero(tiny):
    for value in (1.0, np.nan):
        const = baselines.Baseline("c", np.full(len(tiny.rec_model), value, np.float32))
        agg, groups = evaluate.evaluate(const, tiny, TEST, splits.UNSEEN_DATASET)
        assert agg["num_groups"] == 2
        assert np.all(groups["weighted_tau"] == 0.0)
        assert agg["weighted_tau"] == 0.0


def test_bootstrap_against_a_slow_loop():
    rng = np.random.default_rng(0)
    units = [rng.normal(size=7), rng.normal(size=3) + 1]
    mean, lo, hi = backtest.bootstrap(units, resamples=200, seed=5)
    assert mean == pytest.approx((units[0].mean() + units[1].mean()) / 2)
    r = np.random.default_rng(5)
    idx = [r.integers(0, len(u), (200, len(u))) for u in units]
    stats = [np.mean([u[i[b]].mean() for u, i in zip(units, idx)]) for b in range(200)]
    assert (lo, hi) == pytest.approx(tuple(np.percentile(stats, [2.5, 97.5])))
    assert lo < mean < hi
    # a scorer compared with itself: the paired difference is exactly 0
    assert backtest.bootstrap([u - u for u in units], resamples=100) == (0.0, 0.0, 0.0)
    assert backtest.verdict(0.01, 0.2, "a", "b") == "a beats b"
    assert backtest.verdict(-0.2, -0.01, "a", "b") == "b beats a"
    assert backtest.verdict(-0.1, 0.1, "a", "b") == "no significant difference"


def test_summary_names_the_best_baseline_and_pairs_groups():
    def unit(vals):
        return {"scorers": {n: [{s: {"group": list(range(len(v))), "tau": list(v),
                                     "source": ["x"] * len(v)} for s in splits.ALL_SETTINGS}]
                            for n, v in vals.items()}}  # fmt: skip

    units = [unit({"modellens": [0.5, 0.6, 0.7], "a": [0.1, 0.2, 0.3], "b": [0.4, 0.5, 0.6]})]
    s = backtest.summarise(units, resamples=200)["completion"]
    assert s["best_baseline"] == "b"
    assert s["paired"]["b"]["mean"] == pytest.approx(0.1)
    assert s["paired"]["b"]["lo"] == pytest.approx(0.1)  # the same gain on every group
    assert s["paired"]["b"]["verdict"] == "modellens beats b"
    assert s["by_source"]["x"]["groups"] == 3


@pytest.mark.slow
def test_backtest_command_end_to_end(tmp_path):
    """The quick variant (tiny model, two cheap baselines) on the test folds: every setting has
    groups, the summary pairs the model with each baseline, and each read is recorded."""
    cmd = [
        sys.executable, "-m", "modellens_jax.backtest", "--config=configs/default.py:tiny,quick",
        f"--workdir={tmp_path}", "--folds=test", "--config.train.steps=6",
        "--config.train.eval_every=3", "--config.train.checkpoint_every=3",
        "--config.optim.warmup_steps=2", "--config.backtest.baselines=size,competence",
        "--config.backtest.bootstrap=100",
    ]  # fmt: skip
    # As from a shell: one CPU device (not the suite's 8 fake ones, which triple every compile);
    # the session's compilation cache (conftest.py) stays in the environment.
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    for i in (1, 2):
        p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=900)
        assert p.returncode == 0, p.stderr[-3000:]
        reads = (tmp_path / "test_reads.jsonl").read_text().splitlines()
        assert len(reads) == i
        assert f"read number {i} recorded" in p.stdout
    assert "done earlier, reused" in p.stdout
    doc = json.loads((tmp_path / "test" / "backtest.json").read_text())
    assert len(doc["units"]) == 2  # one cut-off × split seeds (0, 1)
    for setting in splits.ALL_SETTINGS:
        s = doc["summary"][setting]
        assert sum(s["groups_per_unit"]) > 0, setting
        assert set(s["paired"]) == {"size", "competence"}
    md = (tmp_path / "test" / "backtest.md").read_text()
    assert "Δ modellens − best baseline (paired)" in md and "unseen_both" in md
    unit = json.loads((tmp_path / "test" / doc["units"][0] / "result.json").read_text())
    assert len(unit["scorers"]["modellens"]) == 2  # training seeds (0, 1)


def test_fold_config_leaves_the_rest_alone():
    c = _default()()
    f = backtest.fold_config(c, 0.8, 1.0, 7)
    assert (f.data.split.protocol, f.data.split.cutoff, f.data.split.seed) == ("backtest", 0.8, 7)
    assert c.data.split.protocol == "random"
    assert isinstance(f, ml_collections.ConfigDict)
    assert [u[0] for u in backtest.folds(c, "test")] == [0.8, 0.8, 0.87, 0.87, 0.94, 0.94]
