"""Small filesystem helpers shared by the writers (corpus, embeddings, bundles) and the bundle
reader: standard library only, so serving can import them."""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from pathlib import Path


def replace_dir(tmp: str | os.PathLike, final: str | os.PathLike) -> None:
    """Puts the fully written directory ``tmp`` at ``final`` by renames, so readers see the old
    directory or the new one, never a half-written one; the old one is then deleted (and put
    back if the second rename fails)."""
    tmp, final = Path(tmp), Path(final)
    if not final.exists():
        os.replace(tmp, final)
        return
    old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
    os.replace(final, old)
    try:
        os.replace(tmp, final)
    except BaseException:
        os.replace(old, final)
        raise
    shutil.rmtree(old, ignore_errors=True)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
