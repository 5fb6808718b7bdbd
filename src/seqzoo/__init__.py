"""seqzoo: recurrent and long-range sequence models, their tasks, and checks of their papers' claims.

Everything here is imported on first use (PEP 562), so ``import seqzoo`` and the ``seqzoo`` command's ``--help``,
``--version`` and ``list`` start without importing torch; ``seqzoo.LSTM``, ``seqzoo.create_model``,
``seqzoo.tasks``, ``seqzoo.train`` ... import their tier (and register its built-ins) when first touched.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from seqzoo._version import __version__

if TYPE_CHECKING:  # what the lazy names are, for type checkers and IDEs
    from seqzoo import experiments, layers, models, ops, tasks, training  # noqa: F401
    from seqzoo.layers.dropin import GRU, LSTM, RNN
    from seqzoo.models import create_model, list_models, load_model, model_info, register_model, save_model
    from seqzoo.training import TrainConfig, evaluate_run, load_run, train  # noqa: F401

_SUBMODULES = ("experiments", "layers", "models", "ops", "tasks", "training")
# public name -> module that defines it
_LAZY = {
    "GRU": "seqzoo.layers.dropin",
    "LSTM": "seqzoo.layers.dropin",
    "RNN": "seqzoo.layers.dropin",
    **{name: "seqzoo.models" for name in ("create_model", "list_models", "load_model", "model_info",
                                          "register_model", "save_model")},
    **{name: "seqzoo.training" for name in ("train", "load_run", "evaluate_run", "TrainConfig")},
}


def __getattr__(name: str) -> Any:
    """Import a tier (or the module defining a public name) on first access and cache the result."""
    if name in _SUBMODULES:
        value: Any = importlib.import_module(f"seqzoo.{name}")
    elif name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    else:
        raise AttributeError(f"module 'seqzoo' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_SUBMODULES, *_LAZY})


__all__ = [
    "GRU",
    "LSTM",
    "RNN",
    "__version__",
    "create_model",
    "list_models",
    "load_model",
    "model_info",
    "register_model",
    "save_model",
]
