"""Mutation testing of the numerics, data, checkpoint and serving code with mutmut (issue 20).

Usage (from the repository root, inside the venv; not part of CI)::

    nice -n 19 python tests/mutation/run.py                 # the scoped run (see SCOPES)
    nice -n 19 python tests/mutation/run.py --ref HEAD      # ... of the last commit
    nice -n 19 python tests/mutation/run.py --only optim    # one scope
    python tests/mutation/run.py --list                     # what each scope mutates and runs
    nice -n 19 python tests/mutation/run.py --all-functions # every function of each module
                                                            # (many hours on 2 cores)

Each scope copies the working tree into its own scratch directory (``--workdir``, default
``/tmp/modellens-mutation``), writes a ``setup.cfg`` ``[mutmut]`` section there (so the
repository's own ``pyproject.toml`` stays untouched) and runs ``mutmut run`` on the scope's
functions with only the scope's test files. mutmut rewrites each function into a trampoline
that dispatches on ``MUTANT_UNDER_TEST``, records which tests reach which function, and runs
only those tests per mutant. Workers fork from a fork server that has collected the tests
(``process_isolation = forkserver``, ``forkserver_warmup = collect``: JAX, Flax, the test
modules and the trampolined package are imported, but no XLA backend is started and nothing is
traced): forking after XLA has started its thread pools is unsafe, and a worker forked from a
process that had already traced a jitted function would replay the cached (unmutated) program.
Forking from mutmut's main process (``fork``), which has run the tests, would do both.

At the end the script prints, per scope and in total, killed / survived / timeout / no-tests
counts, the mutation score ``killed / (killed + survived)`` (timeouts count as killed, as in
mutmut; mutants no selected test reaches count as survived) and every survivor with its diff.

Why a scope lists functions: the modules yield ~5,000 mutants (mutmut mutates every operator,
constant and string, including error-message text), and a JAX test costs seconds per mutant,
so the whole set takes many hours on 2 cores. SCOPES keep the functions that compute results
(losses, metrics, batch construction, split assignment, ingestion checks, checksums,
schedule, dropout, bundle verification, serving filters) and skip message formatting via
``do_not_mutate_patterns`` (lines that only build an error or log message).

The serving tests need an exported bundle (~35 s of training and export): the script points
``MODELLENS_TEST_BUNDLE_CACHE`` at ``<workdir>-bundles/<commit>`` (a content hash without
``--ref``); ``tests/test_export.py::bundle`` exports it there once, during mutmut's first test
run, and each mutant's tests load a private copy.
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclasses.dataclass(frozen=True)
class Scope:
    name: str
    module: str  # path under the repository root
    tests: tuple[str, ...]  # pytest node ids / files run against this module's mutants
    functions: tuple[str, ...]  # function or Class.method names whose mutants are run


L, M, T, OPT, S, X = (
    f"tests/test_{m}.py::" for m in ("losses", "metrics", "train", "optim", "splits", "export")
)
SCOPES = (
    Scope("losses", "modellens_jax/losses.py",
          (L + "test_pointwise_matches_reference",
           L + "test_fully_padded_batch_is_zero_with_finite_grads",
           L + "test_bpr_matches_reference", L + "test_bpr_sampled",
           L + "test_bpr_sampled_zgap_weights_are_capped", L + "test_bpr_equals_rax_pairwise_logistic",
           L + "test_bad_options_raise", L + "test_sums_and_counts_keep_the_scores_float_dtype_under_x64"),
          ("pointwise_loss", "bpr_loss")),
    Scope("metrics", "modellens_jax/metrics.py",
          (M + "test_group_metrics_match_reference", M + "test_ties_break_by_slot",
           M + "test_padding_slots_change_nothing", M + "test_hit_keeps_the_input_float_dtype_under_x64"),
          ("_hit",)),
    Scope("pipeline", "modellens_jax/data/pipeline.py",
          (T + "test_stream_deterministic", T + "test_long_groups_covered_each_epoch",
           T + "test_epoch_order_depends_on_seed_and_epoch",
           T + "test_epoch_order_is_drawn_once_per_epoch_from_the_documented_stream"),
          ("TrainLists._epoch_perm",)),
    Scope("splits", "modellens_jax/data/splits.py",
          (S + "test_temporal_holdout_fractions_count_records",
           S + "test_temporal_holdout_without_dates_holds_out_nothing",
           S + "test_temporal_holdout_exact_boundaries",
           S + "test_temporal_holdout_counts_float32_weights_in_float64",
           S + "test_temporal_holdout_returns_int8_codes"),
          ("temporal_holdout",)),
    Scope("ingest", "modellens_jax/data/ingest.py",
          ("tests/test_ingest.py::test_bad_input_direct",
           "tests/test_ingest.py::test_bad_rows_skip_drops_and_counts",
           "tests/test_ingest.py::test_float32_maximum_itself_is_accepted",
           "tests/test_ingest.py::test_whole_number_columns_parse_as_float64"),
          ("_parse_float",)),
    Scope("checkpointing", "modellens_jax/checkpointing.py",
          (T + "test_checksum_sees_every_bit_of_every_element",
           T + "test_checksum_equals_the_documented_formula"),
          ("_leaf_checksum", "_verify")),
    Scope("optim", "modellens_jax/optim.py",
          (OPT + "test_cosine_schedule_matches_the_hand_computed_curve",
           OPT + "test_schedule_clamps_the_warm_up_below_the_run_length",
           OPT + "test_weight_decay_mask_by_parameter_path",
           OPT + "test_dense_optimizer_clips_the_global_norm_by_default",
           OPT + "test_dense_adamw_is_adam_with_the_sparse_tables_constants"),
          ("schedule", "make_optimizer")),
    Scope("model", "modellens_jax/model.py",
          ("tests/test_model.py::test_dropout_rescales_kept_units_by_one_over_keep",
           "tests/test_model.py::test_dropout_mask_does_not_depend_on_x64"),
          ("_dropout",)),
    Scope("bundle", "modellens_jax/serving/bundle.py",
          (X + "test_bucket_sizes", X + "test_tampered_or_incomplete_bundle_is_refused",
           X + "test_verify_checks_the_manifest_and_every_listed_file",
           X + "test_bundle_load_verifies_by_default_and_reads_every_part"),
          ("bucket", "verify", "Bundle.load")),
    Scope("recommender", "modellens_jax/serving/recommender.py",
          (X + "test_rank_filters_at_the_boundaries", X + "test_router_pools",
           X + "test_task_pool_and_its_model_side_are_cached",
           X + "test_check_query_refuses_exactly_the_impossible_queries",
           X + "test_rank_results_follow_the_score_matrix", X + "test_rank_candidates_and_query_checks",
           X + "test_rank_family_filter_is_case_insensitive",
           X + "test_rank_ties_defaults_caching_and_the_query_text"),
          ("check_query", "Recommender.rank")),
)  # fmt: skip
# The full lists of what the issue names (run with --only NAME --functions ... when there is
# time; each needs minutes to hours): losses bpr_loss/plackett_luce_loss/_sample_pairs,
# metrics _weighted_tau_core/_ndcg/_recall, pipeline Featurize.map/pack_rows, splits assign/
# stratified_holdout, ingest read_leaderboard checks, optim make_optimizer/_unique_rows, model
# Scorer.size_features/model_prior, the rest of serving (the bundle fixture is exported once per
# mutated commit into MODELLENS_TEST_BUNDLE_CACHE, so a serving mutant costs seconds).

# Lines that only build messages: mutating their text is not a behaviour change a test should
# pin (regexes over source lines, mutmut's do_not_mutate_patterns).
DO_NOT_MUTATE = (
    r"^\s*raise \w+\(",
    r"^\s*f?\"[^\"]*\"\s*$",
    r"^\s*f?\"[^\"]*\",?\s*$",
    r"print\(",
    r"warnings\.append\(",
    r"say\(",
)

# mutmut exit codes (mutmut.stats.status_by_exit_code) grouped for the score
KILLED = {1, 3, 36, -24, 24, 152, 37}
SURVIVED = {0, 5}
NO_TESTS = {33}


def _mangled(module: str, function: str) -> str:
    """mutmut's mutant-name glob for ``function`` ("f" or "Class.method") of ``module``."""
    dotted = module.removesuffix(".py").replace("/", ".")
    if "." in function:
        cls, meth = function.split(".")
        return f"{dotted}.xǁ{cls}ǁ{meth}__mutmut_*"
    return f"{dotted}.x_{function}__mutmut_*"


