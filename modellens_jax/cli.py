"""The one command-line convention of every ``python -m modellens_jax.<command>``.

absl flags in ``--snake_case`` (``--config=configs/default.py[:preset]`` plus ``--config.x=y``
overrides where a command takes a config), parsed into a fresh ``FlagValues`` per call so that
``main(argv) -> exit status`` can also be called in-process; ``--help`` prints the command's
docstring and its own flags. Errors leave as one line ``error: ...`` on stderr with the status
of one table (``EXIT``): 2 bad input (a flag, a config typo, a corpus row, a query, a locked
workdir), 3 a run that cannot go on (diverged, mismatched or corrupted checkpoints), 74 an output
that cannot be written, 75 stopped by a signal after saving.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence

from absl import flags
from ml_collections import config_flags

from modellens_jax.jobguard import EXIT_INTERRUPTED, EXIT_IOERR, EXIT_RUN, EXIT_USAGE


class UsageError(ValueError):
    """A flag, config or argument that contradicts the data or another setting."""


# (module, class, exit status), most specific first. A class is looked up only when its module
# was imported, so a serving command never imports the trainer's modules to map its errors.
EXIT: tuple[tuple[str, str, int], ...] = (
    ("modellens_jax.jobguard", "Interrupted", EXIT_INTERRUPTED),
    ("modellens_jax.jobguard", "TrainingDiverged", EXIT_RUN),
    ("modellens_jax.checkpointing", "CheckpointMismatch", EXIT_RUN),
    ("modellens_jax.checkpointing", "CheckpointCorrupted", EXIT_RUN),
    ("modellens_jax.checkpointing", "CheckpointWriteError", EXIT_IOERR),
    ("modellens_jax.cli", "UsageError", EXIT_USAGE),
    ("modellens_jax.config_check", "ConfigError", EXIT_USAGE),
    ("modellens_jax.jobguard", "WorkdirLocked", EXIT_USAGE),
    ("modellens_jax.data.ingest", "CorpusError", EXIT_USAGE),
    ("modellens_jax.text.encoder", "EncoderError", EXIT_USAGE),
    ("modellens_jax.text.cache", "CacheError", EXIT_USAGE),
    ("modellens_jax.embed", "EmbedError", EXIT_USAGE),
    ("modellens_jax.export", "ExportError", EXIT_USAGE),
    ("modellens_jax.serving.bundle", "BundleError", EXIT_USAGE),
    ("modellens_jax.serving.recommender", "InputError", EXIT_USAGE),
    ("modellens_jax.experiments.sweep", "SweepError", EXIT_USAGE),
    ("builtins", "FileNotFoundError", EXIT_USAGE),
    ("builtins", "OSError", EXIT_IOERR),  # read-only, full or missing output filesystems
)


def exit_status(error: BaseException) -> int | None:
    """The exit status ``EXIT`` gives ``error``; None for an unexpected error (a bug: traceback)."""
    for module, name, status in EXIT:
        mod = sys.modules.get(module)
        cls = getattr(mod, name, None) if mod is not None else None
        if cls is not None and isinstance(error, cls):
            return status
    return None


DEFAULT_CONFIG = "configs/default.py"


def config_flag(fv: flags.FlagValues) -> None:
    """``--config=FILE[:preset]`` with ``--config.x=y`` overrides (typed, locked: typos fail)."""
    config_flags.DEFINE_config_file(
        "config", DEFAULT_CONFIG, "ml_collections config file[:preset].", flag_values=fv,
        lock_config=True, sys_argv=fv.argv,
    )  # fmt: skip


class FlagValues(flags.FlagValues):
    """absl ``FlagValues`` that knows the argv it will parse (config overrides read it)."""

    def __init__(self, argv: Sequence[str]):
        super().__init__()
        self.__dict__["argv"] = ["modellens_jax", *argv]


Define = Callable[[flags.FlagValues], None]
Body = Callable[[flags.FlagValues], "int | None"]


def command(define: Define, body: Body, doc: str | None) -> Callable[..., int]:
    """``main(argv=None) -> exit status`` for a command: ``define`` adds its flags (with
    ``flag_values=fv``) to a fresh ``FlagValues``, ``body`` runs with them parsed; errors map
    through ``EXIT``."""

    def main(argv: Sequence[str] | None = None) -> int:
        args = list(sys.argv[1:] if argv is None else argv)
        if any(a.startswith("--config.") for a in args) and not any(
            a.startswith("--config=") for a in args
        ):  # overrides of the default file: parse it with them, not when flags are defined
            args.insert(0, f"--config={DEFAULT_CONFIG}")
        fv = FlagValues(args)
        define(fv)
        if any(a in ("-h", "--help", "--helpshort", "--helpfull") for a in args):
            print((doc or "").strip() + "\n\nflags:\n" + fv.get_help(include_special_flags=False))
            return 0
        logging.getLogger("absl").setLevel(logging.WARNING)
        try:
            rest = fv(fv.argv)[1:]
            if rest:
                raise flags.Error(f"unexpected argument {rest[0]!r} (flags are --name=value)")
            if "config" in fv:
                fv["config"].value.to_dict()  # a config file that failed to load raises here
        except (flags.Error, OSError, AttributeError, KeyError, ValueError) as e:
            # at parse time these are all the user's flags: a config override naming no field
            # raises AttributeError inside ml_collections, a missing config file OSError
            print(f"error: {_flag_message(e)}", file=sys.stderr)
            return EXIT_USAGE
        try:
            status = body(fv)
        except Exception as e:
            status = exit_status(e)
            if status is None:
                raise
            print(f"error: {_one_line(e)}" if status != EXIT_INTERRUPTED else str(e),
                  file=sys.stderr, flush=True)  # fmt: skip
            return status
        return 0 if status is None else int(status)

    return main


def _flag_message(e: BaseException) -> str:
    """A parse error on one line; for a config file's own exception, its last line."""
    text = str(e.args[0]) if isinstance(e, (AttributeError, KeyError)) and e.args else str(e)
    if isinstance(e, (AttributeError, KeyError)):
        text = f"--config override names no config field: {text}"
    if "Traceback (most recent call last)" in text:
        text = text.split("Traceback (most recent call last)")[0] + text.strip().splitlines()[-1]
    return _one_line(text.replace("\\n", " ").replace("\\'", "'"))


def _one_line(e: BaseException | str) -> str:
    """An error's message on one line (absl and ml_collections messages can span several)."""
    return " ".join(str(e).split())
