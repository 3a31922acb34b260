"""``python -m modellens_jax.recommend --bundle=B --dataset-desc="…" --task=… --metric=…
[--dataset=NAME] [--candidates=models.csv] [--top-k=10] [--json] [--format=…]``

Ranks the models that can do the query's task (or the ``--candidates`` rows, corpus
``models.csv`` format: ``model, family, params, model_desp, release_date``; unseen models get
``[UNK]`` IDs) for one dataset and prints the top K with the score split into prior, cold-start
prior and residual (they add up to the score), the features that were unknown and why each model
is in the pool. Pools (``--pool``): ``task`` (default: models with records on the task),
``modality`` (on any task of its modality), ``all``. A task, metric or dataset the bundle does not
know is an error naming the closest known ones (``--list-tasks``, ``--list-metrics`` print
them); ``--new-task`` scores a task it has never seen, with the pool and context of the tasks of
the most similar known datasets. Filters: ``--max-params``/``--min-params`` (billions) and
``--families=a,b``.

Output formats (``--format``; ``--json`` = ``--format=json``)
-------------------------------------------------------------
``table``  a text table (default).

``json``   ``{"query": {...}, "results": [{rank, model, score, prior, residual, unknown, known,
           family, params, description, cold, pool}, ...]}``.

``routellm``  for lm-sys/RouteLLM, which routes each prompt between exactly two models, a
           *strong* and a *weak* one (``Controller(routers=[...], strong_model=...,
           weak_model=...)``; ``python -m routellm.openai_server --routers mf --strong-model …
           --weak-model …``). Mapping: ``strong_model`` = the top-ranked model; ``weak_model`` =
           the best-ranked model of the pool whose known size is smaller than the strong one's
           (else the second-ranked model). Written as ``{"controller": {"routers": [ROUTER],
           "strong_model": …, "weak_model": …}, "server_command": "python -m
           routellm.openai_server …", "pool": [...]}``, so ``Controller(**doc["controller"])``
           works as is. Model names are the corpus's; map them to your API's model IDs (LiteLLM
           names) if they differ. ``--router`` picks the router (default ``mf``).

``llmrouter``  for ulab-uiuc/LLMRouter, whose YAML configs point ``data_path.llm_data`` at a JSON
           object of candidate LLMs keyed by name, each ``{"size": "7B", "feature": "<text
           description>", "input_price": …, "output_price": …, "model": "<API model id>",
           "service": "<provider>"}``. Mapping: key and ``model`` = model name; ``size`` =
           params as ``"<billions>B"`` (``""`` when unknown, which LLMRouter parses as 0);
           ``feature`` = the model's description text; prices 0.0 and ``service`` "" are
           placeholders to fill in (ModelLens knows no prices); entries are in rank order and
           carry ``modellens_rank`` and ``modellens_score`` as extra keys. Save it with
           ``--out=llm_candidates.json`` and set ``data_path.llm_data`` to that file.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence
from typing import Any

from modellens_jax import fsutil
from modellens_jax.serve import (
    POOLS,
    BundleError,
    InputError,
    Recommendation,
    Recommender,
    check_query,
)

FORMATS = ("table", "json", "routellm", "llmrouter")


def routellm_config(results: Sequence[Recommendation], router: str = "mf") -> dict[str, Any]:
    """The top-K pool as a RouteLLM strong/weak pair (see the module docstring)."""
    if len(results) < 2:
        raise InputError(
            "routellm needs at least two ranked models (raise --top-k or relax filters)"
        )
    strong = results[0]
    smaller = [
        r
        for r in results[1:]
        if r.params is not None and strong.params is not None and r.params < strong.params
    ]
    weak = smaller[0] if smaller else results[1]
    cmd = [
        "python",
        "-m",
        "routellm.openai_server",
        "--routers",
        router,
        "--strong-model",
        strong.model,
        "--weak-model",
        weak.model,
    ]
    return {
        "controller": {
            "routers": [router],
            "strong_model": strong.model,
            "weak_model": weak.model,
        },
        "server_command": shlex.join(cmd),
        "pool": [r.as_dict() for r in results],
    }


def llmrouter_candidates(results: Sequence[Recommendation]) -> dict[str, dict[str, Any]]:
    """The top-K pool as LLMRouter ``llm_data`` (see the module docstring)."""
    return {
        r.model: {
            "size": f"{r.params:g}B" if r.params is not None else "",
            "feature": r.description or r.model,
            "input_price": 0.0,
            "output_price": 0.0,
            "model": r.model,
            "service": "",
            "modellens_rank": r.rank,
            "modellens_score": r.score,
        }
        for r in results
    }


def format_table(results: Sequence[Recommendation], query: dict[str, Any]) -> str:
    """A plain-text table, with the query on top."""
    q = ", ".join(f"{k}={v!r}" for k, v in query.items() if v not in (None, "", []))
    lines = [f"query: {q}"]
    w = max([len(r.model) for r in results] + [5])
    w = min(w, 60)
    lines.append(
        f"{'rank':>4}  {'model':<{w}}  {'score':>8}  {'prior':>8}  {'cold':>8}  "
        f"{'residual':>8}  {'params':>8}  {'family':<12}  unknown"
    )
    for r in results:
        p = f"{r.params:g}B" if r.params is not None else "?"
        lines.append(
            f"{r.rank:>4}  {r.model[:w]:<{w}}  {r.score:>8.4f}  {r.prior:>8.4f}  {r.cold:>8.4f}  "
            f"{r.residual:>8.4f}  {p:>8}  {r.family[:12]:<12}  "
            f"{','.join(r.unknown) or '-'}"
        )
    if not results:
        lines.append("(no model passes the filters)")
    else:
        lines.append(f"pool: {results[0].pool}; score = prior + cold + residual")
    return "\n".join(lines)


def render(
    results: Sequence[Recommendation], query: dict[str, Any], fmt: str, router: str = "mf"
) -> str:
    """``results`` in output format ``fmt``."""
    if fmt == "table":
        return format_table(results, query)
    if fmt == "json":
        doc: Any = {"query": query, "results": [r.as_dict() for r in results]}
    elif fmt == "routellm":
        doc = routellm_config(results, router)
    elif fmt == "llmrouter":
        doc = llmrouter_candidates(results)
    else:
        raise InputError(f"--format={fmt!r}: expected one of {', '.join(FORMATS)}")
    return json.dumps(doc, indent=1, ensure_ascii=False)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: rank models for a dataset from a bundle."""
    ap = argparse.ArgumentParser(
        prog="python -m modellens_jax.recommend",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--bundle", required=True, help="bundle directory (from modellens_jax.export)")
    ap.add_argument("--dataset-desc", default=None, help="description of the dataset")
    ap.add_argument("--task", default=None)
    ap.add_argument("--metric", default=None)
    ap.add_argument(
        "--dataset", default=None, help="dataset name (a known one uses its learned ID)"
    )
    ap.add_argument(
        "--candidates", default=None, help="models.csv of candidates (default: all known models)"
    )
    ap.add_argument("--top-k", type=int, default=10, help="how many to print (0 = all)")
    ap.add_argument("--max-params", type=float, default=None, help="billions")
    ap.add_argument("--min-params", type=float, default=None, help="billions")
    ap.add_argument("--families", default=None, help="comma-separated family names")
    ap.add_argument("--format", default="table", choices=FORMATS)
    ap.add_argument("--json", action="store_true", help="same as --format=json")
    ap.add_argument("--router", default="mf", help="RouteLLM router for --format=routellm")
    ap.add_argument("--out", default=None, help="write to this file instead of stdout")
    ap.add_argument("--pool", default="task", choices=POOLS,
                    help="candidates: models with records on the task (default), on its "
                    "modality, or all")  # fmt: skip
    ap.add_argument("--new-task", action="store_true",
                    help="accept a task the bundle has never seen (needs --dataset-desc)")  # fmt: skip
    ap.add_argument("--list-tasks", action="store_true", help="print the known tasks and exit")
    ap.add_argument("--list-metrics", action="store_true", help="print the known metrics, exit")
    args = ap.parse_args(argv)
    if args.list_tasks or args.list_metrics:
        try:
            vocab = Recommender.load(args.bundle).bundle.vocab
        except (BundleError, FileNotFoundError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print("\n".join(vocab["tasks" if args.list_tasks else "metrics"][1:]))
        return 0
    if not (args.dataset_desc or args.dataset):
        ap.error("give --dataset-desc (a new dataset) or --dataset (a known one)")
    fmt = "json" if args.json else args.format
    query = {
        "dataset": args.dataset,
        "dataset_desc": args.dataset_desc,
        "task": args.task,
        "metric": args.metric,
    }
    try:
        if args.out:
            fsutil.output_file(args.out)
        check_query(args.top_k, args.min_params, args.max_params)
    except (ValueError, InputError) as e:  # before the bundle is loaded
        print(f"error: {'--out: ' if not isinstance(e, InputError) else ''}{e}", file=sys.stderr)
        return 2
    try:
        rec = Recommender.load(args.bundle)
        results = rec.rank(
            args.dataset_desc,
            args.task,
            args.metric,
            dataset=args.dataset,
            candidates=args.candidates,
            top_k=args.top_k,
            max_params=args.max_params,
            min_params=args.min_params,
            families=args.families.split(",") if args.families else None,
            pool=args.pool,
            new_task=args.new_task,
        )
        text = render(results, query, fmt, args.router)
    except (BundleError, InputError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.out:
        try:
            fsutil.write_atomic(args.out, lambda f: f.write(text + "\n"))
        except OSError as e:
            print(f"error: could not write {args.out}: {e.strerror or e}; nothing was written",
                  file=sys.stderr)  # fmt: skip
            return 74
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
