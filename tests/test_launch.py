"""The launchers in ``launch/``: syntax, usage text, the exact commands of ``DRY_RUN=1``, and the
process handling of the SLURM and multi-process scripts with a fake interpreter (the real
trainer's multi-process path is tested in ``tests/test_train.py``)."""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ["local.sh", "gpu.sh", "tpu_pod.sh", "slurm.sh", "multiprocess_local.sh"]
TRAIN = ["-m", "modellens_jax.train"]

# Stands in for python: writes its arguments (one a line) and some environment to
# $FAKE_OUT/args_<process id>.txt; with FAKE_FAIL_ID set, that process fails and the others hang.
FAKE_PYTHON = """#!/usr/bin/env bash
id=none
for a in "$@"; do case "$a" in --process_id=*) id=${a#--process_id=} ;; esac; done
printf '%s\\n' "$@" >"$FAKE_OUT/args_$id.txt"
echo "ENV XLA_FLAGS=${XLA_FLAGS:-} JAX_PLATFORMS=${JAX_PLATFORMS:-}" >>"$FAKE_OUT/args_$id.txt"
echo "process $id running"
if [[ -n "${FAKE_FAIL_ID:-}" ]]; then
  if [[ "$id" == "$FAKE_FAIL_ID" ]]; then sleep 0.3; echo "process $id fails"; exit 4; fi
  exec sleep 60
fi
"""


