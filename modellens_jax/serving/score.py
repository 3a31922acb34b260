"""``python -m modellens_jax.score --bundle=B --pairs=pairs.csv [--models=models.csv]
[--datasets=datasets.csv] --out=scores.csv``

Batch scoring of (dataset, task, metric, model) rows. ``pairs.csv`` needs the columns
``dataset, task, metric, model``; ``models.csv`` / ``datasets.csv`` use the corpus format
(``model, family, params, model_desp`` / ``dataset, task, dataset_desp``) and must describe every
model or dataset the bundle has not seen (an error names the pairs row and field otherwise).
Output columns: ``dataset, task, metric, model, score, prior, residual`` (and ``score_std``,
the members' spread, from a seed-ensemble bundle, whose ``score`` is the members' mean).
"""

from __future__ import annotations

import csv
import os
import sys
from collections.abc import Sequence

from absl import flags

from modellens_jax import cli, fsutil
from modellens_jax.serving.recommend import output_path, write_output
from modellens_jax.serving.recommender import InputError, Recommender

COLUMNS = ("dataset", "task", "metric", "model", "score", "prior", "residual")


def write_scores(rows: Sequence[dict], out: str | os.PathLike) -> None:
    """Writes ``rows`` as CSV with :data:`COLUMNS`, atomically (temp file + rename, mode 0644
    under the usual umask). ``out`` a directory: InputError."""

    cols = (*COLUMNS, "score_std") if rows and "score_std" in rows[0] else COLUMNS
    nums = [k for k in cols if k in ("score", "prior", "residual", "score_std")]

    def write(f):
        w = csv.DictWriter(f, cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({**r, **{k: f"{r[k]:.7g}" for k in nums}})

    try:
        fsutil.output_file(out)
    except ValueError as e:
        raise InputError(f"--out: {e}") from None
    write_output(out, write)


def _define(fv: flags.FlagValues) -> None:
    def s(name: str, help: str, required: bool = False) -> None:
        flags.DEFINE_string(name, None, help, required=required, flag_values=fv)

    s("bundle", "Bundle directory (from modellens_jax.export).", required=True)
    s("pairs", "CSV of the rows to score: dataset, task, metric, model.", required=True)
    s("models", "models.csv describing the models the bundle has not seen.")
    s("datasets", "datasets.csv describing the datasets the bundle has not seen.")
    s("out", "Output CSV.", required=True)


def _run(fv: flags.FlagValues) -> None:
    output_path(fv.out)  # before the bundle is loaded
    rec = Recommender.load(fv.bundle)
    rows = rec.score_pairs(fv.pairs, models=fv.models, datasets=fv.datasets)
    write_scores(rows, fv.out)
    unseen_m = len({r["model"] for r in rows if "model_id" in r["unknown"]})
    unseen_d = len({r["dataset"] for r in rows if "dataset_id" in r["unknown"]})
    print(
        f"scored {len(rows)} pairs ({unseen_m} models and {unseen_d} datasets without a "
        f"learned ID) -> {fv.out}"
    )


main = cli.command(_define, _run, __doc__)

if __name__ == "__main__":
    sys.exit(main())
