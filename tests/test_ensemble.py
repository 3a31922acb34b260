"""Seed ensembles: members that differ only in seed trained in one program (member 0 is the
ordinary run), checkpoints selected per member on validation, one bundle serving the members'
mean and spread (equal to the training-side scorers'), the confidence and its calibration
analysis, and format-4 bundles still served."""

from __future__ import annotations

import json
import math
import shutil

import jax
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file, save_file
from test_members import SHIFT_INVARIANT, _params
from test_train import corpus_dir, make_workdir, tiny_config  # noqa: F401

from modellens_jax import (
    cold_start,
    config_check,
    ensemble,
    evaluate,
    fsutil,
    rundir,
    train,
    uncertainty,
)
from modellens_jax.experiments import members
from modellens_jax.serving import bundle as bundle_format
from modellens_jax.serving import confidence, recommend, recommender

TOL = dict(rtol=1e-5, atol=1e-5)


# --- training: one program, per-member selection ---------------------------------------------
def test_seed_members_select_their_own_best_checkpoint(corpus_dir, tmp_path, monkeypatch):  # noqa: F811
    """Two seed members validated every 2 of 6 steps with a scripted judge: each keeps its own
    best step (member 0 step 4, member 1 step 2, neither the last), restore picks it, and member
    0 (the config's seed) is the ordinary run with that seed at that step; member 1 differs."""
    cfg = tiny_config(mesh__data=1, train__steps=6, train__eval_every=2)
    script = iter([0.5, 0.7, 0.9, 0.2, 0.1, 0.3])  # (step 2: m0, m1), (4: m0, m1), (6: ...)
    monkeypatch.setattr(evaluate, "judge_value", lambda res, judge: next(script))
    root = make_workdir(corpus_dir, tmp_path / "ens")
    members.train_members(cfg, root, [{}, {}], names=["a", "b"], seeds=[0, 1000], verbose=False)
    monkeypatch.undo()
    got = {n: rundir.restore(root / n) for n in ("a", "b")}
    assert (got["a"].step, got["b"].step) == (4, 2)
    assert rundir.read_summary(root / "a")["best"]["judge"] == 0.9
    assert [rundir.read_summary(root / n)["step"] for n in "ab"] == [6, 6]
    assert (got["a"].config.seed, got["b"].config.seed) == (0, 1000)
    single = train.train_and_evaluate(
        tiny_config(mesh__data=1, train__steps=6, train__checkpoint_every=2),
        make_workdir(corpus_dir, tmp_path / "single"),
        verbose=False,
    )
    ref = rundir.restore(tmp_path / "single", step=4)
    a, b = _params(ref.graphdef, ref.state), _params(got["a"].graphdef, got["a"].state)
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
        if not jax.tree_util.keystr(path).startswith(SHIFT_INVARIANT):
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-5, err_msg=str(path))
    assert single.step == 6
    k0 = np.asarray(_params(got["a"].graphdef, got["a"].state)["second"]["kernel"])
    k1 = np.asarray(_params(got["b"].graphdef, got["b"].state)["second"]["kernel"])
    assert not np.allclose(k0, k1)  # another seed: another initialisation


def test_config_check_ensemble_members():
    cfg = tiny_config()
    assert cfg.ensemble.members == 1
    for bad, match in ((0, "must be > 0"), (-2, "must be > 0"), (17, "at most 16")):
        cfg.ensemble.members = bad
        with pytest.raises(config_check.ConfigError, match=f"ensemble.members.*{match}"):
            config_check.validate(cfg, check_mesh=False)
    cfg.ensemble.members = 3
    config_check.validate(cfg, check_mesh=False)
    assert ensemble.member_seeds(cfg) == [0, 1000, 2000]
    with pytest.raises(ValueError, match="at least 2 members"):
        members.train_ensemble(tiny_config(), "/nonexistent", verbose=False)


