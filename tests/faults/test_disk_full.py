"""A checkpoint or bundle that cannot be written (disk full): one line naming the step and the
last good checkpoint, no temporary directory left, exit 74; a rerun resumes.

Here the failure is simulated (``OSError(ENOSPC)`` from the save); ``python -m tests.faults.run``
also fills a real tiny tmpfs (``unshare -rm`` + ``mount -t tmpfs -o size=2m``) where the
machine allows unprivileged mount namespaces."""

from __future__ import annotations

import errno

import pytest

from modellens_jax import checkpointing, cli, jobguard, train
from tests.faults import common
from tests.faults.conftest import N, assert_states_equal, long_only


@long_only
def test_save_failure_is_one_line_and_rerun_resumes(no_eval, straight, workdir, monkeypatch):
    import orbax.checkpoint as ocp

    real = ocp.CheckpointManager.save

    def full_disk(self, step, *a, **k):
        if step == N:
            tmp = self.directory / f"{step}.orbax-checkpoint-tmp-123"
            (tmp / "state").mkdir(parents=True)  # what a half-written save leaves
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp / "state"))
        return real(self, step, *a, **k)

    monkeypatch.setattr(ocp.CheckpointManager, "save", full_disk)
    config = common.tiny_config(train__steps=N)
    with pytest.raises(checkpointing.CheckpointWriteError) as e:
        train.train_and_evaluate(config, workdir, verbose=False)
    msg = str(e.value)
    assert "\n" not in msg
    assert f"checkpoint of step {N}" in msg and "No space left on device (ENOSPC)" in msg
    assert "last good checkpoint is step 3" in msg
    ck = workdir / "checkpoints"
    assert sorted(d.name for d in ck.iterdir()) == ["3"]  # no temporaries, 3 intact
    assert not (workdir / ".workdir.lock").exists()
    monkeypatch.setattr(ocp.CheckpointManager, "save", real)
    res = train.train_and_evaluate(config, workdir, verbose=False)
    assert res.step == N
    assert_states_equal(res.state, straight[1])


def test_train_command_maps_write_error_to_74(capsys):
    def boom(fv):
        raise checkpointing.CheckpointWriteError("could not write the checkpoint of step 6 ...")

    assert cli.command(lambda fv: None, boom, "")([]) == jobguard.EXIT_IOERR
    assert capsys.readouterr().err.strip().count("\n") == 0


def test_export_command_maps_io_errors_to_one_line(tmp_path, monkeypatch, capsys):
    from safetensors import SafetensorError

    from modellens_jax import export

    for err in (OSError(errno.ENOSPC, "No space left on device"),
                SafetensorError("Error while serializing: I/O error: No space left on device "
                                "(os error 28)")):  # fmt: skip

        def fail(*a, err=err, **k):
            raise err

        monkeypatch.setattr(export, "_export", fail)
        rc = export.main([f"--workdir={tmp_path}", f"--out={tmp_path / 'bundle'}"])
        lines = capsys.readouterr().err.strip().splitlines()
        assert rc == jobguard.EXIT_IOERR and len(lines) == 1, lines
        assert "No space left on device (ENOSPC)" in lines[0]
        assert not list(tmp_path.iterdir())  # and the lock is released


@long_only
def test_export_to_a_full_disk(straight, tmp_path, monkeypatch, capsys):
    from modellens_jax import export

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(export, "save_file", full)
    out = tmp_path / "bundle"
    rc = export.main([f"--workdir={straight[0]}", f"--out={out}", "--platforms=cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == jobguard.EXIT_IOERR
    assert len(err) == 1 and "No space left on device (ENOSPC)" in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no bundle, no temp dir, no lock
