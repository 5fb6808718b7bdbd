"""Finding and reading data files: one rule for where data is looked for and for what a bad file raises.

Data is looked up under ``data_dir``, else ``$SEQZOO_DATA``, else ``./data``, ``../shared/data`` (from the working
directory) and ``../shared/data`` next to the repository; nothing is downloaded.

Every task reads its files through ``read_bytes`` / ``read_text`` (or wraps a library that opens the file itself in
``reading``; ``read_mat_cells`` runs scipy's MATLAB reader in a child process, since a corrupt file can crash it),
so a missing file, an unreadable one, a truncated or corrupt gzip stream and bytes that are not UTF-8 all raise
``seqzoo.errors.DataError`` naming the file (and the line, where there is one); ``data_error`` builds the same
message for a malformed line or record found by the task's own parser. A missing file raises ``MissingDataError``,
which is also a ``FileNotFoundError`` so callers that skip absent data keep working.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from seqzoo.errors import DataError, MissingDataError, SeqzooError  # noqa: F401  (MissingDataError re-exported)


def data_error(path: str | os.PathLike, message: str, line: int | None = None) -> DataError:
    """``DataError("<path>, line <line>: <message>")`` (without the line part when ``line`` is None)."""
    where = f"{path}, line {line}" if line is not None else f"{path}"
    return DataError(f"{where}: {message}")


@contextmanager
def reading(path: str | os.PathLike, expected: str) -> Iterator[None]:
    """Turn the low-level exceptions of reading ``path`` into a ``DataError`` naming the file and what was expected.

    Errors that already are ``SeqzooError`` pass through; anything else (a bug) keeps its type.
    """
    try:
        yield
    except SeqzooError:
        raise
    except FileNotFoundError as e:
        raise MissingDataError(f"{path} does not exist (expected {expected})") from e
    except IsADirectoryError as e:
        raise DataError(f"{path} is a directory (expected {expected})") from e
    except PermissionError as e:
        raise DataError(f"cannot read {path}: permission denied (expected {expected})") from e
    except EOFError as e:  # gzip: the stream stops before its end marker
        raise DataError(f"{path}: the compressed data ends early, the file is truncated (expected {expected})") from e
    except (gzip.BadGzipFile, zlib.error) as e:
        raise DataError(f"{path}: corrupt gzip data ({e}) (expected {expected})") from e
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e} (expected {expected})") from e


# The child process of read_mat_cells: load the file with scipy, write every numeric cell of the wanted cell arrays to
# an .npz (no object arrays, so the parent loads it without pickle) and print what it found as one JSON line.
_MAT_CHILD = r"""
import json, sys
import numpy as np
from scipy.io import loadmat
src, dst, keys = sys.argv[1], sys.argv[2], sys.argv[3:]
try:
    mat = loadmat(src)
except Exception as e:
    print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
    sys.exit(0)
info = {"variables": sorted(k for k in mat if not k.startswith("__")), "cells": {}}
arrays = {}
for key in keys:
    cells = mat.get(key)
    if cells is None:
        continue
    if getattr(cells, "dtype", None) != object:
        info["cells"][key] = str(getattr(cells, "dtype", type(cells).__name__))
        continue
    flat = cells.reshape(-1)
    info["cells"][key] = len(flat)
    for i, m in enumerate(flat):
        a = np.asarray(m)
        if a.dtype.kind not in "biuf":
            a = np.zeros((0,))
        arrays[f"{key}/{i}"] = a