# --- the ensemble bundle ------------------------------------------------------------------------
def _training_side(trained_ensemble, rec, queries):
    """Each member's scores [N, S, U] by its training-code Scorer on the corpus's own feature
    rows (known models, known datasets), and the serving contexts of the same queries."""
    t, c = trained_ensemble["tables"], trained_ensemble["corpus"]
    models = {**t.model_cols, "model_desc": np.asarray(t.model_desc, np.float32)}
    ctx = rec.contexts(queries)
    ds = np.asarray(ctx.dataset_rows)
    assert (ds >= 0).all()
    groups = {
        "dataset_id": np.asarray(c["dataset_id"])[ds],
        "dataset_desc": np.asarray(t.dataset_desc, np.float32)[ds],
        "task": np.asarray(ctx.arrays["task"]),
        "metric": np.asarray(ctx.arrays["metric"]),
    }
    pool = rec.known_models()
    comp = rec.competence(pool, ctx)
    fn = nnx.jit(lambda m, a, b, x: m.score_all(a, b, x)["score"])
    scores = np.stack([np.asarray(fn(m, models, groups, comp)) for m in trained_ensemble["models"]])
    # plus the ensemble's cold-start prior (fitted to the members' mean; the same for each)
    cold = trained_ensemble["cold"]
    if cold is not None:
        mk = {k: models[k][None] for k in cold_start.MODEL_KEYS}
        scores = scores + cold.prior(*mk.values(), groups["task"][:, None])[None]
    return scores, pool, ctx


def _queries(rec, n=4):
    v, t = rec.bundle.vocab, rec.bundle.tables
    known = np.flatnonzero(np.asarray(t["datasets/dataset_id"]) > 0)[:n]
    return [{"dataset": v["datasets"][d], "task": v["tasks"][int(rec.dataset_task[d])],
             "metric": v["metrics"][1]} for d in known]  # fmt: skip


def test_ensemble_bundle_serves_the_members_mean_and_spread(trained_ensemble):
    """The bundle's mean score and spread (matrix, cached and uncached, and pairs) equal the mean
    and standard deviation of the members' own training-side scores; each member is there."""
    rec = recommender.Recommender.load(trained_ensemble["bundle"])
    manifest = rec.bundle.manifest
    assert manifest["format_version"] == bundle_format.FORMAT_VERSION == 6
    assert manifest["ensemble"] == {"members": 3, "seeds": [0, 1000, 2000]}
    assert [m["workdir"].rsplit("/", 1)[-1] for m in manifest["source"]["members"]] == [
        "seed0", "seed1000", "seed2000"]  # fmt: skip
    assert rec.members == 3 and rec.temperature.shape == (3,)
    queries = _queries(rec)
    want, pool, ctx = _training_side(trained_ensemble, rec, queries)
    assert float(want.std(0).max()) > 1e-3  # the members differ
    for cached in (True, False):
        out = rec.score_matrix(pool, ctx, cached=cached)
        np.testing.assert_allclose(out["score"], want.mean(0), **TOL)
        np.testing.assert_allclose(out["score_std"], want.std(0), **TOL)
        np.testing.assert_allclose(out["members"]["score"], want, **TOL)
    # pairs: every model for each query (the features relative to the group are over the
    # candidates scored together), in a shuffled order
    order = np.random.default_rng(0).permutation(len(pool))
    rows = [{**q, "model": pool.names[m]} for q in queries[:2] for m in order]
    got = rec.score_pairs(rows)
    np.testing.assert_allclose([r["score"] for r in got], want.mean(0)[:2, order].ravel(), **TOL)
    np.testing.assert_allclose([r["score_std"] for r in got], want.std(0)[:2, order].ravel(),
                               **TOL)  # fmt: skip


