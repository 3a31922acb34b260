"""The bundle format: what ``export`` writes and serving reads, and the check of its integrity.

A bundle is a directory of data files (``DATA_FILES``), serialized ``jax.export`` functions
(``FUNCTIONS``, whose models and groups blocks are ``data.features.MODEL_INPUTS`` /
``CONTEXT_INPUTS``) and ``manifest.json`` (format, version, sha256 and size of every file, input
shapes, features). :func:`verify` checks every checksum; :class:`Bundle` loads a verified one.
Imports only jax, numpy and safetensors (no flax, orbax, grain or training code).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file

from modellens_jax import fsutil

FORMAT = "modellens-bundle"
# 2: models carry log_size and release; 3: applicability tables; 4: competence memory + input;
# 5: seed ensembles: every parameter has a leading member axis [N, ...] (N = 1 for a single run)
# and every function returns each member's outputs [N, ...] (manifest "ensemble": members, seeds);
# 6: the cold-start prior is fitted and applied outside the functions (tables cold_start/*,
# manifest "cold_start"; 4 and 5 carry a fixed size prior inside their functions)
FORMAT_VERSION = 6
READABLE_VERSIONS = (4, 5, 6)  # a 4 is a single model: loaded as a one-member ensemble
FUNCTIONS = {
    "scorer": "scorer.jaxexport",
    "model_side": "model_side.jaxexport",
    "score_sides": "score_sides.jaxexport",
    "score_pairs": "score_pairs.jaxexport",
}
DATA_FILES = (
    "params.safetensors",
    "tables.safetensors",
    "vocab.json",
    "texts.json",
    "config.json",
    "encoder.json",
)
REQUIRED_FILES = (*DATA_FILES, *FUNCTIONS.values())


class BundleError(ValueError):
    """A bundle that is missing, incomplete, corrupted or from another format version."""


def competence_width(n: int) -> int:
    """Width of the exported functions' competence input: ``n`` features, or 1 (ignored
    zeros) for a scorer without them (no zero-size dimensions in the exported signatures)."""
    return max(int(n), 1)


def bucket(n: int, minimum: int = 8) -> int:
    """Padded size for ``n`` rows: ``max(n, minimum)`` rounded up to 2^k or 3·2^(k-1), so a
    shape-polymorphic function compiles for few shapes (two per octave) and pads by < 50%."""
    n = max(int(n), minimum)
    p = 1 << (n - 1).bit_length()
    return 3 * p // 4 if 4 * n <= 3 * p else p


# --- reading and verifying a bundle ---------------------------------------------------------
def verify(path: str | os.PathLike) -> dict[str, Any]:
    """Checks ``manifest.json`` (format, version) and every listed file's size and sha256;
    returns the manifest. Raises :class:`BundleError` naming the first bad file."""
    root = Path(path)
    if not root.is_dir():
        raise BundleError(f"{root}: no such bundle directory")
    mpath = root / "manifest.json"
    if not mpath.is_file():
        raise BundleError(f"{mpath}: missing; {root} is not a bundle or is incomplete")
    try:
        manifest = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{mpath}: unreadable ({e}); the bundle is corrupted") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{mpath}: not a {FORMAT} manifest")
    if manifest.get("format_version") not in READABLE_VERSIONS:
        raise BundleError(
            f"{mpath}: format_version {manifest.get('format_version')!r}; this reader "
            f"understands {', '.join(map(str, READABLE_VERSIONS))} (re-export the bundle with "
            f"version {FORMAT_VERSION})"
        )
    files = manifest.get("files") or {}
    for name in REQUIRED_FILES:
        if name not in files:
            raise BundleError(f"{mpath}: does not list {name}; the bundle is incomplete")
    for name, info in files.items():
        f = root / name
        if not f.is_file():
            raise BundleError(f"{f}: missing; the bundle is incomplete (re-export it)")
        size = f.stat().st_size
        if size != info.get("bytes"):
            raise BundleError(
                f"{f}: {size} bytes, manifest says {info.get('bytes')}; the file is truncated "
                "or was modified (checksum check failed)"
            )
        digest = fsutil.sha256_file(f)
        if digest != info.get("sha256"):
            raise BundleError(
                f"{f}: sha256 checksum mismatch (manifest {str(info.get('sha256'))[:16]}..., "
                f"file {digest[:16]}...); the file is corrupted or was modified"
            )
    return manifest


@dataclasses.dataclass
class Bundle:
    """A verified bundle in memory: parameters on device, tables and vocabularies on host, and
    the deserialized scoring functions (jitted, so each padded shape compiles once)."""

    path: Path
    manifest: dict[str, Any]
    config: dict[str, Any]
    encoder: dict[str, Any]
    vocab: dict[str, list[str]]
    texts: dict[str, list[str]]
    tables: dict[str, np.ndarray]
    params: dict[str, jax.Array]
    functions: dict[str, Callable]
    exported: dict[str, jax.export.Exported]

    @classmethod
    def load(cls, path: str | os.PathLike, *, check: bool = True) -> Bundle:
        """Reads ``path``; ``check`` verifies the manifest's checksums first (default)."""
        root = Path(path)
        manifest = verify(root) if check else json.loads((root / "manifest.json").read_text())

        def read_json(name: str) -> Any:
            try:
                return json.loads((root / name).read_text())
            except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
                raise BundleError(f"{root / name}: unreadable ({e})") from e

        def read_st(name: str) -> dict[str, np.ndarray]:
            try:
                return load_file(root / name)
            except (OSError, SafetensorError) as e:
                raise BundleError(f"{root / name}: unreadable safetensors ({e})") from e

        exported = {}
        for fname, file in FUNCTIONS.items():
            try:
                exported[fname] = jax.export.deserialize(bytearray((root / file).read_bytes()))
            except Exception as e:  # flatbuffers raises assorted errors on bad input
                raise BundleError(f"{root / file}: cannot deserialize ({e})") from e
        params = {k: jax.device_put(v) for k, v in read_st("params.safetensors").items()}
        functions = {k: jax.jit(e.call) for k, e in exported.items()}
        if manifest.get("format_version") == 4:
            functions = _one_member(functions)
        return cls(
            path=root,
            manifest=manifest,
            config=read_json("config.json"),
            encoder=read_json("encoder.json"),
            vocab=read_json("vocab.json"),
            texts=read_json("texts.json"),
            tables=read_st("tables.safetensors"),
            params=params,
            functions=functions,
            exported=exported,
        )

    @property
    def members(self) -> int:
        """Seed-ensemble members whose scores the functions return (1: a single model)."""
        return int((self.manifest.get("ensemble") or {}).get("members", 1))

    @property
    def cold_start(self) -> dict[str, Any] | None:
        """The fitted cold-start prior (weights, ``slope [T, 2]``, ``impute [T]``, ``family
        [T, F]``, how it was fitted), or None (format 6 exported with the fit off, or 4/5)."""
        info = self.manifest.get("cold_start")
        if not info or "cold_start/slope" not in self.tables:
            return None
        return {**info, **{k: self.tables[f"cold_start/{k}"] for k in ("slope", "impute",
                                                                       "family")}}  # fmt: skip

    @property
    def features(self) -> dict[str, bool]:
        """Which features the model uses (``model_id``, ``name``, ``model_desc``, ...)."""
        return dict(self.manifest["features"])

    @property
    def inputs(self) -> dict[str, Any]:
        return dict(self.manifest["inputs"])


def _one_member(functions: dict[str, Callable]) -> dict[str, Callable]:
    """A format-4 bundle's functions (one model, no member axis) with the format-5 signature:
    outputs get a leading member axis of 1, ``score_sides`` takes member-stacked sides."""

    def stacked(fn: Callable) -> Callable:
        return lambda *a: jax.tree.map(lambda x: x[None], fn(*a))

    sides = functions["score_sides"]
    out = {k: stacked(f) for k, f in functions.items()}
    out["score_sides"] = stacked(lambda p, side, prior, *rest: sides(p, side[0], prior[0], *rest))
    return out
