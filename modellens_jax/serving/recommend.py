"""``python -m modellens_jax.recommend --bundle=B --dataset_desc="…" --task=… --metric=…
[--dataset=NAME] [--candidates=models.csv] [--top_k=10] [--json] [--format=…]``

Ranks the models that can do the query's task (or the ``--candidates`` rows, corpus
``models.csv`` format: ``model, family, params, model_desp, release_date``; unseen models get
``[UNK]`` IDs) for one dataset and prints the top K with the score split into prior, cold-start
prior and residual (they add up to the score), the features that were unknown and why each model
is in the pool. Pools (``--pool``): ``task`` (default: models with records on the task),
``modality`` (on any task of its modality), ``all``. A task, metric or dataset the bundle does not
know is an error naming the closest known ones (``--list_tasks``, ``--list_metrics`` print
them); ``--new_task`` scores a task it has never seen, with the pool and context of the tasks of
the most similar known datasets. Filters: ``--max_params``/``--min_params`` (billions) and
``--families=a,b``.

Output formats (``--format``; ``--json`` = ``--format=json``)
-------------------------------------------------------------
``table``  a text table (default).

``json``   ``{"query": {...}, "results": [{rank, model, score, prior, residual, unknown, known,
           family, params, description, cold, pool[, score_std, confidence]}, ...]}``.

A seed-ensemble bundle (``--config=configs/default.py:ensemble``) adds two columns: ``± std``,
the members' spread of the score (the score is their mean), and ``confidence`` = 1 / (1 +
the expected number of places the model would move if each score were drawn from its members'
spread): 1 = no gap to another candidate is in doubt, 0.5 = about one place off
(``modellens_jax.serving.confidence``; over the ranked list after filters).

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

import json
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from typing import IO, Any

from absl import flags

from modellens_jax import cli, fsutil
from modellens_jax.serving.recommender import (
    POOLS,
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
            "routellm needs at least two ranked models (raise --top_k or relax filters)"
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
    ens = any(r.confidence is not None for r in results)  # a seed-ensemble bundle's results
    extra = f"  {'± std':>8}  {'confidence':>10}" if ens else ""
    lines.append(
        f"{'rank':>4}  {'model':<{w}}  {'score':>8}{extra}  {'prior':>8}  {'cold':>8}  "
        f"{'residual':>8}  {'params':>8}  {'family':<12}  unknown"
    )
    for r in results:
        p = f"{r.params:g}B" if r.params is not None else "?"
        extra = f"  {r.score_std or 0.0:>8.4f}  {r.confidence or 0.0:>10.3f}" if ens else ""
        lines.append(
            f"{r.rank:>4}  {r.model[:w]:<{w}}  {r.score:>8.4f}{extra}  {r.prior:>8.4f}  "
            f"{r.cold:>8.4f}  {r.residual:>8.4f}  {p:>8}  {r.family[:12]:<12}  "
            f"{','.join(r.unknown) or '-'}"
        )
    if not results:
        lines.append("(no model passes the filters)")
    else:
        lines.append(f"pool: {results[0].pool}; score = prior + cold + residual")
        if ens:
            lines.append("score: mean of the ensemble's members, ± their spread; confidence = "
                         "1 / (1 + expected places moved)")  # fmt: skip
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


def output_path(out: str | os.PathLike) -> None:
    """UsageError (exit 2) for an ``--out`` that cannot be a file, before any work is done."""
    try:
        fsutil.output_file(out)
    except ValueError as e:
        raise cli.UsageError(f"--out: {e}") from None


def write_output(out: str | os.PathLike, write: Callable[[IO], Any], *, text: bool = True) -> None:
    """Writes ``out`` atomically; a failed write (disk full, read-only, permissions) leaves as
    one line with exit status 74 (``cli.EXIT``), nothing written."""
    try:
        fsutil.write_atomic(out, write, text=text)
    except OSError as e:
        raise OSError(f"could not write {out}: {e.strerror or e}; nothing was written") from e


def _define(fv: flags.FlagValues) -> None:
    def s(name: str, default: str | None, help: str, **kw: Any) -> None:
        flags.DEFINE_string(name, default, help, flag_values=fv, **kw)

    s("bundle", None, "Bundle directory (from modellens_jax.export).", required=True)
    s("dataset_desc", None, "Description of the dataset (a new one is embedded).")
    s("task", None, "Task of the query (--list_tasks prints the known ones).")
    s("metric", None, "Metric of the query (--list_metrics prints the known ones).")
    s("dataset", None, "Dataset name (a known one uses its learned ID).")
    s("candidates", None, "models.csv of candidates (default: the query's pool of known models).")
    flags.DEFINE_integer("top_k", 10, "How many to print (0 = all).", flag_values=fv)
    flags.DEFINE_float("max_params", None, "Largest model size, billions of parameters.",
                       flag_values=fv)  # fmt: skip
    flags.DEFINE_float("min_params", None, "Smallest model size, billions of parameters.",
                       flag_values=fv)  # fmt: skip
    s("families", None, "Comma-separated family names to keep.")
    flags.DEFINE_enum("format", "table", FORMATS, "Output format (see above).", flag_values=fv)
    flags.DEFINE_bool("json", False, "Same as --format=json.", flag_values=fv)
    s("router", "mf", "RouteLLM router for --format=routellm.")
    s("out", None, "Write to this file instead of stdout.")
    flags.DEFINE_enum("pool", "task", POOLS, "Candidates: models with records on the task "
                      "(default), on its modality, or all.", flag_values=fv)  # fmt: skip
    flags.DEFINE_bool("new_task", False, "Accept a task the bundle has never seen (needs "
                      "--dataset_desc).", flag_values=fv)  # fmt: skip
    flags.DEFINE_bool("list_tasks", False, "Print the known tasks and exit.", flag_values=fv)
    flags.DEFINE_bool("list_metrics", False, "Print the known metrics and exit.", flag_values=fv)


def _run(fv: flags.FlagValues) -> None:
    if fv.list_tasks or fv.list_metrics:
        vocab = Recommender.load(fv.bundle).bundle.vocab
        print("\n".join(vocab["tasks" if fv.list_tasks else "metrics"][1:]))
        return
    if not (fv.dataset_desc or fv.dataset):
        raise cli.UsageError("give --dataset_desc (a new dataset) or --dataset (a known one)")
    fmt = "json" if fv.json else fv.format
    query = {"dataset": fv.dataset, "dataset_desc": fv.dataset_desc, "task": fv.task,
             "metric": fv.metric}  # fmt: skip
    if fv.out:
        output_path(fv.out)
    check_query(fv.top_k, fv.min_params, fv.max_params)  # before the bundle is loaded
    rec = Recommender.load(fv.bundle)
    results = rec.rank(
        fv.dataset_desc,
        fv.task,
        fv.metric,
        dataset=fv.dataset,
        candidates=fv.candidates,
        top_k=fv.top_k,
        max_params=fv.max_params,
        min_params=fv.min_params,
        families=fv.families.split(",") if fv.families else None,
        pool=fv.pool,
        new_task=fv.new_task,
    )
    text = render(results, query, fmt, fv.router)
    if fv.out:
        write_output(fv.out, lambda f: f.write(text + "\n"))
    else:
        print(text)


main = cli.command(_define, _run, __doc__)

if __name__ == "__main__":
    sys.exit(main())
