"""``python -m modellens_jax.score --bundle=B --pairs=pairs.csv [--models=models.csv]
[--datasets=datasets.csv] --out=scores.csv``

Batch scoring of (dataset, task, metric, model) rows. ``pairs.csv`` needs the columns
``dataset, task, metric, model``; ``models.csv`` / ``datasets.csv`` use the corpus format
(``model, family, params, model_desp`` / ``dataset, task, dataset_desp``) and must describe every
model or dataset the bundle has not seen (an error names the pairs row and field otherwise).
Output columns: ``dataset, task, metric, model, score, prior, residual``.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from collections.abc import Sequence

from modellens_jax import fsutil
from modellens_jax.serve import BundleError, InputError, Recommender

COLUMNS = ("dataset", "task", "metric", "model", "score", "prior", "residual")


def write_scores(rows: Sequence[dict], out: str | os.PathLike) -> None:
    """Writes ``rows`` as CSV with :data:`COLUMNS`, atomically (temp file + rename, mode 0644
    under the usual umask). ``out`` a directory: InputError."""

    def write(f):
        w = csv.DictWriter(f, COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({**r, **{k: f"{r[k]:.7g}" for k in ("score", "prior", "residual")}})

    try:
        fsutil.output_file(out)
    except ValueError as e:
        raise InputError(f"--out: {e}") from None
    fsutil.write_atomic(out, write)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: score every row of a pairs file from a bundle."""
    ap = argparse.ArgumentParser(
        prog="python -m modellens_jax.score",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--pairs", required=True, help="CSV: dataset, task, metric, model")
    ap.add_argument("--models", default=None, help="models.csv describing unseen models")
    ap.add_argument("--datasets", default=None, help="datasets.csv describing unseen datasets")
    ap.add_argument("--out", required=True, help="output CSV")
    args = ap.parse_args(argv)
    try:
        fsutil.output_file(args.out)
    except ValueError as e:  # before the bundle is loaded
        print(f"error: --out: {e}", file=sys.stderr)
        return 2
    try:
        rec = Recommender.load(args.bundle)
        rows = rec.score_pairs(args.pairs, models=args.models, datasets=args.datasets)
        write_scores(rows, args.out)
    except (BundleError, InputError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # disk full, read-only, permissions: nothing was written
        print(f"error: could not write {args.out}: {e.strerror or e}; nothing was written",
              file=sys.stderr)  # fmt: skip
        return 74
    unseen_m = len({r["model"] for r in rows if "model_id" in r["unknown"]})
    unseen_d = len({r["dataset"] for r in rows if "dataset_id" in r["unknown"]})
    print(
        f"scored {len(rows)} pairs ({unseen_m} models and {unseen_d} datasets without a "
        f"learned ID) -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
