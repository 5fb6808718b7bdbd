"""Crash-safe file writes and checksums shared by every tier (a leaf module: plain Python, no torch).

A write goes to a temporary name in the same folder (``.<name>.tmp<pid>``), is fsynced and renamed over the
target, and the folder is fsynced, so a kill at any moment leaves the old file or the whole new one. Runs record
the size and SHA-256 of the files they must trust later (best weights, checkpoints) and check them on read.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

TMP_PATTERN = re.compile(r"^\..+\.tmp\d+$")


def fsync_dir(directory: str | os.PathLike) -> None:
    """Make a rename inside ``directory`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the whole new one, never a part."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    fsync_dir(path.parent)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def remove_stale_tmp(directory: str | os.PathLike) -> list[Path]:
    """Delete temporary files a killed writer left in ``directory`` (``.<name>.tmp<pid>``); returns them."""
    removed = []
    d = Path(directory)
    if not d.is_dir():
        return removed
    for p in d.iterdir():
        if p.is_file() and TMP_PATTERN.match(p.name):
            try:
                p.unlink()
                removed.append(p)
            except OSError:
                pass
    return removed
