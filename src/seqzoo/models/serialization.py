"""Save and load models as ``model.safetensors`` + ``model.json`` (preset name, resolved config, checksum).

Nothing is unpickled: weights are safetensors, the config is JSON, and the model is rebuilt with
``create_model``. ``model.json`` is written after the weights and records their size and SHA-256, so a torn,
flipped or swapped weights file is refused on load instead of silently changing a metric; a tensor whose dtype
or shape differs from the model's is refused too (``load_state_dict`` would cast it). ``safetensors`` is
imported lazily so ``seqzoo.models`` needs only torch.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from seqzoo.errors import IntegrityError, RunError, RunNotFoundError
from seqzoo.files import atomic_write_bytes, sha256_bytes, sha256_file
from seqzoo.models.registry import create_model

WEIGHTS_FILE = "model.safetensors"
SPEC_FILE = "model.json"


def model_spec(model: nn.Module) -> dict:
    name = getattr(model, "seqzoo_name", None)
    if name is None:
        raise ValueError("only models built with seqzoo.create_model can be saved with save_model")
    return {"format": "seqzoo-model", "version": 1, "name": name, "config": model.seqzoo_config}


def save_model(model: nn.Module, directory: str | os.PathLike) -> Path:
    """Write ``model.safetensors``, then ``model.json`` with the weights' size and SHA-256, atomically."""
    from safetensors.torch import save

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    data = save(tensors)
    atomic_write_bytes(d / WEIGHTS_FILE, data)
    spec = {**model_spec(model), "weights": {"file": WEIGHTS_FILE, "bytes": len(data), "sha256": sha256_bytes(data)}}
    atomic_write_bytes(d / SPEC_FILE, (json.dumps(spec, indent=2) + "\n").encode())
    return d


def read_model_spec(directory: str | os.PathLike) -> dict[str, Any]:
    """``model.json`` of ``directory``, checked to be a seqzoo model description."""
    spec_path = Path(directory) / SPEC_FILE
    if not spec_path.is_file():
        raise RunNotFoundError(f"{spec_path} not found: not a seqzoo model directory")
    try:
        spec = json.loads(spec_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunError(f"{spec_path}: not valid JSON ({e})") from e
    if not isinstance(spec, dict) or spec.get("format") != "seqzoo-model":
        got = spec.get("format") if isinstance(spec, dict) else type(spec).__name__
        raise RunError(f"{spec_path}: not a seqzoo model file (format={got!r})")
    if not isinstance(spec.get("name"), str) or not isinstance(spec.get("config"), dict):
        raise RunError(f"{spec_path}: lacks the preset name or its config")
    return spec


def verify_weights(directory: str | os.PathLike, spec: dict[str, Any] | None = None) -> Path:
    """The weights file of ``directory`` after checking its size and SHA-256 against ``model.json``.

    A ``model.json`` written before checksums were recorded has no ``weights`` entry; its file is only checked to
    exist.
    """
    d = Path(directory)
    spec = read_model_spec(d) if spec is None else spec
    path = d / WEIGHTS_FILE
    if not path.is_file():
        raise IntegrityError(f"{path} is missing (named by {d / SPEC_FILE})")
    rec = spec.get("weights")
    if isinstance(rec, dict):
        size = path.stat().st_size
        if size != rec.get("bytes") or sha256_file(path) != rec.get("sha256"):
            raise IntegrityError(f"{path} is corrupt or was replaced: its size or SHA-256 differs from the record "
                                 f"in {d / SPEC_FILE} ({size} bytes, recorded {rec.get('bytes')})")
    return path


def read_weights(path: str | os.PathLike, *, device: str = "cpu") -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; a damaged file is an error naming it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device=device)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise IntegrityError(f"{path}: not a readable safetensors file ({e})") from e


def load_state_checked(model: nn.Module, state: dict[str, torch.Tensor], source: str | os.PathLike) -> None:
    """``model.load_state_dict(state, strict=True)`` that refuses tensors of another dtype or shape (no casts)."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise RunError(f"{source} does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    for key, t in state.items():
        ref = own[key]
        if t.dtype != ref.dtype or t.shape != ref.shape:
            raise RunError(f"{source}: tensor {key!r} is {t.dtype} {tuple(t.shape)} but the model expects "
                           f"{ref.dtype} {tuple(ref.shape)}")
    model.load_state_dict(state, strict=True)


def load_model(directory: str | os.PathLike, *, device: str = "cpu") -> nn.Module:
    """Rebuild the model from ``model.json`` and load ``model.safetensors`` (checksum, dtypes and keys checked)."""
    d = Path(directory)
    spec = read_model_spec(d)
    path = verify_weights(d, spec)
    model = create_model(spec["name"], **spec["config"])
    state = read_weights(path, device=device)
    float_dtypes = {t.dtype for t in state.values() if t.is_floating_point()}
    if len(float_dtypes) == 1:  # keep the saved precision (a float64 model must not come back as float32)
        model = model.to(float_dtypes.pop())
    load_state_checked(model, state, path)
    return model.to(device)
