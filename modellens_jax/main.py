"""The main job: ``python -m modellens_jax.main --config=configs/default.py --workdir=DIR``.

Compiles the configured corpus (the shipped one by default) into ``DIR/corpus``, trains
(resuming if ``DIR`` holds checkpoints), evaluates the best checkpoint on the held-out test split
in all three settings against the baselines (``DIR/eval``), and exports a serving bundle
(``DIR/bundle``).
"""

from __future__ import annotations

from pathlib import Path

import jax
from absl import flags

from modellens_jax import cli, distributed

_CONFIG = cli.define_config_flag()
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory.", required=True)
_BASELINES = flags.DEFINE_string("baselines", "all", "Baselines to compare: all, none or a list.")


def main(argv) -> None:
    del argv
    from modellens_jax import evaluate, export, train

    distributed.initialize_from_flags()
    workdir = Path(_WORKDIR.value)
    train.train_and_evaluate(_CONFIG.value, workdir)
    if jax.process_index() == 0:
        evaluate.run(workdir, split="test", baselines=_BASELINES.value)
        out = export.export(workdir, workdir / "bundle")
        print(f"bundle: {out}\nrecommend: python -m modellens_jax.recommend --bundle={out} "
              '--dataset-desc="..." --task="..." --metric="..."')  # fmt: skip


if __name__ == "__main__":
    distributed.define_flags()
    cli.run(main)
