"""The cold-start prior (``modellens_jax.cold_start``): its size effects against a slow
per-group least-squares reference, the shrinkage limits, the prior's masks, the validation fit
(it turns the prior on where size ranks new models and off where it only hurts) and the run
directory round trip."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from test_evaluate import tiny_config, write_leaderboard

from modellens_jax import cold_start, evaluate
from modellens_jax.data import corpus as corpus_lib
from modellens_jax.data import pipeline, splits


@pytest.fixture(scope="module")
def tables(tmp_path_factory) -> pipeline.FeatureTables:
    """The synthetic leaderboard of test_evaluate (size helps: value ∝ 0.4·log10 params),
    compiled; no description embeddings."""
    from modellens_jax import prepare

    root = tmp_path_factory.mktemp("cold")
    cfg = tiny_config()
    cfg.data.source = str(write_leaderboard(root / "src"))
    prepare.prepare(cfg.data, root / "corpus", verbose=False)
    c = corpus_lib.load_corpus(root / "corpus")
    return pipeline.FeatureTables(
        c, np.zeros((len(c.model_names), 0), np.float32),
        np.zeros((len(c.vocab["datasets"]), 0), np.float32),
    )  # fmt: skip


def reference_normal_equations(t: pipeline.FeatureTables):
    """Per task, Σ over training groups of the centred [log size, unknown] outer products and
    their products with the centred z, one group at a time (unknown size = the task's mean
    known log size over its training records)."""
    c = t.corpus
    train = np.asarray(c["rec_split"]) == splits.TRAIN
    gt = np.asarray(c["group_task"])
    known_m = np.asarray(t.model_cols["size_bucket"]) > 0
    ls_m = np.asarray(t.model_cols["log_size"], np.float64)
    T = len(c.vocab["tasks"])
    mean = {}
    for task in range(T):
        recs = [r for r in np.flatnonzero(train) if gt[t.rec_group[r]] == task]
        sizes = [ls_m[t.rec_model[r]] for r in recs if known_m[t.rec_model[r]]]
        mean[task] = float(np.mean(sizes)) if sizes else None
    A, b = np.zeros((T, 2, 2)), np.zeros((T, 2))
    for g in np.unique(t.rec_group[train]):
        recs = [r for r in np.flatnonzero(train) if t.rec_group[r] == g]
        task = int(gt[g])
        rows = []
        for r in recs:
            m = t.rec_model[r]
            rows.append([ls_m[m] if known_m[m] else mean[task], 0.0 if known_m[m] else 1.0,
                         float(t.rec_z[r])])  # fmt: skip
        x = np.asarray(rows)
        x = x - x.mean(0)
        f, z = x[:, :2], x[:, 2]
        A[task] += f.T @ f
        b[task] += f.T @ z
    return A, b


def test_moments_match_a_per_group_reference(tables):
    mo = cold_start.moments(tables)
    A, b = reference_normal_equations(tables)
    np.testing.assert_allclose(mo.A_task, A, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(mo.b_task, b, rtol=1e-9, atol=1e-9)
    # each modality's equations are the sum of its tasks'
    for mod in range(len(mo.A_mod)):
        np.testing.assert_allclose(mo.A_mod[mod], A[mo.task_modality == mod].sum(0), atol=1e-9)


def test_family_effects_are_shrunk_means_of_the_training_z(tables):
    c = tables.corpus
    mo = cold_start.moments(tables)
    train = np.asarray(c["rec_split"]) == splits.TRAIN
    fam = np.asarray(c["model_family"])[tables.rec_model]
    task = np.asarray(c["group_task"])[tables.rec_group]
    k = 4.0
    got = cold_start.family_effects(mo, k)
    for f in range(1, got.shape[1]):
        zs = tables.rec_z[train & (fam == f)].astype(np.float64)
        overall = zs.sum() / (len(zs) + k)
        assert got[0, f] == pytest.approx(overall)
        for t in range(1, got.shape[0]):
            zt = tables.rec_z[train & (fam == f) & (task == t)].astype(np.float64)
            assert got[t, f] == pytest.approx((zt.sum() + k * overall) / (len(zt) + k))
    assert np.all(got[:, 0] == 0)


def test_shrinkage_limits_and_the_size_effect_sign(tables):
    mo = cold_start.moments(tables)
    loose = cold_start.size_effects(mo, 1e-9)
    tasks = [i for i in range(1, len(loose)) if np.linalg.det(mo.A_task[i]) > 1e-6]
    assert tasks, "the synthetic corpus has tasks with training groups"
    for i in tasks:  # no shrinkage: each task's own least squares
        np.testing.assert_allclose(loose[i], np.linalg.solve(mo.A_task[i], mo.b_task[i]),
                                   rtol=1e-5)  # fmt: skip
    glob = np.linalg.solve(mo.A_task.sum(0), mo.b_task.sum(0))
    np.testing.assert_allclose(loose[0], glob, rtol=1e-4)  # row 0: the global effect
    tight = cold_start.size_effects(mo, 1e12)  # infinite shrinkage: every task is global
    np.testing.assert_allclose(tight[tasks], np.broadcast_to(glob, (len(tasks), 2)), rtol=1e-4)
    assert glob[0] > 0  # the corpus's value grows with log size


def _cs(scale: float = 2.0, family_scale: float = 0.5) -> cold_start.ColdStart:
    slope = np.array([[1.0, 0.5], [2.0, -1.0], [0.0, 0.0], [-1.0, 3.0]])
    family = np.array([[0.0, 0.2, -0.2], [0.0, 1.0, -1.0], [0.0, 0.0, 0.0], [0.0, 2.0, 0.5]])
    return cold_start.ColdStart(slope, np.array([0.1, 1.5, 0.0, -0.5]), family, scale,
                                family_scale, 10.0)  # fmt: skip


def test_prior_only_for_models_without_an_id_with_imputed_unknown_sizes():
    cs = _cs()
    model_id = np.array([0, 0, 5, 0, 0, 0])
    size_bucket = np.array([3, 0, 3, 2, 0, 1])
    log_size = np.array([1.0, 0.0, 1.0, -1.0, 0.0, 0.5])
    family = np.array([1, 2, 1, 1, 2, 7])  # 7: a family the fit never saw -> 0
    task = np.array([1, 1, 1, 3, 9, 1])  # 9: a task the fit never saw -> row 0
    got = cs.prior(model_id, size_bucket, log_size, family, task)
    want = [2.0 * 2.0 * 1.0 + 0.5 * 1.0, 2.0 * (2.0 * 1.5 - 1.0) + 0.5 * -1.0, 0.0,
            2.0 * (-1.0 * -1.0) + 0.5 * 2.0, 2.0 * (1.0 * 0.1 + 0.5) + 0.5 * -0.2,
            2.0 * 2.0 * 0.5]  # fmt: skip
    np.testing.assert_allclose(got, want)
    args = (model_id, size_bucket, log_size, family, task)
    assert np.all(cs.weighted(0.0, 0.0).prior(*args) == 0)
    np.testing.assert_allclose(cs.weighted(2.0, 0.0).prior(*args) + cs.weighted(0.0, 0.5).prior(
        *args), got)  # fmt: skip
    # broadcasting: models [1, U] against tasks [S, 1]
    grid = cs.prior(*(a[None] for a in args[:4]), np.array([[1], [3]]))
    assert grid.shape == (2, 6)
    np.testing.assert_allclose(grid[0], cs.prior(*args[:4], np.ones(6)))


def test_batch_prior_gathers_slots_and_zeroes_padding():
    cs = _cs()
    batch = {
        "model_slot": np.array([[0, 1, 2], [2, 0, 0]]),
        "group_slot": np.array([[0, 0, 0], [1, 1, 1]]),
        "mask": np.array([[True, True, True], [True, True, False]]),
        "model_id": np.array([0, 7, 0]),
        "size_bucket": np.array([1, 1, 0]),
        "log_size": np.array([2.0, 1.0, 0.0]),
        "family": np.array([2, 1, 1]),
        "task": np.array([1, 3]),
    }
    got = cs.batch_prior(batch)
    p = lambda m, t: cs.prior(*(batch[k][m] for k in cold_start.MODEL_KEYS),  # noqa: E731
                              np.asarray(t))  # fmt: skip
    want = np.array([[p(0, 1), 0.0, p(2, 1)], [p(2, 3), p(0, 3), 0.0]])
    np.testing.assert_allclose(got, want, rtol=1e-6)


class _Oracle:
    """Scores every record by its true value: any prior can only reorder it for the worse."""

    def __call__(self, batch):
        return np.where(batch["mask"], batch["value"], 0.0).astype(np.float32)


class _Blind:
    """A scorer that knows nothing of new models: tiny noise per record."""

    def __call__(self, batch):
        rng = np.random.default_rng(int(np.asarray(batch["value"]).size))
        return (1e-3 * rng.normal(size=batch["mask"].shape)).astype(np.float32)


def test_fit_turns_the_prior_on_where_size_ranks_new_models_and_off_where_it_hurts(tables):
    validate = evaluate.validator("weighted_tau", cold_start.COLD_SETTINGS)
    n = sum(
        evaluate.evaluate(_Oracle(), tables, splits.VAL, s)[0]["num_groups"]
        for k, s in splits.settings_of(tables.corpus).items() if k in cold_start.COLD_SETTINGS
    )  # fmt: skip
    assert n > 0, "the synthetic corpus has validation groups with new models"
    blind = cold_start.fit(_Blind(), tables, validate)
    assert blind.scale > 0 and blind.fit["validation"] > blind.fit["validation_without"] + 0.1
    # the chosen point is the best one tried, and the returned prior reproduces its figure
    assert blind.fit["validation"] == max(g["judge"] for g in blind.fit["grid"])
    with_prior = _WithPrior(_Blind(), blind)
    assert validate(with_prior, tables)[0] == pytest.approx(blind.fit["validation"], abs=1e-6)
    oracle = cold_start.fit(_Oracle(), tables, validate)
    assert oracle.scale == 0.0 and oracle.fit["validation"] == oracle.fit["validation_without"]


class _WithPrior:
    def __init__(self, scorer, cs):
        self.scorer, self.cs = scorer, cs

    def __call__(self, batch):
        return self.scorer(batch) + self.cs.batch_prior(batch)


def test_run_directory_round_trip_and_a_bad_file(tmp_path):
    assert cold_start.load(tmp_path) is None
    cs = dataclasses.replace(_cs(3.5, 0.25), fit={"grid": [{"scale": 1.0}]})
    cold_start.save(tmp_path, cs)
    back = cold_start.load(tmp_path)
    for k in ("slope", "impute", "family"):
        np.testing.assert_array_equal(getattr(back, k), getattr(cs, k))
    assert (back.scale, back.family_scale, back.shrink, back.fit) == (3.5, 0.25, 10.0, cs.fit)
    doc = json.loads((tmp_path / cold_start.FILE).read_text())
    doc["impute"] = doc["impute"][:2]
    (tmp_path / cold_start.FILE).write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"cold_start\.json"):
        cold_start.load(tmp_path)