np.savez(dst, **arrays)
print(json.dumps(info))
"""


def read_mat_cells(path: str | os.PathLike, keys: list[str]) -> tuple[list[str], dict[str, list[np.ndarray] | str]]:
    """``(variables in the file, {key: numeric arrays of the cell array, or the dtype when it is not one})``.

    scipy's MATLAB reader is C code that can crash the process (SIGSEGV) on some corrupt files, so it runs in a
    child process and a crash becomes a ``DataError`` naming the file. A cell that is not a numeric array comes
    back as an empty (0,) array, which no caller accepts as a T x d matrix.
    """
    path = Path(path)
    if importlib.util.find_spec("scipy") is None:
        raise ImportError(f"reading {path} needs scipy (pip install scipy, or seqzoo[data])")
    with reading(path, "a MATLAB .mat file"):
        path.open("rb").close()  # a missing or unreadable file is named here, before the child starts
    with tempfile.TemporaryDirectory(prefix="seqzoo-mat-") as tmp:
        dst = Path(tmp) / "cells.npz"
        try:
            done = subprocess.run([sys.executable, "-c", _MAT_CHILD, str(path), str(dst), *keys], capture_output=True,
                                  text=True, timeout=600)
        except subprocess.TimeoutExpired as e:
            raise data_error(path, "reading the MATLAB file took longer than 600 s; it is probably corrupt") from e
        if done.returncode != 0:
            how = f"signal {-done.returncode}" if done.returncode < 0 else f"exit code {done.returncode}"
            last = done.stderr.strip().splitlines()[-1:] or [""]
            raise data_error(path, f"not a readable MATLAB .mat file (the reader stopped with {how}) {last[0]}".strip())
        info = json.loads(done.stdout.strip().splitlines()[-1])
        if "error" in info:
            raise data_error(path, f"not a readable MATLAB .mat file ({info['error']})")
        with np.load(dst, allow_pickle=False) as npz:
            found: dict[str, list[np.ndarray] | str] = {}
            for key, what in info["cells"].items():
                found[key] = [npz[f"{key}/{i}"] for i in range(what)] if isinstance(what, int) else what
    return info["variables"], found


def read_bytes(path: str | os.PathLike, expected: str = "a data file, optionally gzip-compressed") -> bytes:
    """All bytes of a file, decompressed when its name ends in ``.gz``; any failure is a ``DataError``."""
    path = Path(path)
    with reading(path, expected):
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()


def decode_text(data: bytes, path: str | os.PathLike) -> str:
    """UTF-8 text of ``data`` read from ``path``: invalid bytes, NUL bytes and emptiness name the file and line."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise data_error(path, f"not valid UTF-8 text ({e.reason} at byte {e.start})", line) from e
    nul = text.find("\x00")
    if nul >= 0:
        raise data_error(path, "NUL byte in a text file", text.count("\n", 0, nul) + 1)
    if not text.strip():
        raise data_error(path, "the file is empty; expected text")
    return text


def read_text(path: str | os.PathLike, expected: str = "a UTF-8 text file, optionally gzip-compressed") -> str:
    """Decoded UTF-8 text of a (possibly gzipped) file; any failure is a ``DataError`` naming the file (and line)."""
    return decode_text(read_bytes(path, expected), path)


# ----- where data is looked for ----------------------------------------------------------------------------------

def default_roots() -> list[Path]:
    """Where data is looked for when neither ``data_dir`` nor ``SEQZOO_DATA`` is given: ``./data``,
    ``../shared/data`` from the working directory and ``../shared/data`` next to the repository."""
    repo = Path(__file__).resolve().parents[3]  # src/seqzoo/tasks/<file> -> repository root
    cwd = Path.cwd()
    return [cwd / "data", cwd.parent / "shared" / "data", repo.parent / "shared" / "data"]


def data_roots(data_dir: str | os.PathLike | None) -> tuple[list[Path], str]:
    """The folders to search and where they came from: ``data_dir``, else ``$SEQZOO_DATA``, else the defaults."""
    if data_dir is not None:
        return [Path(data_dir).expanduser()], f"data_dir={str(data_dir)!r}"
    env = os.environ.get("SEQZOO_DATA")
    if env:
        return [Path(env).expanduser()], f"SEQZOO_DATA={env!r}"
    return default_roots(), "the default locations (neither data_dir nor SEQZOO_DATA is set)"


def search_dirs(data_dir: str | os.PathLike | None, folder: str | None) -> tuple[list[Path], str]:
    """``root/folder`` then ``root`` itself for every root (without repeats), and where the roots came from."""
    roots, origin = data_roots(data_dir)
    dirs: list[Path] = []
    for root in roots:
        for cand in ([root / folder] if folder else []) + [root]:
            if cand not in dirs:
                dirs.append(cand)
    return dirs, origin


def find_file(folder: Path, name: str) -> Path | None:
    """``folder/name.gz`` or ``folder/name``, whichever exists."""
    for cand in (folder / f"{name}.gz", folder / name):
        if cand.is_file():
            return cand
    return None


def dataset_folder(data_dir: str | os.PathLike | None, folder: str | None, names: list[str], who: str) -> Path:
    """The folder holding every file of ``names`` (each possibly gzipped): ``root/folder`` or ``root`` itself."""
    candidates, origin = search_dirs(data_dir, folder)
    for cand in candidates:
        if all(find_file(cand, n) is not None for n in names):
            return cand
    wanted = ", ".join(f"{folder + '/' if folder else ''}{n}[.gz]" for n in names)
    raise MissingDataError(f"{who}: {wanted} not found in {', '.join(str(c) for c in candidates)} (searched "
                           f"{origin}); pass data_dir=... (the folder holding {folder + '/' if folder else 'them'}) "
                           "or set SEQZOO_DATA (the CLI's --data-dir sets it)")
