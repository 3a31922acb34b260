"""Configs: load a config file (``FILE[:preset]``), read a run's own config, hash what a resume
must match. The one reader of config files and of ``WORKDIR/config.json``."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import ml_collections

from modellens_jax.cli import UsageError

# The sections that must match for a checkpoint to resume (``train.*`` may change: extending a
# run is allowed, and a changed ``train.steps`` is announced and recorded on resume).
STRUCTURAL_SECTIONS = ("data", "embed", "model", "loss", "input", "optim", "seed")
RUN_CONFIG = "config.json"


def load_module(path: str | Path, tag: str) -> ModuleType:
    """A config file as a module (configs are Python files with ``get_config``), loaded once
    per ``(tag, path)``; a missing file is a ``UsageError``."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such config file")
    name = f"_modellens_{tag}_{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    return sys.modules[name]


def load_file(spec: str, *args: Any) -> Any:
    """``get_config(preset, *args)`` of ``FILE[:preset]`` (the ``--config`` flag's syntax)."""
    path, _, preset = str(spec).partition(":")
    module = load_module(path, "config")
    return module.get_config(preset, *args) if preset or args else module.get_config()


def load_run_config(workdir: str | Path) -> ml_collections.ConfigDict:
    """The config a run was trained with (``WORKDIR/config.json``, the trainer's exact config)."""
    path = Path(workdir) / RUN_CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; is {path.parent} a training run directory?")
    try:
        return ml_collections.ConfigDict(json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError, ValueError) as e:
        raise UsageError(f"{path}: not a readable config ({e})") from e


def from_json(text: str) -> ml_collections.ConfigDict:
    """A config serialised by ``to_json_best_effort`` (checkpoint metadata, bundles)."""
    return ml_collections.ConfigDict(json.loads(text))


def config_hash(config: ml_collections.ConfigDict) -> str:
    """Hash of the ``STRUCTURAL_SECTIONS`` of a config: a checkpoint resumes only under the
    same hash."""
    d = json.loads(config.to_json_best_effort())
    sub = {k: d[k] for k in STRUCTURAL_SECTIONS if k in d}
    return hashlib.sha256(json.dumps(sub, sort_keys=True).encode()).hexdigest()[:16]
