"""Every checkpoint item is checksummed: a damaged state, iterator state or metadata of the
newest step is detected on restore, set aside, and the previous step restored (the run then
redoes the lost steps exactly)."""

from __future__ import annotations

import json
import shutil

import pytest

from modellens_jax import checkpointing, train
from tests.faults import common
from tests.faults.conftest import N, assert_states_equal, long_only


def damage_iterator(step_dir):
    f = step_dir / "data" / "process_0-of-1.json"
    d = json.loads(f.read_text())
    d["state"]["parent"]["next_index"] += 7  # valid JSON, another position in the stream
    f.write_text(json.dumps(d))


def unseal_iterator(step_dir):  # the state without its checksum wrapper
    f = step_dir / "data" / "process_0-of-1.json"
    f.write_text(json.dumps(json.loads(f.read_text())["state"]))


def damage_meta(step_dir):
    f = step_dir / "meta" / "metadata"
    d = json.loads(f.read_text())
    d["loop"]["evals_since_best"] = 5  # valid JSON, changes early stopping
    f.write_text(json.dumps(d))


def damage_state(step_dir):
    files = sorted((step_dir / "state").rglob("*"), key=lambda p: p.stat().st_size)
    data = bytearray(files[-1].read_bytes())
    mid = len(data) // 2
    data[mid : mid + 16] = bytes(255 - b for b in data[mid : mid + 16])
    files[-1].write_bytes(bytes(data))


DAMAGE = {"iterator": damage_iterator, "iterator_unsealed": unseal_iterator,
          "meta": damage_meta, "state": damage_state}  # fmt: skip


@long_only
@pytest.mark.parametrize("item", list(DAMAGE))
def test_damaged_item_detected_and_skipped(no_eval, straight, workdir, item, capsys):
    shutil.copytree(straight[0] / "checkpoints", workdir / "checkpoints")
    DAMAGE[item](workdir / "checkpoints" / str(N))
    res = train.train_and_evaluate(common.tiny_config(train__steps=N), workdir, verbose=True)
    out = capsys.readouterr().out
    assert f"checkpoint step {N} is corrupted" in out and "resumed from step 3" in out, out
    assert res.step == N
    assert_states_equal(res.state, straight[1])
    assert any((workdir / "checkpoints.corrupt").iterdir())


def test_item_checksums_unit():
    """The short-suite version: a sealed iterator state and metadata catch any edit."""
    it = checkpointing._IteratorState({"parent": {"next_index": 64}, "pending": [[1, 2]]})
    blob = json.loads(it.get_state())
    ok = checkpointing._IteratorState()
    ok.set_state(json.dumps(blob).encode())
    assert ok.sealed and ok.problem is None and ok.state == it.state
    blob["state"]["parent"]["next_index"] += 7
    bad = checkpointing._IteratorState()
    bad.set_state(json.dumps(blob).encode())
    assert bad.problem and "checksum mismatch" in bad.problem
    meta = checkpointing.seal_meta({"step": 6, "loop": {"evals_since_best": 0}})
    assert checkpointing.meta_problem(meta) is None
    meta["loop"]["evals_since_best"] = 5
    assert "checksum mismatch" in checkpointing.meta_problem(meta)


@long_only
def test_iterator_checksum_is_what_grain_reads(straight):
    d = common.data_state(straight[0], N)
    assert set(d) == {"sha256", "state"} and d["sha256"] == checkpointing._digest(d["state"])
    with checkpointing.Checkpointer(straight[0] / "checkpoints") as ckpt:
        meta = ckpt.read_meta(N)
    assert checkpointing.meta_problem(meta) is None and meta["iterator_sealed"]