def test_ensemble_rank_carries_confidence_and_parts_that_add_up(trained_ensemble, capsys):
    """``rank``: the shown score is the members' mean, prior + cold + residual add up to it,
    ``score_std`` and ``confidence`` are the spread and ``serving.confidence`` of the ranked
    list; the JSON results carry both and the table has the columns."""
    rec = recommender.Recommender.load(trained_ensemble["bundle"])
    q = _queries(rec, 1)[0]
    want, pool, _ = _training_side(trained_ensemble, rec, [q])
    res = rec.rank(dataset=q["dataset"], task=q["task"], metric=q["metric"], top_k=0, pool="all")
    assert len(res) == len(pool)
    idx = [pool.names.index(r.model) for r in res]
    mean, std = want.mean(0)[0, idx], want.std(0)[0, idx]
    np.testing.assert_allclose([r.score for r in res], mean, **TOL)
    np.testing.assert_allclose([r.score_std for r in res], std, **TOL)
    conf = confidence.confidence([r.score for r in res], [r.score_std for r in res])
    np.testing.assert_allclose([r.confidence for r in res], conf, rtol=1e-6)
    assert all(r.prior + r.cold + r.residual == r.score for r in res)
    assert 0 < min(conf) < max(conf) <= 1
    top = rec.rank(dataset=q["dataset"], task=q["task"], metric=q["metric"], top_k=3, pool="all")
    assert [r.confidence for r in top] == [r.confidence for r in res[:3]]  # over the whole list
    argv = [f"--bundle={trained_ensemble['bundle']}", f"--dataset={q['dataset']}",
            f"--task={q['task']}", f"--metric={q['metric']}", "--top_k=5"]  # fmt: skip
    assert recommend.main([*argv, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert all(0 < r["confidence"] <= 1 and r["score_std"] >= 0 for r in doc["results"])
    assert recommend.main(argv) == 0
    table = capsys.readouterr().out
    assert "± std" in table.splitlines()[1] and "confidence" in table.splitlines()[1]


def test_single_model_results_carry_no_confidence(bundle, capsys):
    rec = recommender.Recommender.load(bundle)
    assert rec.members == 1
    r = rec.rank(task=rec.bundle.vocab["tasks"][1], metric=rec.bundle.vocab["metrics"][1])[0]
    assert r.score_std is None and r.confidence is None
    assert "confidence" not in r.as_dict() and "score_std" not in r.as_dict()


def _as_format4(src, dst):
    """``src`` (a one-member format-5 bundle) rewritten as format 4 wrote it: parameters and
    function outputs without the member axis, manifest version 4 without ``ensemble``."""
    shutil.copytree(src, dst)
    params = load_file(dst / "params.safetensors")
    assert all(v.shape[0] == 1 for v in params.values())
    save_file({k: np.array(v[0]) for k, v in params.items()}, dst / "params.safetensors")
    for name, file in bundle_format.FUNCTIONS.items():
        exp = jax.export.deserialize(bytearray((src / file).read_bytes()))
        n_par = len(params)
        avals = list(exp.in_avals)
        stacked = set(range(n_par)) | ({n_par, n_par + 1} if name == "score_sides" else set())
        args = [jax.ShapeDtypeStruct(a.shape[1:] if i in stacked else a.shape, a.dtype)
                for i, a in enumerate(avals)]  # fmt: skip
        (structured, _) = jax.tree.unflatten(exp.in_tree, args)

        def single(*a, exp=exp, stacked=stacked):
            flat, tree = jax.tree.flatten((a, {}))
            flat = [x[None] if i in stacked else x for i, x in enumerate(flat)]
            a, _ = jax.tree.unflatten(tree, flat)
            return jax.tree.map(lambda x: x[0], exp.call(*a))

        blob = jax.export.export(jax.jit(single), platforms=("cpu",))(*structured)
        (dst / file).write_bytes(blob.serialize())
    m = json.loads((dst / "manifest.json").read_text())
    m["format_version"] = 4
    m.pop("ensemble")
    m["files"] = {p.name: {"sha256": fsutil.sha256_file(p), "bytes": p.stat().st_size}
                  for p in sorted(dst.iterdir()) if p.name != "manifest.json"}  # fmt: skip
    (dst / "manifest.json").write_text(json.dumps(m))
    return dst


def test_format4_single_model_bundle_still_serves(bundle, tmp_path):
    """A format-4 bundle (no member axis) loads as a one-member ensemble and ranks exactly as
    the format-5 export of the same model."""
    old = _as_format4(bundle, tmp_path / "v4")
    assert load_file(old / "params.safetensors")["temperature"].shape == ()
    a, b = recommender.Recommender.load(bundle), recommender.Recommender.load(old)
    assert b.bundle.manifest["format_version"] == 4 and b.members == 1
    v = a.bundle.vocab
    for cached in (True, False):
        ra = a.rank(task=v["tasks"][1], metric=v["metrics"][1], top_k=0, cached=cached)
        rb = b.rank(task=v["tasks"][1], metric=v["metrics"][1], top_k=0, cached=cached)
        assert [r.model for r in ra] == [r.model for r in rb]
        np.testing.assert_allclose([r.score for r in ra], [r.score for r in rb], **TOL)
        np.testing.assert_allclose([r.prior for r in ra], [r.prior for r in rb], **TOL)
    rows = [{"dataset": v["datasets"][3], "task": v["tasks"][1], "metric": v["metrics"][1],
             "model": v["models"][m]} for m in (1, 2, 3)]  # fmt: skip
    np.testing.assert_allclose([r["score"] for r in a.score_pairs(rows)],
                               [r["score"] for r in b.score_pairs(rows)], **TOL)  # fmt: skip


# --- confidence and its calibration -------------------------------------------------------------
def test_confidence_is_one_over_one_plus_expected_displacement():
    rng = np.random.default_rng(0)
    mean, std = rng.normal(size=40), rng.uniform(0.01, 0.5, 40)
    std[3] = 0.0
    slow = []
    for i in range(40):
        d = 0.0
        for j in range(40):
            s = math.sqrt(std[i] ** 2 + std[j] ** 2)
            if j != i and s > 0:
                d += 0.5 * math.erfc(abs(mean[i] - mean[j]) / s / math.sqrt(2))
        slow.append(1 / (1 + d))
    np.testing.assert_allclose(confidence.confidence(mean, std), slow, atol=1e-6)
    # no spread: nothing can swap (1); two tied means with spread: each half a place (2/3)
    np.testing.assert_array_equal(confidence.confidence([3, 2, 1], [0, 0, 0]), [1, 1, 1])
    np.testing.assert_allclose(confidence.confidence([1, 1], [0.2, 0.2]), [2 / 3, 2 / 3])
    c = confidence.confidence([10, 9, 0], [0.1, 3.0, 0.1])  # the uncertain one is least sure
    assert c[1] < c[0] and c[1] < c[2]
    chunked = confidence.displacement(np.r_[mean, mean], np.r_[std, std])
    monkey = confidence.CHUNK
    try:
        confidence.CHUNK = 7
        np.testing.assert_allclose(confidence.displacement(np.r_[mean, mean], np.r_[std, std]),
                                   chunked)  # fmt: skip
    finally:
        confidence.CHUNK = monkey


def test_rank_errors_and_spearman():
    from scipy import stats

    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 5, 50).astype(float), rng.normal(size=50)
    assert uncertainty.spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic)
    np.testing.assert_array_equal(uncertainty.average_ranks([3, 1, 3, 2]), [2.5, 0, 2.5, 1])
    assert math.isnan(uncertainty.spearman([1, 1, 1], [1, 2, 3]))
    # values 4 > 3 > 2 > 1 (true ranks 0..3); mean scores put slot 3 first, then 0, 1, 2
    members = np.array([[3.0, 2.0, 1.0, 5.0], [3.2, 1.8, 1.0, 4.0]])
    rec = uncertainty.group_records(members, np.array([4.0, 3.0, 2.0, 1.0]))
    np.testing.assert_array_equal(rec["abs_err"], [1, 1, 1, 3])
    np.testing.assert_allclose(rec["norm_err"], [1 / 3, 1 / 3, 1 / 3, 1])
    np.testing.assert_allclose(rec["spread"], [0.1, 0.1, 0.0, 0.5])
    tied = uncertainty.group_records(members, np.array([4.0, 4.0, 2.0, 1.0]))
    np.testing.assert_array_equal(tied["abs_err"], [0.5, 1.5, 1, 3])  # ties at their mean rank


