"""Ranking and scoring from a bundle alone: featurise candidates and queries, rank, score pairs.

Imports only jax, numpy, safetensors and the numpy-only ``modellens_jax.data.schema``,
``data.features`` and ``data.competence`` (no flax, orbax, grain, training or model code). The
text encoder is imported lazily, only when a description the bundle has never seen must be
embedded (and pandas, for the one date parser, only when a candidate gives a release date).

Python API::

    rec = Recommender.load("bundle/")               # verifies every sha256 in manifest.json
    rec.rank(dataset_desc="...", task="...", metric="...", top_k=10)    # all known models
    rec.rank(dataset="MMLU", task=..., metric=..., candidates="models.csv", max_params=14)
    pool = rec.candidates("models.csv")             # featurise once, model side cached
    rec.rank(..., candidates=pool)
    rec.score_pairs(pairs, models="models.csv", datasets="datasets.csv")

Featurisation is training's (``data.features``): a known model (by exact name) uses its stored
row (learned ID, name tokens, size bucket and log-size, family, description embedding); an
unseen model goes through ``features.new_model_rows`` as the corpus's models do: ID 0 ([UNK]),
its own name tokens, size bucket over the bundle's edges and log-size, release date (an optional
``release_date`` column, parsed by ``features.release_days``), family (given or derived from the
name, ``features.family_name``; unknown to the vocabulary -> 0) and the embedding of
``features.model_text``. A known dataset uses its learned ID and stored description embedding;
an unseen one ID 0 and the embedding of ``features.dataset_text``. Unknown task/metric -> 0.
Every result lists the features that fell back to [UNK]/unknown (``unknown``), e.g.
``["model_id", "family", "task"]``.

Competence features (when the scorer reads them): for every (query, candidate) the bundle's
training records give the candidate's record on the task, source, modality and dataset, on the
most similar training datasets and its family's, exactly as training computed them
(``competence.Memory`` over the same records); a query that is a known (dataset, task, metric)
group leaves that group's own records out, as training did. The features relative to the
group (size and release against the other models) are over the candidates scored together: the
pool for ``rank``, each query's pairs for ``score_pairs``.

``score`` is the model's tempered ranking score ``(residual + prior) / T``: comparable between
models for one query, not a predicted metric value; ``prior`` is the size/family prior and
``residual`` the backbone's part (competence included). A seed-ensemble bundle (format 5,
``members > 1``) scores with every member: ``score`` is the members' mean, ``score_std`` their
spread (standard deviation over members) and ``confidence`` how sure the ranking is of each
candidate's place given those spreads and the gaps between scores
(``serving.confidence``); prior, cold and residual are the members' means, so they still add up
to the shown score.
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import gzip
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from modellens_jax import cold_start
from modellens_jax.data import features
from modellens_jax.serving import confidence as confidence_lib
from modellens_jax.serving.bundle import Bundle, BundleError, bucket, competence_width

PAIR_CHUNK = 1 << 16
POOLS = ("task", "modality", "all")
MAX_QUERY_TEXT = 1 << 20  # characters of a query's description
MIN_TEMPERATURE = 1e-3  # the scorer's temperature floor (model.MIN_TEMPERATURE)
NEAREST_DATASETS = 5  # known datasets a --new_task query borrows its tasks from
POOL_CACHE = 256  # task/modality pools kept with their model side (a bundle has ~100s of tasks)

Embedder = Callable[[Sequence[str]], np.ndarray]


class InputError(ValueError):
    """A bad CSV file, row or argument (the message names file, row and field)."""


# --- CSV input ------------------------------------------------------------------------------
# Long descriptions are real (200+ KB); prepare accepts the same (data/ingest.py).
FIELD_SIZE_LIMIT = 1 << 24
FLOAT32_MAX = float(np.finfo(np.float32).max)
csv.field_size_limit(max(csv.field_size_limit(), FIELD_SIZE_LIMIT))


def read_csv(
    path: str | os.PathLike, required: Sequence[str], *, nonempty: Sequence[str] = ()
) -> list[tuple[str, dict[str, str]]]:
    """Rows of a CSV (``.csv`` or ``.csv.gz``) as ``(where, row)``; ``where`` reads
    ``"file row N (line L)"``. As strict as ``prepare``: a header without duplicates holding
    every ``required`` column, every row with as many fields as the header, well-formed quoting
    (an unbalanced quote is an error, not one long field), at least one data row; empty
    ``nonempty`` fields raise InputError. Blank lines are skipped."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file" if not p.exists() else f"{p}: not a file")
    out: list[tuple[str, dict[str, str]]] = []
    prev = 0
    try:
        raw = (
            gzip.open(p, "rt", encoding="utf-8-sig", newline="")
            if p.suffix == ".gz"
            else (open(p, encoding="utf-8-sig", newline=""))
        )
        with raw as f:
            reader = csv.reader(f, strict=True)
            header: list[str] = []
            for rec in reader:  # the first non-blank line
                prev = reader.line_num
                if rec and any(x.strip() for x in rec):
                    header = [h.strip() for h in rec]
                    break
            if not header:
                raise InputError(f"{p}: empty file (expected a header line: {','.join(required)})")
            dup = sorted({h for h in header if header.count(h) > 1})
            if dup:
                raise InputError(f"{p} line {prev}: duplicate column(s) {dup} in the header")
            missing = [c for c in required if c not in header]
            if missing:
                raise InputError(
                    f"{p}: missing column(s) {', '.join(map(repr, missing))} "
                    f"(header: {', '.join(header) or 'empty'})"
                )
            for rec in reader:
                start, prev = prev + 1, reader.line_num
                if not rec or (len(rec) == 1 and not rec[0].strip()):
                    continue
                where = f"{p} row {len(out) + 1} (line {start})"
                if len(rec) != len(header):
                    raise InputError(
                        f"{where}: malformed CSV: expected {len(header)} fields as in the header, "
                        f"got {len(rec)} (an unquoted comma or a missing field?)"
                    )
                row = {c: v.strip() for c, v in zip(header, rec)}
                for c in nonempty:
                    if not row.get(c):
                        raise InputError(f"{where}, field {c!r}: empty")
                out.append((where, row))
    except csv.Error as e:
        raise InputError(
            f"{p} row {len(out) + 1} (line {prev + 1}): malformed CSV ({e}; an unbalanced quote?)"
        ) from None
    except UnicodeDecodeError as e:
        raise InputError(f"{p}: not UTF-8 text ({e})") from None
    except (OSError, EOFError) as e:
        raise InputError(f"{p}: unreadable ({type(e).__name__}: {e})") from None
    if not out:
        raise InputError(f"{p}: no data rows after the header")
    return out


