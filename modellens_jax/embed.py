"""Frozen text embeddings for a compiled corpus: encode (cached), import, and serve rows by index.

Command::

    python -m modellens_jax.embed --corpus=DIR [--encoder=DIR] [--import_npz=FILE]
        [--dtype=float16|float32] [--batch_size=64] [--max_length=N]
        [--cache_dir=DIR | --nocache] [--write_seed=FILE]

writes ``DIR/embeddings/{model_desc.npy, dataset_desc.npy, manifest.json}``: one row per corpus
model (``corpus.model_texts``; a model without a description gets a text derived from its name
and metadata by the corpus compiler) and per dataset (``corpus.dataset_texts``). Only texts missing
from the embedding cache (``modellens_jax.text.cache``) are encoded, so re-running on an unchanged
corpus encodes nothing and adding 10 models encodes 10. ``--import_npz`` takes the model vectors
from an ``.npz`` with ``model_names`` and ``embeddings`` instead (the reference implementation's
format; names matched through aliases), and the dataset vectors too when it also holds
``dataset_names`` and ``dataset_embeddings``. ``--write_seed`` also writes every encoded text of
the corpus as a seed cache (``modellens_jax/resources/embeddings/<name>.npz`` ships with the
package).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modellens_jax import cli, fsutil
from modellens_jax.text.cache import (
    CacheError,
    EmbeddingCache,
    atomic_write_text,
    text_sha256,
    write_seed,
)
from modellens_jax.text.encoder import (
    Encoder,
    EncoderNotFoundError,
    default_encoder_dir,
    encoder_identity,
    read_spec,
)

EMBEDDINGS_DIR = "embeddings"
TABLES = ("model_desc", "dataset_desc")
FORMAT_VERSION = 1


class EmbedError(ValueError):
    """Bad input to the embedding stage (an import file, a corpus): the message names the path."""


# --------------------------------------------------------------------------- encoding


_ENCODERS: dict[tuple[str, int | None, int], Encoder] = {}
DEFAULT_ENCODER_NAMES = ("minilm", "default", "")


def _is_default(encoder: str | os.PathLike | None) -> bool:
    return encoder is None or str(encoder).lower() in DEFAULT_ENCODER_NAMES


def shipped_identity() -> tuple[str, int] | None:
    """(identity, dim) of the default encoder's embeddings shipped as package seeds, so the
    shipped corpus embeds without the encoder package; None when no seed ships."""
    from modellens_jax.text.cache import package_seed_dir

    for f in sorted(package_seed_dir().glob("*.npz")):
        with np.load(f, allow_pickle=False) as z:
            return str(z["identity"]), int(z["vectors"].shape[1])
    return None


def resolve_encoder_dir(encoder: str | os.PathLike | None) -> Path:
    """A checkpoint directory; ``None``, ``"minilm"`` or ``"default"`` mean all-MiniLM-L6-v2."""
    if encoder is None or str(encoder).lower() in DEFAULT_ENCODER_NAMES:
        return default_encoder_dir()
    return Path(encoder).expanduser()


def load_encoder(
    encoder_dir: str | os.PathLike | None = None,
    *,
    max_length: int | None = None,
    batch_size: int = 64,
) -> Encoder:
    """An ``Encoder`` for the directory (default: all-MiniLM-L6-v2), loaded once per process."""
    path = resolve_encoder_dir(encoder_dir)
    key = (str(path.resolve()), max_length, batch_size)
    if key not in _ENCODERS:
        _ENCODERS[key] = Encoder(path, max_length=max_length, batch_size=batch_size)
    return _ENCODERS[key]


def _resolve_cache(
    cache: EmbeddingCache | str | os.PathLike | bool | None, identity: str, dim: int
) -> EmbeddingCache | None:
    if cache is None or cache is False:
        return None
    if isinstance(cache, EmbeddingCache):
        if cache.identity != identity:
            raise CacheError(
                f"{cache.path}: cache is for encoder {cache.identity!r}, not {identity!r}"
            )
        if cache.dim is not None and cache.dim != dim:
            cache.check_dim(dim, cache.path)  # raises CacheDimensionError
        cache.dim = dim
        return cache
    root = None if cache is True else cache
    return EmbeddingCache(identity, dim, root=root)


def embed_texts(
    texts: Sequence[str],
    encoder_dir: str | os.PathLike | None = None,
    *,
    cache: EmbeddingCache | str | os.PathLike | bool | None = True,
    batch_size: int = 64,
    max_length: int | None = None,
    dtype: Any = np.float32,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Embeds ``texts``, encoding only those missing from the cache.

    Args:
      texts: the texts (duplicates are encoded once).
      encoder_dir: a BERT-family checkpoint directory; ``None``/``"minilm"``: all-MiniLM-L6-v2.
      cache: an ``EmbeddingCache``, a cache root directory, ``True`` (default root) or
        ``False``/``None`` (no cache).
      batch_size: rows per encoder batch.
      max_length: truncation length; default the checkpoint's.
      dtype: dtype of the returned array (float16 or float32).

    Returns:
      ``(vectors [len(texts), dim], stats)`` with stats ``n_texts``, ``n_unique``, ``n_cached``,
      ``n_encoded``, ``seconds`` (total), ``encode_seconds``, ``texts_per_s`` (encoded texts per
      second of encoding), ``compiles``, ``identity``, ``dim``.
    """
    t0 = time.perf_counter()
    texts = [str(t) for t in texts]
    try:
        spec = read_spec(resolve_encoder_dir(encoder_dir), max_length=max_length)
        identity, dim = encoder_identity(spec), spec.dim
    except EncoderNotFoundError as missing_encoder:
        # Without the encoder package, the shipped embeddings still serve the texts they hold.
        shipped = shipped_identity() if _is_default(encoder_dir) and max_length is None else None
        if shipped is None or cache is None or cache is False:
            raise
        spec, (identity, dim), not_found = None, shipped, missing_encoder
    store = _resolve_cache(cache, identity, dim)

    # Unique texts, first occurrence order.
    first: dict[str, int] = {}
    inverse = np.fromiter((first.setdefault(t, len(first)) for t in texts), np.int64, len(texts))
    unique = list(first)
    if store is not None:
        vecs, missing = store.lookup(unique)
    else:
        vecs, missing = np.zeros((len(unique), dim), np.float32), np.arange(len(unique))
    encode_seconds, compiles = 0.0, 0
    if len(missing) and spec is None:
        raise EncoderNotFoundError(
            f"{len(missing)} texts are not among the shipped embeddings: {not_found}"
        ) from not_found
    if len(missing):
        enc = load_encoder(spec.path, max_length=max_length, batch_size=batch_size)
        if enc.identity != identity:  # the files changed since the encoder was loaded
            _ENCODERS.clear()
            enc = load_encoder(spec.path, max_length=max_length, batch_size=batch_size)
        before = enc.trace_count
        todo = [unique[i] for i in missing]
        new = enc.encode(todo)
        encode_seconds = enc.last_stats["seconds"]
        compiles = enc.trace_count - before
        vecs[missing] = new
        if store is not None:
            store.add(todo, new)
    out = vecs[inverse].astype(np.dtype(dtype), copy=False)
    stats = {
        "n_texts": len(texts),
        "n_unique": len(unique),
        "n_cached": len(unique) - len(missing),
        "n_encoded": len(missing),
        "seconds": time.perf_counter() - t0,
        "encode_seconds": encode_seconds,
        "texts_per_s": len(missing) / encode_seconds if encode_seconds > 0 else 0.0,
        "compiles": compiles,
        "identity": identity,
        "dim": dim,
    }
    return out, stats


