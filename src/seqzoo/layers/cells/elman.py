"""Elman ("vanilla") RNN cell: ``h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)``, act tanh or relu.

Norm sites: ``x`` on the projected input and ``h`` on the recurrent term, before they are summed.
Quantization sites (``quant=``): the weights ``W_ih``, ``W_hh`` and the hidden state (tanh only: relu is unbounded).
"""

from __future__ import annotations

import torch
from torch import Tensor

from seqzoo.errors import ConfigError
from seqzoo.layers.cells.base import RecurrentCell, State


class ElmanCell(RecurrentCell):
    core_state_names = ("h",)
    gate_multiplier = 1
    norm_site_names = ("x", "h")
    supports_quant = True

    def __init__(self, input_size: int, hidden_size: int, *, nonlinearity: str = "tanh", **kwargs) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, **kwargs)
        if nonlinearity == "relu" and not self.quant.acts_float:
            raise ConfigError("quantized activations need a bounded nonlinearity: use rnn_tanh, or quantize the "
                              "weights only (e.g. quant='w4a32')")

    def recur(self, xp_t: Tensor, core: State, sites: dict[str, State]) -> tuple[Tensor, State]:
        (h,) = core
        a = self.run_norm("x", xp_t, sites) + self.run_norm("h", self.recurrent_term(h), sites)
        h = self.act_tanh(a) if self.nonlinearity == "tanh" else torch.relu(a)
        return h, (h,)