def _merge_rows(rows: Iterable[tuple[str, Mapping[str, str]]], key: str) -> dict[str, tuple]:
    """Per ``key`` value: (where of the first row, first non-empty value of each field), as
    the corpus merges one-row-per-source metadata."""
    merged: dict[str, tuple[str, dict[str, str]]] = {}
    for where, row in rows:
        name = row[key]
        if name not in merged:
            merged[name] = (where, dict(row))
        else:
            have = merged[name][1]
            for c, v in row.items():
                if v and not have.get(c):
                    have[c] = v
    return merged


def _as_rows(src: Any, key: str, what: str) -> list[tuple[str, dict[str, str]]]:
    """A CSV path, or an iterable of mappings / names, as ``(where, row)`` pairs."""
    if isinstance(src, (str, os.PathLike)):
        return read_csv(src, [key], nonempty=[key])
    rows = []
    for i, r in enumerate(src, start=1):
        row = {key: r} if isinstance(r, str) else {str(k): v for k, v in dict(r).items()}
        row = {k: "" if v is None else str(v).strip() for k, v in row.items()}
        if not row.get(key):
            raise InputError(f"{what} item {i}, field {key!r}: empty")
        rows.append((f"{what} item {i}", row))
    return rows


def _params(where: str, value: str) -> float:
    """A parameter count in billions: empty = unknown (NaN); negative, inf, nan refused."""
    if not value:
        return float("nan")
    try:
        x = float(value)
    except ValueError:
        raise InputError(f"{where}, field 'params': {value!r} is not a number (billions)") from None
    if not np.isfinite(x):
        raise InputError(f"{where}, field 'params': {value!r} is not a finite number")
    if abs(x) > FLOAT32_MAX:  # as prepare: the tables are float32
        raise InputError(
            f"{where}, field 'params': {value!r} is out of range (|x| > {FLOAT32_MAX:.4g}, the "
            "float32 maximum)"
        )
    if x < 0:
        raise InputError(f"{where}, field 'params': negative parameter count {x:g} (billions)")
    return x


def _release_days(info: Sequence[tuple[str, Mapping[str, str]]]) -> np.ndarray:
    """The rows' ISO release dates (``features.release_days``, the corpus's parser) as days
    since 1970, -1 where empty; InputError naming the first row that is not a date."""
    days, bad = features.release_days([r.get("release_date", "") for _, r in info])
    if bad is not None:
        where, row = info[bad]
        raise InputError(
            f"{where}, field 'release_date': {row['release_date']!r} is not an ISO date "
            "(YYYY-MM-DD)"
        )
    return days


def closest(name: str, known: Iterable[str], n: int = 5) -> list[str]:
    """Known names nearest to ``name`` (case-insensitive matches first)."""
    known = list(known)
    exact = [k for k in known if k.lower() == name.lower()]
    lower = {k.lower(): k for k in known}
    near = difflib.get_close_matches(name.lower(), list(lower), n=n, cutoff=0.4)
    return list(dict.fromkeys(exact + [lower[x] for x in near]))[:n]


def unknown_name(flag: str, value: str, known: Iterable[str], hint: str) -> InputError:
    """The one-line error for a name the bundle does not know, with the closest known ones."""
    near = closest(value, known)
    return InputError(
        f"{flag}={value!r}: not in this bundle; closest: "
        f"{', '.join(map(repr, near)) if near else '(none)'}{hint}"
    )


def check_query(top_k: int | None, min_params: float | None, max_params: float | None) -> None:
    """InputError for a negative ``top_k`` (0/None = all), a negative / non-finite size bound,
    or ``min_params > max_params`` (nothing could match)."""
    if top_k is not None and (isinstance(top_k, bool) or int(top_k) != top_k or top_k < 0):
        raise InputError(f"--top_k={top_k}: must be a whole number >= 0 (0 = all)")
    for name, v in (("min_params", min_params), ("max_params", max_params)):
        if v is not None and not (np.isfinite(v) and v >= 0):
            raise InputError(f"--{name}={v}: must be a finite number of billions >= 0")
    if min_params is not None and max_params is not None and min_params > max_params:
        raise InputError(
            f"--min_params={min_params:g} > --max_params={max_params:g}: no model can match"
        )


# --- features -------------------------------------------------------------------------------
@dataclasses.dataclass
class ModelPool:
    """Featurised models (the models block of the scorer), plus what results report.

    ``side``/``prior`` (the model half of the first layer and the size/family prior) are
    computed once on first use and cached, so ranking the pool for another query only runs the
    context half and the trunk.
    """

    names: list[str]
    arrays: dict[str, np.ndarray]
    params: np.ndarray
    families: list[str]
    known: np.ndarray
    unknown: list[tuple[str, ...]]
    descriptions: list[str]
    rows: np.ndarray  # the bundle's model row, -1 for a model it has not seen
    release_day: np.ndarray  # days since 1970, -1 unknown
    _side: tuple[jax.Array, jax.Array] | None = dataclasses.field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.names)

    def padded(self) -> dict[str, np.ndarray]:
        """The models block padded to :func:`bucket` rows (padding rows are zeros)."""
        return _pad(self.arrays, bucket(len(self)))


