"""Shared command-line plumbing: the ml_collections ``--config`` flag and clean error exits."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from absl import app, flags
from ml_collections import config_flags

from modellens_jax.config_check import ConfigError
from modellens_jax.data.ingest import CorpusError
from modellens_jax.jobguard import WorkdirLocked


class UsageError(ValueError):
    """A config or argument that contradicts the data or another setting."""


def define_config_flag() -> flags.FlagHolder:
    """``--config=configs/default.py[:preset]`` with ``--config.x=y`` overrides (locked)."""
    return config_flags.DEFINE_config_file(
        "config", "configs/default.py", "ml_collections config file.", lock_config=True
    )


def run(main: Callable[[list[str]], int | None]) -> None:
    """absl ``app.run`` that turns known input errors into one clear line and exit status 2
    (and other I/O errors, e.g. a read-only or full output filesystem, into one line and 74)."""

    def wrapped(argv: list[str]) -> int | None:
        logging.getLogger("absl").setLevel(logging.WARNING)
        try:
            return main(argv)
        except (CorpusError, UsageError, ConfigError, WorkdirLocked, FileNotFoundError) as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        except OSError as e:  # an output that cannot be written: read-only, full, a mountpoint
            print(f"error: {e}", file=sys.stderr)
            sys.exit(74)

    app.run(wrapped)
