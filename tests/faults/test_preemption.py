"""SIGTERM / SIGINT: the step in flight finishes, its checkpoint is saved and waited for, the
command exits 75 with one line, and resuming loses no step (final state bit-identical)."""

from __future__ import annotations

import os
import signal

import pytest

from modellens_jax import checkpointing, jobguard, train, train_state
from tests.faults import common
from tests.faults.conftest import N, assert_states_equal, long_only


def _signal_at_step_4(monkeypatch, sig):
    real_next = train_state.DevicePrefetch.next
    calls = {"n": 0}

    def next_then_signal(self):
        calls["n"] += 1
        if calls["n"] == 4:  # while step 4 is being fetched (between checkpoints 3 and 6)
            os.kill(os.getpid(), sig)
        return real_next(self)

    monkeypatch.setattr(train_state.DevicePrefetch, "next", next_then_signal)
    return real_next


def test_sigterm_finishes_the_step_saves_it_and_stops(no_eval, workdir, monkeypatch):
    """The short-suite version (no reference run): the step in flight is saved."""
    _signal_at_step_4(monkeypatch, signal.SIGTERM)
    with pytest.raises(jobguard.Interrupted, match=f"interrupted by SIGTERM at step 4/{N}"):
        train.train_and_evaluate(  # one device: the shortest compile
            common.tiny_config(train__steps=N, mesh__data=1), workdir, verbose=False
        )
    with checkpointing.Checkpointer(workdir / "checkpoints") as ckpt:
        assert ckpt.steps() == [3, 4]
    assert not (workdir / ".workdir.lock").exists()
    assert signal.getsignal(signal.SIGTERM) is not None  # the previous handler is back


@long_only
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_the_step_and_resume_is_exact(no_eval, straight, workdir, monkeypatch, sig):
    real_next = _signal_at_step_4(monkeypatch, sig)
    config = common.tiny_config(train__steps=N)
    with pytest.raises(jobguard.Interrupted, match=f"interrupted by {sig.name} at step 4/{N}"):
        train.train_and_evaluate(config, workdir, verbose=False)
    monkeypatch.setattr(train_state.DevicePrefetch, "next", real_next)
    with checkpointing.Checkpointer(workdir / "checkpoints") as ckpt:
        assert ckpt.steps() == [3, 4]  # step 4 finished and saved: nothing lost
    assert not (workdir / ".workdir.lock").exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or callable(
        signal.getsignal(signal.SIGTERM)
    )
    res = train.train_and_evaluate(config, workdir, verbose=False)
    assert res.step == N
    assert_states_equal(res.state, straight[1])
    assert common.data_state(workdir, N) == common.data_state(straight[0], N)


@long_only
def test_sigterm_command_exits_75_with_one_line(corpus_dir, tmp_path):
    wd = common.workdir_with(corpus_dir, tmp_path / "wd")
    p = common.start_train(wd, "--config.train.steps=100000", "--config.train.checkpoint_every=1000",
                           "--config.train.log_every=5", cache=tmp_path / "cache")  # fmt: skip
    try:
        assert common.wait_for(lambda: common.logged_step(p.log_path) >= 10, timeout=180)
        p.send_signal(signal.SIGTERM)
        rc = p.wait(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    out = p.log_path.read_text()
    assert rc == jobguard.EXIT_INTERRUPTED, out[-3000:]
    lines = [ln for ln in common.error_lines(out) if not ln.startswith(("step ", "mesh ", "  "))]
    assert len(lines) == 1 and lines[0].startswith("interrupted by SIGTERM at step "), lines
    step = int(lines[0].split("at step ")[1].split("/")[0])
    assert step >= 10 and (wd / "checkpoints" / str(step)).is_dir()
    assert not list((wd / "checkpoints").glob("*orbax-checkpoint-tmp*"))