def _pad(arrays: Mapping[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
    out = {}
    for k, v in arrays.items():
        p = np.zeros((rows, *v.shape[1:]), v.dtype)
        p[: len(v)] = v
        out[k] = p
    return out


@dataclasses.dataclass
class Contexts:
    """Featurised queries (the groups block): one row per (dataset, task, metric)."""

    keys: list[tuple[str | None, str | None, str | None]]
    arrays: dict[str, np.ndarray]
    unknown: list[tuple[str, ...]]
    dataset_rows: np.ndarray  # the bundle's dataset row, -1 for a dataset it has not seen

    def __len__(self) -> int:
        return len(self.keys)


@dataclasses.dataclass(frozen=True)
class Recommendation:
    """One ranked model. ``prior + cold + residual == score`` (each already divided by the
    scorer's temperature): the learned size/family prior, the cold-start size prior of a model
    without a learned ID, and the network's residual (competence features included). ``pool``
    says why it is a candidate. From a seed-ensemble bundle, ``score`` and its parts are the
    members' means, ``score_std`` the members' spread and ``confidence`` (0-1) how sure its
    place in this ranking is (``serving.confidence``); None from a single-model bundle."""

    rank: int
    model: str
    score: float
    prior: float
    residual: float
    unknown: tuple[str, ...]
    known: bool
    family: str
    params: float | None
    description: str
    cold: float = 0.0
    pool: str = ""
    score_std: float | None = None
    confidence: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """The result as JSON-able fields (``score_std``/``confidence`` only when known)."""
        d = dataclasses.asdict(self)
        d["unknown"] = list(self.unknown)
        for k in ("score_std", "confidence"):
            if d[k] is None:
                del d[k]
        return d


def default_embedder(info: Mapping[str, Any]) -> Embedder:
    """Embeds texts with the bundle's encoder (``encoder.json``) through
    ``modellens_jax.embed.embed_texts`` (cached by text), after checking that the local encoder
    has the identity the stored embeddings were made with; vectors are rounded through the
    stored dtype (float16) so new rows look like stored ones."""
    from modellens_jax import embed
    from modellens_jax.text import encoder as enc

    hint = info.get("encoder")
    path = None if hint in (None, "minilm", "default") else hint
    max_length = info.get("max_length")
    try:
        local = enc.encoder_identity(path, max_length=max_length)
    except enc.EncoderError as e:
        raise BundleError(f"encoder.json: the bundle's encoder is not available here: {e}") from e
    want = info.get("identity")
    if want and want != local:
        raise BundleError(
            f"encoder.json: the bundle's descriptions were embedded with {want!r}, but the "
            f"local encoder ({path or info.get('package') or 'default'}) is {local!r}; install "
            "the matching encoder or pass embedder= to Recommender.load"
        )
    store = np.dtype(info.get("dtype") or "float32")

    def embed_new(texts: Sequence[str]) -> np.ndarray:
        vectors, _ = embed.embed_texts(list(texts), encoder_dir=path, max_length=max_length)
        return np.asarray(vectors, np.float32).astype(store).astype(np.float32)

    return embed_new


class Recommender:
    """Ranks models for a dataset/task/metric and scores (dataset, task, metric, model) pairs
    from a :class:`Bundle`. ``embedder`` (texts -> [N, D] float32) overrides the bundle's
    encoder, e.g. to reuse a loaded one."""

    def __init__(self, bundle: Bundle, embedder: Embedder | None = None):
        self.bundle = bundle
        self._embedder = embedder
        v = bundle.vocab
        self.model_index = {m: i for i, m in enumerate(v["models"])}
        self.dataset_index = {d: i for i, d in enumerate(v["datasets"])}
        self.task_index = {t: i for i, t in enumerate(v["tasks"]) if i}
        self.metric_index = {t: i for i, t in enumerate(v["metrics"]) if i}
        self.family_index = {t: i for i, t in enumerate(v["families"]) if i}
        self.features = bundle.features
        inp = bundle.inputs
        self.max_tokens = int(inp["max_name_tokens"])
        self.name_buckets = int(inp["name_buckets"])
        self.size_edges = tuple(float(e) for e in inp["size_edges"])
        self.model_desc_dim = int(inp["model_desc_dim"])
        self.dataset_desc_dim = int(inp["dataset_desc_dim"])
        self._known: ModelPool | None = None
        self._pools: dict[bytes, ModelPool] = {}  # task/modality pools, model side cached
        t = bundle.tables
        am, at = np.asarray(t["applicability/model"]), np.asarray(t["applicability/task"])
        order = np.argsort(at, kind="stable")
        bounds = np.searchsorted(at[order], np.arange(len(v["tasks"]) + 1))
        self.task_models = [np.sort(am[order[a:b]]) for a, b in zip(bounds[:-1], bounds[1:])]
        self.task_modality = np.asarray(t["tasks/modality"])
        self.dataset_task = np.asarray(t["datasets/task"])
        self._init_competence()
        m_cfg = bundle.config.get("model", {})
        self.members = bundle.members
        # one temperature per member (shape [N]; a format-4 bundle's scalar is one member's)
        self.temperature = np.maximum(
            np.asarray(bundle.params["temperature"], np.float64).reshape(-1), MIN_TEMPERATURE
        )
        cs = bundle.cold_start
        self.cold = (
            None if cs is None
            else cold_start.ColdStart(
                np.asarray(cs["slope"], np.float64), np.asarray(cs["impute"], np.float64),
                np.asarray(cs["family"], np.float64), float(cs["scale"]),
                float(cs["family_scale"]), float(cs["shrink"]),
            )
        )  # fmt: skip
        # formats 4 and 5 add a fixed size prior inside their functions (before the temperature)
        self.legacy_cold = (
            float(m_cfg.get("cold_size_prior", 0.0))
            if m_cfg.get("use_size_feature", True) and bundle.manifest["format_version"] < 6
            else 0.0
        )

    @classmethod
    def load(
        cls, path: str | os.PathLike, *, embedder: Embedder | None = None, check: bool = True
    ) -> Recommender:
        """Verifies and loads the bundle at ``path``."""
        return cls(Bundle.load(path, check=check), embedder)

    # ------------------------------------------------------------------------- embedding
    def embed(self, texts: Sequence[str], dim: int) -> np.ndarray:
        """``[len(texts), dim]`` description embeddings of new texts."""
        if not texts:
            return np.zeros((0, dim), np.float32)
        if self._embedder is None:
            self._embedder = default_embedder(self.bundle.encoder)
        vecs = np.asarray(self._embedder(list(texts)), np.float32)
        if vecs.shape != (len(texts), dim):
            raise BundleError(
                f"encoder.json: the encoder gave vectors of shape {vecs.shape}; the model "
                f"expects ({len(texts)}, {dim})"
            )
        return vecs

    # ------------------------------------------------------------------------- models
    def known_models(self) -> ModelPool:
        """Every model of the bundle, with its stored features (cached)."""
        if self._known is None:
            self._known = self._known_pool(np.arange(len(self.model_index)))
        return self._known

    def known_subset(self, rows: np.ndarray) -> ModelPool:
        """The known models ``rows`` as a pool, cached (with its model side) so that repeated
        queries of one task or modality reuse it; at most ``POOL_CACHE`` pools are kept."""
        key = np.asarray(rows, np.int64).tobytes()
        if key not in self._pools:
            if len(self._pools) >= POOL_CACHE:
                self._pools.pop(next(iter(self._pools)))
            self._pools[key] = self._known_pool(np.asarray(rows))
        return self._pools[key]

    def _known_pool(self, rows: np.ndarray) -> ModelPool:
        t, f = self.bundle.tables, self.features
        arrays = {k: np.asarray(t[f"models/{k}"])[rows] for k in features.MODEL_KEYS}
        params = np.asarray(t["models/params"], np.float64)[rows]
        fams = self.bundle.vocab["families"]
        unknown = []
        for i in range(len(rows)):
            u = []
            if f["model_id"] and arrays["model_id"][i] == 0:
                u.append("model_id")
            if f["size"] and arrays["size_bucket"][i] == 0:
                u.append("size")
            if f["family"] and arrays["family"][i] == 0:
                u.append("family")
            unknown.append(tuple(u))
        names, texts = self.bundle.vocab["models"], self.bundle.texts["models"]
        days = t.get("models/release_day")
        return ModelPool(
            names=[names[r] for r in rows],
            arrays=arrays,
            params=params,
            families=[fams[x] for x in arrays["family"]],
            known=np.ones(len(rows), bool),
            unknown=unknown,
            descriptions=[texts[r] for r in rows],
            rows=np.asarray(rows, np.int64).copy(),
            release_day=(np.full(len(rows), -1) if days is None else np.asarray(days)[rows]).astype(
                np.int64
            ),
        )

    def candidates(
        self,
        rows: str | os.PathLike | Iterable[Mapping[str, Any] | str] | None = None,
        *,
        model_desc: np.ndarray | None = None,
    ) -> ModelPool:
        """Featurises candidate models: a models.csv path (corpus format: ``model`` plus any of
        ``family, params, model_desp, release_date``), an iterable of such rows (or bare names), or
        None (all known models). ``model_desc`` gives precomputed description vectors for the unseen rows
        (in order) instead of embedding their texts. Duplicate names merge as in the corpus."""
        if rows is None:
            return self.known_models()
        merged = _merge_rows(_as_rows(rows, "model", "candidates"), "model")
        return self._pool(merged, model_desc=model_desc)

    def _pool(
        self, merged: Mapping[str, tuple[str, Mapping[str, str]]], *, model_desc=None
    ) -> ModelPool:
        names = list(merged)
        known_rows = [self.model_index.get(n, -1) for n in names]
        new = [i for i, r in enumerate(known_rows) if r < 0]
        pool = self._known_pool(np.asarray([max(r, 0) for r in known_rows], np.int64))
        pool.names = names
        pool.known = np.asarray([r >= 0 for r in known_rows], bool)
        pool.rows = np.asarray(known_rows, np.int64)
        if not new:
            return pool
        f = self.features
        new_names = [names[i] for i in new]
        info = [merged[n] for n in new_names]
        params = np.asarray([_params(w, r.get("params", "")) for w, r in info], np.float64)
        days = _release_days(info)
        fams = [features.family_name(n, r.get("family")) for n, (_, r) in zip(new_names, info)]
        descs = [r.get("model_desp", "") for _, r in info]
        fam_ids = np.asarray([self.family_index.get(x, 0) for x in fams], np.int32)
        new_rows = features.new_model_rows(
            new_names, params=params, release_day=days, family=fam_ids,
            name_buckets=self.name_buckets, max_name_tokens=self.max_tokens,
            size_edges=self.size_edges,
        )  # fmt: skip
        a = pool.arrays
        idx = np.asarray(new)
        for k, v in new_rows.items():
            a[k][idx] = v
        pool.release_day[idx] = days
        if f["model_desc"]:
            if model_desc is not None:
                vecs = np.asarray(model_desc, np.float32)
                if vecs.shape != (len(new), self.model_desc_dim):
                    raise InputError(
                        f"model_desc: shape {vecs.shape}, expected ({len(new)}, "
                        f"{self.model_desc_dim}) for the unseen candidates"
                    )
            else:
                texts = [
                    features.model_text(n, d, fa, p)
                    for n, d, fa, p in zip(new_names, descs, fams, params)
                ]
                vecs = self.embed(texts, self.model_desc_dim)
            a["model_desc"][idx] = vecs
        pool.params[idx] = params
        for j, i in enumerate(new):
            u = []
            if f["model_id"]:
                u.append("model_id")
            if f["name"] and not new_rows["name_mask"][j].any():
                u.append("name")
            if f["model_desc"] and not descs[j]:
                u.append("model_desc")
            if f["size"] and new_rows["size_bucket"][j] == 0:
                u.append("size")
            if f["family"] and fam_ids[j] == 0:
                u.append("family")
            pool.unknown[i] = tuple(u)
            pool.families[i] = fams[j]
            pool.descriptions[i] = descs[j]
        return pool

    # ------------------------------------------------------------------------- queries
    def contexts(
        self,
        queries: Sequence[Mapping[str, str | None]],
        *,
        dataset_rows: Mapping[str, tuple[str, Mapping[str, str]]] | None = None,
        require_rows: bool = False,
    ) -> Contexts:
        """Featurises queries ``{dataset, dataset_desc, task, metric}`` (any may be None).

        A known dataset uses its stored ID and embedding (a given description is then ignored);
        an unseen one ID 0 and the embedding of its text (description from the query, else
        from ``dataset_rows``). ``require_rows`` refuses unseen datasets without a row."""
        f, t = self.features, self.bundle.tables
        n = len(queries)
        arrays = features.empty(
            features.CONTEXT_INPUTS, n, {"dataset_desc_dim": self.dataset_desc_dim}
        )  # every context [UNK] until filled in
        unknown, keys, embed_rows, embed_texts = [], [], [], []
        rows_known = np.full(n, -1, np.int64)
        for i, q in enumerate(queries):
            ds, task, metric = q.get("dataset") or None, q.get("task"), q.get("metric")
            desc = q.get("dataset_desc") or ""
            keys.append((ds, task, metric))
            arrays["task"][i] = self.task_index.get(task or "", 0)
            arrays["metric"][i] = self.metric_index.get(metric or "", 0)
            u = []
            j = self.dataset_index.get(ds, -1) if ds else -1
            rows_known[i] = j
            if j >= 0:
                arrays["dataset_id"][i] = t["datasets/dataset_id"][j]
                arrays["dataset_desc"][i] = t["datasets/dataset_desc"][j]
            else:
                row = (dataset_rows or {}).get(ds) if ds else None
                if ds and row is None and require_rows:
                    where = q.get("where") or "query"
                    raise InputError(
                        f"{where}, field 'dataset': {ds!r} is not in the bundle and has no row "
                        "in the datasets file (give its description there)"
                    )
                if row is not None:
                    desc = desc or row[1].get("dataset_desp", "")
                    text_task = row[1].get("task") or task or ""
                else:
                    text_task = task or ""
                if f["dataset_desc"]:
                    if not desc:
                        u.append("dataset_desc")
                    embed_rows.append(i)
                    embed_texts.append(_dataset_text(ds, text_task, desc))
            if f["dataset_id"] and arrays["dataset_id"][i] == 0:
                u.insert(0, "dataset_id")
            if arrays["task"][i] == 0:
                u.append("task")
            if arrays["metric"][i] == 0:
                u.append("metric")
            unknown.append(tuple(u))
        if embed_rows:
            arrays["dataset_desc"][embed_rows] = self.embed(embed_texts, self.dataset_desc_dim)
        return Contexts(keys, arrays, unknown, rows_known)

    # ------------------------------------------------------------------------- competence
    def _init_competence(self) -> None:
        """The training records' memory (``data.competence.Memory``) when the scorer reads
        competence features: built once, from the bundle's tables, as training built it."""
        inp = self.bundle.inputs
        names = list(inp.get("competence") or [])
        self.competence_dim, self.memory = len(names), None
        if not names:
            return
        from modellens_jax.data import competence

        if names != list(competence.NAMES):
            raise BundleError(
                f"{self.bundle.path / 'manifest.json'}: competence features {names} differ from "
                f"this reader's {list(competence.NAMES)} (re-export the bundle)"
            )
        t = self.bundle.tables
        ent = competence.Entities(
            model_family=np.asarray(t["models/family"], np.int64),
            model_params=np.asarray(t["models/params"], np.float64),
            model_release_day=np.asarray(t["models/release_day"], np.int64),
            group_dataset=np.asarray(t["groups/dataset"], np.int64),
            group_task=np.asarray(t["groups/task"], np.int64),
            group_source=np.asarray(t["groups/source"], np.int64),
            dataset_modality=np.asarray(t["datasets/modality"], np.int64),
            dataset_desc=np.asarray(t["datasets/dataset_desc"], np.float32),
        )
        self.entities = ent
        self.memory = competence.Memory(
            ent, t["memory/model"], t["memory/group"], t["memory/z"],
            k=int(inp["competence_neighbours"]),
        )  # fmt: skip
        gm = np.asarray(t["groups/metric"], np.int64)
        self.group_index = {
            (int(d), int(k), int(m)): g
            for g, (d, k, m) in enumerate(zip(ent.group_dataset, ent.group_task, gm))
        }

    def competence(
        self,
        pool: ModelPool,
        ctx: Contexts,
        model_slot: np.ndarray | None = None,
        group_slot: np.ndarray | None = None,
    ) -> np.ndarray:
        """Competence features (encoded, NaN = unknown) of every query × pool model ``[S, U,
        F]``, or of the pairs ``(ctx[group_slot], pool[model_slot])`` ``[P, F]``, from the
        bundle's training records exactly as training computed them: new models, datasets and
        groups are appended to the entities; a query that is a known (dataset, task, metric)
        group is that group, its own records left out as in training."""
        from modellens_jax.data import competence

        ent, t = self.entities, self.bundle.tables
        M, D, G = len(ent.model_family), len(ent.dataset_modality), len(ent.group_dataset)
        new_m = pool.rows < 0
        m_ids = np.where(new_m, M + np.cumsum(new_m) - 1, pool.rows)
        task = np.asarray(ctx.arrays["task"], np.int64)
        metric = np.asarray(ctx.arrays["metric"], np.int64)
        d = np.asarray(ctx.dataset_rows, np.int64)
        new_d = d < 0
        d_ids = np.where(new_d, D + np.cumsum(new_d) - 1, d)
        known_g = np.asarray(
            [
                self.group_index.get((int(a), int(b), int(c)), -1)
                for a, b, c in zip(d, task, metric)
            ],
            np.int64,
        )
        new_g = known_g < 0
        g_ids = np.where(new_g, G + np.cumsum(new_g) - 1, known_g)
        d_src = np.asarray(t["datasets/source"], np.int64)
        src = np.where(d >= 0, d_src[np.maximum(d, 0)], np.asarray(t["tasks/source"])[task])
        ext = competence.Entities(
            model_family=np.r_[ent.model_family, pool.arrays["family"][new_m]],
            model_params=np.r_[ent.model_params, pool.params[new_m]],
            model_release_day=np.r_[ent.model_release_day, pool.release_day[new_m]],
            group_dataset=np.r_[ent.group_dataset, d_ids[new_g]],
            group_task=np.r_[ent.group_task, task[new_g]],
            group_source=np.r_[ent.group_source, src[new_g]],
            dataset_modality=np.r_[ent.dataset_modality, self.task_modality[task[new_d]]],
            dataset_desc=np.concatenate(
                [ent.dataset_desc, np.asarray(ctx.arrays["dataset_desc"], np.float32)[new_d]]
            ),
        )
        if model_slot is None:
            rec_m, rec_g = np.tile(m_ids, len(ctx)), np.repeat(g_ids, len(pool))
        else:
            rec_m, rec_g = m_ids[model_slot], g_ids[group_slot]
        x = competence.encode(self.memory.features(ext, rec_m, rec_g))
        return x if model_slot is not None else x.reshape(len(ctx), len(pool), -1)

    def _competence_input(self, pool: ModelPool, ctx: Contexts) -> np.ndarray:
        """The competence input of the exported scorers, padded to the padded pool/queries."""
        w = competence_width(self.competence_dim)
        out = np.zeros((bucket(len(ctx), 1), bucket(len(pool)), w), np.float32)
        if self.competence_dim:
            out[: len(ctx), : len(pool)] = self.competence(pool, ctx)
        return out

    # ------------------------------------------------------------------------- scoring
    def model_side(self, pool: ModelPool) -> tuple[jax.Array, jax.Array]:
        """The pool's cached (side [N, U', H], prior [N, U']) on device, per member (U' =
        padded size)."""
        if pool._side is None:
            out = self.bundle.functions["model_side"](self.bundle.params, pool.padded())
            pool._side = (out["side"], out["prior"])
        return pool._side

    def score_matrix(
        self, pool: ModelPool, ctx: Contexts, *, cached: bool = True
    ) -> dict[str, np.ndarray]:
        """``score``/``residual`` [S, U] and ``prior`` [U] of every query against every model:
        the members' means (a single model's own values), ``score_std`` [S, U] the members'
        spread (population standard deviation; 0 for one member), ``cold`` [S, U] the fitted
        cold-start prior inside ``score`` (``modellens_jax.cold_start``: models without a
        learned ID; the same for every member) and ``members`` each member's
        ``score``/``residual`` [N, S, U] and ``prior`` [N, U].

        ``cached`` reuses the pool's model side (computed on first use); otherwise the whole
        scorer runs (model side included)."""
        if not len(pool) or not len(ctx):
            z = np.zeros((len(ctx), len(pool)), np.float32)
            zn = np.zeros((self.members, *z.shape), np.float32)
            members = {"score": zn, "prior": zn[:, 0] if len(ctx) else
                       np.zeros((self.members, len(pool)), np.float32), "residual": zn}  # fmt: skip
            return {**_member_means(members), "cold": z.astype(np.float64), "members": members}
        groups = _pad(ctx.arrays, bucket(len(ctx), 1))
        fns, params = self.bundle.functions, self.bundle.params
        comp = self._competence_input(pool, ctx)
        if cached:
            side, prior = self.model_side(pool)
            out = fns["score_sides"](params, side, prior, groups, comp)
        else:
            out = fns["scorer"](params, pool.padded(), groups, comp)
        s, u = len(ctx), len(pool)
        cold = self.cold_prior(pool.arrays, ctx.arrays["task"][:, None])
        members = {
            "score": np.asarray(out["score"])[:, :s, :u] + cold.astype(np.float32),
            "prior": np.asarray(out["prior"])[:, :u],
            "residual": np.asarray(out["residual"])[:, :s, :u],
        }
        return {**_member_means(members), "cold": cold, "members": members}

    def rank(
        self,
        dataset_desc: str | None = None,
        task: str | None = None,
        metric: str | None = None,
        *,
        dataset: str | None = None,
        candidates: ModelPool | str | os.PathLike | Iterable | None = None,
        top_k: int | None = 10,
        max_params: float | None = None,
        min_params: float | None = None,
        families: Iterable[str] | None = None,
        keep_unknown_size: bool = True,
        cached: bool = True,
        pool: str = "task",
        new_task: bool = False,
    ) -> list[Recommendation]:
        """The ``top_k`` best models (all when None/0) for one query, best first.

        ``candidates``: a :class:`ModelPool`, a models.csv path, rows, or None: the known models
        of the query's ``pool`` (see :meth:`resolve_query`; the ranking losses only compare
        models inside one evaluation group, so a score for a model never evaluated on the task
        means little). Filters: ``max_params``/``min_params`` (billions; models of unknown size
        are kept unless ``keep_unknown_size=False``) and ``families`` (names,
        case-insensitive)."""
        check_query(top_k, min_params, max_params)
        task, task_rows, reason = self.resolve_query(
            dataset=dataset, dataset_desc=dataset_desc, task=task, metric=metric, pool=pool,
            new_task=new_task, candidates=candidates is not None,
        )  # fmt: skip
        if candidates is None:
            models = self.known_models() if task_rows is None else self.known_subset(task_rows)
        elif isinstance(candidates, ModelPool):
            models, reason = candidates, "given as a candidate"
        else:
            models, reason = self.candidates(candidates), "given as a candidate"
        ctx = self.contexts(
            [{"dataset": dataset, "dataset_desc": dataset_desc, "task": task, "metric": metric}]
        )
        keep = np.ones(len(models), bool)
        known_size = np.isfinite(models.params)
        if max_params is not None:
            keep &= np.where(known_size, models.params <= max_params, keep_unknown_size)
        if min_params is not None:
            keep &= np.where(known_size, models.params >= min_params, keep_unknown_size)
        if families is not None:
            fam = {x.lower() for x in families}
            keep &= np.asarray([x.lower() in fam for x in models.families], bool)
        out = self.score_matrix(models, ctx, cached=cached)
        # the members' tempered parts, averaged (each member has its own temperature); the
        # residual is the rest, and the shown score the sum of the three as floats add them
        # (within an ulp of the mean score), so the parts add up to it exactly
        T = self.temperature[:, None]
        legacy = np.mean(self._legacy_cold(models)[None] / T, 0)  # inside a 4/5's prior
        cold = legacy + out["cold"][0]
        prior = np.mean(out["members"]["prior"] / T, 0) - legacy
        residual = out["score"][0].astype(np.float64) - (prior + cold)
        score, std = prior + cold + residual, out["score_std"][0]
        idx = np.flatnonzero(keep)
        idx = idx[np.argsort(-score[idx], stable=True)]
        conf = np.full(len(score), np.nan)
        if self.members > 1:  # over the whole ranked list, before top_k
            conf[idx] = confidence_lib.confidence(score[idx], std[idx])
        if top_k:
            idx = idx[:top_k]
        cu = ctx.unknown[0]
        ens = self.members > 1
        return [
            Recommendation(
                rank=r + 1,
                model=models.names[i],
                score=float(score[i]),
                prior=float(prior[i]),
                residual=float(residual[i]),
                unknown=(*models.unknown[i], *cu),
                known=bool(models.known[i]),
                family=models.families[i],
                params=float(models.params[i]) if np.isfinite(models.params[i]) else None,
                description=models.descriptions[i],
                cold=float(cold[i]),
                pool=reason,
                score_std=float(std[i]) if ens else None,
                confidence=float(conf[i]) if ens else None,
            )
            for r, i in enumerate(idx)
        ]

    def cold_prior(self, models: Mapping[str, np.ndarray], task: np.ndarray) -> np.ndarray:
        """The bundle's fitted cold-start prior (score units) of models (rows of ``models``
        arrays) on tasks (broadcast against them); zeros without one."""
        if self.cold is None:
            return np.zeros(np.broadcast_shapes(np.shape(models["model_id"]), np.shape(task)))
        return self.cold.prior(*(models[k] for k in cold_start.MODEL_KEYS), task)

    def _legacy_cold(self, pool: ModelPool) -> np.ndarray:
        """A format-4/5 bundle's fixed size prior inside its exported prior, per pool model
        (before the temperature): ``cold_size_prior · log10(params)`` for models without ID."""
        a = pool.arrays
        on = (a["model_id"] == 0) & (a["size_bucket"] > 0)
        return np.where(on, self.legacy_cold * a["log_size"], 0.0).astype(np.float64)

    def resolve_query(
        self, *, dataset: str | None, dataset_desc: str | None, task: str | None,
        metric: str | None, pool: str = "task", new_task: bool = False, candidates: bool = False,
    ) -> tuple[str | None, np.ndarray | None, str]:  # fmt: skip
        """Checks a query's names and returns (the task to score with, rows of the known models
        in its pool or None for all, why they are in it).

        An unknown task, metric or (description-less) dataset is an InputError naming the
        closest known names; ``new_task`` accepts an unknown task given a description: its pool
        and context come from the tasks of the ``NEAREST_DATASETS`` most similar known
        datasets. ``pool``: ``task`` (models with records on the task), ``modality`` (on any
        task of its modality) or ``all``. With explicit ``candidates`` the task may be left
        out (scored as unknown)."""
        v = self.bundle.vocab
        if pool not in POOLS:
            raise InputError(f"--pool={pool!r}: expected one of {', '.join(POOLS)}")
        if dataset_desc is not None and len(dataset_desc) > MAX_QUERY_TEXT:
            raise InputError(
                f"--dataset_desc: {len(dataset_desc):,} characters; at most {MAX_QUERY_TEXT:,}"
            )
        if dataset_desc is not None and not dataset_desc.strip() and not dataset:
            raise InputError("--dataset_desc: empty; describe the dataset or give --dataset")
        if dataset and dataset not in self.dataset_index and not (dataset_desc or "").strip():
            raise unknown_name("--dataset", dataset, v["datasets"],
                               " (a new dataset needs --dataset_desc)")  # fmt: skip
        if metric and metric not in self.metric_index:
            raise unknown_name("--metric", metric, v["metrics"][1:], " (--list_metrics)")
        if not task and dataset in self.dataset_index:
            task = v["tasks"][int(self.dataset_task[self.dataset_index[dataset]])]
        if not task and not candidates:
            raise InputError("--task: missing (--list_tasks prints the tasks this bundle knows)")
        if not task:  # explicit candidates, no task: scored with the [UNK] task, reported
            return None, None, "given as a candidate"
        nearest = None
        if task not in self.task_index:
            if not new_task:
                raise unknown_name("--task", task, v["tasks"][1:],
                                   " (--list_tasks; --new_task to score a task it has never "
                                   "seen)")  # fmt: skip
            if not (dataset_desc or "").strip():
                raise InputError(f"--new_task: {task!r} needs --dataset_desc")
            nearest = self.nearest_tasks(_dataset_text(dataset, task, dataset_desc or ""))
            if not nearest:
                return task, None, f"new task {task!r}: all known models (no similar dataset)"
        context_task = v["tasks"][nearest[0]] if nearest else task
        if pool == "all":
            return context_task, None, "all known models"
        tasks = nearest or [self.task_index[task]]
        label = ", ".join(v["tasks"][x] for x in tasks)
        if pool == "modality":
            mods = {int(self.task_modality[x]) for x in tasks}
            tasks = [x for x in range(1, len(v["tasks"])) if int(self.task_modality[x]) in mods]
            label = " / ".join(v["modalities"][m] for m in sorted(mods)) + " tasks"
        rows = np.unique(np.concatenate([self.task_models[x] for x in tasks]))
        why = f"records on {label}"
        if nearest:
            why = f"new task {task!r}: {why} (the tasks of the most similar known datasets)"
        return context_task, rows, why

    def nearest_tasks(self, text: str) -> list[int]:
        """Task ids of the known datasets most similar to ``text`` (description cosine), the
        most similar first."""
        t = self.bundle.tables
        emb = np.asarray(t["datasets/dataset_desc"], np.float32)
        if emb.shape[1] == 0:  # a model without descriptions: nothing to compare
            return []
        q = self.embed([text], emb.shape[1])[0]
        sim = emb @ q / np.maximum(np.linalg.norm(emb, axis=1) * np.linalg.norm(q), 1e-12)
        top = np.argsort(-sim, kind="stable")[:NEAREST_DATASETS]
        return list(dict.fromkeys(int(self.dataset_task[j]) for j in top if self.dataset_task[j]))

    def score_pairs(
        self,
        pairs: str | os.PathLike | Iterable[Mapping[str, str]],
        *,
        models: str | os.PathLike | Iterable[Mapping[str, Any]] | None = None,
        datasets: str | os.PathLike | Iterable[Mapping[str, Any]] | None = None,
    ) -> list[dict[str, Any]]:
        """Scores (dataset, task, metric, model) rows (a pairs.csv path or mappings).

        Models and datasets the bundle has not seen need a row in ``models``/``datasets``
        (corpus format); otherwise InputError names the pair's file, row and field."""
        cols = ("dataset", "task", "metric", "model")
        if isinstance(pairs, (str, os.PathLike)):
            rows = read_csv(pairs, cols, nonempty=("dataset", "model"))
        else:
            rows = []
            for i, r in enumerate(pairs, start=1):
                missing = [c for c in cols if c not in r]
                if missing:
                    raise InputError(f"pairs item {i}: missing field(s) {missing}")
                rows.append((f"pairs item {i}", {c: str(r[c] or "").strip() for c in cols}))
        if not rows:
            return []
        mrows = _merge_rows(_as_rows(models, "model", "models"), "model") if models else {}
        drows = (
            _merge_rows(_as_rows(datasets, "dataset", "datasets"), "dataset") if datasets else {}
        )
        model_slot: dict[str, int] = {}
        need: dict[str, tuple[str, Mapping[str, str]]] = {}
        for where, r in rows:
            m = r["model"]
            if m not in model_slot:
                model_slot[m] = len(model_slot)
                if m in self.model_index:
                    need[m] = (where, {"model": m})
                elif m in mrows:
                    need[m] = mrows[m]
                else:
                    raise InputError(
                        f"{where}, field 'model': {m!r} is not in the bundle and has no row in "
                        "the models file (give its family, params and model_desp there)"
                    )
        pool = self._pool(need)
        ctx_slot: dict[tuple, int] = {}
        queries = []
        for where, r in rows:
            key = (r["dataset"], r["task"], r["metric"])
            if key not in ctx_slot:
                ctx_slot[key] = len(ctx_slot)
                queries.append(
                    {"dataset": key[0], "task": key[1], "metric": key[2], "where": where}
                )
        ctx = self.contexts(queries, dataset_rows=drows, require_rows=True)
        mslot = np.asarray([model_slot[r["model"]] for _, r in rows], np.int32)
        gslot = np.asarray(
            [ctx_slot[(r["dataset"], r["task"], r["metric"])] for _, r in rows], np.int32
        )
        models_b = pool.padded()
        groups_b = _pad(ctx.arrays, bucket(len(ctx), 1))
        fn, params = self.bundle.functions["score_pairs"], self.bundle.params
        parts: dict[str, list] = {"score": [], "prior": [], "residual": []}
        comp = np.zeros((len(rows), competence_width(self.competence_dim)), np.float32)
        if self.competence_dim:
            comp = self.competence(pool, ctx, mslot, gslot)
        for a in range(0, len(rows), PAIR_CHUNK):
            ms, gs = mslot[a : a + PAIR_CHUNK], gslot[a : a + PAIR_CHUNK]
            p = bucket(len(ms))
            out = fn(
                params,
                models_b,
                groups_b,
                np.pad(ms, (0, p - len(ms))),
                np.pad(gs, (0, p - len(gs))),
                np.pad(comp[a : a + PAIR_CHUNK], ((0, p - len(ms)), (0, 0))),
            )
            for k in parts:
                parts[k].append(np.asarray(out[k])[:, : len(ms)])
        res = _member_means({k: np.concatenate(v, axis=1) for k, v in parts.items()})
        cold = self.cold_prior({k: pool.arrays[k][mslot] for k in cold_start.MODEL_KEYS},
                               ctx.arrays["task"][gslot])  # fmt: skip
        res["score"] = res["score"] + cold.astype(np.float32)
        ens = self.members > 1
        return [
            {
                "dataset": r["dataset"],
                "task": r["task"],
                "metric": r["metric"],
                "model": r["model"],
                "score": float(res["score"][i]),
                "prior": float(res["prior"][i]),
                "residual": float(res["residual"][i]),
                "cold": float(cold[i]),
                **({"score_std": float(res["score_std"][i])} if ens else {}),
                "unknown": [*pool.unknown[mslot[i]], *ctx.unknown[gslot[i]]],
            }
            for i, (_, r) in enumerate(rows)
        ]


def _member_means(members: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-member outputs (leading member axis) -> their means and ``score_std``, the
    members' spread (population standard deviation; 0 for a single model)."""
    out = {k: np.mean(v, axis=0) for k, v in members.items()}
    out["score_std"] = np.std(members["score"], axis=0)
    return out


def _dataset_text(name: str | None, task: str, desc: str) -> str:
    """The corpus's dataset text (``features.dataset_text``); a nameless query drops the name."""
    if name:
        return features.dataset_text(name, task, desc)
    return features.dataset_text("", task, desc).strip()