def test_uncertainty_summary_and_combination():
    rng = np.random.default_rng(2)
    g = np.repeat(np.arange(20), 6)
    spread = rng.uniform(0, 1, len(g))
    err = spread * 5 + rng.normal(0, 0.1, len(g))  # error grows with the spread
    rec = {"group": g, "n": np.full(len(g), 6), "spread": spread, "rel_spread": spread,
           "confidence": 1 - spread, "abs_err": err, "norm_err": err / 5}  # fmt: skip
    s = uncertainty.summarise(rec)
    assert len(s["per_group_spread"]) == 20 and np.mean(s["per_group_spread"]) > 0.8
    assert np.mean(s["per_group_confidence"]) < -0.8 and s["pooled_confidence"] < -0.8
    both = uncertainty.combine([s, s])
    assert both["records"] == 2 * len(g) and len(both["per_group_spread"]) == 40
    assert sum(b["count"] for b in both["bins_confidence"]) == 2 * len(g)
    means = [b["mean"] for b in both["bins_confidence"] if b["count"]]
    assert means == sorted(means, reverse=True)  # sure records have small errors


def test_ensemble_records_match_the_members_scores(trained_ensemble):
    """``uncertainty.records`` scores each record with every member exactly as evaluate does
    (its ensemble τ on the same groups equals evaluate's of the members' mean)."""
    from modellens_jax.data import splits

    ens = ensemble.restore(trained_ensemble["workdir"])
    scorer = evaluate.EnsembleScorer.of(ens)
    assert len(scorer.scorers) == 3
    rec = uncertainty.records(scorer, ens.tables, splits.VAL, splits.UNSEEN_MODEL)
    _, groups = evaluate.evaluate(scorer, ens.tables, splits.VAL, splits.UNSEEN_MODEL)
    assert set(np.unique(rec["group"])) == set(groups["group"].tolist())
    assert len(rec["group"]) == int(groups["n"].sum())
    assert np.all((rec["confidence"] > 0) & (rec["confidence"] <= 1))
    assert np.all((rec["norm_err"] >= 0) & (rec["norm_err"] <= 1))


