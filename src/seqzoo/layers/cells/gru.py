"""GRU cell (Cho et al. 2014) in torch's layout: gates (r, z, n), ``n = tanh(x_n + r * (W_hn h + b_hn))``.

Norm sites: ``x`` on ``W_ih x_t + b_ih`` and ``h`` on ``W_hh h_{t-1} + b_hh`` (each over all 3H
pre-activations jointly, applied before the gates are split, so the reset gate multiplies the
normalized recurrent candidate term).

Quantization sites (``quant=``): the gates ``r, z`` (sigmoid, ``[0, 1]``), the candidate ``n`` (tanh) and ``h``;
the weight site on ``W_ih`` and ``W_hh``.
"""

from __future__ import annotations

from torch import Tensor

from seqzoo.layers.cells.base import RecurrentCell, State


class GRUCell(RecurrentCell):
    core_state_names = ("h",)
    gate_multiplier = 3
    norm_site_names = ("x", "h")
    supports_quant = True

    def recur(self, xp_t: Tensor, core: State, sites: dict[str, State]) -> tuple[Tensor, State]:
        (h,) = core
        xr, xz, xn = self.run_norm("x", xp_t, sites).chunk(3, dim=-1)
        hr, hz, hn = self.run_norm("h", self.recurrent_term(h), sites).chunk(3, dim=-1)
        r = self.act_sigmoid(xr + hr)
        z = self.act_sigmoid(xz + hz)
        n = self.act_tanh(xn + r * hn)
        h = self.quant.act(n + z * (h - n))
        return h, (h,)
