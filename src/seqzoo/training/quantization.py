"""Quantization-aware training: clip the shadow weights of quantized layers after every optimizer step (QNN, §8.1).

A quantized layer (``quant=`` on a cell, ``Linear``, ``Conv1d``/``Conv2d``; ``seqzoo.layers.quant``) keeps real-valued
shadow weights and uses their quantized version in the forward pass. The optimizer updates the shadow weights; this
hook clips them to ``[-1, 1]`` after each step, so a weight the STE no longer moves (its gradient is cancelled where
``|w| > 1``) cannot drift away. The trainer installs it by itself when the model has shadow weights
(``quantization_hooks``); the model itself is not changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from seqzoo.layers.quant import shadow_weights
from seqzoo.training.hooks import TrainHook

if TYPE_CHECKING:  # pragma: no cover
    from seqzoo.training.trainer import Trainer


class ShadowWeightClip(TrainHook):
    """``after_step``: clamp every shadow weight of the model to ``[-bound, bound]`` in place (default 1)."""

    def __init__(self, bound: float = 1.0) -> None:
        self.bound = float(bound)

    def after_step(self, trainer: Trainer | None, model: nn.Module) -> None:
        for p in shadow_weights(model):
            with torch.no_grad():
                p.clamp_(-self.bound, self.bound)


def quantization_hooks(model: nn.Module, hooks: Sequence[TrainHook] = ()) -> list[TrainHook]:
    """The hooks a model with quantized layers needs that ``hooks`` lacks (``[ShadowWeightClip()]`` or ``[]``)."""
    if any(isinstance(h, ShadowWeightClip) for h in hooks) or not shadow_weights(model):
        return []
    return [ShadowWeightClip()]
