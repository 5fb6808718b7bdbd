"""Backbones and registered presets (importable with plain torch)."""

from seqzoo.models import deq as _deq  # noqa: F401  (mlp_deq, deq_transformer, tied_transformer presets)
from seqzoo.models import feedforward as _feedforward  # noqa: F401  (mlp, cnn presets)
from seqzoo.models import presets as _presets  # noqa: F401  (registers the built-ins)
from seqzoo.models import seq2seq as _seq2seq  # noqa: F401  (gnmt, convs2s presets)
from seqzoo.models import target_space as _target_space  # noqa: F401  (ts_mlp, ws_mlp, ts_rnn, ws_rnn presets)
from seqzoo.models.registry import MODELS, create_model, list_models, model_info, register_model
from seqzoo.models.sequence_model import SequenceModel
from seqzoo.models.serialization import load_model, save_model

__all__ = [
    "MODELS",
    "SequenceModel",
    "create_model",
    "list_models",
    "load_model",
    "model_info",
    "register_model",
    "save_model",
]
