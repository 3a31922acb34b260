"""The launchers pass preemption signals on: SLURM sends SIGTERM 120 s before the limit and
execs down to the trainer; the local multi-process launcher forwards SIGTERM / SIGINT once to
every process, waits for their checkpoints and exits 75."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from tests.faults.common import ROOT, wait_for

FAKE = """#!/usr/bin/env python3
import os, signal, sys, time
pid = [a for a in sys.argv if a.startswith("--process_id=")][0].split("=")[1]
out = os.environ["FAKE_OUT"]
def stop(signum, frame):
    with open(f"{out}/signals_{pid}.txt", "a") as f:
        f.write(signal.Signals(signum).name + "\\n")
    time.sleep(0.5)  # "saving a checkpoint"
    sys.exit(75)
signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
open(f"{out}/ready_{pid}", "w").close()
time.sleep(60)
sys.exit(0)
"""


def test_slurm_asks_for_a_warning_signal_and_execs():
    text = (ROOT / "launch" / "slurm.sh").read_text()
    assert "#SBATCH --signal=TERM@120" in text
    assert 'exec "$@" --process_id' in text and 'exec "${launch[@]}"' in text
    for script in ("local.sh", "gpu.sh"):
        assert 'exec "${cmd[@]}"' in (ROOT / "launch" / script).read_text()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_multiprocess_launcher_forwards_and_waits(tmp_path, sig):
    fake = tmp_path / "python"
    fake.write_text(FAKE)
    fake.chmod(0o755)
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "PYTHON": str(fake), "FAKE_OUT": str(out), "PORT": "1",
           "WORKDIR": str(tmp_path / "wd"), "NUM_PROCESSES": "3"}  # fmt: skip
    # A shell cannot trap a signal it was started with ignored (background jobs of a
    # non-interactive shell ignore SIGINT), so the launcher starts with the default handlers.
    p = subprocess.Popen(["bash", str(ROOT / "launch" / "multiprocess_local.sh")], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    try:
        n = int(env["NUM_PROCESSES"])
        assert wait_for(lambda: len(list(out.glob("ready_*"))) == n, timeout=30)
        time.sleep(0.2)
        p.send_signal(sig)
        _, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 75, err
    for i in range(n):  # every process got the signal exactly once, and finished
        assert (out / f"signals_{i}.txt").read_text() == f"{sig.name}\n"
    assert "passing it on" in err
