"""LSTM cell (Hochreiter & Schmidhuber 1997; torch gate order i, f, g, o).

Norm sites (LN-LSTM layout of Ba et al. 2016): ``x`` on ``W_ih x_t + b_ih``, ``h`` on
``W_hh h_{t-1} + b_hh`` (each over all 4H gate pre-activations jointly), and ``c`` on the cell
state before the output tanh (the carried ``c_t`` stays un-normalized).

Fast paths: when every site is a LayerNorm, an ATN window or the identity (``RecurrentNorm.fused_site``),
``ops.lstm_loop.norm_lstm_sequence`` (ATN: only without padding and with window states that do not require grad;
otherwise the generic loop). A plain cell takes the same loop with identity sites through
``ops.lstm_recurrence.lstm_layer`` (``lstm_sequence`` after a hoisted projection under autocast).

Quantization (``quant=``, ``seqzoo.layers.quant``): activation sites at the gates ``i, f, o`` (sigmoid, ``[0, 1]``),
``g`` (tanh) and ``h``; the weight site on ``W_ih`` and ``W_hh``. With quantized weights only, the fused paths above
run on the quantized weights (gradients reach the shadow weights through the STE); with quantized activations the
fused paths do not apply and the generic loop runs ``recur``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from seqzoo.errors import ConfigError
from seqzoo.layers.cells.base import RecurrentCell, State
from seqzoo.ops.lstm_loop import norm_lstm_sequence
from seqzoo.ops.lstm_recurrence import lstm_layer, lstm_sequence


class LSTMCell(RecurrentCell):
    core_state_names = ("h", "c")
    gate_multiplier = 4
    norm_site_names = ("x", "h", "c")
    supports_quant = True

    def __init__(self, input_size: int, hidden_size: int, *, forget_bias: float | None = None, **kwargs) -> None:
        """``forget_bias``: start the forget gate's bias at this value (Cooijmans et al.'s official code uses 1 for
        the LSTM and the BN-LSTM); None keeps ``torch.nn.LSTM``'s uniform draw."""
        kwargs.setdefault("norm_sizes", {"c": hidden_size})
        self.forget_bias = forget_bias
        super().__init__(input_size, hidden_size, **kwargs)

    def reset_parameters(self) -> None:
        """The base initialization; with ``forget_bias`` the forget rows of the gate bias: the shift of the ``h``
        norm site when it has one (``β_h`` under BatchNorm), else ``b_ih`` (and ``b_hh`` at 0)."""
        super().reset_parameters()
        if self.forget_bias is None:
            return
        shift = getattr(self.norms["h"], "bias", None)
        gate = [shift] if isinstance(shift, Tensor) else [b for b in (self.bias_ih, self.bias_hh) if b is not None]
        if not gate:
            raise ConfigError("forget_bias: this LSTM cell has no gate bias to set (bias=False and no shift at the "
                              "h norm site)")
        f = slice(self.hidden_size, 2 * self.hidden_size)  # torch gate order i, f, g, o
        with torch.no_grad():
            for b in gate:
                b[f] = 0.0
            gate[0][f] = float(self.forget_bias)

    def recur(self, xp_t: Tensor, core: State, sites: dict[str, State]) -> tuple[Tensor, State]:
        h, c = core
        gates = self.run_norm("x", xp_t, sites) + self.run_norm("h", self.recurrent_term(h), sites)
        i, f, g, o = gates.chunk(4, dim=-1)
        c = self.act_sigmoid(f) * c + self.act_sigmoid(i) * self.act_tanh(g)
        h = self.quant.act(self.act_sigmoid(o) * torch.tanh(self.run_norm("c", c, sites)))
        return h, (h, c)

    def sequence(self, xp: Tensor, state: State, mask: Tensor | None) -> tuple[Tensor, State] | None:
        if not self.quant.acts_float:
            return None
        if not self.plain:
            return self._normed_sequence(xp, state, mask)
        hs, h, c = lstm_sequence(xp, state[0], state[1], self.quantized_weight("weight_hh"), self.bias_hh, mask)
        return hs, (h, c)

    def sequence_inputs(self, x: Tensor, state: State, mask: Tensor | None) -> tuple[Tensor, State] | None:
        """The fused loop with the input projection inside (None for subclasses changing the math).

        Plain cells take ``lstm_layer`` (the shared loop with identity sites: C chunk kernels where they are built,
        projection per chunk); under autocast they return None, so the hoisted projection runs in the autocast
        dtype. LN/ATN cells take the normalized loop.
        """
        cls = type(self)
        if (cls.recur is not LSTMCell.recur or cls.sequence is not LSTMCell.sequence
                or cls.project_inputs is not RecurrentCell.project_inputs or not self.quant.acts_float):
            return None
        if self.plain:
            if torch.is_autocast_enabled(x.device.type):
                return None
            w_ih = self.quantized_weight("weight_ih", refresh=True)
            w_hh = self.quantized_weight("weight_hh", refresh=True)
            hs, h, c = lstm_layer(x, w_ih, self.bias_ih, state[0], state[1], w_hh, self.bias_hh, mask)
            return hs, (h, c)
        return self._normed_sequence(x, state, mask, project=True)

    def _normed_sequence(self, xp: Tensor, state: State, mask: Tensor | None,
                         project: bool = False, matmul_dtype: torch.dtype | None = None
                         ) -> tuple[Tensor, State] | None:
        """The fused LN/ATN loop when every site allows it (see the module docstring), else None.

        ``project``: ``xp`` is the raw input and the projection ``W_ih x + b_ih`` is done inside. Under CPU
        autocast to bfloat16 the loop's GEMMs run in bfloat16 (``matmul_dtype``), the rest in float32.
        """
        specs = {site: self.norms[site].fused_site() for site in self.norm_site_names}
        if any(spec is None for spec in specs.values()):
            return None
        core, sites = self.split_state(state)
        if any(spec.window is not None for spec in specs.values()) and mask is not None:
            return None
        if any(t.requires_grad for st in sites.values() for t in st):
            return None
        if torch.is_autocast_enabled(xp.device.type):  # norms, gates and c in the weights' dtype; bf16 GEMMs
            dtype = self.weight_hh.dtype
            bf16 = xp.device.type == "cpu" and torch.get_autocast_dtype("cpu") == torch.bfloat16
            with torch.autocast(xp.device.type, enabled=False):
                return self._normed_sequence(xp.to(dtype), tuple(s.to(dtype) if s.is_floating_point() else s
                                                                 for s in state), mask, project,
                                             torch.bfloat16 if bf16 else matmul_dtype)
        w_ih, b_ih = (self.quantized_weight("weight_ih", refresh=True), self.bias_ih) if project else (None, None)
        w_hh = self.quantized_weight("weight_hh", refresh=project)
        hs, h, c, new_sites = norm_lstm_sequence(xp, core[0], core[1], w_hh, self.bias_hh, specs, mask,
                                                 sites, weight_ih=w_ih, bias_ih=b_ih, matmul_dtype=matmul_dtype)
        sites.update(new_sites)
        return hs, self.join_state((h, c), sites)
