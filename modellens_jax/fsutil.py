"""Small filesystem helpers shared by the writers (corpus, embeddings, bundles) and the bundle
reader: standard library only, so serving can import them."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
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


def output_file(path: str | os.PathLike) -> Path:
    """``path`` as an output file: ValueError when it is a directory or its parent is not one."""
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{p}: is a directory; give a file name for the output")
    if p.parent.exists() and not p.parent.is_dir():
        raise ValueError(f"{p.parent}: not a directory")
    return p


def umask_mode(mode: int = 0o666) -> int:
    """``mode`` less the process umask (what ``open`` would give a new file)."""
    umask = os.umask(0)
    os.umask(umask)
    return mode & ~umask


def write_atomic(path: str | os.PathLike, write, *, text: bool = True) -> Path:
    """Writes a file by ``write(f)`` into a temp file beside ``path``, then renames it into
    place with the usual mode (0644 under umask 022, not mkstemp's 0600); on any failure the
    temp file is removed and an existing ``path`` is left unchanged."""
    out = output_file(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        kw = {"newline": "", "encoding": "utf-8"} if text else {}
        with os.fdopen(fd, "w" if text else "wb", **kw) as f:
            write(f)
        os.chmod(tmp, umask_mode())
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out
