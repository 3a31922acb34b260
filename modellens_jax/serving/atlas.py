"""An atlas of a bundle's learned space: 2-D maps of its models and datasets, with each node's
top-K counterparts.

``python -m modellens_jax.atlas --bundle=B --out=atlas.png|atlas.html|atlas.json
[--method=tsne|pca] [--top_k=10] [--color=family|modality|task] [--cache_dir=D] [--nocache]``

What is projected (only the bundle's exported functions are used, never the training code):

- **models, learned**: the scorer's model side, the model half of its first layer
  (``Recommender.model_side``: learned ID, name tokens, description, size, family, release);
- **datasets, learned**: each dataset's score profile over a fixed set of anchor models (the
  known models with records on the most tasks), centred and scaled per dataset, so two datasets
  lie close when the scorer orders the same models alike for them;
- **semantic only**: the frozen description embeddings alone (``models/model_desc``,
  ``datasets/dataset_desc``), as in the paper's comparison figure; absent when the bundle's
  model does not use descriptions.

Each known dataset's top-K models are what ``Recommender.rank(dataset=D)`` returns (its task's
pool, metric unknown: a bundle records no metric per dataset); a model's best datasets are
those where it ranks highest within that pool (rank / pool size), over the datasets of the tasks
it has records on. The projection (t-SNE by default, scikit-learn; ``pca`` needs only numpy) is
cached by the bundle's manifest digest, so a service computes it once per bundle.
"""

from __future__ import annotations

import gzip
import hashlib
import html
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from absl import flags

from modellens_jax import cli, fsutil
from modellens_jax.serving.recommender import InputError, Recommender

ATLAS_VERSION = 1
METHODS = ("tsne", "pca")
COLORS = ("family", "modality", "task")
ANCHORS = 512  # anchor models of the datasets' score profiles
CHUNK = 64  # datasets scored per call
SMALL_MAP = 2000  # t-SNE of fewer points runs single-threaded
WEB_DIR = Path(__file__).resolve().parent.parent / "web"
# the page's palette (web/atlas.js): the 12 most frequent values get a colour, the rest grey
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#17becf", "#bcbd22", "#393b79", "#637939", "#843c39")  # fmt: skip


