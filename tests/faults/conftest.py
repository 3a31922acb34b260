"""Fixtures of the fault-injection suite: one compiled corpus and one straight tiny run per
session (the reference every interrupted / damaged run must reproduce bit for bit)."""

from __future__ import annotations

import os

import jax
import numpy as np
import pytest

from modellens_jax import train
from tests.faults import common

N = 6  # the straight run: checkpoints at 3 and 6

# The normal suite runs a short subset (well under a minute); the rest runs in the long run
# (``python -m tests.faults.run``, which sets this) or with MODELLENS_FAULTS_LONG=1.
LONG = os.environ.get("MODELLENS_FAULTS_LONG") == "1"
long_only = pytest.mark.skipif(
    not LONG, reason="long fault run: python -m tests.faults.run or MODELLENS_FAULTS_LONG=1"
)


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory):
    return common.prepare_corpus(tmp_path_factory.mktemp("faults_corpus") / "corpus")


@pytest.fixture
def workdir(corpus_dir, tmp_path):
    return common.workdir_with(corpus_dir, tmp_path / "run")


@pytest.fixture
def no_eval(monkeypatch):
    from modellens_jax import evaluate

    fake = {"weighted_tau": 0.0, "num_groups": 1.0}
    monkeypatch.setattr(evaluate, "evaluate_settings", lambda *a, **k: {"completion": fake})


@pytest.fixture(scope="session")
def straight(corpus_dir, tmp_path_factory):
    """An uninterrupted run of N steps (no validation: a constant judge)."""
    from modellens_jax import evaluate

    wd = common.workdir_with(corpus_dir, tmp_path_factory.mktemp("faults_straight"))
    real = evaluate.evaluate_settings
    evaluate.evaluate_settings = lambda *a, **k: {
        "completion": {"weighted_tau": 0.0, "num_groups": 1.0}
    }
    try:
        res = train.train_and_evaluate(common.tiny_config(train__steps=N), wd, verbose=False)
    finally:
        evaluate.evaluate_settings = real
    assert res.step == N
    return wd, jax.device_get(res.state)


def assert_states_equal(a, b) -> None:
    la, lb = jax.tree.leaves_with_path(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    for (path, x), y in zip(la, lb):
        assert np.array_equal(np.asarray(x), np.asarray(y)), jax.tree_util.keystr(path)
