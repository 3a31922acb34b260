"""On-disk embedding cache keyed by (encoder identity, sha256 of the text).

Layout: ``<root>/<identity>/embeddings.npz`` holding ``hashes`` [N] (hex str), ``vectors``
[N, D] and ``identity``; every write goes to a temporary file in the same directory, then
``os.replace`` (readers never see half a file). ``<root>`` is ``$MODELLENS_CACHE`` or
``~/.cache/modellens_jax/embeddings``.

Read-only *seed* caches ship with the package as ``modellens_jax/resources/embeddings/<name>.npz``
(``hashes``, float16 ``vectors``, ``identity``; made by ``write_seed``): ``lookup`` consults every
seed whose identity matches, so the shipped corpus needs no encoder at all.

Concurrent writers: ``add`` re-reads the store just before writing and merges, so two processes
lose at most the entries written between that read and their replace (they are recomputed later).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

CACHE_ENV = "MODELLENS_CACHE"
STORE_FILE = "embeddings.npz"


class CacheError(ValueError):
    """An embedding cache or seed file that cannot be used (the message names the path)."""


class CacheDimensionError(CacheError):
    """Vectors whose dimension differs from the cache's existing vectors."""


def text_sha256(text: str) -> str:
    """The cache key of a text: sha256 of its UTF-8 bytes, hex."""
    return hashlib.sha256(str(text).encode("utf-8")).hexdigest()


def default_cache_root() -> Path:
    """``$MODELLENS_CACHE`` if set, else ``~/.cache/modellens_jax/embeddings``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "modellens_jax" / "embeddings"


def package_seed_dir() -> Path:
    """Where seed caches ship inside the package (may not exist)."""
    return Path(__file__).resolve().parent.parent / "resources" / "embeddings"


def identity_dirname(identity: str) -> str:
    """A filesystem-safe directory name for an encoder identity (hash-suffixed if altered)."""
    safe = re.sub(r"[^A-Za-z0-9._+=-]", "_", identity)
    if safe != identity or len(safe) > 120 or safe in ("", ".", ".."):
        safe = f"{safe[:100]}-{hashlib.sha256(identity.encode()).hexdigest()[:12]}"
    return safe


def _mkstemp(path: Path) -> tuple[int, str]:
    """A temporary file beside ``path``, readable like a normally created file (mkstemp: 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp, 0o644)
    return fd, tmp