def bundle_fingerprint(rec: Recommender) -> str:
    """sha256 of the bundle's manifest (which holds every file's sha256): one per bundle."""
    blob = json.dumps(rec.bundle.manifest, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/modellens_jax/atlas`` (``~/.cache/...``), as the bench corpus cache."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "modellens_jax" / "atlas"


# --- projection -----------------------------------------------------------------------------
def project(x: np.ndarray, method: str = "tsne", *, seed: int = 0) -> np.ndarray:
    """``[N, D] -> [N, 2]`` coordinates scaled into [-1, 1]: PCA (numpy SVD), or t-SNE
    (scikit-learn, after PCA to 50 dimensions, PCA-initialised, seeded: deterministic)."""
    if method not in METHODS:
        raise InputError(f"--method={method!r}: expected one of {', '.join(METHODS)}")
    x = np.asarray(x, np.float64)
    n = len(x)
    if n == 0:
        return np.zeros((0, 2), np.float32)
    x = x - x.mean(0, keepdims=True)
    if n < 3 or not np.any(x):
        out = np.zeros((n, 2))
        out[:, 0] = np.linspace(-1, 1, n) if n > 1 else 0.0
        return out.astype(np.float32)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    pcs = u[:, : min(50, len(s))] * s[: min(50, len(s))]
    if method == "pca" or n < 8:
        y = pcs[:, :2] if pcs.shape[1] >= 2 else np.pad(pcs, ((0, 0), (0, 2 - pcs.shape[1])))
    else:
        try:
            from sklearn.manifold import TSNE
            from threadpoolctl import threadpool_limits  # a dependency of scikit-learn
        except ImportError as e:
            raise InputError(
                "--method=tsne needs scikit-learn (pip install 'modellens-jax[serve]'); "
                "or use --method=pca"
            ) from e
        tsne = TSNE(
            n_components=2,
            perplexity=float(min(30.0, (n - 1) / 3)),
            init="pca",
            random_state=seed,
            learning_rate="auto",
        )
        # Small maps on one OpenMP thread: on a busy machine (or beside XLA's threads) the
        # threaded gradient spins for seconds on what one thread does in 0.2 s.
        with threadpool_limits(1 if n < SMALL_MAP else None, user_api="openmp"):
            y = tsne.fit_transform(pcs.astype(np.float32))
    y = y - y.mean(0, keepdims=True)
    scale = np.abs(y).max() or 1.0
    return (y / scale).astype(np.float32)


# --- what is projected ------------------------------------------------------------------------
def model_modalities(rec: Recommender) -> np.ndarray:
    """Per known model, the modality of most of the tasks it has records on (0 if none)."""
    t = rec.bundle.tables
    am = np.asarray(t["applicability/model"], np.int64)
    mods = rec.task_modality[np.asarray(t["applicability/task"], np.int64)].astype(np.int64)
    n_mod = max(len(rec.bundle.vocab.get("modalities", [])), int(mods.max(initial=0)) + 1)
    counts = np.zeros((len(rec.model_index), n_mod), np.int64)
    np.add.at(counts, (am, mods), 1)
    return np.where(counts.sum(1) > 0, counts.argmax(1), 0).astype(np.int32)


def anchor_rows(rec: Recommender, n: int = ANCHORS) -> np.ndarray:
    """The ``n`` known models with a learned ID that have records on the most tasks."""
    t = rec.bundle.tables
    per_model = np.bincount(
        np.asarray(t["applicability/model"], np.int64), minlength=len(rec.model_index)
    )
    learned = np.asarray(t["models/model_id"]) > 0
    order = np.lexsort((np.arange(len(per_model)), -per_model))
    order = order[learned[order]] if learned.any() else order
    return np.sort(order[:n])


def _scores(rec: Recommender, pool: Any, rows: Sequence[int]) -> np.ndarray:
    """``[len(rows), len(pool)]`` scores of the pool for known datasets ``rows`` (each with its
    task, metric unknown). The queries are padded to ``CHUNK`` rows (repeating the last), so
    every call of one pool has one shape and compiles once."""
    v, rows = rec.bundle.vocab, list(rows)
    padded = rows + rows[-1:] * (CHUNK - len(rows))
    ctx = rec.contexts(
        [
            {
                "dataset": v["datasets"][r],
                "task": v["tasks"][int(rec.dataset_task[r])] if rec.dataset_task[r] else None,
                "metric": None,
            }
            for r in padded
        ]
    )
    return rec.score_matrix(pool, ctx)["score"][: len(rows)]


def dataset_profiles(rec: Recommender, anchors: np.ndarray) -> np.ndarray:
    """``[D, A]`` each known dataset's scores of the anchor models, standardised per dataset."""
    pool = rec.known_subset(anchors)
    n = len(rec.dataset_index)
    out = np.zeros((n, len(anchors)), np.float32)
    for a in range(0, n, CHUNK):
        rows = range(a, min(n, a + CHUNK))
        out[a : a + len(rows)] = _scores(rec, pool, rows)
    out -= out.mean(1, keepdims=True)
    out /= np.maximum(out.std(1, keepdims=True), 1e-6)
    return out


def counterparts(rec: Recommender, top_k: int) -> tuple[list[list], list[list]]:
    """(per dataset: its top-K models as ``[model row, score]``; per model: its best datasets
    as ``[dataset row, rank, pool size]``), from one pass over every dataset's task pool."""
    n_d, n_m = len(rec.dataset_index), len(rec.model_index)
    ds_top: list[list] = [[] for _ in range(n_d)]
    entries = []  # (model, dataset, rank, n) arrays per scored block
    by_task: dict[int, list[int]] = {}
    for d in range(n_d):
        if rec.dataset_task[d]:
            by_task.setdefault(int(rec.dataset_task[d]), []).append(d)
    for t, dsets in sorted(by_task.items()):
        rows = rec.task_models[t]
        if not len(rows):
            continue
        # exactly the pool rank() scores (not padded: features relative to the other
        # candidates would change with it), so the top-K is rank()'s
        pool = rec.known_subset(rows)
        for a in range(0, len(dsets), CHUNK):
            chunk = dsets[a : a + CHUNK]
            score = _scores(rec, pool, chunk)
            order = np.argsort(-score, axis=1, kind="stable")
            rank = np.empty_like(order)
            np.put_along_axis(rank, order, np.arange(1, order.shape[1] + 1)[None], axis=1)
            for i, d in enumerate(chunk):
                top = order[i, :top_k]
                ds_top[d] = [[int(rows[j]), round(float(score[i, j]), 4)] for j in top]
            entries.append(
                (
                    np.broadcast_to(rows[None], rank.shape).ravel(),
                    np.repeat(np.asarray(chunk), rank.shape[1]),
                    rank.ravel(),
                    np.full(rank.size, len(rows)),
                )
            )
    m_best: list[list] = [[] for _ in range(n_m)]
    if entries:
        m, d, r, n = (np.concatenate(x) for x in zip(*entries))
        pct = (r - 1) / np.maximum(n - 1, 1)
        order = np.lexsort((d, -n, pct, m))
        m, d, r, n = m[order], d[order], r[order], n[order]
        starts = np.flatnonzero(np.r_[True, m[1:] != m[:-1]])
        for s, e in zip(starts, np.r_[starts[1:], len(m)]):
            k = min(e, s + top_k)
            m_best[int(m[s])] = [[int(d[j]), int(r[j]), int(n[j])] for j in range(s, k)]
    return ds_top, m_best


def compute_atlas(
    rec: Recommender,
    *,
    method: str = "tsne",
    top_k: int = 10,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The atlas document: vocabularies, per model and dataset its metadata, learned and
    semantic coordinates and top-K counterparts (see the module docstring)."""
    if method not in METHODS:
        raise InputError(f"--method={method!r}: expected one of {', '.join(METHODS)}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= 100:
        raise InputError(f"--top_k={top_k}: must be a whole number in 1..100")
    say = log or (lambda _m: None)
    t0 = time.perf_counter()
    t, v = rec.bundle.tables, rec.bundle.vocab
    known = rec.known_models()
    side = np.asarray(rec.model_side(known)[0][0])[: len(known)]  # the first member's
    say(f"atlas: model side {side.shape}")
    profiles = dataset_profiles(rec, anchor_rows(rec))
    say(f"atlas: dataset profiles {profiles.shape}")
    maps = {
        "models": {"learned": project(side, method, seed=seed)},
        "datasets": {"learned": project(profiles, method, seed=seed)},
    }
    for kind, key in (("models", "models/model_desc"), ("datasets", "datasets/dataset_desc")):
        emb = np.asarray(t[key], np.float32)
        maps[kind]["semantic"] = (
            project(emb, method, seed=seed) if emb.ndim == 2 and emb.shape[1] else None
        )
    say("atlas: projections done")
    ds_top, m_best = counterparts(rec, top_k)
    modality = model_modalities(rec)
    params = np.asarray(t["models/params"], np.float64)

    def xy(a: np.ndarray | None) -> list | None:
        return None if a is None else np.round(a, 4).tolist()

    doc = {
        "atlas_version": ATLAS_VERSION,
        "bundle": bundle_fingerprint(rec),
        "method": method,
        "top_k": top_k,
        "seed": seed,
        "families": v["families"],
        "tasks": v["tasks"],
        "modalities": v.get("modalities", []),
        "semantic_available": maps["models"]["semantic"] is not None,
        "models": {
            "name": list(v["models"]),
            "family": np.asarray(t["models/family"]).astype(int).tolist(),
            "modality": modality.tolist(),
            "params": [float(p) if np.isfinite(p) else None for p in params],
            "learned_id": (np.asarray(t["models/model_id"]) > 0).tolist(),
            "learned": xy(maps["models"]["learned"]),
            "semantic": xy(maps["models"]["semantic"]),
            "top": m_best,
        },
        "datasets": {
            "name": list(v["datasets"]),
            "task": rec.dataset_task.astype(int).tolist(),
            "modality": rec.task_modality[rec.dataset_task].astype(int).tolist(),
            "learned_id": (np.asarray(t["datasets/dataset_id"]) > 0).tolist(),
            "learned": xy(maps["datasets"]["learned"]),
            "semantic": xy(maps["datasets"]["semantic"]),
            "top": ds_top,
        },
        "seconds": round(time.perf_counter() - t0, 2),
    }
    say(f"atlas: done in {doc['seconds']} s")
    return doc


def cache_path(rec: Recommender, cache_dir: str | os.PathLike, method: str, top_k: int) -> Path:
    """Where the atlas of this bundle, method and K is cached."""
    name = f"atlas-v{ATLAS_VERSION}-{bundle_fingerprint(rec)}-{method}-k{top_k}.json.gz"
    return Path(cache_dir) / name


def read_atlas(path: str | os.PathLike, rec: Recommender | None = None) -> dict[str, Any]:
    """Reads an atlas document (``.json`` or ``.json.gz``); with ``rec``, refuses one made from
    another bundle or atlas version (InputError)."""
    p = Path(path)
    try:
        raw = gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()
        doc = json.loads(raw)
    except (OSError, EOFError, gzip.BadGzipFile, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{p}: unreadable atlas ({type(e).__name__}: {e})") from None
    if not isinstance(doc, dict) or doc.get("atlas_version") != ATLAS_VERSION:
        raise InputError(f"{p}: not an atlas of version {ATLAS_VERSION} (recompute it)")
    if rec is not None and doc.get("bundle") != bundle_fingerprint(rec):
        raise InputError(f"{p}: made from another bundle (fingerprint {doc.get('bundle')!r})")
    return doc


def load_or_compute(
    rec: Recommender,
    *,
    cache_dir: str | os.PathLike | None = None,
    method: str = "tsne",
    top_k: int = 10,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The cached atlas of ``rec``'s bundle, computed and cached (atomically) if missing; a
    cache that cannot be written is reported through ``log`` and the atlas still returned."""
    path = cache_path(rec, cache_dir or default_cache_dir(), method, top_k)
    if path.is_file():
        try:
            return read_atlas(path, rec)
        except InputError as e:
            (log or print)(f"atlas: ignoring the cache ({e})")
    doc = compute_atlas(rec, method=method, top_k=top_k, log=log)
    blob = gzip.compress(json.dumps(doc, separators=(",", ":")).encode(), mtime=0)
    try:
        fsutil.write_atomic(path, lambda f: f.write(blob), text=False)
    except OSError as e:
        (log or print)(f"atlas: could not cache it at {path}: {e.strerror or e}")
    return doc


# --- static exports ---------------------------------------------------------------------------
def static_html(doc: dict[str, Any]) -> str:
    """A self-contained page (styles, script and data inlined; works offline from a file)."""
    css = (WEB_DIR / "style.css").read_text()
    js = (WEB_DIR / "atlas.js").read_text()
    data = json.dumps(doc, separators=(",", ":")).replace("</", "<\\/")
    return (
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>ModelLens atlas {html.escape(doc['bundle'][:12])}</title>"
        f"<style>{css}</style></head><body class='static'>\n"
        "<main><section id='atlas' class='atlas'></section></main>\n"
        f"<script>window.ATLAS_DATA = {data};</script>\n<script>{js}</script>\n"
        "<script>ModelLensAtlas.start(document.getElementById('atlas'), "
        "window.ATLAS_DATA);</script>\n</body></html>\n"
    )


def palette_index(
    values: Sequence[int], n_colors: int = len(PALETTE)
) -> tuple[np.ndarray, list[int]]:
    """Per value its colour slot (the ``n_colors`` most frequent values, ``n_colors`` = other)
    and the values holding the slots, most frequent first."""
    vals = np.asarray(values, np.int64)
    uniq, counts = np.unique(vals[vals > 0], return_counts=True)
    top = uniq[np.lexsort((uniq, -counts))][:n_colors].tolist()
    slot = {x: i for i, x in enumerate(top)}
    return np.asarray([slot.get(int(x), n_colors) for x in vals]), top


def static_png(doc: dict[str, Any], out: str | os.PathLike, color: str = "family") -> None:
    """A 2x2 figure (models / datasets x learned / semantic) coloured by ``color``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if color not in COLORS:
        raise InputError(f"--color={color!r}: expected one of {', '.join(COLORS)}")
    fig, axes = plt.subplots(2, 2, figsize=(14, 12))
    for row, kind in enumerate(("models", "datasets")):
        d = doc[kind]
        key = color if color in d else "modality"  # models carry no task
        names = doc[
            "families" if key == "family" else "modalities" if key == "modality" else "tasks"
        ]
        slots, top = palette_index(d[key])
        colours = [PALETTE[s] if s < len(top) else (0.6, 0.6, 0.6, 0.45) for s in slots]
        for col, space in enumerate(("learned", "semantic")):
            ax = axes[row][col]
            xy = d[space]
            ax.set_xticks([])
            ax.set_yticks([])
            title = f"{kind}: {'learned (scorer)' if space == 'learned' else 'semantic only'}"
            ax.set_title(title)
            if xy is None:
                ax.text(0.5, 0.5, "no description embeddings in this bundle", ha="center",
                        transform=ax.transAxes)  # fmt: skip
                continue
            a = np.asarray(xy)
            ax.scatter(a[:, 0], a[:, 1], s=3, c=colours, linewidths=0)
        handles = [
            plt.Line2D([], [], marker="o", ls="", color=PALETTE[i], label=names[x][:28])
            for i, x in enumerate(top)
        ]
        axes[row][1].legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5),
                            fontsize=8, title=key)  # fmt: skip
    fig.suptitle(f"ModelLens atlas ({doc['method']}; bundle {doc['bundle'][:12]})")
    fig.tight_layout()

    def write(f):
        fig.savefig(f, format="png", dpi=90)

    fsutil.write_atomic(out, write, text=False)
    plt.close(fig)


def _define(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("bundle", None, "Bundle directory (from modellens_jax.export).",
                        required=True, flag_values=fv)  # fmt: skip
    flags.DEFINE_string("out", None, "atlas.png, atlas.html or atlas.json[.gz].", required=True,
                        flag_values=fv)  # fmt: skip
    flags.DEFINE_enum("method", "tsne", METHODS, "Projection to 2-D.", flag_values=fv)
    flags.DEFINE_integer("top_k", 10, "Counterparts kept per node (1..100).", flag_values=fv)
    flags.DEFINE_enum("color", "family", COLORS, "PNG colouring.", flag_values=fv)
    flags.DEFINE_string("cache_dir", None, f"Atlas cache (default {default_cache_dir()}).",
                        flag_values=fv)  # fmt: skip
    flags.DEFINE_bool("cache", True, "Read and write the cache (--nocache: compute, store "
                      "nothing).", flag_values=fv)  # fmt: skip


def _run(fv: flags.FlagValues) -> None:
    """Computes (or reads from the cache) a bundle's atlas and writes it as PNG, self-contained
    HTML or JSON (which ``serve_http --atlas_file`` can serve)."""
    from modellens_jax.serving.recommend import output_path, write_output

    out = Path(fv.out)
    kinds = {".png": "png", ".html": "html", ".json": "json", ".gz": "json"}
    kind = kinds.get(out.suffix)
    if kind is None or (out.suffix == ".gz" and not out.name.endswith(".json.gz")):
        raise cli.UsageError(f"--out={fv.out}: expected a .png, .html, .json or .json.gz file")
    output_path(out)
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    rec = Recommender.load(fv.bundle)
    if not fv.cache:
        doc = compute_atlas(rec, method=fv.method, top_k=fv.top_k, log=log)
    else:
        doc = load_or_compute(rec, cache_dir=fv.cache_dir, method=fv.method, top_k=fv.top_k,
                              log=log)  # fmt: skip
    if kind == "png":
        try:
            static_png(doc, out, fv.color)
        except OSError as e:
            raise OSError(f"could not write {out}: {e.strerror or e}; nothing was written") from e
    else:
        text = static_html(doc) if kind == "html" else json.dumps(doc, separators=(",", ":"))
        blob = text.encode()
        if out.name.endswith(".gz"):
            blob = gzip.compress(blob, mtime=0)
        write_output(out, lambda f: f.write(blob), text=False)
    n_m, n_d = len(doc["models"]["name"]), len(doc["datasets"]["name"])
    print(f"atlas of {n_m} models and {n_d} datasets ({doc['method']}) -> {out}")


main = cli.command(_define, _run, __doc__)

if __name__ == "__main__":
    sys.exit(main())