def _setup_cfg(scopes: list[Scope]) -> str:
    tests = sorted({t for s in scopes for t in s.tests})
    lines = [
        "[mutmut]",
        "source_paths = modellens_jax",
        "only_mutate =\n" + "\n".join(f"    {s.module}" for s in scopes),
        "also_copy =\n    configs",
        "pytest_add_cli_args_test_selection =\n" + "\n".join(f"    {t}" for t in tests),
        "pytest_add_cli_args =\n    -p\n    no:cacheprovider\n    -x\n    -q\n    -W\n    ignore",
        "process_isolation = forkserver",
        "forkserver_warmup = collect",
        "timeout_multiplier = 4.0",
        "timeout_constant = 30.0",
        "use_setproctitle = false",
        "use_git_change_detection = false",
        "do_not_mutate_patterns =\n" + "\n".join(f"    {p}" for p in DO_NOT_MUTATE),
    ]
    return "\n".join(lines) + "\n"


def _prepare(scopes: list[Scope], d: Path, ref: str | None) -> Path:
    """A scratch copy of the package, tests, configs and pyproject.toml (its pytest settings;
    it has no [tool.mutmut], so mutmut reads the generated setup.cfg): the working tree, or the
    commit ``ref`` (reproducible, and untouched by uncommitted edits of others)."""
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    parts = ("modellens_jax", "tests", "configs", "pyproject.toml")
    if ref:
        tar = subprocess.run(["git", "-C", str(ROOT), "archive", ref, *parts], check=True,
                             capture_output=True).stdout  # fmt: skip
        subprocess.run(["tar", "-x", "-C", str(d)], input=tar, check=True)
    else:
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "mutants", ".pytest_cache")
        for sub in parts[:3]:
            shutil.copytree(ROOT / sub, d / sub, ignore=ignore)
        shutil.copy(ROOT / "pyproject.toml", d / "pyproject.toml")
    (d / "setup.cfg").write_text(_setup_cfg(scopes))
    return d


