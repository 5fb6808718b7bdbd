"""Crash-safe checkpoints without pickle: safetensors for tensors, JSON for everything else.

A checkpoint lives in ``run_dir/checkpoint/``. Each file carries its step in its name and is written
atomically (temporary name, fsync, ``os.replace``); ``manifest.json`` is written last and names the files
of the checkpoint with their sizes and SHA-256. A kill at any moment leaves either the previous manifest
(whose files are only deleted after the new manifest is in place) or the new one: never a torn checkpoint.
A model state carried across steps (truncated BPTT) is stored the same way: its tensors in
``carry-<step>.safetensors``, its nesting (tuples, lists, dicts) as JSON in the state file.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seqzoo.errors import IntegrityError, RunError, RunNotFoundError
from seqzoo.files import atomic_write_bytes, atomic_write_json, fsync_dir, sha256_bytes  # noqa: F401

CHECKPOINT_DIR = "checkpoint"
MANIFEST = "manifest.json"
FORMAT = "seqzoo-checkpoint"
VERSION = 1


# ----- atomic files: seqzoo.files (fsync_dir, atomic_write_bytes, atomic_write_json) ------------------------


# ----- optimizer state <-> tensors + JSON ---------------------------------------------------------------
def _plain(value: Any, where: str) -> Any:
    """A JSON-safe copy of a non-tensor optimizer value (tuples become lists)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v, where) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v, where) for k, v in value.items()}
    raise TypeError(f"cannot store optimizer value {where} of type {type(value).__name__} without pickle")


