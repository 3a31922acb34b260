"""The main job: ``python -m modellens_jax.main --config=configs/default.py --workdir=DIR``.

Compiles the configured corpus (the shipped one by default) into ``DIR/corpus``, trains
(resuming if ``DIR`` holds checkpoints), evaluates the best checkpoint on the held-out test split
in all three settings against the baselines (``DIR/eval``), and exports a serving bundle
(``DIR/bundle``). With ``ensemble.members > 1`` (``configs/default.py:ensemble``) it trains the
seed ensemble in one program instead (``experiments.members.train_ensemble``; a finished one of
the same config is reused), evaluates the members' mean score and exports all members.
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax
from absl import flags

from modellens_jax import cli, distributed


def _define(fv: flags.FlagValues) -> None:
    cli.config_flag(fv)
    flags.DEFINE_string("workdir", None, "Run directory.", required=True, flag_values=fv)
    flags.DEFINE_string("baselines", "all", "Baselines to compare: all, none or a list.",
                        flag_values=fv)  # fmt: skip
    distributed.define_flags(fv)


def _run(fv: flags.FlagValues) -> None:
    from modellens_jax import ensemble, evaluate, export, train
    from modellens_jax.experiments import members

    distributed.initialize_from_flags(fv)
    workdir = Path(fv.workdir)
    if ensemble.size(fv.config) > 1:
        members.train_ensemble(fv.config, workdir)
    else:
        train.train_and_evaluate(fv.config, workdir)
    if jax.process_index() == 0:
        evaluate.run(workdir, split="test", baselines=fv.baselines)
        out = export.export(workdir, workdir / "bundle")
        print(f"bundle: {out}\nrecommend: python -m modellens_jax.recommend --bundle={out} "
              '--dataset_desc="..." --task="..." --metric="..."')  # fmt: skip


main = cli.command(_define, _run, __doc__)

if __name__ == "__main__":
    sys.exit(main())
