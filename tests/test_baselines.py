"""Baselines on a small hand-built corpus: each behaves as defined, uses training records only,
and runs through the evaluation harness like any scorer."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.stats

from modellens_jax import baselines as B
from modellens_jax import evaluate
from modellens_jax.data import corpus as corpus_lib
from modellens_jax.data import pipeline, schema, splits

TRAIN, VAL, TEST = splits.TRAIN, splits.VAL, splits.TEST
COMP, UDS, UMOD = splits.COMPLETION, splits.UNSEEN_DATASET, splits.UNSEEN_MODEL

# 8 models: 0-5 seen in training, 6-7 held out (unseen_model). Families: 1 = {0, 1, 2, 6},
# 2 = {3, 4, 5}, 3 = {7} (no training record). Params (billions); NaN = unknown.
PARAMS = np.array([0.1, 1.0, 7.0, np.nan, 3.0, 0.5, 70.0, np.nan], np.float32)
FAMILY = np.array([1, 1, 1, 2, 2, 2, 1, 3], np.int32)
MODEL_SEEN = np.array([1, 1, 1, 1, 1, 1, 0, 0], bool)


def _records(rng):
    """6 groups over 5 datasets: groups 0-3 (datasets 0-2) are trained on, with a few
    completion records held out; groups 4 and 5 (datasets 3, 4) are unseen datasets; models 6-7
    are unseen models in groups 0-2."""
    rows = []  # (group, model, value, split, setting)
    for g in range(4):
        for m in range(6):
            held = (g + m) % 4 == 0  # a few completion records held out
            rows.append((g, m, rng.normal() + 0.3 * m, TEST if held else TRAIN, COMP))
        if g < 3:
            rows += [(g, 6, rng.normal() + 2, TEST, UMOD), (g, 7, rng.normal(), TEST, UMOD)]
    for g in (4, 5):
        for m in range(8):
            rows.append((g, m, rng.normal() + 0.3 * m, TEST, UDS))
    return rows


def make_corpus(path, *, desc_dim: int = 0, seed: int = 0) -> pipeline.FeatureTables:
    rng = np.random.default_rng(seed)
    rows = sorted(_records(rng), key=lambda r: (r[0], -r[2], r[1]))
    g, m, v, sp, st = (np.array(x) for x in zip(*rows))
    value = v.astype(np.float64)
    # z within (group, partition), as the corpus does
    part = np.where(sp == TRAIN, 0, 1 + sp * 3 + st)
    key = g * 16 + part
    z = np.zeros_like(value)
    for k in np.unique(key):
        s = key == k
        z[s] = (value[s] - value[s].mean()) / (value[s].std() or 1.0)
    n_models, n_groups = 8, 6
    group_dataset = np.array([0, 1, 2, 2, 3, 4], np.int32)  # groups 2 and 3 share dataset 2
    names = [f"org/model-{i}" for i in range(n_models)]
    tok, tmask = schema.name_token_array(names, 100, 4)
    arrays = {
        "rec_group": g.astype(np.int32),
        "rec_model": m.astype(np.int32),
        "rec_value": value.astype(np.float32),
        "rec_raw_value": value.astype(np.float32),
        "rec_z": z.astype(np.float32),
        "rec_split": sp.astype(np.int8),
        "rec_setting": st.astype(np.int8),
        "rec_source": np.where(g < 2, 1, 2).astype(np.int16),
        "group_offsets": np.r_[0, np.cumsum(np.bincount(g, minlength=n_groups))].astype(np.int64),
        "group_dataset": group_dataset,
        "group_task": np.array([1, 1, 2, 2, 1, 2], np.int32),
        "group_metric": np.array([1, 2, 1, 1, 2, 1], np.int32),
        "model_id": np.where(MODEL_SEEN, np.cumsum(MODEL_SEEN), 0).astype(np.int32),
        "model_family": FAMILY,
        "model_params": PARAMS,
        "model_size_bucket": schema.size_bucket(PARAMS.astype(np.float64), (0.1, 1, 10, 100)),
        "model_release_day": np.arange(n_models, dtype=np.int32),
        "model_name_tokens": tok,
        "model_name_mask": tmask,
        "dataset_id": np.array([1, 2, 3, 0, 0], np.int32),
        "dataset_modality": np.array([1, 1, 2, 2, 1], np.int32),
    }
    vocab = {
        "models": names,
        "datasets": [f"ds{i}" for i in range(5)],
        "tasks": [schema.UNK, "t1", "t2"],
        "metrics": [schema.UNK, "m1", "m2"],
        "families": [schema.UNK, "fa", "fb", "fc"],
        "modalities": [schema.UNK, "text", "vision"],
        "sources": [schema.UNK, "s1", "s2"],
    }
    texts = {"models": names, "datasets": vocab["datasets"]}
    corpus_lib.write_corpus(corpus_lib.Compiled(arrays, vocab, texts, {}), path, config={})
    c = corpus_lib.load_corpus(path)
    md = rng.normal(size=(n_models, desc_dim)).astype(np.float32)
    dd = rng.normal(size=(5, desc_dim)).astype(np.float32)
    return pipeline.FeatureTables(c, md, dd)


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("bl") / "corpus")


@pytest.fixture(scope="module")
def tables_desc(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("bl_desc") / "corpus", desc_dim=6)


def per_model(tables, scores):
    """{model: score} from per-record scores (a model-only baseline scores a model the same
    on every record)."""
    out = {}
    for r, m in enumerate(tables.rec_model):
        out.setdefault(int(m), set()).add(float(scores[r]))
    assert all(len(v) == 1 for v in out.values()), "not a per-model score"
    return {m: v.pop() for m, v in out.items()}


def train_z_by_model(tables):
    train = np.asarray(tables.corpus["rec_split"]) == TRAIN
    out = {}
    for m, z in zip(tables.rec_model[train], tables.rec_z[train]):
        out.setdefault(int(m), []).append(float(z))
    return out


def test_size_ranks_by_params_unknown_is_median(tables):
    s = per_model(tables, B.fit("size", tables).record_scores)
    known = np.isfinite(PARAMS)
    median = np.median(np.log10(PARAMS[known]))
    for m in range(8):
        want = np.log10(PARAMS[m]) if known[m] else median
        assert s[m] == pytest.approx(want, abs=1e-6)
    order = sorted((m for m in range(8) if known[m]), key=lambda m: s[m])
    assert order == sorted((m for m in range(8) if known[m]), key=lambda m: PARAMS[m])


def test_competence_is_mean_train_z_then_family_then_zero(tables):
    s = per_model(tables, B.fit("competence", tables).record_scores)
    zs = train_z_by_model(tables)
    fam_mean = {
        f: np.mean([z for m in range(8) if FAMILY[m] == f for z in zs.get(m, [])]) for f in (1, 2)
    }
    for m in range(6):
        assert s[m] == pytest.approx(np.mean(zs[m]), abs=1e-6)
    assert s[6] == pytest.approx(fam_mean[1], abs=1e-6)  # unseen model, family with records
    assert s[7] == 0.0  # unseen model, family without training records
    f = per_model(tables, B.fit("family_mean", tables).record_scores)
    assert [f[m] for m in range(8)] == pytest.approx(
        [fam_mean.get(int(FAMILY[m]), 0.0) for m in range(8)], abs=1e-6
    )


def test_popularity_counts_training_records(tables):
    s = per_model(tables, B.fit("popularity", tables).record_scores)
    zs = train_z_by_model(tables)
    assert [s[m] for m in range(8)] == [len(zs.get(m, [])) for m in range(8)]


def test_random_is_seeded(tables):
    a = B.fit("random", tables, seed=1).record_scores
    assert np.array_equal(a, B.fit("random", tables, seed=1).record_scores)
    assert not np.array_equal(a, B.fit("random", tables, seed=2).record_scores)


def test_text_similarity_is_cosine_and_skipped_without_embeddings(tables, tables_desc):
    s = B.fit("text_similarity", tables_desc).record_scores
    t = tables_desc
    for r in range(0, len(s), 7):
        a = t.model_desc[t.rec_model[r]]
        b = t.dataset_desc[t.group_dataset[t.rec_group[r]]]
        assert s[r] == pytest.approx(a @ b / np.linalg.norm(a) / np.linalg.norm(b), abs=1e-5)
    with pytest.raises(B.BaselineUnavailable, match="no description embeddings"):
        B.fit("text_similarity", tables)
    fitted, skipped = B.fit_all(tables, "size,text_similarity")
    assert list(fitted) == ["size"] and "text_similarity" in skipped


def test_matrix_factorisation_falls_back_to_competence(tables):
    stats = B.TrainStats(tables)
    mf = B.fit("matrix_factorisation", tables).record_scores
    comp = B.fit("competence", tables).record_scores
    unseen = (stats.model_count[tables.rec_model] == 0) | (stats.group_count[tables.rec_group] == 0)
    assert unseen.any() and (~unseen).any()
    np.testing.assert_array_equal(mf[unseen], comp[unseen])
    assert not np.allclose(mf[~unseen], comp[~unseen])


def test_als_recovers_a_low_rank_matrix():
    """ALS on a fully observed rank-2 matrix plus model bias reproduces it closely."""
    rng = np.random.default_rng(0)
    M, G = 30, 20
    u, v, b = rng.normal(size=(M, 2)), rng.normal(size=(G, 2)), rng.normal(size=M)
    m, g = np.meshgrid(np.arange(M), np.arange(G), indexing="ij")
    m, g = m.ravel(), g.ravel()
    z = b[m] + (u[m] * v[g]).sum(1)
    stats = type("S", (), {"num_models": M, "num_groups": G, "t_model": m, "t_group": g,
                           "t_z": z})()  # fmt: skip
    U, bb, V = B.als(stats, rank=4, reg=0.01, iters=50)
    pred = bb[m] + (U[m] * V[g]).sum(1)
    assert np.corrcoef(pred, z)[0, 1] > 0.99


def make_signal_corpus(path, *, seed: int = 0, noise: float = 0.3) -> pipeline.FeatureTables:
    """48 models x 8 groups whose values follow their metadata only: ``+log10(params)`` in
    family 1, ``-log10(params)`` in family 2 (so size alone cannot rank them). Models 40-47
    (sizes and families drawn like the rest) are held out as unseen models."""
    rng = np.random.default_rng(seed)
    n_models, n_groups, n_seen = 48, 8, 40
    params = np.exp(rng.uniform(np.log(0.05), np.log(100.0), n_models)).astype(np.float32)
    family = np.tile(np.array([1, 2], np.int32), n_models // 2)
    signal = np.where(family == 1, 1.0, -1.0) * np.log10(params)
    rows = []
    for g in range(n_groups):
        for m in range(n_models):
            sp, st = (TRAIN, COMP) if m < n_seen else (TEST, UMOD)
            rows.append((g, m, signal[m] + noise * rng.normal(), sp, st))
    rows.sort(key=lambda r: (r[0], -r[2], r[1]))
    g, m, v, sp, st = (np.array(x) for x in zip(*rows))
    z = np.zeros_like(v)
    key = g * 2 + (sp != TRAIN)
    for k in np.unique(key):
        sel = key == k
        z[sel] = (v[sel] - v[sel].mean()) / v[sel].std()
    names = [f"org/sig-{i}" for i in range(n_models)]
    tok, tmask = schema.name_token_array(names, 100, 4)
    seen = np.arange(n_models) < n_seen
    arrays = {
        "rec_group": g.astype(np.int32),
        "rec_model": m.astype(np.int32),
        "rec_value": v.astype(np.float32),
        "rec_raw_value": v.astype(np.float32),
        "rec_z": z.astype(np.float32),
        "rec_split": sp.astype(np.int8),
        "rec_setting": st.astype(np.int8),
        "rec_source": np.ones(len(g), np.int16),
        "group_offsets": np.r_[0, np.cumsum(np.bincount(g, minlength=n_groups))].astype(np.int64),
        "group_dataset": np.arange(n_groups, dtype=np.int32) % 4,
        "group_task": np.ones(n_groups, np.int32),
        "group_metric": np.ones(n_groups, np.int32),
        "model_id": np.where(seen, np.cumsum(seen), 0).astype(np.int32),
        "model_family": family,
        "model_params": params,
        "model_size_bucket": schema.size_bucket(params.astype(np.float64), (0.1, 1, 10, 100)),
        "model_release_day": np.arange(n_models, dtype=np.int32),
        "model_name_tokens": tok,
        "model_name_mask": tmask,
        "dataset_id": np.arange(1, 5, dtype=np.int32),
        "dataset_modality": np.ones(4, np.int32),
    }
    vocab = {
        "models": names,
        "datasets": [f"ds{i}" for i in range(4)],
        "tasks": [schema.UNK, "t1"],
        "metrics": [schema.UNK, "m1"],
        "families": [schema.UNK, "fa", "fb"],
        "modalities": [schema.UNK, "text"],
        "sources": [schema.UNK, "s1"],
    }
    texts = {"models": names, "datasets": vocab["datasets"]}
    corpus_lib.write_corpus(corpus_lib.Compiled(arrays, vocab, texts, {}), path, config={})
    c = corpus_lib.load_corpus(path)
    return pipeline.FeatureTables(c, np.zeros((n_models, 0), np.float32),
                                  np.zeros((4, 0), np.float32))  # fmt: skip


def _held_out_spearman(tables, scores) -> float:
    """Mean over groups of Spearman(score, value) on the unseen-model test records."""
    c = tables.corpus
    held = np.asarray(c["rec_setting"]) == UMOD
    rhos = []
    for g in np.unique(tables.rec_group[held]):
        sel = held & (tables.rec_group == g)
        rhos.append(scipy.stats.spearmanr(scores[sel], tables.rec_value[sel]).statistic)
    return float(np.mean(rhos))


def test_gbr_learns_from_metadata(tables, tmp_path):
    """On a corpus whose values are a size x family interaction, gbr ranks never-seen models
    far better than chance (Spearman ~0 for an uninformed scorer), and better than the size
    baseline, which cannot see the family."""
    pytest.importorskip("sklearn")
    s = B.fit("gbr", tables).record_scores
    assert s.shape == tables.rec_z.shape and np.all(np.isfinite(s))
    sig = make_signal_corpus(tmp_path / "signal")
    gbr = _held_out_spearman(sig, B.fit("gbr", sig).record_scores)
    size = _held_out_spearman(sig, B.fit("size", sig).record_scores)
    assert gbr > 0.7, gbr
    assert gbr > abs(size) + 0.3, (gbr, size)
    x, cat, names = B.metadata_features(B.TrainStats(tables))
    assert names[:5] == ["log_params", "family", "task", "metric", "modality"]
    assert cat.tolist()[:5] == [False, True, True, True, True]
    assert np.isnan(x[tables.rec_model == 3, 0]).all()  # unknown size stays missing


def test_baselines_never_read_held_out_values(tables, tmp_path):
    """Replacing every held-out value and z-score by noise changes no baseline's scores."""
    c = tables.corpus
    held = np.asarray(c["rec_split"]) != TRAIN
    noisy = dict(c.arrays)
    rng = np.random.default_rng(5)
    for k in ("rec_value", "rec_z", "rec_raw_value"):
        a = np.array(c[k])
        a[held] = rng.normal(size=held.sum()) * 100
        noisy[k] = a.astype(np.float32)
    out = tmp_path / "noisy"
    corpus_lib.write_corpus(corpus_lib.Compiled(noisy, c.vocab, c.texts, {}), out, config={})
    t2 = pipeline.FeatureTables(corpus_lib.load_corpus(out), tables.model_desc, tables.dataset_desc)
    names = [n for n in B.NAMES if n != "text_similarity"]
    if not _has_sklearn():
        names.remove("gbr")
    a, _ = B.fit_all(tables, names)
    b, _ = B.fit_all(t2, names)
    for n in names:
        np.testing.assert_array_equal(a[n].record_scores, b[n].record_scores, err_msg=n)