def test_score_cli_writes_the_spread_of_an_ensemble(trained_ensemble, bundle, tmp_path):
    """``score`` on an ensemble bundle adds the ``score_std`` column (the members' spread, as
    ``score_pairs`` computes it); on a single-model bundle the columns stay as they were."""
    import csv

    from modellens_jax.serving import score

    rec = recommender.Recommender.load(trained_ensemble["bundle"])
    q = _queries(rec, 1)[0]
    pairs = tmp_path / "pairs.csv"
    with open(pairs, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["dataset", "task", "metric", "model"])
        for m in rec.bundle.vocab["models"][1:4]:
            w.writerow([q["dataset"], q["task"], q["metric"], m])
    for b, want in ((trained_ensemble["bundle"], True), (bundle, False)):
        out = tmp_path / f"scores-{want}.csv"
        assert score.main([f"--bundle={b}", f"--pairs={pairs}", f"--out={out}"]) == 0
        rows = list(csv.DictReader(open(out)))
        assert ("score_std" in rows[0]) is want
        if want:
            got = recommender.Recommender.load(b).score_pairs(pairs)
            assert [float(r["score_std"]) for r in rows] == pytest.approx(
                [g["score_std"] for g in got], rel=1e-6
            )
            assert all(float(r["score_std"]) > 0 for r in rows)


@pytest.mark.slow
def test_backtest_of_a_seed_ensemble(tmp_path):
    """The backtest on a 4-member ensemble (tiny, one unit): the ensemble is ``modellens``, its
    members alone and its first three are paired variants that never count as baselines, and
    the report has the confidence section and the calibration plot."""
    from modellens_jax import backtest

    cfg = tiny_config(train__steps=6, train__eval_every=3, train__checkpoint_every=3)
    cfg.optim.warmup_steps = 2
    cfg.ensemble.members = 4
    cfg.backtest.update(val_cutoffs=(0.74,), split_seeds=(0,), train_seeds=(0,),
                        baselines="size", bootstrap=100)  # fmt: skip
    summary = backtest.run(cfg, tmp_path, which="val", verbose=False)
    unit = json.loads((tmp_path / "val" / "cut0.74-split0" / "result.json").read_text())
    assert (
        len(unit["scorers"]["modellens_single"]) == 4 and len(unit["scorers"]["modellens_3"]) == 1
    )
    for setting, s in summary.items():
        assert s["best_baseline"] == "size", setting
        assert {"modellens_single", "modellens_3", "size"} == set(s["paired"])
        assert s["uncertainty"]["records"] > 0
    md = (tmp_path / "val" / "backtest.md").read_text()
    assert "Δ modellens − modellens_single (paired)" in md
    assert "Does low confidence predict large rank error?" in md
    assert (tmp_path / "val" / "calibration.png").stat().st_size > 0
