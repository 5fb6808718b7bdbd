"""Normalization of a sequence layer's outputs, for norms *between* stacked layers (not inside a cell).

``PostNormLayer(layer, kind)`` runs ``layer`` and normalizes its output ``(B, L, F)`` over features:

* ``"layer"``: layer normalization (per sample and position), gain 1, bias 0.
* ``"batch"``: batch normalization with **per-time-step** statistics: in training the mean and (biased)
  variance of each feature over the batch at each position; at inference population statistics per
  time step (EMA, unbiased, ``PerStepPopulation``; steps beyond the last trained one reuse its row).
  A batch of one has zero batch variance, so the output is the bias alone: the known collapse of BN
  at B = 1; the population variance is not updated from one sample (``B/(B−1)`` is undefined).
* ``"bln"``: batch layer normalization (``seqzoo.layers.bln``): the layer-normalized and the per-step
  batch-normalized outputs mixed by the inverse batch size.

Per-step statistics are what BLN's batch part uses on ``[B, T, F]`` (spec §4.1) and what makes a norm
after the last layer of a ``decoder="last"`` model act on the last state only (Keras ``LSTM(...) → BN``
without ``return_sequences``). The absolute time index of every sample is carried in the state (one
counter per sequence, advanced by its number of real tokens), so chunked evaluation and ``step`` use the
same population rows as one pass. Training statistics count only real (masked-in) positions.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from seqzoo.layers.batch_norm import PerStepPopulation
from seqzoo.layers.bln import BatchLayerNorm
from seqzoo.layers.protocol import SequenceLayer, State, check_mask

POST_NORMS = ("layer", "batch", "bln")


def _step_stats(population: PerStepPopulation, h: Tensor, pos: Tensor, mask: Tensor | None, training: bool
                ) -> tuple[Tensor, Tensor]:
    """Mean and variance broadcastable to ``h (B, L, F)`` at absolute positions ``pos (B, L)``.

    Training: batch statistics of each column over the real samples there (the population of the column's
    step, the batch's largest index, is updated). Inference: each sample's own population row.
    """
    if training:
        m = torch.ones(h.shape[:2], dtype=h.dtype, device=h.device) if mask is None else mask.to(h.dtype)
        w = m.unsqueeze(-1)
        count = m.sum(0)  # (L,)
        denom = count.clamp(min=1.0).unsqueeze(-1)
        mean = (h * w).sum(0) / denom  # (L, F)
        var = (((h - mean) ** 2) * w).sum(0) / denom
        start = int(pos[:, 0].max()) if pos.numel() else 0
        if mask is None and start + h.shape[1] <= population.max_steps:
            population.update_rows(start, mean.detach(), var.detach(), h.shape[0])
        else:
            for t, n in enumerate(count.tolist()):
                if n > 0:
                    population.update(start + t, mean[t].detach(), var[t].detach(), int(n))
        return mean, var
    mean, var = population.get_rows(pos)
    return mean.to(h.dtype), var.to(h.dtype)


class SequenceBatchNorm(nn.Module):
    """BN over the batch at each time step of ``(B, L, F)``, population statistics per step at inference."""

    per_step = True

    def __init__(self, num_features: int, *, eps: float = 1e-3, momentum: float = 0.1, max_steps: int = 1024
                 ) -> None:
        super().__init__()
        self.num_features, self.eps = num_features, eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.population = PerStepPopulation(num_features, max_steps, momentum)

    def forward(self, h: Tensor, pos: Tensor, mask: Tensor | None = None) -> Tensor:
        mean, var = _step_stats(self.population, h, pos, mask, self.training)
        return (h - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias


class SequenceBatchLayerNorm(nn.Module):
    """BLN of ``(B, L, F)``: per-step batch statistics (as ``SequenceBatchNorm``) mixed with layer statistics."""

    per_step = True

    def __init__(self, num_features: int, *, eps: float = 1e-3, momentum: float = 0.1, max_steps: int = 1024,
                 scale_by_sqrt_d: bool = True) -> None:
        super().__init__()
        self.bln = BatchLayerNorm(num_features, eps=eps, momentum=momentum, max_steps=max_steps,
                                  scale_by_sqrt_d=scale_by_sqrt_d)

    def forward(self, h: Tensor, pos: Tensor, mask: Tensor | None = None) -> Tensor:
        mean, var = _step_stats(self.bln.population, h, pos, mask, self.training)
        return self.bln._combine(h, mean, var, h.shape[0])


class SequenceLayerNorm(nn.Module):
    """Layer normalization over the features of every position (no statistics across samples or time)."""

    per_step = False

    def __init__(self, num_features: int, *, eps: float = 1e-3) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(num_features, eps=eps)

    def forward(self, h: Tensor, pos: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        return self.norm(h)


def make_post_norm(kind: str, num_features: int, **kwargs) -> nn.Module:
    """The norm module of ``kind`` (``"layer"``, ``"batch"`` or ``"bln"``) for ``num_features`` features."""
    if kind == "layer":
        return SequenceLayerNorm(num_features, **kwargs)
    if kind == "batch":
        return SequenceBatchNorm(num_features, **kwargs)
    if kind == "bln":
        return SequenceBatchLayerNorm(num_features, **kwargs)
    raise ValueError(f"post norm must be one of {POST_NORMS}, got {kind!r}")


class PostNormLayer(SequenceLayer):
    """``layer`` followed by a normalization of its outputs; per-step norms add a step counter to the state."""

    def __init__(self, layer: SequenceLayer, kind: str, **norm_kwargs) -> None:
        super().__init__()
        self.layer = layer
        self.kind = kind
        self.norm = make_post_norm(kind, layer.d_output, **norm_kwargs)
        self.d_model, self.d_output = layer.d_model, layer.d_output
        self.is_causal = layer.is_causal
        self.supports_step = layer.supports_step
        # train-time batch statistics of a column depend on the whole batch of sequences
        self.step_exact_in_train = layer.step_exact_in_train and not self.norm.per_step

    @property
    def _counted(self) -> bool:
        return self.norm.per_step

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> State:
        inner = tuple(self.layer.init_state(batch_size, device=device, dtype=dtype))
        if not self._counted:
            return inner
        return (*inner, torch.zeros(batch_size, dtype=torch.long, device=device))

    def state_size(self, seq_len: int) -> int:
        return self.layer.state_size(seq_len) + int(self._counted)

    def _split(self, state: State | None, batch_size: int, device) -> tuple[State | None, Tensor | None]:
        if not self._counted:
            return state, None
        if state is None:
            return None, torch.zeros(batch_size, dtype=torch.long, device=device)
        if len(state) < 1:
            raise ValueError(f"PostNormLayer({self.kind}): state must end with the step counter, got an empty state")
        inner, counter = tuple(state[:-1]), state[-1]
        return (inner or None), counter

    def forward(self, x: Tensor, state: State | None = None, *, mask: Tensor | None = None):
        mask = check_mask(mask, x, f"PostNormLayer({self.kind})")
        inner, counter = self._split(state, x.shape[0], x.device)
        y, inner = self.layer(x, inner, mask=mask)
        if counter is None:
            return self.norm(y), inner
        pos = counter.unsqueeze(1) + torch.arange(x.shape[1], device=x.device).unsqueeze(0)
        advance = x.shape[1] if mask is None else mask.long().sum(1)
        return self.norm(y, pos, mask), (*tuple(inner), counter + advance)

    def step(self, x_t: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        if not self.supports_step:
            raise NotImplementedError(f"{type(self.layer).__name__} does not support step()")
        inner, counter = self._split(state, x_t.shape[0], x_t.device)
        y, inner = self.layer.step(x_t, inner)
        if counter is None:
            return self.norm(y.unsqueeze(1)).squeeze(1), inner
        return self.norm(y.unsqueeze(1), counter.unsqueeze(1)).squeeze(1), (*tuple(inner), counter + 1)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"
