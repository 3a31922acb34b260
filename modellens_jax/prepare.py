"""``python -m modellens_jax.prepare --config=configs/default.py --out=DIR``: records in,
validated compiled corpus out (atomically), with a progress line and a summary.

Overrides: ``--config.data.source=DIR`` (a corpus directory in either format),
``--config.data.direction_overrides='{"perplexity": -1}'`` (metric -> +1 higher / -1 lower is
better), or ``--direction_overrides='{"AP@0.5": 1}'`` (a JSON object, merged over the config's;
needed for metric names with dots, which a config key cannot hold).

Exit status 0 on success, 2 on bad input or config (one line ``error: <file> row N (line L),
field 'f': ...``); nothing is written at ``--out`` unless the whole corpus compiled.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from absl import flags

from modellens_jax import cli
from modellens_jax.data import corpus

_OVERRIDES_HELP = (
    "JSON object {metric: 1 | -1} merged over config data.direction_overrides, e.g. "
    '\'{"AP@0.5": 1, "perplexity": -1}\' (1 = higher is better, -1 = lower is better).'
)


def parse_overrides(text: str) -> dict[str, int]:
    """The ``--direction_overrides`` JSON object (UsageError when it is not one)."""
    if not text.strip():
        return {}
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise cli.UsageError(f"--direction_overrides={text!r}: invalid JSON ({e})") from e
    if not isinstance(obj, dict):
        raise cli.UsageError(f"--direction_overrides={text!r}: expected a JSON object")
    return obj


def prepare(
    data_cfg,
    out: str | Path,
    *,
    verbose: bool = True,
    direction_overrides: Mapping[str, int] | None = None,
) -> corpus.Corpus:
    """Compiles ``data_cfg.source`` into ``out``; returns the loaded corpus."""
    t0 = time.time()
    shown = False

    def progress(msg: str) -> None:
        nonlocal shown
        if verbose:
            shown = True
            print(
                f"\r[prepare {time.time() - t0:5.1f}s] {msg:<40}",
                end="",
                file=sys.stderr,
                flush=True,
            )

    config = json.loads(data_cfg.to_json_best_effort())
    if direction_overrides:
        config["direction_overrides"] = {
            **(config.get("direction_overrides") or {}),
            **dict(direction_overrides),
        }
    try:
        try:
            compiled = corpus.build(data_cfg, progress, direction_overrides=direction_overrides)
        except ValueError as e:  # split fractions and the like are config errors
            if isinstance(e, corpus.CorpusError):
                raise
            raise cli.UsageError(str(e)) from e
        progress("writing")
        corpus.write_corpus(compiled, Path(out), config=config)
    finally:
        if shown:
            print(file=sys.stderr)  # end the progress line (also before an error message)
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


def _define(fv) -> None:
    cli.config_flag(fv)
    flags.DEFINE_string("out", None, "Output directory of the compiled corpus.", required=True,
                        flag_values=fv)  # fmt: skip
    flags.DEFINE_string("direction_overrides", "", _OVERRIDES_HELP, flag_values=fv)


def _run(fv) -> None:
    c = prepare(fv.config.data, fv.out, direction_overrides=parse_overrides(fv.direction_overrides))
    print(format_summary(c))


main = cli.command(_define, _run, __doc__)

if __name__ == "__main__":
    sys.exit(main())
