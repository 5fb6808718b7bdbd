"""Model registry: ``register_model``, ``create_model``, ``list_models``, ``model_info``.

A preset is a builder plus default arguments. ``create_model`` validates overrides against the
builder's signature (an unknown key names the closest valid one) and records the resolved
arguments on the model (``model.seqzoo_name``, ``model.seqzoo_config``) so runs can rebuild it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from seqzoo.registry_utils import Registry, build_checked, check_kwargs, signature_params


@dataclass
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]
    defaults: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    paper: str = ""
    tags: tuple[str, ...] = ()
    # create_model overrides the conformance suite (tests/test_conformance.py) adds to its generic small sizes
    conformance: dict[str, Any] = field(default_factory=dict)

    def valid_args(self) -> list[str]:
        return signature_params(self.builder)


MODELS: Registry[ModelEntry] = Registry("model")


def register_model(
    name: str,
    builder: Callable[..., nn.Module],
    *,
    description: str = "",
    paper: str = "",
    tags: tuple[str, ...] = (),
    conformance: dict[str, Any] | None = None,
    **defaults: Any,
) -> ModelEntry:
    """Register a preset: ``create_model(name, **overrides)`` calls ``builder(**{**defaults, **overrides})``.

    ``conformance`` optionally holds overrides that make the preset small for the conformance suite when the
    generic small sizes (d_model, n_layers, d_input/vocab_size, d_output) are not enough.
    """
    entry = ModelEntry(name, builder, dict(defaults), description or (builder.__doc__ or "").strip().split("\n")[0],
                       paper, tags, dict(conformance or {}))
    check_kwargs(f"model {name!r}", defaults, entry.valid_args())
    check_kwargs(f"model {name!r} (conformance overrides)", entry.conformance, entry.valid_args())
    MODELS.add(name, entry)
    return entry


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build a registered model; unknown or misspelled arguments raise naming the closest valid one."""
    entry = MODELS.get(name)
    check_kwargs(f"model {name!r}", overrides, entry.valid_args())
    config = {**entry.defaults, **overrides}
    for key, value in overrides.items():  # dict-valued presets (layer_kwargs) merge with the override
        if isinstance(value, dict) and isinstance(entry.defaults.get(key), dict):
            config[key] = {**entry.defaults[key], **value}
    model = build_checked("model", name, entry.builder, config)
    model.seqzoo_name = name
    model.seqzoo_config = config
    return model


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names, optionally filtered by a glob pattern (``"lstm*"``)."""
    return MODELS.names(pattern)


def model_info(name: str) -> dict[str, Any]:
    """Description, paper, default arguments and all valid arguments of a preset."""
    entry = MODELS.get(name)
    return {
        "name": entry.name,
        "description": entry.description,
        "paper": entry.paper,
        "tags": list(entry.tags),
        "defaults": dict(entry.defaults),
        "arguments": entry.valid_args(),
    }
