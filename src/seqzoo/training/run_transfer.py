"""Moving a finished run folder to another machine's output folder, checked on arrival.

``pack_run`` lists a run folder's files as records ``{"file", "bytes", "sha256"}`` (the form ``model.json`` and
the checkpoint manifest already use), with the bytes under ``"data"`` when they travel with the records (plain
``bytes``: nothing of the run is pickled). ``receive_run`` writes them into ``out/<run_id>`` the way a run folder
is always written (each file atomically, in a hidden staging folder that is renamed into place when complete),
checks every file against its record, then the run's own records (best weights against ``model.json``, the
checkpoint files against their manifest, a readable ``config.json`` and ``result.json``), and points
``result.json`` at its new place. The Ray executor ships runs back this way when the workers do not share the
driver's disk (``experiments/runner.py``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path, PurePosixPath
from typing import Any

from seqzoo.errors import IntegrityError, RunError
from seqzoo.files import TMP_PATTERN, atomic_write_bytes, atomic_write_json, fsync_dir, sha256_bytes
from seqzoo.training.checkpoint import verify_checkpoint
from seqzoo.training.run_config import check_run_name
from seqzoo.training.runs import RESULT_FILE, RunResult, is_run_dir, read_config, read_result


def pack_run(run_dir: str | os.PathLike, *, data: bool = True) -> dict[str, Any]:
    """``{"run_id", "files": [{"file", "bytes", "sha256"[, "data"]}]}`` of every file in ``run_dir``.

    Paths are relative, with ``/``; half-written temporary files of a killed writer are left out; a symbolic
    link is an error (a run folder holds none).
    """
    d = Path(run_dir)
    files = []
    for p in sorted(d.rglob("*")):
        if p.is_symlink():
            raise RunError(f"{p}: a symbolic link inside the run folder {d}; a run folder holds only files")
        if not p.is_file() or TMP_PATTERN.match(p.name):
            continue
        blob = p.read_bytes()
        rec: dict[str, Any] = {"file": p.relative_to(d).as_posix(), "bytes": len(blob), "sha256": sha256_bytes(blob)}
        if data:
            rec["data"] = blob
        files.append(rec)
    return {"run_id": d.name, "files": files}


def _relative(name: Any, run_id: str) -> PurePosixPath:
    """A record's path, refused unless it is a plain relative path inside the run folder."""
    rel = PurePosixPath(str(name))
    if not str(name) or rel.is_absolute() or any(part in ("", ".", "..") for part in rel.parts) or "\\" in str(name):
        raise IntegrityError(f"run {run_id}: file record {name!r} is not a relative path inside the run folder")
    return rel


def _checked(rec: dict[str, Any], blob: bytes, where: str) -> bytes:
    if len(blob) != rec["bytes"] or sha256_bytes(blob) != rec["sha256"]:
        raise IntegrityError(f"{where} arrived damaged: {len(blob)} bytes with another SHA-256 than recorded "
                             f"({rec['bytes']} bytes, {rec['sha256'][:12]}…)")
    return blob


def verify_run(run_dir: str | os.PathLike) -> RunResult:
    """A finished run folder checked against its own records; its result. IntegrityError/RunError otherwise."""
    from seqzoo.models.serialization import SPEC_FILE, verify_weights

    d = Path(run_dir)
    read_config(d)
    if (d / SPEC_FILE).exists():
        verify_weights(d)
    verify_checkpoint(d)
    result = read_result(d)
    if result is None:
        raise IntegrityError(f"{d} holds no {RESULT_FILE}: the run did not finish")
    return result


def receive_run(pack: dict[str, Any], out: str | os.PathLike, *, source: str | os.PathLike | None = None) -> RunResult:
    """Place the packed run into ``out/<run_id>``, checked; returns its result (``run_dir`` = the new place).

    The bytes come from the records' ``"data"``, or from the folder ``source`` (a copy on a shared file system)
    when given; a ``source`` that is the destination itself is checked where it lies. An existing run folder of
    the same name is replaced only after the new one is complete and checked.
    """
    run_id = check_run_name(str(pack.get("run_id", "")))
    out = Path(out)
    dest = out / run_id
    records = list(pack.get("files") or [])
    if source is not None and Path(source).resolve() == dest.resolve():
        for rec in records:
            path = dest / _relative(rec["file"], run_id)
            _checked(rec, path.read_bytes() if path.is_file() else b"", str(path))
        return verify_run(dest)
    if dest.exists() and not is_run_dir(dest):
        raise RunError(f"cannot place run {run_id}: {dest} exists and is not a seqzoo run folder")
    out.mkdir(parents=True, exist_ok=True)
    staging = out / f".{run_id}.incoming{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    try:
        for rec in records:
            rel = _relative(rec["file"], run_id)
            if "data" in rec:
                blob = rec["data"]
            elif source is not None:
                blob = (Path(source) / rel).read_bytes()
            else:
                raise IntegrityError(f"run {run_id}: file {rel} arrived without its bytes and no source folder")
            target = staging.joinpath(*rel.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(target, _checked(rec, bytes(blob), f"{dest / rel}"))
        result = verify_run(staging)
        result.run_dir = dest
        atomic_write_json(staging / RESULT_FILE, result.to_dict())  # checked above; now it names its new place
        old = out / f".{run_id}.old{os.getpid()}"
        if dest.exists():
            os.replace(dest, old)
        os.replace(staging, dest)
        fsync_dir(out)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return result