def _atomic_savez(path: Path, compressed: bool = False, **arrays: Any) -> None:
    """Writes an .npz next to ``path`` and renames it over ``path``."""
    fd, tmp = _mkstemp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            (np.savez_compressed if compressed else np.savez)(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Writes a text file through a temporary file and ``os.replace``."""
    fd, tmp = _mkstemp(path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_npz(path: Path) -> tuple[str, np.ndarray, np.ndarray]:
    """(identity, hashes, vectors) of a store or seed file, validated."""
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("identity", "hashes", "vectors") if k not in z.files]
            if missing:
                raise CacheError(f"{path}: not an embedding cache file (missing {missing})")
            identity = str(z["identity"])
            hashes = np.asarray(z["hashes"]).astype(str)
            vectors = np.asarray(z["vectors"])
    except (OSError, ValueError) as e:
        if isinstance(e, CacheError):
            raise
        raise CacheError(f"{path}: unreadable embedding cache file ({e})") from e
    if vectors.ndim != 2 or len(vectors) != len(hashes):
        raise CacheError(f"{path}: vectors {vectors.shape} do not match {len(hashes)} hashes")
    return identity, hashes, vectors


def _read_identity(path: Path) -> str | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            return str(z["identity"]) if "identity" in z.files else None
    except (OSError, ValueError):
        return None


def write_seed(
    path: str | os.PathLike, texts: Sequence[str], vectors: np.ndarray, identity: str
) -> Path:
    """Writes a read-only seed cache (float16 vectors) for ``texts`` under ``identity``."""
    vectors = np.asarray(vectors)
    if vectors.ndim != 2 or len(vectors) != len(texts):
        raise CacheError(f"{path}: {len(texts)} texts but vectors of shape {vectors.shape}")
    if not np.isfinite(vectors).all():
        raise CacheError(f"{path}: refusing to write non-finite vectors")
    hashes = [text_sha256(t) for t in texts]
    _, first = np.unique(np.array(hashes), return_index=True)
    keep = np.sort(first)
    p = Path(path)
    _atomic_savez(
        p,
        compressed=True,
        identity=np.array(identity),
        hashes=np.array(hashes)[keep],
        vectors=vectors[keep].astype(np.float16),
    )
    return p


class EmbeddingCache:
    """Vectors of one encoder identity, from a writable store plus matching read-only seeds.

    Args:
      identity: the encoder identity (``encoder_identity``); one directory per identity.
      dim: the encoder's output dimension; an existing store or seed of another dimension is a
        ``CacheDimensionError``. ``None`` takes it from the first vectors seen.
      root: cache root (default ``default_cache_root()``).
      dtype: storage dtype of the writable store (float32 keeps cached = freshly computed).
      seed_dirs: folders searched for ``*.npz`` seeds (default: the package's); ``()`` for none.
    """

    def __init__(
        self,
        identity: str,
        dim: int | None = None,
        *,
        root: str | os.PathLike | None = None,
        dtype: Any = np.float32,
        seed_dirs: Iterable[str | os.PathLike] | None = None,
    ):
        self.identity = identity
        self.dim = dim
        self.root = Path(root).expanduser() if root is not None else default_cache_root()
        self.path = self.root / identity_dirname(identity)
        self.store_path = self.path / STORE_FILE
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float16, np.float32):
            raise CacheError(f"{self.path}: cache dtype must be float16 or float32, not {dtype}")
        self.seed_dirs = [package_seed_dir()] if seed_dirs is None else [Path(d) for d in seed_dirs]
        self.seed_paths: list[Path] = []
        self._seed: dict[str, np.ndarray] = {}  # hash -> vector (read-only)
        self._store: dict[str, np.ndarray] = {}
        self._store_stat: tuple[int, int] | None = None
        for d in self.seed_dirs:
            for f in sorted(d.glob("*.npz")) if d.is_dir() else []:
                if _read_identity(f) == identity:
                    _, hashes, vectors = _read_npz(f)
                    self.check_dim(vectors.shape[1], f)
                    self._seed.update(zip(hashes.tolist(), vectors, strict=True))
                    self.seed_paths.append(f)
        self._reload_store()

    def check_dim(self, d: int, where: Path) -> None:
        """Adopts ``d`` as the cache dimension, or raises ``CacheDimensionError`` on a conflict."""
        if self.dim is None:
            self.dim = int(d)
        elif int(d) != self.dim:
            raise CacheDimensionError(
                f"{where}: cached vectors have dimension {d} but this encoder gives {self.dim} "
                f"(identity {self.identity!r}); delete {self.path} or use another cache root"
            )

    # -- internals

    def _reload_store(self) -> None:
        """Reads the on-disk store if it changed since the last read."""
        try:
            st = self.store_path.stat()
        except FileNotFoundError:
            return
        stamp = (st.st_size, st.st_mtime_ns)
        if stamp == self._store_stat:
            return
        identity, hashes, vectors = _read_npz(self.store_path)
        if identity != self.identity:
            raise CacheError(
                f"{self.store_path}: holds identity {identity!r}, expected {self.identity!r}"
            )
        self.check_dim(vectors.shape[1], self.store_path)
        self._store.update(zip(hashes.tolist(), vectors, strict=True))
        self._store_stat = stamp

    # -- public API

    def __len__(self) -> int:
        return len(self._store.keys() | self._seed.keys())

    def __contains__(self, text: str) -> bool:
        h = text_sha256(text)
        return h in self._store or h in self._seed

    def lookup(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Cached vectors for ``texts``: ``(vectors [N, dim] float32, missing_indices)``.

        Rows listed in ``missing_indices`` (int64, ascending) are zeros.
        """
        n = len(texts)
        out = np.zeros((n, self.dim or 0), np.float32)
        missing = []
        for i, t in enumerate(texts):
            h = text_sha256(t)
            v = self._store.get(h)
            if v is None:
                v = self._seed.get(h)
            if v is None:
                missing.append(i)
            else:
                out[i] = v
        return out, np.asarray(missing, dtype=np.int64)

    def add(self, texts: Sequence[str], vectors: np.ndarray) -> int:
        """Stores vectors for texts not cached yet; returns how many were new."""
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or len(vectors) != len(texts):
            raise CacheError(
                f"{self.path}: {len(texts)} texts but vectors of shape {vectors.shape}"
            )
        self.check_dim(vectors.shape[1], self.path)
        if not np.isfinite(vectors).all():
            raise CacheError(f"{self.path}: refusing to cache non-finite vectors")
        self._reload_store()  # merge what other processes wrote meanwhile
        new = {}
        for t, v in zip(texts, vectors, strict=True):
            h = text_sha256(t)
            if h not in self._store and h not in self._seed and h not in new:
                new[h] = v.astype(self.dtype)
        if not new:
            return 0
        self._store.update(new)
        hashes = np.array(list(self._store.keys()))
        stacked = np.stack(list(self._store.values())).astype(self.dtype)
        _atomic_savez(
            self.store_path, identity=np.array(self.identity), hashes=hashes, vectors=stacked
        )
        meta = {"identity": self.identity, "dim": self.dim, "dtype": self.dtype.name}
        meta["count"] = len(hashes)
        atomic_write_text(self.path / "meta.json", json.dumps(meta, indent=1) + "\n")
        st = self.store_path.stat()
        self._store_stat = (st.st_size, st.st_mtime_ns)
        return len(new)

    def __repr__(self) -> str:
        return (
            f"EmbeddingCache({self.path}, dim={self.dim}, stored={len(self._store)}, "
            f"seeded={len(self._seed)})"
        )
