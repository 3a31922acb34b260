"""Incremental updates (``modellens_jax.update``): the extended tables keep every old row, a new
model arriving with records gets a learned ID, no new records is a no-op, an interrupted update
resumes bit-exactly, bad records are refused with nothing changed.

One parent run (tiny preset on 8.8k records of the shipped corpus, ``tests/update_data.py``) is
trained per module and copied into each test's workdir; the fine-tunes are 4 steps.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest
import update_data
from test_train import assert_states_equal, tiny_config

from modellens_jax import checkpointing, cold_start, rundir, train, train_state, update
from modellens_jax import config as config_lib
from modellens_jax.data import corpus as corpus_lib
from modellens_jax.data import splits
from modellens_jax.data.ingest import CorpusError

STEPS = 4


def settings():
    s = tiny_config().updates
    s.steps, s.eval_every, s.replay = STEPS, 2, 0.25
    return s


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    return update_data.write_sources(tmp_path_factory.mktemp("sources"))


@pytest.fixture(scope="module")
def parent(sources, tmp_path_factory) -> Path:
    """The run to update: 6 tiny steps on the held-back source."""
    wd = tmp_path_factory.mktemp("parent") / "run"
    train.train_and_evaluate(tiny_config(data__source=str(sources[0])), wd, verbose=False)
    return wd


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".*.lock"))
    return dst


def tree_digest(root: Path) -> dict[str, str]:
    """Every file under ``root`` (locks aside) -> sha256: 'nothing changed' means equal."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.name.endswith(".lock")}  # fmt: skip


@pytest.fixture(scope="module")
def updated(parent, sources, tmp_path_factory):
    """The parent copied and updated with the new records (uninterrupted)."""
    wd = copy_run(parent, tmp_path_factory.mktemp("updated") / "run")
    entry = update.run(wd, sources[1], settings(), verbose=False)
    return wd, entry


# --- 1. the extension keeps every old row ---------------------------------------------------------
def test_extended_tables_keep_every_old_row(parent, sources, tmp_path):
    wd = copy_run(parent, tmp_path / "run")
    pcfg = config_lib.load_run_config(wd)
    assert update._stage(wd, pcfg, corpus_lib.load_corpus(wd / "corpus"), sources[1].absolute(),
                         settings(), "error", None, {"generation": 1}, lambda *a: None)  # fmt: skip
    stage = wd / update.STAGE
    cfg = config_lib.load_run_config(stage)
    corpus, tables = rundir.load_data(cfg, stage, verbose=False)
    sizes = train_state.feature_sizes(cfg, tables)
    old = rundir.restore(wd, step=update._latest_step(wd))
    old_sizes = train_state.feature_sizes(old.config, old.tables)
    assert sizes.num_model_ids > old_sizes.num_model_ids  # new learned IDs
    assert sizes.num_families > old_sizes.num_families
    assert sizes.num_tasks > old_sizes.num_tasks and sizes.num_metrics > old_sizes.num_metrics
    from modellens_jax import sharding

    mesh = sharding.make_mesh(-1, 1)
    graphdef, fresh, sh = train_state.init_state(cfg, sizes, mesh)
    grown = jax.device_get(update._initial_state(wd)(graphdef, fresh, sh))
    before = jax.device_get(old.state)
    grown_leaves = jax.tree.leaves_with_path(grown)
    assert len(grown_leaves) == len(jax.tree.leaves(before))
    grew = 0
    for (path, g), b in zip(grown_leaves, jax.tree.leaves(before)):
        name, g, b = jax.tree_util.keystr(path), np.asarray(g), np.asarray(b)
        n = b.shape[0] if b.ndim else None
        assert np.array_equal(g[:n] if n else g, b), name  # bit-identical old entries
        if b.ndim and g.shape[0] > n:
            grew += 1
            new_rows = g[n:]
            if name.startswith("[0]") and any(t in name for t in update.ID_ROWS):
                assert np.array_equal(new_rows, np.broadcast_to(b[:1], new_rows.shape)), name
            else:
                assert not new_rows.any(), name
    assert grew >= 5 * 3  # 5 tables (model/dataset ID, family, task, metric) x (param, mu, nu)
    # the old corpus's entities and records keep their indices, IDs, splits and settings
    parent_c = corpus_lib.load_corpus(wd / "corpus")
    for k in corpus_lib.Corpus(wd / "corpus").vocab:
        assert corpus.vocab[k][: len(parent_c.vocab[k])] == parent_c.vocab[k], k
    n_m = len(parent_c.model_names)
    assert np.array_equal(np.asarray(corpus["model_id"])[:n_m], parent_c["model_id"])
    key = lambda c: pd.Series(np.asarray(c["rec_split"]) * 10 + np.asarray(c["rec_setting"]),  # noqa: E731
                              index=np.asarray(c["rec_group"]) * 10**6 + np.asarray(c["rec_model"]))  # fmt: skip
    old_k, new_k = key(parent_c), key(corpus)
    assert new_k.reindex(old_k.index).equals(old_k)


