"""The evaluation harness on a small compiled corpus and a few-step tiny model (8 fake CPU
devices): same numbers twice and on 1 or 8 devices, held-out entities never use a learned ID,
aggregation by hand, tie order, breakdowns, the command's reports and the ablation presets."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest

from modellens_jax import evaluate, metrics, report, rundir, sharding, train
from modellens_jax.data import pipeline, schema, splits
from modellens_jax.experiments import ablate

ROOT = Path(__file__).resolve().parents[1]
# Frozen description embeddings: off until the embedding stage lands (then flip this one line).
DESCRIPTIONS = False


def _config_module(name: str):
    spec = importlib.util.spec_from_file_location(f"_test_{name}", ROOT / "configs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_config(preset: str = "main"):
    c = _config_module("ablations").get_config(f"{preset},tiny")
    c.model.use_model_desc = c.model.use_dataset_desc = DESCRIPTIONS
    c.train.eval_every = 100  # validation only at the last step
    return c


def write_leaderboard(d: Path, seed: int = 0) -> Path:
    """~700 records: 48 dated models in 4 families with sizes (some unknown), 30 datasets in two
    modalities from two sources; value = quality + size effect + noise."""
    rng = np.random.default_rng(seed)
    d.mkdir(parents=True, exist_ok=True)
    fams = ["alpha", "beta", "gamma", "delta"]
    models = [f"org{i % 3}/{fams[i % 4]}-{i}" for i in range(48)]
    params = rng.uniform(0.05, 70, 48)
    quality = rng.normal(size=48) + 0.4 * np.log10(params)
    day0 = np.datetime64("2021-01-01")
    pd.DataFrame({
        "model": models, "family": [fams[i % 4] for i in range(48)],
        "params": [f"{p:.2f}" if i % 5 else "" for i, p in enumerate(params)],
        "model_desp": "", "release_date": [str(day0 + np.timedelta64(7 * i, "D")) for i in range(48)],
        "source": "synthetic",
    }).to_csv(d / "models.csv", index=False)  # fmt: skip
    ds_rows, rec_rows = [], []
    for j in range(30):
        task, modality, source = ("qa", "text", "srcA") if j % 2 else ("cls", "vision", "srcB")
        name = f"{task}-set-{j}"
        ds_rows.append([name, task, f"{name} description", modality, source])
        for m in rng.choice(48, size=int(rng.integers(14, 30)), replace=False):
            v = 50 + 10 * quality[m] + 5 * rng.normal()
            rec_rows.append([task, name, models[m], "acc", f"{v:.3f}", "", "1", source, ""])
    pd.DataFrame(ds_rows, columns=list(schema.DATASET_COLUMNS)).to_csv(
        d / "datasets.csv", index=False
    )
    pd.DataFrame(rec_rows, columns=list(schema.LEADERBOARD_RECORD_COLUMNS)).to_csv(
        d / "records.csv", index=False
    )
    return d


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny model trained 6 steps on all 8 devices; returns (workdir, TrainResult)."""
    root = tmp_path_factory.mktemp("eval")
    cfg = tiny_config()
    cfg.data.source = str(write_leaderboard(root / "src"))
    wd = root / "run"
    result = train.train_and_evaluate(cfg, wd, verbose=False)
    return wd, result


def _mesh(data: int, model: int):
    return sharding.make_mesh(data, model)


@pytest.fixture(scope="module")
def restored(run):
    """The run's best checkpoint restored on one device: (tables, graphdef, state, step, mesh,
    the run's fitted cold-start prior)."""
    mesh = _mesh(1, 1)
    r = rundir.restore(run[0], mesh=mesh)
    return r.tables, r.graphdef, r.state, r.step, mesh, r.cold


@pytest.fixture(scope="module")
def report1(restored):
    tables, graphdef, state, _, mesh, cold = restored
    return evaluate.evaluate_report(
        evaluate.ModelScorer(graphdef, state, mesh, cold=cold), tables, splits.TEST
    )


def _report(wd, mesh, split=splits.TEST):
    r = rundir.restore(wd, mesh=mesh)
    return r.step, evaluate.evaluate_report(evaluate.ModelScorer.of(r), r.tables, split)