# --------------------------------------------------------------------------- import


def name_aliases(name: str) -> tuple[str, str, str]:
    """Match keys of a model name, strictest first: the name, lower-cased with ``-``, ``_`` and
    spaces removed, and the same for the basename after the last ``/``."""

    def squash(s: str) -> str:
        return s.lower().replace("-", "").replace("_", "").replace(" ", "")

    return name, squash(name), squash(name.rsplit("/", 1)[-1])


def _match_names(
    wanted: Sequence[str], available: Sequence[str], where: str, what: str
) -> np.ndarray:
    """Row of ``available`` for each ``wanted`` name, through ``name_aliases`` (strictest key
    first; among equal keys the first row wins)."""
    tables: list[dict[str, int]] = [{}, {}, {}]
    for row, name in enumerate(available):
        for table, key in zip(tables, name_aliases(str(name)), strict=True):
            table.setdefault(key, row)
    rows = np.empty(len(wanted), np.int64)
    missing = []
    for i, name in enumerate(wanted):
        for table, key in zip(tables, name_aliases(str(name)), strict=True):
            if key in table:
                rows[i] = table[key]
                break
        else:
            missing.append(name)
    if missing:
        shown = ", ".join(repr(m) for m in missing[:5])
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        raise EmbedError(
            f"{where}: {len(missing)} of {len(wanted)} {what} not found, even through aliases "
            f"(lower-cased, -/_/space removed, basename after '/'): {shown}{more}"
        )
    return rows


