"""The trained bundle the serving tests share (test_export, test_service): the shipped corpus
compiled with ``tiny``, a 2-step run exported, its workdir deleted. Session-scoped and
registered in conftest.py, so the whole suite trains it once."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import ml_collections
import numpy as np
import pytest
from flax import nnx

from modellens_jax import export

ROOT = Path(__file__).resolve().parents[1]
# Until the embedding stage lands, the trained bundle is built without descriptions; flip this
# one switch to train and serve with them (test_descriptions_path covers them meanwhile).
DESCRIPTIONS = False


def default_config(preset: str | None = None) -> ml_collections.ConfigDict:
    spec = importlib.util.spec_from_file_location("_export_cfg", ROOT / "configs" / "default.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config(preset)


@pytest.fixture(scope="session")
def compiled_corpus(tmp_path_factory) -> Path:
    """The shipped corpus compiled once per session."""
    from modellens_jax import prepare

    out = tmp_path_factory.mktemp("corpus") / "corpus"
    prepare.prepare(default_config("tiny").data, out, verbose=False)
    return out


def train_config() -> ml_collections.ConfigDict:
    cfg = default_config("tiny")
    cfg.model.use_model_desc = cfg.model.use_dataset_desc = DESCRIPTIONS
    cfg.train.steps = 2
    cfg.train.eval_every = cfg.train.checkpoint_every = 1000  # the final step does both
    cfg.mesh.data = 1  # one device: a third of the 8-device compile time
    # the opt-in competence features (cold prior kept): the serving path computes them
    cfg.model.update(use_competence=True, cold_model_rate=0.2)
    return cfg


@pytest.fixture(scope="session")
def trained(compiled_corpus, tmp_path_factory) -> dict:
    """A bundle exported from a 2-step run, the training scorer's reference scores on random
    queries, and the workdir already deleted."""
    from modellens_jax import cold_start, rundir, train

    base = tmp_path_factory.mktemp("trained")
    wd, bundle = base / "workdir", base / "bundle"
    shutil.copytree(compiled_corpus, wd / "corpus")
    result = train.train_and_evaluate(train_config(), wd, verbose=False)
    # The fitted prior's learned effects with weights set, so that serving's use of both terms
    # is visible whatever a 2-step run's validation chose.
    cold = cold_start.load(wd)
    assert cold is not None and cold.fit["step"] == result.step
    cold = cold.weighted(3.0, 1.5)
    cold_start.save(wd, cold)
    assert export.main([f"--workdir={wd}", f"--out={bundle}"]) == 0
    # The training code's model at the exported (final, only) step.
    model, _ = nnx.merge(result.graphdef, result.state)
    corpus, tables = rundir.load_data(train_config(), wd, verbose=False)
    c, rng = corpus, np.random.default_rng(1)
    models = {**tables.model_cols, "model_desc": np.asarray(tables.model_desc, np.float32)}
    s = 3
    ds = rng.integers(0, len(c.vocab["datasets"]), s)
    groups = {
        "dataset_id": np.asarray(c["dataset_id"])[ds],
        "dataset_desc": np.asarray(tables.dataset_desc, np.float32)[ds],
        "task": rng.integers(0, len(c.vocab["tasks"]), s).astype(np.int32),
        "metric": rng.integers(0, len(c.vocab["metrics"]), s).astype(np.int32),
    }
    temperature = float(np.asarray(model.temperature[...]))
    assert model.use_competence and tables.competence is not None
    competence = tables.competence.copy()  # the training batches' per-record features
    shutil.rmtree(wd)
    return {
        "bundle": bundle,
        "groups": groups,
        "dataset_rows": ds,
        "model": model,
        "models": models,
        "corpus": corpus,
        "competence": competence,
        "base": base,
        "T": temperature,
        "step": result.step,
        "cold": cold,
    }


@pytest.fixture(scope="session")
def bundle(request, tmp_path_factory) -> Path:
    """The exported bundle of ``trained``; with ``MODELLENS_TEST_BUNDLE_CACHE=DIR`` (set by
    tests/mutation/run.py, one DIR per mutated commit) a private copy of ``DIR/bundle``,
    exported there once, so a mutant's serving tests load a bundle instead of training one."""
    cache = os.environ.get("MODELLENS_TEST_BUNDLE_CACHE")
    if not cache:
        return request.getfixturevalue("trained")["bundle"]
    cached = Path(cache) / "bundle"
    if not (cached / "manifest.json").is_file():
        tmp = Path(cache) / f"partial-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(request.getfixturevalue("trained")["bundle"], tmp)
        os.replace(tmp, cached)  # complete or absent
    out = tmp_path_factory.mktemp("bundle") / "bundle"
    shutil.copytree(cached, out)
    return out


@pytest.fixture(scope="session")
def trained_ensemble(compiled_corpus, tmp_path_factory) -> dict:
    """A 3-member seed ensemble of ``train_config`` (2 steps) trained in one program and
    exported; with each member's training-code model (its best checkpoint, as restored)."""
    from modellens_jax import ensemble, rundir
    from modellens_jax.experiments import members

    base = tmp_path_factory.mktemp("ensemble")
    wd, bundle = base / "workdir", base / "bundle"
    shutil.copytree(compiled_corpus, wd / "corpus")
    cfg = train_config()
    cfg.ensemble.members = 3
    doc = members.train_ensemble(cfg, wd, verbose=False)
    assert export.main([f"--workdir={wd}", f"--out={bundle}", "--platforms=cpu"]) == 0
    ens = ensemble.restore(wd)
    models = [nnx.merge(m.graphdef, m.state)[0] for m in ens.members]
    return {"bundle": bundle, "workdir": wd, "doc": doc, "models": models, "cold": ens.cold,
            "tables": ens.tables, "corpus": ens.corpus,
            "summaries": [rundir.read_summary(wd / d) for d in doc["members"]]}  # fmt: skip