def _same(a, b):
    """Exact equality of nested reports (NaN == NaN)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _same(a[k], b[k])
    else:
        assert (math.isnan(a) and math.isnan(b)) or a == b, (a, b)


def test_same_numbers_twice_and_on_1_or_8_devices(run, restored, report1):
    wd, result = run
    tables, graphdef, state, step, mesh, cold = restored
    assert step == result.step
    again = evaluate.evaluate_report(evaluate.ModelScorer(graphdef, state, mesh, cold=cold),
                                     tables, splits.TEST)  # fmt: skip
    _same(report1, again)
    step8, eight = _report(wd, _mesh(8, 1))  # restored onto all 8 devices
    assert step8 == step
    _same(report1, eight)
    for s in splits.SETTINGS:
        assert report1[s]["overall"]["num_groups"] > 0
    # The trainer's own validation at the last step (8 devices, its own jitted scorer) agrees.
    val = evaluate.evaluate_settings(evaluate.ModelScorer(graphdef, state, mesh), tables,
                                     splits.VAL)  # fmt: skip
    last = result.history[-1]
    for s, agg in val.items():
        assert agg["weighted_tau"] == pytest.approx(last[f"val/{s}/weighted_tau"], abs=1e-6)


def test_model_parallel_mesh_gives_the_same_ranking_metrics(run, report1):
    """ID tables sharded by column over 8 devices: scores may differ in the last bits, so this
    is a tolerance check (the data-parallel mesh above is exact)."""
    _, mp = _report(run[0], _mesh(1, 8))
    for s in splits.SETTINGS:
        for k, v in report1[s]["overall"].items():
            assert mp[s]["overall"][k] == pytest.approx(v, abs=1e-4, nan_ok=True), (s, k)


class _Recorder:
    """Wraps a scorer and keeps every batch and its scores."""

    def __init__(self, scorer):
        self.scorer, self.batches, self.scores = scorer, [], []

    def __call__(self, batch):
        s = np.asarray(self.scorer(batch))
        self.batches.append(batch)
        self.scores.append(s)
        return s


def _perturb_ids(state, table: str):
    """A new state whose learned ID rows of ``table`` (all but row 0 = [UNK]) are noise; the
    optimizer's copies are left alone (scoring reads only the model)."""
    hits = []

    def f(path, x):
        names = [str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey)]
        if names[:1] == ["0"] and table in names and names[-1] == "embedding":
            hits.append(names)
            noise = jax.random.normal(jax.random.key(1), x.shape, x.dtype) * 10
            return x.at[1:].set(noise[1:])
        return x

    new = jax.tree_util.tree_map_with_path(f, state)
    assert len(hits) == 1, hits
    return new


def test_held_out_entities_never_use_a_learned_id(restored):
    tables, graphdef, state, _, mesh, _ = restored
    base = evaluate.ModelScorer(graphdef, state, mesh)
    perturbed = {t: base.with_state(_perturb_ids(state, t))
                 for t in ("model_id_embed", "dataset_id_embed")}  # fmt: skip
    cases = {
        splits.UNSEEN_MODEL: ("model_id_embed", "model_id", "model_slot"),
        splits.UNSEEN_DATASET: ("dataset_id_embed", "dataset_id", "group_slot"),
    }
    for split in (splits.VAL, splits.TEST):
        for setting, (table, id_key, slot_key) in cases.items():
            # 1. Every held-out entity of these groups is [UNK] (id 0) in the batch.
            seen = 0
            for batch, gid in pipeline.eval_batches(tables, split, setting):
                used = np.unique(batch[slot_key][batch["mask"]])
                assert np.all(batch[id_key][used] == 0), (split, setting, batch[id_key][used])
                seen += int((gid >= 0).sum())
            assert seen > 0, (split, setting)
            # 2. Scrambling every learned ID row changes no score of these groups...
            a, b = _Recorder(base), _Recorder(perturbed[table])
            evaluate.evaluate(a, tables, split, setting)
            evaluate.evaluate(b, tables, split, setting)
            for sa, sb, batch in zip(a.scores, b.scores, a.batches):
                np.testing.assert_array_equal(sa[batch["mask"]], sb[batch["mask"]])
            # 3. ...while it does change completion scores (the perturbation is effective).
            c, d = _Recorder(base), _Recorder(perturbed[table])
            evaluate.evaluate(c, tables, split, splits.COMPLETION)
            evaluate.evaluate(d, tables, split, splits.COMPLETION)
            assert any(not np.array_equal(x[bt["mask"]], y[bt["mask"]])
                       for x, y, bt in zip(c.scores, d.scores, c.batches))  # fmt: skip