def _load_npz_table(path: Path, names_key: str, vecs_key: str) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise EmbedError(f"{path}: embeddings file does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            absent = [k for k in (names_key, vecs_key) if k not in z.files]
            if absent:
                raise EmbedError(f"{path}: missing arrays {absent} (has {sorted(z.files)})")
            names = np.asarray(z[names_key]).astype(str)
            vecs = np.asarray(z[vecs_key])
    except (OSError, ValueError) as e:
        if isinstance(e, EmbedError):
            raise
        raise EmbedError(f"{path}: cannot read .npz ({e})") from e
    if vecs.ndim != 2 or len(vecs) != len(names):
        raise EmbedError(f"{path}: {vecs_key} has shape {vecs.shape} for {len(names)} {names_key}")
    if not np.isfinite(vecs).all():
        raise EmbedError(f"{path}: {vecs_key} holds non-finite values")
    return names, vecs


def import_npz(
    path: str | os.PathLike,
    names: Sequence[str],
    *,
    names_key: str = "model_names",
    vectors_key: str = "embeddings",
) -> np.ndarray:
    """Rows of a precomputed ``.npz`` (``model_names`` [N], ``embeddings`` [N, D]) for ``names``,
    matched through aliases; float32 ``[len(names), D]``. Unmatched names are an error."""
    p = Path(path).expanduser()
    available, vecs = _load_npz_table(p, names_key, vectors_key)
    rows = _match_names(list(names), available.tolist(), str(p), "names")
    return vecs[rows].astype(np.float32)


# --------------------------------------------------------------------------- row source


class EmbeddingRows:
    """A Grain-friendly random-access source of embedding rows from a ``.npy`` on disk.

    The file is memory-mapped, so a batch reads only the rows it gathers. Pickles by path (for
    Grain worker processes): each process maps the file itself.
    """

    def __init__(self, path: str | os.PathLike, *, dtype: Any = np.float32):
        self.path = Path(path)
        self.dtype = np.dtype(dtype)
        self._arr: np.ndarray | None = None
        arr = self.array
        if arr.ndim != 2:
            raise EmbedError(f"{self.path}: expected a 2-D array, got shape {arr.shape}")

    @classmethod
    def from_corpus(
        cls, corpus_dir: str | os.PathLike, table: str = "model_desc", *, dtype: Any = np.float32
    ) -> EmbeddingRows:
        """The ``table`` (model_desc or dataset_desc) written by the embed command."""
        d = Path(corpus_dir) / EMBEDDINGS_DIR
        mpath = d / "manifest.json"
        if not mpath.is_file():
            raise EmbedError(f"{d}: no embeddings (run `python -m modellens_jax.embed`)")
        manifest = json.loads(mpath.read_text())
        if table not in manifest["tables"]:
            raise EmbedError(f"{mpath}: no table {table!r} (has {sorted(manifest['tables'])})")
        rows = cls(d / manifest["tables"][table]["file"], dtype=dtype)
        if len(rows) != manifest["tables"][table]["rows"]:
            raise EmbedError(f"{rows.path}: {len(rows)} rows, manifest says otherwise")
        return rows

    @property
    def array(self) -> np.ndarray:
        """The memory-mapped array (opened on first use in each process)."""
        if self._arr is None:
            if not self.path.is_file():
                raise EmbedError(f"{self.path}: embeddings file does not exist")
            self._arr = np.load(self.path, mmap_mode="r")
        return self._arr

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return int(self.array.shape[1])

    def __len__(self) -> int:
        return int(self.array.shape[0])

    def __getitem__(self, index: int) -> np.ndarray:
        return np.asarray(self.array[index], dtype=self.dtype)

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "dtype": self.dtype}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path, self.dtype, self._arr = state["path"], state["dtype"], None

    def __repr__(self) -> str:
        return f"EmbeddingRows({self.path}, rows={len(self)}, dim={self.dim})"


