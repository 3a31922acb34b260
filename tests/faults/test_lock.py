"""Two jobs on one directory: the second is refused with one line naming the holder (exit 2);
a lock whose process is gone is taken over."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from modellens_jax import jobguard, train
from tests.faults import common


@pytest.fixture
def live_pid():
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    yield p.pid
    p.kill()
    p.wait()


def _plant(directory, pid, host=None, command="train"):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / ".workdir.lock").write_text(json.dumps(
        {"pid": pid, "host": host or socket.gethostname(), "command": command,
         "started": "2026-01-01 00:00:00", "proc_start": jobguard._proc_start(pid)}))  # fmt: skip


def test_second_train_refused_naming_the_holder(workdir, live_pid):
    _plant(workdir, live_pid)
    with pytest.raises(jobguard.WorkdirLocked, match=rf"in use by pid {live_pid} on "):
        train.train_and_evaluate(common.tiny_config(), workdir, verbose=False)
    assert not (workdir / "checkpoints").exists() and not (workdir / "config.json").exists()


def test_other_host_lock_is_not_guessed_stale(tmp_path):
    _plant(tmp_path, 999999, host="some-other-node")
    with pytest.raises(jobguard.WorkdirLocked, match="some-other-node"):
        jobguard.WorkdirLock(tmp_path, "train").acquire()


def test_stale_lock_taken_over(tmp_path):
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()  # a pid that no longer runs
    _plant(tmp_path, p.pid)
    said = []
    with jobguard.WorkdirLock(tmp_path, "train", say=said.append):
        assert json.loads((tmp_path / ".workdir.lock").read_text())["pid"] != p.pid
    assert said and "stale lock" in said[0]
    assert not (tmp_path / ".workdir.lock").exists()


def test_lock_is_exclusive_within_a_process(tmp_path):
    a = jobguard.WorkdirLock(tmp_path, "train")
    a.acquire()
    try:
        with pytest.raises(jobguard.WorkdirLocked, match="train"):
            jobguard.WorkdirLock(tmp_path, "members").acquire()
    finally:
        a.release()
    jobguard.WorkdirLock(tmp_path, "members").acquire()


def test_export_into_a_locked_bundle_refused(tmp_path, live_pid, capsys):
    from modellens_jax import export

    out = tmp_path / "bundle"
    lk = tmp_path / f".{out.name}.export.lock"
    lk.write_text(json.dumps({"pid": live_pid, "host": socket.gethostname(), "command": "export"}))
    (tmp_path / "wd").mkdir()
    assert export.main([f"--workdir={tmp_path / 'wd'}", f"--out={out}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"in use by pid {live_pid}" in err[0]
    assert not out.exists()


def test_members_locks_each_member_dir(tmp_path, live_pid):
    from modellens_jax.experiments import members

    _plant(tmp_path / "a", live_pid)
    with pytest.raises(jobguard.WorkdirLocked, match=str(live_pid)):
        members.train_members(common.tiny_config(), tmp_path, [{"model.dropout": 0.1}],
                              names=["a"], verbose=False)  # fmt: skip
    assert not (tmp_path / "corpus").exists()


def test_sweep_root_lock(tmp_path, live_pid, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("_launch_sweep", common.ROOT / "launch/sweep.py")
    sweep = importlib.util.module_from_spec(spec)  # the sweep command
    spec.loader.exec_module(sweep)
    lk = tmp_path / ".sweep.lock"
    lk.write_text(json.dumps({"pid": live_pid, "host": socket.gethostname(), "command": "sweep"}))
    rc = sweep.main(["--config=configs/sweep_example.py:tiny", f"--workdir={tmp_path}"])
    assert rc == 2
    assert f"in use by pid {live_pid}" in capsys.readouterr().err
