"""Shared helpers of the fault-injection suite (``tests/faults``): the tiny preset, a compiled
corpus per session, the trainer as a subprocess, and the reference run to compare against."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
NO_DESC = [f"--config.model.use_{k}_desc=False" for k in ("model", "dataset")]


def config_module():
    spec = importlib.util.spec_from_file_location("_faults_config", ROOT / "configs/default.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_config(**overrides):
    """The tiny preset without descriptions; ``train__steps=9`` -> ``config.train.steps = 9``."""
    c = config_module().get_config("tiny")
    c.model.use_model_desc = c.model.use_dataset_desc = False
    c.train.eval_every = 100000  # validation only at the last step
    for key, value in overrides.items():
        node = c
        *path, last = key.split("__")
        for p in path:
            node = node[p]
        node[last] = value
    return c


def prepare_corpus(out: Path) -> Path:
    from modellens_jax import prepare

    prepare.prepare(config_module().get_config("tiny").data, out, verbose=False)
    return out


def workdir_with(corpus: Path, path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    shutil.copytree(corpus, path / "corpus")
    return path


def env(cache: Path | None = None, devices: int = 1) -> dict[str, str]:
    e = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    e["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    if cache is not None:
        e["JAX_COMPILATION_CACHE_DIR"] = str(cache)
        e["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    return e


def train_cmd(workdir: Path, *flags: str) -> list[str]:
    return [sys.executable, "-m", "modellens_jax.train", "--config=configs/default.py:tiny",
            f"--workdir={workdir}", *NO_DESC, "--config.train.eval_every=100000", *flags]  # fmt: skip


def start_train(workdir: Path, *flags: str, cache: Path | None = None, log: Path | None = None):
    log = log or workdir.parent / f"{workdir.name}.log"
    f = open(log, "w")
    p = subprocess.Popen(train_cmd(workdir, *flags), cwd=ROOT, env=env(cache), stdout=f,
                         stderr=subprocess.STDOUT)  # fmt: skip
    p.log_path = log  # type: ignore[attr-defined]
    return p


def run_train(workdir: Path, *flags: str, cache: Path | None = None, timeout: float = 300):
    return subprocess.run(train_cmd(workdir, *flags), cwd=ROOT, env=env(cache),
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def error_lines(stderr: str) -> list[str]:
    """stderr less absl's start-up INFO/WARNING lines (``I1201 12:00:00 ...``) and blanks."""
    return [ln for ln in stderr.splitlines()
            if ln.strip() and not re.match(r"^[IW]\d{4} \d", ln)]  # fmt: skip


def wait_for(pred, timeout: float = 120, every: float = 0.05) -> bool:
    t = time.time() + timeout
    while time.time() < t:
        if pred():
            return True
        time.sleep(every)
    return False


def logged_step(log: Path) -> int:
    """The last ``step N/M`` the trainer printed."""
    last = 0
    for ln in log.read_text(errors="replace").splitlines():
        if ln.startswith("step ") and "/" in ln:
            last = int(ln.split()[1].split("/")[0])
    return last


def final_params(workdir: Path, step: int) -> dict[str, np.ndarray]:
    """Every array of a checkpoint's state, read with tensorstore through orbax (host numpy)."""
    import orbax.checkpoint as ocp

    with ocp.PyTreeCheckpointer() as c:
        tree = c.restore(workdir / "checkpoints" / str(step) / "state")
    import jax

    return {jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree.leaves_with_path(tree)}


def same_params(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def data_state(workdir: Path, step: int) -> dict:
    return json.loads(
        (workdir / "checkpoints" / str(step) / "data" / "process_0-of-1.json").read_text()
    )
