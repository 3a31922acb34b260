"""Train several ablation presets and compare them with the baselines in one table.

  python -m modellens_jax.ablate --presets=main,listwise,semantic_only --workdir=ROOT \
      [--config.train.steps=N] [--split=test] [--baselines=all] [--base_preset=tiny]

Each preset of ``configs/ablations.py`` trains in ``ROOT/<preset>`` (``a,tiny`` -> ``a+tiny``;
resuming if it already has checkpoints; a finished run is not retrained) with the ``--config.*``
overrides applied on top of the preset (``--config`` itself only types the overrides: the
presets are always ``configs/ablations.py``'s). Presets whose data config agrees share one
compiled corpus (``ROOT/corpus``, linked into each run). Then every run's best checkpoint and
the baselines are evaluated by the same harness on the same groups and written to
``ROOT/ablation.{md,json,png}``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_collections
from absl import flags
from ml_collections import config_flags

from modellens_jax import cli, evaluate, report, rundir
from modellens_jax import config as config_lib
from modellens_jax.data import splits

CONFIG_FILE = Path(__file__).resolve().parents[2] / "configs" / "ablations.py"


def _ablations_module():
    if not CONFIG_FILE.exists():
        raise FileNotFoundError(f"{CONFIG_FILE}: the ablation presets live in the repository")
    return config_lib.load_module(CONFIG_FILE, "ablations")


def preset_config(
    preset: str, overrides: Mapping[str, Any] | None = None
) -> ml_collections.ConfigDict:
    """``configs/ablations.py:<preset>`` with flat dotted ``overrides`` (``{"train.steps": 50}``)."""
    c = _ablations_module().get_config(preset)
    for key, value in (overrides or {}).items():
        *parents, leaf = key.split(".")
        node = c
        for p in parents:
            node = node[p]
        if leaf not in node:
            raise KeyError(f"--config.{key}: no such config key")
        node[leaf] = value
    return c


def run_dir(root: Path, preset: str) -> Path:
    """``ROOT/<preset>``; a preset with default.py presets appended (``a,tiny``) -> ``a+tiny``."""
    return Path(root) / preset.replace(",", "+")


def _data_json(c: ml_collections.ConfigDict) -> str:
    return json.dumps(json.loads(c.data.to_json_best_effort()), sort_keys=True)


def run(
    presets: Sequence[str],
    root: str | Path,
    *,
    overrides: Mapping[str, Any] | None = None,
    split: str = "test",
    baselines: str = "all",
    base_preset: str = "",
    seed: int = 0,
    verbose: bool = True,
) -> dict[str, Any]:
    """Trains each preset (resuming), evaluates all with the baselines; returns the report.
    ``base_preset`` (e.g. ``tiny``) is a ``configs/default.py`` preset added to every one."""
    from modellens_jax import baselines as baselines_lib
    from modellens_jax import prepare, train

    say = print if verbose else (lambda *a, **k: None)
    presets = list(dict.fromkeys(p.strip() for p in presets if p.strip()))
    if not presets:
        raise cli.UsageError("--presets: name at least one preset")
    if split not in splits.SPLITS or split == "train":
        raise cli.UsageError(f"--split={split!r}: expected test or val")
    names = baselines_lib.parse_names(baselines)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    base = f",{base_preset}" if base_preset else ""
    try:
        configs = {p: preset_config(p + base, overrides) for p in presets}
    except (KeyError, ValueError) as e:  # an unknown preset or override key
        raise cli.UsageError(str(e.args[0]) if isinstance(e, KeyError) else str(e)) from e
    shared = root / "corpus"
    first_data = _data_json(configs[presets[0]])

    steps = {}
    for p, cfg in configs.items():
        wd = run_dir(root, p)
        wd.mkdir(parents=True, exist_ok=True)
        if not (wd / "corpus").exists() and _data_json(cfg) == first_data:
            if not (shared / "manifest.json").exists():
                prepare.prepare(cfg.data, shared, verbose=verbose)
            (wd / "corpus").symlink_to(Path("..") / "corpus", target_is_directory=True)
        say(f"=== {p}: training in {wd}")
        res = train.train_and_evaluate(cfg, wd, verbose=verbose)
        steps[p] = res.step

    results: dict[str, Any] = {}
    tables0 = None
    restored_steps = {}
    for p in presets:
        restored = rundir.restore(run_dir(root, p))
        tables, step = restored.tables, restored.step
        restored_steps[p] = step
        say(f"=== {p}: evaluating step {step} on {split}")
        results[p] = evaluate.evaluate_report(
            evaluate.ModelScorer.of(restored), tables, splits.SPLITS[split]
        )
        if tables0 is None:
            tables0 = tables
        elif tables.corpus.fingerprint != tables0.corpus.fingerprint:
            say(f"warning: {p} was trained on another corpus; its groups differ from the others")
    notes: dict[str, str] = {}
    if names:
        btables, note = evaluate.baseline_tables(tables0)
        if note:
            notes["descriptions"] = note
        fitted, skipped = baselines_lib.fit_all(btables, names, seed=seed, say=say)
        notes.update({f"{k} skipped": v for k, v in skipped.items()})
        results.update(evaluate.compare(fitted, tables0, splits.SPLITS[split], say=say))
    preamble = [
        f"Presets of `configs/ablations.py` trained under `{root}` and evaluated on the **{split}** "
        f"split (best checkpoint by validation), with overrides `{dict(overrides or {})}`; "
        "baselines fit on the training records only. Every row is scored on the same groups.",
        "",
        "| preset | checkpoint step | steps trained |",
        "|---|---|---|",
        *[f"| {p} | {restored_steps[p]} | {steps[p]} |" for p in presets],
        "",
    ]
    meta = {
        "root": str(root),
        "presets": presets,
        "overrides": dict(overrides or {}),
        "split": split,
        "checkpoint_steps": restored_steps,
        "corpus_fingerprint": tables0.corpus.fingerprint,
    }
    md, paths = report.write_reports(root, results, title=f"Ablations ({split} split)",
                                     meta=meta, notes=notes, preamble=preamble,
                                     stem="ablation")  # fmt: skip
    say(md)
    say("wrote " + ", ".join(str(p) for p in paths.values()))
    return {**meta, "notes": notes, "results": results}


def _define(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("presets", "main", "Comma list of configs/ablations.py presets.",
                        flag_values=fv)  # fmt: skip
    flags.DEFINE_string("workdir", None, "Root directory: one run per preset.", required=True,
                        flag_values=fv)  # fmt: skip
    flags.DEFINE_enum("split", "test", ["test", "val"], "Held-out split to compare on.",
                      flag_values=fv)  # fmt: skip
    flags.DEFINE_string("baselines", "all", "all, none, or a comma list of baseline names.",
                        flag_values=fv)  # fmt: skip
    flags.DEFINE_string("base_preset", "", "configs/default.py preset(s) added to every preset "
                        "(e.g. tiny).", flag_values=fv)  # fmt: skip
    flags.DEFINE_integer("seed", 0, "Seed of the random baseline.", flag_values=fv)
    cli.config_flag(fv)


def _run(fv: flags.FlagValues) -> None:
    overrides = config_flags.get_override_values(fv["config"])
    run(fv.presets.split(","), fv.workdir, overrides=overrides, split=fv.split,
        baselines=fv.baselines, base_preset=fv.base_preset, seed=fv.seed)  # fmt: skip


main = cli.command(_define, _run, __doc__)

if __name__ == "__main__":
    sys.exit(main())