# --------------------------------------------------------------------------- the command


def _load_corpus(directory: str | os.PathLike) -> Any:
    """The compiled corpus (imported lazily: the encoder-side tests do not need it)."""
    from modellens_jax.data.corpus import load_corpus

    return load_corpus(directory)


def _list_sha256(items: Sequence[str]) -> str:
    h = hashlib.sha256()
    for s in items:
        h.update(text_sha256(s).encode() + b"\n")
    return h.hexdigest()


def embed_corpus(
    corpus_dir: str | os.PathLike,
    *,
    encoder: str | os.PathLike | None = None,
    import_npz_path: str | os.PathLike | None = None,
    dtype: str = "float32",
    batch_size: int = 64,
    max_length: int | None = None,
    cache: EmbeddingCache | str | os.PathLike | bool | None = True,
    seed_path: str | os.PathLike | None = None,
    verbose: bool = True,
) -> dict[str, Any]:
    """Embeds a compiled corpus's model and dataset texts into ``<corpus>/embeddings/``.

    ``encoder``: a checkpoint directory, or ``None``/``"minilm"`` for the default. Returns the
    manifest written (its ``stats`` say how many texts were encoded and at what rate).
    """
    if dtype not in ("float16", "float32"):
        raise EmbedError(f"dtype must be float16 or float32, not {dtype!r}")
    corpus = _load_corpus(corpus_dir)
    cdir = Path(getattr(corpus, "dir", corpus_dir))
    texts = {"model_desc": list(corpus.model_texts), "dataset_desc": list(corpus.dataset_texts)}
    tables: dict[str, dict[str, Any]] = {}
    arrays: dict[str, np.ndarray] = {}
    to_encode: list[str] = []

    if import_npz_path is not None:
        ip = Path(import_npz_path).expanduser()
        model_names = list(corpus.model_names)
        arrays["model_desc"] = import_npz(ip, model_names)  # checks the file first
        file_id = f"npz:{ip.name}:{hashlib.sha256(ip.read_bytes()).hexdigest()[:16]}"
        tables["model_desc"] = {"source": "import", "identity": file_id, "file_path": str(ip)}
        tables["model_desc"]["names_sha256"] = _list_sha256(model_names)
        with np.load(ip, allow_pickle=False) as z:
            has_datasets = {"dataset_names", "dataset_embeddings"} <= set(z.files)
        dataset_names = getattr(corpus, "dataset_names", None)
        if dataset_names is None and hasattr(corpus, "vocab"):
            dataset_names = corpus.vocab.get("datasets")
        if has_datasets and dataset_names is not None:
            arrays["dataset_desc"] = import_npz(
                ip, list(dataset_names), names_key="dataset_names", vectors_key="dataset_embeddings"
            )
            tables["dataset_desc"] = {"source": "import", "identity": file_id, "file_path": str(ip)}
            tables["dataset_desc"]["names_sha256"] = _list_sha256(list(dataset_names))

    encoder_info = None
    stats: dict[str, Any] = {"n_texts": 0, "n_encoded": 0, "n_cached": 0, "texts_per_s": 0.0}
    for name in TABLES:
        if name not in arrays:
            to_encode += texts[name]
    if to_encode:
        try:  # only now: an import needs no encoder
            encoder_dir = resolve_encoder_dir(encoder)
        except EncoderNotFoundError:
            if not _is_default(encoder):
                raise
            encoder_dir = None  # embed_texts falls back to the shipped embeddings
        vecs, stats = embed_texts(
            to_encode,
            encoder_dir,
            cache=cache,
            batch_size=batch_size,
            max_length=max_length,
            dtype=np.float32,
        )
        if encoder_dir is None:  # served from the shipped embeddings
            encoder_info = {"identity": stats["identity"], "name": "minilm (shipped embeddings)",
                            "dim": stats["dim"]}  # fmt: skip
        else:
            spec = read_spec(encoder_dir, max_length=max_length)
            encoder_info = {
                "identity": stats["identity"],
                "name": spec.name,
                "path": str(spec.path),
                "dim": spec.dim,
                "pooling": list(spec.pooling),
                "normalize": spec.normalize,
                "max_length": spec.max_length,
            }
        start = 0
        for name in TABLES:
            if name in arrays:
                continue
            arrays[name] = vecs[start : start + len(texts[name])]
            start += len(texts[name])
            tables[name] = {"source": "encoder", "identity": stats["identity"]}
            tables[name]["texts_sha256"] = _list_sha256(texts[name])
        if seed_path is not None:
            write_seed(seed_path, to_encode, vecs, stats["identity"])
            if verbose:
                print(f"seed cache: {seed_path} ({len(set(to_encode))} texts)")

    out_dir = cdir / EMBEDDINGS_DIR
    tmp = cdir / f".{EMBEDDINGS_DIR}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        for name in TABLES:
            arr = arrays[name].astype(dtype)
            np.save(tmp / f"{name}.npy", arr)
            tables[name].update(file=f"{name}.npy", rows=int(arr.shape[0]), dim=int(arr.shape[1]))
        manifest = {
            "format_version": FORMAT_VERSION,
            "identity": encoder_info["identity"]
            if encoder_info
            else tables["model_desc"]["identity"],
            "dim": {name: tables[name]["dim"] for name in TABLES},
            "dtype": dtype,
            "counts": {name: tables[name]["rows"] for name in TABLES},
            "encoder": encoder_info,
            "tables": tables,
            "corpus_fingerprint": getattr(corpus, "fingerprint", None),
            "stats": {k: stats.get(k) for k in ("n_texts", "n_encoded", "n_cached", "texts_per_s")},
        }
        atomic_write_text(tmp / "manifest.json", json.dumps(manifest, indent=1) + "\n")
        fsutil.replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    s = manifest["stats"]
    if verbose:
        print(
            f"embedded {cdir}: {manifest['counts']} rows, dim {manifest['dim']}, {dtype}; "
            f"{s['n_texts']} texts to encode, {s['n_cached']} cached, {s['n_encoded']} encoded "
            f"({s['texts_per_s']:.1f} texts/s) -> {out_dir}"
        )
    return manifest