def sh(script: str, *args: str, env: dict[str, str] | None = None, timeout: float = 30):
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "DRY_RUN"))}
    for k in ("CONFIG", "WORKDIR", "PYTHON", "PORT", "TPU", "ZONE", "PROJECT", "XLA_FLAGS",
              "CUDA_VISIBLE_DEVICES", "COORD_HOST", "SKIP_INSTALL"):  # fmt: skip
        base.pop(k, None)
    return subprocess.run(
        ["bash", f"launch/{script}", *args], cwd=ROOT, env={**base, **(env or {})},
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def dry(script: str, *args: str, **env: str) -> list[list[str]]:
    """The command lines a launcher prints with DRY_RUN=1, each split as a shell would."""
    p = sh(script, *args, env={"DRY_RUN": "1", **env})
    assert p.returncode == 0, p.stderr
    return [shlex.split(line) for line in p.stdout.splitlines() if line.strip()]


@pytest.fixture
def fake_python(tmp_path):
    path = tmp_path / "fake_python"
    path.write_text(FAKE_PYTHON)
    path.chmod(0o755)
    out = tmp_path / "out"
    out.mkdir()
    return path, out


# --- every script -----------------------------------------------------------------------------
@pytest.mark.parametrize("script", SCRIPTS)
def test_syntax_mode_and_usage(script):
    path = ROOT / "launch" / script
    assert path.stat().st_mode & stat.S_IXUSR, f"{script} is not executable"
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0
    text = path.read_text()
    assert "set -euo pipefail" in text and "DRY_RUN" in text
    p = sh(script, "--help")
    assert p.returncode == 0 and "Usage" in p.stdout and "DRY_RUN=1" in p.stdout, p.stdout
    assert "set -euo" not in p.stdout  # only the comment block


# --- single process ---------------------------------------------------------------------------
def test_local_dry_run():
    assert dry("local.sh") == [
        ["python", *TRAIN, "--config=configs/default.py", "--workdir=runs/default"]
    ]
    assert dry("local.sh", "--config.train.steps=3", "--config.data.size_edges=(1, 2)",
               CONFIG="configs/default.py:tiny", WORKDIR="runs/a b", PYTHON="py") == [
        ["py", *TRAIN, "--config=configs/default.py:tiny", "--workdir=runs/a b",
         "--config.train.steps=3", "--config.data.size_edges=(1, 2)"],
    ]  # fmt: skip


def test_gpu_dry_run():
    assert dry("gpu.sh", "--config.train.steps=3") == [[
        "env", "JAX_PLATFORMS=cuda", "XLA_PYTHON_CLIENT_MEM_FRACTION=0.9", "python", *TRAIN,
        "--config=configs/default.py", "--workdir=runs/gpu", "--config.input.blocks=0",
        "--config.train.steps=3",
    ]]  # fmt: skip
    assert dry("gpu.sh", MEM_FRACTION="0.5", CUDA_VISIBLE_DEVICES="0,1",
               XLA_FLAGS="--xla_gpu_enable_latency_hiding_scheduler=true", WORKDIR="w")[0][:5] == [
        "env", "JAX_PLATFORMS=cuda", "XLA_PYTHON_CLIENT_MEM_FRACTION=0.5",
        "CUDA_VISIBLE_DEVICES=0,1", "XLA_FLAGS=--xla_gpu_enable_latency_hiding_scheduler=true",
    ]  # fmt: skip


# --- TPU pod ----------------------------------------------------------------------------------
def test_tpu_pod_dry_run():
    env = dict(TPU="v5e-32", ZONE="us-west4-a", WORKDIR="/mnt/nfs/runs/pod", PROJECT="proj")
    lines = dry("tpu_pod.sh", "--config.train.steps=3", "--config.data.source=my dir", **env)
    gc = ["gcloud", "compute", "tpus", "tpu-vm"]
    where = ["--zone=us-west4-a", "--worker=all", "--project=proj"]
    tar = "/tmp/modellens_jax_src.tar.gz"
    assert lines[:3] == [
        ["git", "archive", "--format=tar.gz", "-o", tar, "HEAD"],
        [*gc, "scp", tar, "v5e-32:~/", *where],
        [*gc, "ssh", "v5e-32", *where,
         "--command=mkdir -p ~/modellens-jax && tar xzf ~/modellens_jax_src.tar.gz -C "
         '~/modellens-jax && cd ~/modellens-jax && python3 -m pip install -q "jax[tpu]" -e .'],
    ]  # fmt: skip
    assert lines[3][:-1] == [*gc, "ssh", "v5e-32", *where]
    remote = lines[3][-1].removeprefix("--command=")
    cd, train = remote.split(" && ", 1)
    assert cd == "cd ~/modellens-jax"
    assert shlex.split(train) == [  # what each worker's shell runs
        "python3", *TRAIN, "--config=configs/default.py", "--workdir=/mnt/nfs/runs/pod",
        "--distributed", "--config.input.blocks=0", "--config.train.steps=3",
        "--config.data.source=my dir",
    ]  # fmt: skip
    assert len(dry("tpu_pod.sh", SKIP_INSTALL="1", **env)) == 1


def test_tpu_pod_refuses_bad_setup():
    p = sh("tpu_pod.sh", env=dict(DRY_RUN="1", TPU="t", ZONE="z", WORKDIR="gs://bucket/run"))
    assert p.returncode == 2 and "gcsfuse" in p.stderr
    p = sh("tpu_pod.sh", env=dict(DRY_RUN="1", ZONE="z", WORKDIR="/w"))
    assert p.returncode != 0 and "TPU" in p.stderr
    ok = dry("tpu_pod.sh", TPU="t", ZONE="z", WORKDIR="gs://b/r", ALLOW_GS="1", SKIP_INSTALL="1")
    assert "--workdir=gs://b/r" in ok[0][-1]


# --- SLURM ------------------------------------------------------------------------------------
def test_slurm_dry_run():
    lines = dry("slurm.sh", "--config.train.steps=3", SLURM_NTASKS="3", SLURM_JOB_ID="77",
                COORD_HOST="node1", WORKDIR="/shared/run")  # fmt: skip
    task = ["python", *TRAIN, "--config=configs/default.py", "--workdir=/shared/run",
            "--coordinator=node1:20077", "--num_processes=3", "--config.input.blocks=0",
            "--config.train.steps=3"]  # fmt: skip
    assert lines[0] == ["srun", "--kill-on-bad-exit=1", "bash", "-c",
                        'exec "$@" --process_id="$SLURM_PROCID"', "bash", *task]  # fmt: skip
    assert lines[1:] == [["#", "process", f"{i}:", *task, f"--process_id={i}"] for i in range(3)]
    assert dry("slurm.sh", COORD_HOST="h", PORT="29500")[0][-2] == "--num_processes=2"


def test_slurm_outside_a_job_refuses():
    p = sh("slurm.sh")
    assert p.returncode == 2 and "sbatch" in p.stderr


def test_slurm_tasks_get_their_process_id(tmp_path, fake_python):
    """The real script under a fake srun that starts one task per SLURM_PROCID."""
    python, out = fake_python
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    srun = bin_dir / "srun"
    srun.write_text(
        "#!/usr/bin/env bash\nshift  # --kill-on-bad-exit=1\n"
        'for ((i = 0; i < SLURM_NTASKS; i++)); do SLURM_PROCID=$i "$@" & done\nwait\n'
    )  # fmt: skip
    srun.chmod(0o755)
    env = dict(PATH=f"{bin_dir}:{os.environ['PATH']}", SLURM_JOB_ID="5", SLURM_NTASKS="2",
               COORD_HOST="n0", PYTHON=str(python), FAKE_OUT=str(out), WORKDIR="w")  # fmt: skip
    p = sh("slurm.sh", "--config.model.dropout=0.2", env=env)
    assert p.returncode == 0, p.stderr
    for i in range(2):
        args = (out / f"args_{i}.txt").read_text().splitlines()
        assert args[:-1] == [*TRAIN, "--config=configs/default.py", "--workdir=w",
                             "--coordinator=n0:20005", "--num_processes=2",
                             "--config.input.blocks=0", "--config.model.dropout=0.2",
                             f"--process_id={i}"]  # fmt: skip


# --- several processes on this machine --------------------------------------------------------
def test_multiprocess_local_dry_run():
    p = sh("multiprocess_local.sh", "--config.train.steps=2",
           env=dict(DRY_RUN="1", PORT="1234", WORKDIR="runs/mp", NUM_PROCESSES="3"))  # fmt: skip
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "mkdir -p runs/mp" and lines[-1] == "wait"

    def cmd(i):
        return ["env", "JAX_PLATFORMS=cpu", "XLA_FLAGS=--xla_force_host_platform_device_count=2",
                "python", *TRAIN, "--config=configs/default.py", "--workdir=runs/mp",
                "--coordinator=127.0.0.1:1234", "--num_processes=3", f"--process_id={i}",
                "--config.train.steps=2"]  # fmt: skip

    assert shlex.split(lines[1]) == [*cmd(0), "&"]
    for i in (1, 2):
        assert shlex.split(lines[1 + i]) == [*cmd(i), f">runs/mp/process_{i}.log", "2>&1", "&"]


def test_multiprocess_local_runs_and_stops_on_failure(tmp_path, fake_python):
    python, out = fake_python
    wd = tmp_path / "wd"
    env = dict(PYTHON=str(python), FAKE_OUT=str(out), PORT="1", WORKDIR=str(wd),
               DEVICES_PER_PROCESS="4", XLA_FLAGS="--xla_dump_to=/tmp/x")  # fmt: skip
    p = sh("multiprocess_local.sh", "--config.train.steps=2", env=env)
    assert p.returncode == 0, p.stderr
    assert "process 0 running" in p.stdout
    assert (wd / "process_1.log").read_text() == "process 1 running\n"
    args1 = (out / "args_1.txt").read_text().splitlines()
    assert "--coordinator=127.0.0.1:1" in args1 and args1[-2] == "--config.train.steps=2"
    assert args1[-1] == ("ENV XLA_FLAGS=--xla_dump_to=/tmp/x "
                         "--xla_force_host_platform_device_count=4 JAX_PLATFORMS=cpu")  # fmt: skip
    # process 1 fails: process 0 (hanging) is stopped and the launcher fails
    t0 = time.time()
    p = sh("multiprocess_local.sh", env={**env, "FAKE_FAIL_ID": "1"}, timeout=30)
    assert p.returncode == 1 and "stopping the others" in p.stderr
    assert time.time() - t0 < 20