def flatten_optimizer_state(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split ``optimizer.state_dict()`` into tensors (``state/<param>/<key>``) and a JSON-safe remainder."""
    tensors: dict[str, torch.Tensor] = {}
    per_param: dict[str, dict[str, Any]] = {}
    for idx, st in state_dict["state"].items():
        entry: dict[str, Any] = {}
        for key, value in st.items():
            if torch.is_tensor(value):
                name = f"state/{idx}/{key}"
                tensors[name] = value.detach().to("cpu").contiguous().clone()
                entry[key] = {"tensor": name}
            else:
                entry[key] = {"value": _plain(value, f"state[{idx}][{key!r}]")}
        per_param[str(idx)] = entry
    groups = [_plain(g, "param_groups") for g in state_dict["param_groups"]]
    return tensors, {"state": per_param, "param_groups": groups}


def unflatten_optimizer_state(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    """Inverse of :func:`flatten_optimizer_state`."""
    state: dict[int, dict[str, Any]] = {}
    for idx, entry in meta["state"].items():
        st: dict[str, Any] = {}
        for key, ref in entry.items():
            if "tensor" in ref:
                if ref["tensor"] not in tensors:
                    raise RunError(f"checkpoint optimizer tensors lack {ref['tensor']!r}")
                st[key] = tensors[ref["tensor"]]
            else:
                st[key] = ref["value"]
        state[int(idx)] = st
    return {"state": state, "param_groups": meta["param_groups"]}


# ----- nested tensor structures (a carried model state) <-> tensors + JSON ------------------------------
def flatten_tensors(tree: Any, prefix: str = "carry") -> tuple[dict[str, torch.Tensor], Any]:
    """Split a nested tuple/list/dict of tensors (None allowed) into named tensors and a JSON structure.

    The structure mirrors the nesting: ``{"tensor": name}``, ``{"tuple": [...]}``, ``{"list": [...]}``,
    ``{"dict": {key: ...}}`` (string keys) or ``{"none": true}``, so the tree comes back without pickle.
    """
    tensors: dict[str, torch.Tensor] = {}

    def walk(node: Any, path: str) -> Any:
        if torch.is_tensor(node):
            tensors[path] = node.detach().to("cpu").contiguous().clone()
            return {"tensor": path}
        if node is None:
            return {"none": True}
        if isinstance(node, (tuple, list)):
            kind = "tuple" if isinstance(node, tuple) else "list"
            return {kind: [walk(v, f"{path}/{i}") for i, v in enumerate(node)]}
        if isinstance(node, dict):
            bad = [k for k in node if not isinstance(k, str) or "/" in k]
            if bad:
                raise TypeError(f"cannot store state dict keys {bad!r} at {path!r}: keys must be strings without '/'")
            return {"dict": {k: walk(v, f"{path}/{k}") for k, v in node.items()}}
        raise TypeError(f"cannot store a state value of type {type(node).__name__} at {path!r} without pickle; "
                        "a state must be tensors nested in tuples, lists or dicts (None allowed)")

    return tensors, walk(tree, prefix)


def unflatten_tensors(tensors: dict[str, torch.Tensor], structure: Any) -> Any:
    """Inverse of :func:`flatten_tensors`."""
    if not isinstance(structure, dict) or len(structure) != 1:
        raise RunError(f"malformed state structure {structure!r}: expected one of tensor/tuple/list/dict/none")
    (kind, value), = structure.items()
    if kind == "tensor":
        if value not in tensors:
            raise RunError(f"checkpoint state tensors lack {value!r}")
        return tensors[value]
    if kind == "none":
        return None
    if kind in ("tuple", "list"):
        items = [unflatten_tensors(tensors, v) for v in value]
        return tuple(items) if kind == "tuple" else items
    if kind == "dict":
        return {k: unflatten_tensors(tensors, v) for k, v in value.items()}
    raise RunError(f"malformed state structure: unknown kind {kind!r}")


# ----- RNG state -----------------------------------------------------------------------------------------
def capture_rng() -> tuple[dict[str, torch.Tensor], dict]:
    """Torch (CPU and CUDA), NumPy and Python RNG states as uint8/int64 tensors plus JSON."""
    tensors = {"torch": torch.get_rng_state().clone()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda/{i}"] = s.clone()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.int64).copy())
    version, py_state, gauss = random.getstate()
    meta = {"numpy": [kind, int(pos), int(has_gauss), float(cached)], "python": [version, list(py_state), gauss]}
    return tensors, meta


def restore_rng(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = sorted((k for k in tensors if k.startswith("cuda/")), key=lambda k: int(k.split("/")[1]))
    if cuda and torch.cuda.is_available():
        states = [tensors[k] for k in cuda][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(states)
    if "numpy" in tensors and "numpy" in meta:
        kind, pos, has_gauss, cached = meta["numpy"]
        np.random.set_state((kind, tensors["numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
    if "python" in meta:
        version, py_state, gauss = meta["python"]
        random.setstate((version, tuple(py_state), gauss))


# ----- checkpoint ----------------------------------------------------------------------------------------
@dataclass
class Checkpoint:
    """Everything needed to continue a run exactly where it stopped."""

    step: int
    model: dict[str, torch.Tensor]
    optimizer: dict  # optimizer.state_dict() form
    rng: tuple[dict[str, torch.Tensor], dict]
    trainer: dict[str, Any] = field(default_factory=dict)
    schedule: dict[str, Any] = field(default_factory=dict)
    carried_state: Any = None  # the model state carried into the next step (TBPTT); None = start fresh


def save_checkpoint(run_dir: str | os.PathLike, ckpt: Checkpoint) -> Path:
    """Write ``ckpt`` into ``run_dir/checkpoint`` (files first, manifest last), then drop older files."""
    from safetensors.torch import save

    d = Path(run_dir) / CHECKPOINT_DIR
    d.mkdir(parents=True, exist_ok=True)
    opt_tensors, opt_meta = flatten_optimizer_state(ckpt.optimizer)
    rng_tensors, rng_meta = ckpt.rng
    tag = f"{ckpt.step:09d}"
    carry_tensors, carry_structure = ({}, None) if ckpt.carried_state is None else \
        flatten_tensors(ckpt.carried_state)
    blobs = {
        "model": (f"model-{tag}.safetensors",
                  save({k: v.detach().to("cpu").contiguous().clone() for k, v in ckpt.model.items()})),
        "optimizer": (f"optimizer-{tag}.safetensors", save(opt_tensors, metadata={"format": FORMAT})),
        "rng": (f"rng-{tag}.safetensors", save(rng_tensors)),
        "state": (f"state-{tag}.json", (json.dumps({
            "optimizer": opt_meta, "rng": rng_meta, "trainer": ckpt.trainer, "schedule": ckpt.schedule,
            "carry": carry_structure,
        }, indent=1) + "\n").encode()),
    }
    if carry_structure is not None:
        blobs["carry"] = (f"carry-{tag}.safetensors", save(carry_tensors, metadata={"format": FORMAT}))
    files = {}
    for role, (name, data) in blobs.items():
        atomic_write_bytes(d / name, data)
        files[role] = {"file": name, "bytes": len(data), "sha256": sha256_bytes(data)}
    atomic_write_json(d / MANIFEST, {"format": FORMAT, "version": VERSION, "step": ckpt.step, "files": files})
    keep = {MANIFEST} | {f["file"] for f in files.values()}
    for p in d.iterdir():
        if p.name not in keep:
            try:
                p.unlink()
            except OSError:
                pass
    return d


def read_manifest(run_dir: str | os.PathLike) -> dict | None:
    """The checkpoint manifest of ``run_dir`` (None when there is no checkpoint yet)."""
    path = Path(run_dir) / CHECKPOINT_DIR / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise RunError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else None
        raise RunError(f"{path}: not a seqzoo checkpoint manifest (format={got!r})")
    return manifest


def _read_checked(d: Path, entry: dict) -> bytes:
    path = d / entry["file"]
    if not path.exists():
        raise RunNotFoundError(f"checkpoint file {path} named by {d / MANIFEST} is missing")
    data = path.read_bytes()
    if len(data) != entry["bytes"] or sha256_bytes(data) != entry["sha256"]:
        raise IntegrityError(f"checkpoint file {path} is corrupt (size or SHA-256 differs from {d / MANIFEST})")
    return data


def verify_checkpoint(run_dir: str | os.PathLike) -> int | None:
    """Check every file the checkpoint manifest of ``run_dir`` names (size and SHA-256); its step, or None
    when there is no checkpoint. A missing or damaged file is a RunNotFoundError / IntegrityError naming it."""
    manifest = read_manifest(run_dir)
    if manifest is None:
        return None
    d = Path(run_dir) / CHECKPOINT_DIR
    for entry in manifest["files"].values():
        _read_checked(d, entry)
    return int(manifest["step"])


def load_checkpoint_weights(run_dir: str | os.PathLike) -> tuple[int, dict[str, torch.Tensor]] | None:
    """``(step, model state)`` of the last checkpoint, or None when there is none."""
    from safetensors.torch import load

    manifest = read_manifest(run_dir)
    if manifest is None:
        return None
    d = Path(run_dir) / CHECKPOINT_DIR
    return int(manifest["step"]), load(_read_checked(d, manifest["files"]["model"]))


def load_checkpoint(run_dir: str | os.PathLike) -> Checkpoint | None:
    """The last checkpoint of ``run_dir`` (None when there is none); checksums are verified."""
    from safetensors.torch import load

    manifest = read_manifest(run_dir)
    if manifest is None:
        return None
    d = Path(run_dir) / CHECKPOINT_DIR
    files = manifest["files"]
    model = load(_read_checked(d, files["model"]))
    opt_tensors = load(_read_checked(d, files["optimizer"]))
    rng_tensors = load(_read_checked(d, files["rng"]))
    meta = json.loads(_read_checked(d, files["state"]).decode())
    carried = None
    if meta.get("carry") is not None:
        if "carry" not in files:
            raise RunError(f"{d / MANIFEST} names no carried-state file but state.json describes one")
        carried = unflatten_tensors(load(_read_checked(d, files["carry"])), meta["carry"])
    return Checkpoint(
        step=int(manifest["step"]),
        model=model,
        optimizer=unflatten_optimizer_state(opt_tensors, meta["optimizer"]),
        rng=(rng_tensors, meta["rng"]),
        trainer=meta["trainer"],
        schedule=meta.get("schedule", {}),
        carried_state=carried,
    )