def _bundle_cache(d: Path, ref: str | None, workdir: str) -> Path:
    """Where the serving tests keep the bundle they export once (``MODELLENS_TEST_BUNDLE_CACHE``,
    see ``tests/test_export.py::bundle``): one directory per mutated commit (per content hash of
    the copied tree without ``--ref``), next to the scratch directory, so reruns reuse it."""
    if ref:
        key = subprocess.run(["git", "-C", str(ROOT), "rev-parse", f"{ref}^{{commit}}"],
                             check=True, capture_output=True, text=True).stdout.strip()  # fmt: skip
    else:
        h = hashlib.sha256()
        for f in sorted(x for x in d.rglob("*") if x.is_file() and x.name != "setup.cfg"):
            h.update(str(f.relative_to(d)).encode() + b"\0" + f.read_bytes())
        key = "tree-" + h.hexdigest()[:16]
    return Path(workdir + "-bundles") / key


def _classify(d: Path, scope: Scope, all_functions: bool) -> dict:
    meta = d / "mutants" / (scope.module + ".meta")
    data = json.loads(meta.read_text()) if meta.is_file() else {}
    codes = data.get("exit_code_by_key", {})
    globs = ["*"] if all_functions else [_mangled(scope.module, f) for f in scope.functions]
    picked = {k: v for k, v in codes.items() if any(fnmatch.fnmatch(k, g) for g in globs)}
    out = {"killed": [], "survived": [], "no_tests": [], "not_run": [], "other": []}
    for k, v in sorted(
        picked.items(), key=lambda kv: (kv[0].rsplit("_", 1)[0], int(kv[0].rsplit("_", 1)[1]))
    ):
        key = ("not_run" if v is None else "killed" if v in KILLED else "survived" if v in SURVIVED
               else "no_tests" if v in NO_TESTS else "other")  # fmt: skip
        out[key].append(k if key != "other" else f"{k} (exit {v})")
    return out