def _has_sklearn() -> bool:
    try:
        import sklearn  # noqa: F401
    except ImportError:
        return False
    return True


def test_baseline_scorer_through_the_harness(tables):
    """A baseline is an ordinary scorer: per-group τ_w equals scipy's on its record scores,
    padding slots score 0, and ``parse_names`` validates names."""
    size = B.fit("size", tables)
    for setting in (COMP, UDS, UMOD):
        agg, per = evaluate.evaluate(size, tables, TEST, setting)
        groups, lists = pipeline.lists_by_group(tables.corpus, TEST, setting)
        assert agg["num_groups"] == len(groups) > 0
        for gid, recs in zip(groups, lists):
            want = scipy.stats.weightedtau(
                tables.rec_value[recs], size.record_scores[recs], rank=None
            ).statistic
            got = per["weighted_tau"][per["group"] == gid][0]
            assert got == pytest.approx(0.0 if np.isnan(want) else want, abs=1e-5)
    batch = {"record": np.array([[0, 3, -1]], np.int32)}
    s = size(batch)
    assert s[0, 2] == 0 and s[0, 1] == size.record_scores[3]
    assert B.parse_names("all") == list(B.NAMES) and B.parse_names("none") == []
    with pytest.raises(ValueError, match="unknown baseline"):
        B.parse_names("size,oracle")


def test_baseline_is_a_dataclass_scorer(tables):
    b = B.fit("competence", tables)
    assert dataclasses.is_dataclass(b) and b.needs_records and b.name == "competence"
