"""Evaluation reports: markdown tables, a JSON document and a PNG chart of ``compare`` results
(scorer -> setting -> {overall, by_source, by_modality}), shared by evaluate, ablations,
backtests and sweeps."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from modellens_jax.data import splits

MODEL_NAME = "modellens"  # the trained model's row in reports

# (key in the aggregate, column title) of the report tables.
REPORT_METRICS = (
    ("weighted_tau", "τ_w"),
    ("weighted_tau_pairs", "τ_w pairs"),
    ("weighted_tau_ref", "τ_ref"),
    ("weighted_tau_ref_pairs", "τ_ref pairs"),
    ("ndcg@1", "NDCG@1"),
    ("ndcg@10", "NDCG@10"),
    ("hit@1", "Hit@1"),
    ("hit@10", "Hit@10"),
    ("recall@10", "Rec@10"),
)


def fmt(x: float, digits: int = 3) -> str:
    """A metric for a table: 3 decimals, an em dash when undefined."""
    return "—" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table's lines."""
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def present_settings(results: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The settings of a report, in the canonical order (``unseen_both`` in backtests only)."""
    first = next(iter(results.values()), {})
    return [s for s in splits.ALL_SETTINGS if s in first]


def format_markdown(
    results: Mapping[str, Mapping[str, Mapping[str, Any]]],
    *,
    title: str,
    notes: Mapping[str, str] | None = None,
    preamble: list[str] | None = None,
) -> str:
    """Markdown report of :func:`compare` output (scorer -> setting -> report)."""
    names = list(results)
    settings = present_settings(results)
    lines = [f"# {title}", "", *list(preamble or [])]
    lines += [
        "## τ_w by setting",
        "",
        "Top-weighted weighted Kendall τ (hyperbolic weights 1/(rank+1)), plain mean over "
        "groups; the best "
        "per setting in bold.",
        "",
    ]
    best = {
        s: max(
            (results[n][s]["overall"].get("weighted_tau", float("nan")) for n in names),
            key=lambda v: v if math.isfinite(v) else -math.inf,
        )
        for s in settings
    }
    rows = []
    for n in names:
        cells = [n]
        for s in settings:
            v = results[n][s]["overall"].get("weighted_tau", float("nan"))
            cells.append(f"**{fmt(v)}**" if math.isfinite(v) and v == best[s] else fmt(v))
        rows.append(cells)
    lines += [*table(["scorer", *settings], rows), ""]
    for s in settings:
        first = results[names[0]][s]["overall"]
        lines += [
            f"## {s}: {int(first.get('num_groups', 0))} groups "
            f"({int(first.get('num_groups@10', 0))} with ≥ 10 models)",
            "",
        ]
        rows = [
            [n] + [fmt(results[n][s]["overall"].get(k, float("nan"))) for k, _ in REPORT_METRICS]
            for n in names
        ]
        lines += [*table(["scorer", *[t for _, t in REPORT_METRICS]], rows), ""]
    for kind, label in (("by_source", "source"), ("by_modality", "modality")):
        lines += [f"## τ_w by {label} (groups in parentheses)", ""]
        for s in settings:
            keys = list(results[names[0]][s][kind])
            if not keys:
                continue
            rows = []
            for key in keys:
                ng = int(results[names[0]][s][kind][key].get("num_groups", 0))
                rows.append(
                    [f"{key} ({ng})"]
                    + [
                        fmt(results[n][s][kind].get(key, {}).get("weighted_tau", float("nan")))
                        for n in names
                    ]
                )
            lines += [f"**{s}**", "", *table([label, *names], rows), ""]
    if notes:
        lines += ["## Notes", ""] + [f"- **{k}**: {v}" for k, v in notes.items()] + [""]
    return "\n".join(lines)


def write_chart(results: Mapping[str, Mapping[str, Mapping[str, Any]]], path: Path,
                title: str = "") -> bool:  # fmt: skip
    """Grouped bars of τ_w and NDCG@10 per setting and scorer; False when matplotlib is
    missing (optional extra ``[eval]``)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    names = list(results)
    settings = present_settings(results)
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), constrained_layout=True)
    width = 0.8 / max(len(names), 1)
    x = np.arange(len(settings))
    cmap = plt.get_cmap("tab10")
    for ax, (key, label) in zip(axes, (("weighted_tau", "τ_w"), ("ndcg@10", "NDCG@10"))):
        for i, n in enumerate(names):
            vals = [results[n][s]["overall"].get(key, float("nan")) for s in settings]
            ax.bar(x + (i - (len(names) - 1) / 2) * width, np.nan_to_num(vals), width,
                   label=n, color=cmap(i % 10), edgecolor="black" if n == MODEL_NAME else None)  # fmt: skip
        ax.set_xticks(x, settings)
        ax.set_ylabel(label)
        ax.axhline(0, color="black", linewidth=0.6)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8, ncol=2)
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def json_safe(x: Any) -> Any:
    """NaN/inf -> None, numpy scalars -> Python (strict JSON)."""
    if isinstance(x, Mapping):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def write_reports(
    out_dir: str | Path,
    results: Mapping[str, Any],
    *,
    title: str,
    meta: Mapping[str, Any],
    notes: Mapping[str, str] | None = None,
    preamble: list[str] | None = None,
    stem: str = "report",
) -> tuple[str, dict[str, Path]]:
    """Writes ``<stem>.md``, ``<stem>.json`` and ``<stem>.png`` (when matplotlib is installed);
    returns (markdown, written paths)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    notes = dict(notes or {})
    paths = {"md": out / f"{stem}.md", "json": out / f"{stem}.json", "png": out / f"{stem}.png"}
    if not write_chart(results, paths["png"], title):
        notes["chart"] = (
            "no PNG chart: matplotlib is not installed (pip install 'modellens-jax[eval]')"
        )
        del paths["png"]
    md = format_markdown(results, title=title, notes=notes, preamble=preamble)
    paths["md"].write_text(md + "\n")
    doc = json_safe({**meta, "notes": notes, "results": results})
    paths["json"].write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n")
    return md, paths
