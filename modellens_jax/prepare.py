"""``python -m modellens_jax.prepare --config=configs/default.py --out=DIR``: records in,
validated compiled corpus out (atomically), with a progress line and a summary."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from absl import flags

from modellens_jax import cli
from modellens_jax.data import corpus

_CONFIG = cli.define_config_flag()
_OUT = flags.DEFINE_string("out", None, "Output directory of the compiled corpus.", required=True)


def prepare(data_cfg, out: str | Path, *, verbose: bool = True) -> corpus.Corpus:
    """Compiles ``data_cfg.source`` into ``out``; returns the loaded corpus."""
    t0 = time.time()

    def progress(msg: str) -> None:
        if verbose:
            print(
                f"\r[prepare {time.time() - t0:5.1f}s] {msg:<40}",
                end="",
                file=sys.stderr,
                flush=True,
            )

    try:
        compiled = corpus.build(data_cfg, progress)
    except ValueError as e:  # split fractions and the like are config errors
        if isinstance(e, corpus.CorpusError):
            raise
        raise cli.UsageError(str(e)) from e
    progress("writing")
    corpus.write_corpus(compiled, Path(out), config=json.loads(data_cfg.to_json_best_effort()))
    if verbose:
        print(file=sys.stderr)
    return corpus.load_corpus(out)


def format_summary(c: corpus.Corpus) -> str:
    """A human-readable summary of a compiled corpus."""
    r = c.manifest["report"]
    lines = [
        f"corpus {c.dir}  fingerprint {c.fingerprint[:16]}",
        f"  records {r['records']:,} (read {r['records_read']:,}; duplicates merged "
        f"{r['duplicates_merged']:,}; lower-is-better flipped {r['lower_is_better_flipped']:,})",
        f"  models {r['models']:,}  datasets {r['datasets']:,}  groups {r['groups']:,}  "
        f"tasks {r['tasks']}  metrics {r['metrics']}  families {r['families']}",
        f"  group size median {r['group_size']['median']:g}, max {r['group_size']['max']:,}",
        f"  groups kept out (< min models): {r['groups_too_small']} "
        f"({r['records_in_small_groups']} records)",
        f"  rejected rows: {r.get('rejected', {}) or 'none'}",
        f"  models with known size {r['models_with_size']:,}; size buckets {r['size_buckets']}",
        f"  families derived from names: {r['families_derived_from_name']}; models without "
        f"metadata: {r['models_without_metadata']}",
        f"  splits {r['splits']}",
        f"  learned ids: models {r['learned_model_ids']:,}, datasets {r['learned_dataset_ids']:,}",
    ]
    lines += [f"  warning: {w}" for w in r.get("warnings", [])]
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    del argv
    c = prepare(_CONFIG.value.data, _OUT.value)
    print(format_summary(c))


if __name__ == "__main__":
    cli.run(main)
