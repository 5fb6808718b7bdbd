"""Sequence layers following the layer protocol, and the factory that builds them by name."""

from __future__ import annotations

from collections.abc import Callable

from seqzoo.layers import atn as _atn  # noqa: F401  (registers norm="atn")
from seqzoo.layers import batch_norm as _batch_norm  # noqa: F401  (registers norm="batch")
from seqzoo.layers import bln as _bln  # noqa: F401  (registers norm="bln")
from seqzoo.layers.attention import CausalSelfAttention
from seqzoo.layers.automaton import DFA, Extraction, agreement, extract_dfa
from seqzoo.layers.bln import BatchLayerNorm
from seqzoo.layers.block_recurrent import BlockRecurrentTransformer, build_block_recurrent
from seqzoo.layers.cdil import CircularDilatedConvNet, build_cdil
from seqzoo.layers.cells import CELLS, ElmanCell, GRUCell, LSTMCell, RecurrentCell
from seqzoo.layers.conv_arma import ConvARMA, ConvARMACell, build_conv_arma
from seqzoo.layers.deq import DEQ, VariationalDropout
from seqzoo.layers.deq_transformer import DEQTransformer, TiedTransformer, build_deq_transformer, build_tied_transformer
from seqzoo.layers.gcnn import GatedConvNet, build_gcnn
from seqzoo.layers.memory import MemN2N
from seqzoo.layers.native import NATIVE_KINDS, NativeRecurrent
from seqzoo.layers.norms import make_recurrent_norm, register_recurrent_norm
from seqzoo.layers.protocol import SequenceLayer
from seqzoo.layers.recurrent import Recurrent, build_recurrent
from seqzoo.layers.s5 import S5SSM, S5Layer, build_s5, s5_param_groups
from seqzoo.layers.stack_rnn import (
    STACK_LAYERS,
    NondeterministicStack,
    StackRNN,
    StratificationStack,
    SuperpositionStack,
)
from seqzoo.layers.tcn import TemporalConvNet, build_tcn
from seqzoo.layers.transformer import TransformerBlock, build_transformer
from seqzoo.registry_utils import Registry

LayerFactory = Callable[..., SequenceLayer]
LAYERS: Registry[LayerFactory] = Registry("layer")


def register_layer(name: str, factory: LayerFactory) -> None:
    """``factory(d_in, d_model, **kwargs) -> SequenceLayer`` mapping width ``d_in`` to ``d_model``."""
    LAYERS.add(name, factory)


def build_layer(name: str, d_in: int, d_model: int, **kwargs) -> SequenceLayer:
    return LAYERS.get(name)(d_in, d_model, **kwargs)


for _kind in CELLS:
    register_layer(_kind, lambda d_in, d_model, _k=_kind, **kw: build_recurrent(_k, d_in, d_model, **kw))
    if _kind in NATIVE_KINDS:  # torch has a fused kernel only for these
        register_layer(f"{_kind}_native",
                       lambda d_in, d_model, _k=_kind, **kw: NativeRecurrent(_k, d_in, d_model, **kw))
register_layer("transformer", build_transformer)
for _name, _factory in STACK_LAYERS.items():  # stack-augmented RNNs (LSTM controller + differentiable stack)
    register_layer(_name, _factory)
register_layer("s5", build_s5)
register_layer("gcnn", build_gcnn)
register_layer("tcn", build_tcn)
register_layer("cdil", build_cdil)
register_layer("conv_arma", build_conv_arma)
register_layer("deq_transformer", build_deq_transformer)
register_layer("tied_transformer", build_tied_transformer)
register_layer("block_recurrent", build_block_recurrent)

__all__ = [
    "DEQ",
    "DEQTransformer",
    "TiedTransformer",
    "VariationalDropout",
    "ConvARMA",
    "ConvARMACell",
    "DFA",
    "Extraction",
    "agreement",
    "build_conv_arma",
    "extract_dfa",
    "BatchLayerNorm",
    "BlockRecurrentTransformer",
    "build_block_recurrent",
    "CELLS",
    "CausalSelfAttention",
    "CircularDilatedConvNet",
    "LAYERS",
    "MemN2N",
    "ElmanCell",
    "GatedConvNet",
    "GRUCell",
    "LSTMCell",
    "NativeRecurrent",
    "Recurrent",
    "RecurrentCell",
    "S5Layer",
    "S5SSM",
    "NondeterministicStack",
    "SequenceLayer",
    "StackRNN",
    "StratificationStack",
    "SuperpositionStack",
    "TemporalConvNet",
    "TransformerBlock",
    "build_layer",
    "build_cdil",
    "build_gcnn",
    "build_recurrent",
    "build_s5",
    "build_tcn",
    "build_transformer",
    "make_recurrent_norm",
    "register_layer",
    "register_recurrent_norm",
    "s5_param_groups",
]