# --- 2. a new model arriving with records is learned ----------------------------------------------
def test_new_model_gets_a_learned_id_and_stops_being_cold(parent, updated):
    wd, entry = updated
    before = corpus_lib.load_corpus(wd / update.GENERATIONS / "0" / "corpus")
    after = corpus_lib.load_corpus(wd / "corpus")
    assert update_data.NEW_MODEL not in before.model_names
    m = after.model_names.index(update_data.NEW_MODEL)
    mid = int(after["model_id"][m])
    assert mid > int(np.max(before["model_id"]))  # a learned ID of its own, appended
    for name in update_data.HELD_MODELS:
        assert int(after["model_id"][after.model_names.index(name)]) > 0
    d = after.vocab["datasets"].index(update_data.HELD_DATASET)
    assert int(after["dataset_id"][d]) > int(np.max(before["dataset_id"]))
    fam = after.vocab["families"].index(update_data.NEW_FAMILY)
    assert int(after["model_family"][m]) == fam >= len(before.vocab["families"])
    # its records train (in the fine-tune's records), but those on a dataset the run holds out,
    # which join that hold-out
    recs = np.asarray(after["rec_model"]) == m
    tr = np.asarray(after["rec_split"])[recs] == splits.TRAIN
    assert tr.sum() >= 8
    assert (np.asarray(after["rec_setting"])[recs][~tr] == splits.UNSEEN_DATASET).all()
    assert np.asarray(after[rundir.FINETUNE])[recs][tr].all()
    # ... and its ID row was learned: it moved away from the [UNK] row it started at
    run = rundir.restore(wd)
    table = np.asarray(jax.device_get(jax.tree.leaves(run.state[0]["model_id_embed"])[0]))
    assert not np.array_equal(table[mid], table[0])
    # the lineage line (in the run directory) and the generations
    lines = rundir.read_lineage(wd)
    assert [e["generation"] for e in lines] == [1] and lines[0] == json.loads(json.dumps(entry))
    assert (
        entry["parent_fingerprint"]
        == before.fingerprint
        == after.manifest["report"]["update"]["parent_fingerprint"]
    )
    assert entry["fingerprint"] == after.fingerprint != before.fingerprint
    assert entry["counts"]["new_models"] == 3 and entry["counts"]["new_datasets"] == 1
    assert entry["steps"] == STEPS and entry["judge_before"] is not None
    assert not (wd / update.STAGE).exists()
    assert (wd / update.RECORDS / "1" / "records.csv").is_file()
    # the previous generation is intact beside it, with the cold-start prior fitted to it; the
    # updated run has its own, fitted to the fine-tune's best checkpoint
    assert tree_digest(wd / update.GENERATIONS / "0" / "checkpoints") == tree_digest(
        parent / "checkpoints"
    )
    old_prior = wd / update.GENERATIONS / "0" / cold_start.FILE
    assert old_prior.read_bytes() == (parent / cold_start.FILE).read_bytes()
    prior = json.loads((wd / cold_start.FILE).read_text())
    assert prior["fit"]["step"] == run.step


# --- 3. no new records: nothing happens -------------------------------------------------------
def test_update_without_new_records_is_a_noop(parent, sources, tmp_path):
    wd = copy_run(parent, tmp_path / "run")
    digest = tree_digest(wd)
    old = pd.read_csv(sources[0] / "records.csv", dtype=str, keep_default_na=False)
    same = update_data.write_records(tmp_path / "same", old.sample(50, random_state=0))
    assert update.run(wd, same, settings(), verbose=False) is None
    assert tree_digest(wd) == digest and not (wd / update.STAGE).exists()