def _diff(d: Path, name: str) -> str:
    r = subprocess.run(["mutmut", "show", name], cwd=d, capture_output=True, text=True)
    lines = [x for x in r.stdout.splitlines()
             if x.startswith(("+", "-")) and not x.startswith(("+++", "---"))]  # fmt: skip
    return " | ".join(x.strip() for x in lines)[:300]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", nargs="*", help="scope names (default: all)")
    ap.add_argument("--workdir", default="/tmp/modellens-mutation")
    ap.add_argument("--all-functions", action="store_true", help="every mutant of each module")
    ap.add_argument("--functions", nargs="*", help="override the scope's functions (one scope)")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--ref", help="mutate this commit (git archive) instead of the working tree")
    args = ap.parse_args(argv)
    scopes = [s for s in SCOPES if not args.only or s.name in args.only]
    if args.functions:
        scopes = [dataclasses.replace(s, functions=tuple(args.functions)) for s in scopes]
    if args.list:
        for s in scopes:
            print(f"{s.name}: {s.module} {', '.join(s.functions)}\n    tests: {' '.join(s.tests)}")
        return 0
    if shutil.which("mutmut") is None:
        print("mutmut not found: pip install mutmut (3.x)", file=sys.stderr)
        return 2
    d = _prepare(scopes, Path(args.workdir), args.ref)
    globs = (
        [] if args.all_functions else [_mangled(s.module, f) for s in scopes for f in s.functions]
    )
    cache = _bundle_cache(d, args.ref, args.workdir)
    cache.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MODELLENS_TEST_BUNDLE_CACHE": str(cache)}
    t0 = time.time()
    print(f"mutmut run in {d} (log: {d / 'mutmut.log'}; bundle cache {cache})", flush=True)
    with open(d / "mutmut.log", "w") as f:
        rc = subprocess.call(["mutmut", "run", "--max-children", "1", *globs], cwd=d, stdout=f,
                             stderr=subprocess.STDOUT, env=env)  # fmt: skip
    results = {}
    for s in scopes:
        r = results[s.name] = _classify(d, s, args.all_functions)
        r["diffs"] = {k: _diff(d, k) for k in r["survived"] + r["no_tests"]}
        print(f"[{s.name}] killed={len(r['killed'])} survived={len(r['survived'])} "
              f"no_tests={len(r['no_tests'])} not_run={len(r['not_run'])} other={len(r['other'])}")  # fmt: skip
    print(f"mutmut exit status {rc}")
    killed = sum(len(r["killed"]) for r in results.values())
    survived = sum(len(r["survived"]) + len(r["no_tests"]) for r in results.values())
    total = killed + survived
    score = 100.0 * killed / total if total else float("nan")
    print(f"\nmutation score: {killed}/{total} = {score:.1f} % "
          f"({time.strftime('%Y-%m-%d')}, {time.time() - t0:.0f} s)")  # fmt: skip
    for name, r in results.items():
        for k in r["survived"] + r["no_tests"]:
            tag = "no tests" if k in r["no_tests"] else "survived"
            print(f"  [{name}] {tag}: {k}\n      {r['diffs'].get(k, '')}")
        for k in r["other"] + r["not_run"]:
            print(f"  [{name}] not scored: {k}")
    if args.json:
        Path(args.json).write_text(json.dumps({"score": score, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    sys.exit(main())