def test_aggregate_by_hand():
    groups = {
        "group": np.array([4, 7, 9, 11]),
        "n": np.array([2, 3, 5, 12]),
        "weighted_tau": np.array([1.0, np.nan, 0.5, -0.25]),
        "weighted_tau_ref": np.array([1.0, 0.0, 0.5, 0.25]),
        "ndcg@10": np.array([np.nan, np.nan, np.nan, 0.8]),
        "hit@1": np.array([1.0, 0.0, 1.0, 0.0]),
    }
    out = metrics.aggregate(groups, ks=(1, 10))
    pairs = np.array([1, 3, 10, 66], float)
    assert out["num_groups"] == 4
    assert out["weighted_tau"] == pytest.approx((1.0 + 0.5 - 0.25) / 3)
    assert out["weighted_tau_pairs"] == pytest.approx(
        (1 * 1 + 10 * 0.5 - 66 * 0.25) / (1 + 10 + 66)
    )
    assert out["weighted_tau_ref"] == pytest.approx(1.75 / 4)
    assert out["weighted_tau_ref_pairs"] == pytest.approx((1 + 5 + 16.5) / pairs.sum())
    assert out["ndcg@10"] == pytest.approx(0.8) and out["num_groups@10"] == 1
    assert out["hit@1"] == 0.5 and "hit@1_pairs" not in out
    assert out["num_groups@1"] == 0  # no ndcg@1 column given
    # A breakdown is the aggregate of the selected groups.
    key = np.zeros(12, int)
    key[[9, 11]] = 1
    by = evaluate.breakdown(groups, key, ["a", "b"])
    assert by["b"] == metrics.aggregate({k: v[2:] for k, v in groups.items()})
    assert by["a"]["num_groups"] + by["b"]["num_groups"] == 4


def test_ties_are_not_broken_in_truth_order(restored):
    """A constant scorer is uninformative: τ_w = 0 and Hit@1 near chance; only with corpus
    order (tie_seed=None) would ties flatter it."""
    tables = restored[0]

    def constant(batch):
        return np.zeros(batch["mask"].shape, np.float32)

    fair, per = evaluate.evaluate(constant, tables, splits.TEST, splits.COMPLETION)
    naive, _ = evaluate.evaluate(constant, tables, splits.TEST, splits.COMPLETION, tie_seed=None)
    assert fair["weighted_tau"] == 0.0
    assert naive["hit@1"] == 1.0 and naive["ndcg@1"] == pytest.approx(1.0)
    chance = np.mean(1.0 / per["n"])
    assert fair["hit@1"] < 0.5 + chance
    again, _ = evaluate.evaluate(constant, tables, splits.TEST, splits.COMPLETION)
    _same(again, fair)


def test_breakdowns_partition_the_groups(report1):
    for r in report1.values():
        n = r["overall"]["num_groups"]
        assert sum(v["num_groups"] for v in r["by_source"].values()) == n
        assert sum(v["num_groups"] for v in r["by_modality"].values()) == n
        assert set(r["by_source"]) <= {"srcA", "srcB"}
        assert set(r["by_modality"]) <= {"text", "vision"}