def load_corpus_embeddings(corpus_dir: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """``(model_desc, dataset_desc)`` tables written by ``embed_corpus``, memory-mapped: the
    input pipeline gathers the rows each batch needs."""
    model = EmbeddingRows.from_corpus(corpus_dir, "model_desc")
    dataset = EmbeddingRows.from_corpus(corpus_dir, "dataset_desc")
    return model.array, dataset.array


def _define(fv) -> None:
    from absl import flags

    def string(name: str, help_: str, **kw) -> None:
        flags.DEFINE_string(name, kw.pop("default", None), help_, flag_values=fv, **kw)

    string("corpus", "Compiled corpus directory.", required=True)
    string("encoder", "BERT-family checkpoint directory, or 'minilm'.")
    string("import_npz", ".npz with model_names and embeddings (and optionally dataset_*).")
    flags.DEFINE_enum("dtype", "float32", ["float16", "float32"], "Stored dtype.", flag_values=fv)
    flags.DEFINE_integer("batch_size", 64, "Texts per encoder batch.", flag_values=fv)
    flags.DEFINE_integer("max_length", None, "Token limit (default: the encoder's).",
                         flag_values=fv)  # fmt: skip
    string("cache_dir", "Cache root (default $MODELLENS_CACHE).")
    flags.DEFINE_bool("cache", True, "Reuse and store cached vectors (--nocache: encode "
                      "everything, store nothing).", flag_values=fv)  # fmt: skip
    string("write_seed", "Also write the vectors as a seed .npz.")


def _run(fv) -> None:
    embed_corpus(
        fv.corpus,
        encoder=fv.encoder,
        import_npz_path=fv.import_npz,
        dtype=fv.dtype,
        batch_size=fv.batch_size,
        max_length=fv.max_length,
        cache=(fv.cache_dir or True) if fv.cache else False,
        seed_path=fv.write_seed,
    )


main = cli.command(_define, _run, __doc__)

if __name__ == "__main__":
    sys.exit(main())
