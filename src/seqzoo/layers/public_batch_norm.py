"""BatchNorm whose statistics come from a public batch: the DP-safe BN of Davody et al. (spec privacy §7.4).

Under DP-SGD a public batch of ``n_public`` rows (data that is not private, e.g. a disjoint public set) is put in
front of the private rows of every training forward (``seqzoo.training.privacy`` does this and sets ``n_public``).

* ``mode="public"`` (the spec's sound variant): mean and variance over the public rows only. Each private example's
  output is then a function of that example, θ and public data, so per-example gradients are functions of one
  example and standard DP-SGD accounting applies. Gradients flow through the public statistics.
* ``mode="mixed"`` (the official SIDP code, a labelled replication): statistics over public and private rows
  together. One private example changes the others' activations, so it ``leaks_across_examples`` and the DP
  validator refuses it unless the run is marked as a replication (whose ε is then not a guarantee).

Running statistics (used in eval mode) are an exponential average of the public statistics when ``n_public > 0``
(private data never enters them in ``public`` mode); ``update_running = False`` freezes them (the DP engine
updates them once per step from the public batch alone). Without public rows (``n_public == 0``, ordinary
non-private training) the layer is plain BatchNorm over the whole batch. Channels are dimension 1, as in
``nn.BatchNorm1d/2d``: input ``(B, C)`` or ``(B, C, *)``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

MODES = ("public", "mixed")


class PublicBatchNorm(nn.Module):
    """BN with statistics from the leading ``n_public`` (public) rows, or from all rows (``mode="mixed"``)."""

    def __init__(self, num_features: int, mode: str = "public", eps: float = 1e-5, momentum: float = 0.1,
                 affine: bool = True) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.num_features, self.mode, self.eps, self.momentum = num_features, mode, eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_features)) if affine else None
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.n_public = 0  # set by the DP engine around each training forward
        self.update_running = True

    @property
    def leaks_across_examples(self) -> bool:
        """True when one private example's data reaches another's output (mixed statistics)."""
        return self.mode == "mixed"

    def extra_repr(self) -> str:
        return f"{self.num_features}, mode={self.mode!r}, eps={self.eps}, momentum={self.momentum}"

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() < 2 or x.shape[1] != self.num_features:
            raise ValueError(f"PublicBatchNorm: expected (batch, {self.num_features}, ...), got {tuple(x.shape)}")
        dims = [0, *range(2, x.dim())]
        shape = (1, self.num_features) + (1,) * (x.dim() - 2)
        if self.training:
            p = self.n_public
            ref = x[:p] if (self.mode == "public" and p > 0) else x
            mean = ref.mean(dims)
            var = ref.var(dims, unbiased=False)
            if self.update_running:
                with torch.no_grad():
                    n = ref.numel() // self.num_features
                    m = self.momentum
                    self.running_mean.mul_(1 - m).add_(m * mean.detach())
                    self.running_var.mul_(1 - m).add_(m * var.detach() * n / max(n - 1, 1))
        else:
            mean, var = self.running_mean, self.running_var
        y = (x - mean.reshape(shape)) * torch.rsqrt(var.reshape(shape) + self.eps)
        if self.weight is not None:
            y = y * self.weight.reshape(shape) + self.bias.reshape(shape)
        return y