def test_evaluate_command_writes_reports(run, tmp_path):
    wd, _ = run
    out = evaluate.run(wd, split="val", out=tmp_path / "ev", baselines="size,competence",
                       verbose=False)  # fmt: skip
    doc = json.loads((tmp_path / "ev" / "report.json").read_text())  # strict JSON (no NaN)
    assert set(doc["results"]) == {report.MODEL_NAME, "size", "competence"}
    assert doc["results"] == report.json_safe(out["results"])
    md = (tmp_path / "ev" / "report.md").read_text()
    for title in ("τ_w by setting", "unseen_dataset", "τ_w by source", "τ_w by modality"):
        assert title in md
    if importlib.util.find_spec("matplotlib"):
        assert (tmp_path / "ev" / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ablation_presets_switch_as_documented():
    abl = _config_module("ablations")
    default = _config_module("default").get_config()
    assert abl.get_config("main").to_dict() == default.to_dict()
    ens = abl.get_config("ensemble")  # upstream's ensemble: the default's weights, PL mean
    assert dict(ens.loss.weights) == dict(default.loss.weights)
    assert ens.loss.pl_reduction == "mean"
    groups = (abl.LOSS_PRESETS, abl.SOURCE_PRESETS, abl.SIZE_FAMILY_PRESETS, abl.EXTENSION_PRESETS)
    assert sorted(n for g in groups for n in g) == sorted(set(abl.PRESETS) - {"main"})
    for name in (n for g in groups for n in g):
        assert name in abl.PRESETS
        abl.get_config(f"{name},tiny")  # combines with default presets
    w = abl.get_config("listwise").loss
    assert dict(w.weights) == {"listwise": 1.0, "pairwise": 0.0, "pointwise": 0.0}
    assert w.pl_reduction == "sum"
    assert dict(abl.get_config("pairwise_pointwise").loss.weights) == {
        "listwise": 0.0, "pairwise": 1.0, "pointwise": 0.1}  # fmt: skip
    m = abl.get_config("semantic_only").model
    assert (m.use_model_id, m.use_dataset_id, m.use_model_name, m.use_model_desc,
            m.use_dataset_desc, m.use_size_feature, m.use_family_prior) == (
        False, False, True, True, True, False, False)  # fmt: skip
    m = abl.get_config("interaction_only").model
    assert (m.use_model_id, m.use_dataset_id, m.use_model_name, m.model_id_dropout) == (
        True, True, False, 0.0)  # fmt: skip
    m = abl.get_config("structural_only").model
    assert not (m.use_model_id or m.use_model_name or m.use_model_desc or m.use_dataset_id)
    assert m.use_size_feature and m.use_size_prior and m.use_family_prior
    m = abl.get_config("no_size_feature").model
    assert not m.use_size_feature and not m.use_size_prior and m.use_family_prior
    assert not abl.get_config("no_family").model.use_family_prior
    c = abl.get_config("paper_scorer")
    m = c.model
    assert (m.interaction_dim, m.use_release, m.id_init_std) == (0, False, 1)
    assert not c.cold_start.fit
    assert not abl.get_config("no_cold_size_prior").cold_start.fit
    assert not abl.get_config("no_size_feature").cold_start.fit
    assert abl.get_config("structural_only").cold_start.fit  # size on: the prior is kept
    assert not abl.get_config("semantic_only").cold_start.fit  # no size input: no size prior
    assert abl.get_config("interaction").model.interaction_dim > 0
    assert default.model.interaction_dim == 0 and default.model.use_release
    assert default.cold_start.fit and not default.model.use_competence
    c = abl.get_config("competence")
    assert (c.model.use_competence, c.model.cold_model_rate, c.cold_start.fit) == (True, 0.2, True)
    with pytest.raises(ValueError, match="unknown ablation preset"):
        abl.get_config("nope")
    c = ablate.preset_config("listwise", {"train.steps": 7})
    assert c.train.steps == 7 and c.loss.pl_reduction == "sum"
    with pytest.raises(KeyError):
        ablate.preset_config("main", {"train.stepz": 7})


def test_ablate_trains_presets_and_compares_with_baselines(run, tmp_path):
    """Two presets in one table with a baseline: ``main`` resumes the fixture's finished run
    (copied; nothing retrained), ``structural_only`` trains 2 steps on a shared corpus link."""
    wd, _ = run
    shutil.copytree(wd, tmp_path / "main+tiny", symlinks=True)
    src = json.loads((wd / "config.json").read_text())["data"]["source"]
    overrides = {"data.source": src, "train.steps": 2, "train.eval_every": 100,
                 "model.use_model_desc": DESCRIPTIONS, "model.use_dataset_desc": DESCRIPTIONS}  # fmt: skip
    presets = ["main,tiny", "structural_only,tiny"]
    doc = ablate.run(presets, tmp_path, overrides=overrides, baselines="size", split="val",
                     verbose=False)  # fmt: skip
    assert set(doc["results"]) == {*presets, "size"}
    assert doc["checkpoint_steps"] == {"main,tiny": run[1].step, "structural_only,tiny": 2}
    assert (tmp_path / "structural_only+tiny" / "corpus").is_symlink()
    md = (tmp_path / "ablation.md").read_text()
    assert "structural_only,tiny" in md and "| size |" in md
    json.loads((tmp_path / "ablation.json").read_text())