# --- 4. an interrupted update resumes bit-exactly -----------------------------------------------
def test_interrupted_update_resumes_bit_exactly(parent, updated, sources, tmp_path, capsys):
    from modellens_jax import jobguard

    wd = copy_run(parent, tmp_path / "run")
    with pytest.raises(jobguard.Interrupted):
        update.run(wd, sources[1], settings(), verbose=False, stop_after=1)
    assert (wd / update.STAGE / "checkpoints").is_dir()
    assert tree_digest(wd / "checkpoints") == tree_digest(parent / "checkpoints")  # untouched
    capsys.readouterr()
    entry = update.run(wd, sources[1], settings(), verbose=True)  # the same command again
    out = capsys.readouterr().out
    assert "resuming the update in" in out and "resumed from step 1 " in out, out
    ref, ref_entry = updated
    assert entry["fingerprint"] == ref_entry["fingerprint"]
    assert entry["best"] == ref_entry["best"] and entry["judge_before"] == ref_entry["judge_before"]
    with checkpointing.Checkpointer(wd / "checkpoints") as a, \
            checkpointing.Checkpointer(ref / "checkpoints") as b:  # fmt: skip
        assert a.steps() == b.steps()
    assert_states_equal(rundir.restore(wd, step=STEPS).state, rundir.restore(ref, step=STEPS).state)


# --- 5. bad records: refused, nothing changed -----------------------------------------------------
def _contradicting(sources, tmp_path) -> tuple[Path, int]:
    old = pd.read_csv(sources[0] / "records.csv", dtype=str, keep_default_na=False)
    rows = old.iloc[[10, 20, 30]].copy()
    rows.iloc[1, rows.columns.get_loc("value")] = str(float(rows.iloc[1]["value"]) * 2 + 1)
    return update_data.write_records(tmp_path / "bad", rows), 2


def test_contradicting_records_refused_with_nothing_changed(parent, sources, tmp_path, capsys):
    wd = copy_run(parent, tmp_path / "run")
    digest = tree_digest(wd)
    bad, row = _contradicting(sources, tmp_path)
    status = update.main([f"--workdir={wd}", f"--records={bad}"])
    err = capsys.readouterr().err.strip()
    assert status == 2 and "\n" not in err, err
    assert err.startswith(f"error: {bad / 'records.csv'} row {row} (line {row + 1}), field 'value'")
    assert "contradicts the run's corpus" in err and "--on_conflict" in err
    assert tree_digest(wd) == digest and not (wd / update.STAGE).exists()
    # a malformed row: prepare's own validation, the same one line
    broken = update_data.write_records(tmp_path / "broken", pd.read_csv(
        bad / "records.csv", dtype=str, keep_default_na=False).assign(value="abc"))  # fmt: skip
    assert update.main([f"--workdir={wd}", f"--records={broken}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {broken / 'records.csv'} row 1 (line 2), field 'value'"), err
    assert tree_digest(wd) == digest


def test_conflict_resolutions(parent, sources, tmp_path):
    """keep: the run's value stays (nothing new: a no-op); replace: the new value is merged."""
    bad, _ = _contradicting(sources, tmp_path)
    cfg = config_lib.load_run_config(parent)
    old = update._read(str(sources[0]), cfg.data, "auto")
    new = update._read(str(bad), cfg.data)
    with pytest.raises(CorpusError, match="row 2"):
        update.resolve_conflicts(old, new, "error")
    o, n, counts = update.resolve_conflicts(old, new, "keep")  # the two equal ones confirm
    assert counts["conflicting_records"] == 1 and counts["confirmed_records"] == 2
    assert len(n.records) == 0 and len(o.records) == len(old.records)
    o, n, counts = update.resolve_conflicts(old, new, "replace")
    assert len(n.records) == 1 and len(o.records) == len(old.records) - 1
    assert float(n.records["value"].iloc[0]) == float(new.records["value"].iloc[1])
    wd = copy_run(parent, tmp_path / "run")
    digest = tree_digest(wd)
    assert update.run(wd, bad, settings(), on_conflict="keep", verbose=False) is None
    assert tree_digest(wd) == digest
