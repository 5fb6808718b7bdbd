"""Assorted-Time Normalization (Pospisil, Zadorozhnyy & Ye 2022) as a recurrent norm site.

LayerNorm whose statistics are pooled over the last ``k`` pre-activations of the same site
(``norm="atn", norm_kwargs={"k": 25}``); same parameters as LayerNorm (gain 1, bias 0), and
``k = 1`` is exactly LayerNorm. The window lives in the layer state, so ``step`` and chunked
evaluation equal one pass; a fresh state (``state=None``) starts an empty window, which is the
per-batch reset the paper requires.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from seqzoo.layers.norms import NormState, RecurrentNorm, register_recurrent_norm
from seqzoo.ops.lstm_sites import SiteNorm
from seqzoo.ops.window_norm import window_init_state, window_moments_step


class AssortedTimeNorm(RecurrentNorm):
    """``g ⊙ (a_t − μ_t)/sqrt(σ²_t + ε) + b`` with ``μ_t, σ²_t`` over the last k steps and all features."""

    stateless = False
    num_state = 3

    def __init__(self, num_features: int, k: int = 25, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        if k < 1:
            raise ValueError(f"ATN window k must be >= 1, got {k}")
        self.num_features, self.k, self.eps = num_features, k, eps
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_features)) if affine else None

    def init_state(self, batch_size: int, device=None, dtype=None) -> NormState:
        return window_init_state(batch_size, self.k, device=device, dtype=dtype)

    def forward(self, a: Tensor, state: NormState = ()) -> tuple[Tensor, NormState]:
        if not state:
            state = self.init_state(a.shape[0], device=a.device, dtype=a.dtype)
        mean, var, state = window_moments_step(a, tuple(state), self.k)
        y = (a - mean.unsqueeze(-1)) * torch.rsqrt(var.unsqueeze(-1) + self.eps)
        if self.weight is not None:
            y = y * self.weight + self.bias
        return y, state

    def fused_site(self) -> SiteNorm | None:
        return SiteNorm(self.k, self.weight, self.bias, self.eps) if type(self) is AssortedTimeNorm else None

    def extra_repr(self) -> str:
        return f"{self.num_features}, k={self.k}, eps={self.eps}"


register_recurrent_norm("atn", AssortedTimeNorm)
