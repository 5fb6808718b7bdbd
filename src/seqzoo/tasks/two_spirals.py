"""Two spirals (Lang & Witbrock 1988), as generated for the target-space paper (spec §6.3).

Training set: for ``i = 0..96`` the angle ``θ = iπ/16`` and radius ``r = 0.65 + 5.85·i/96`` give the class-0 point
``(r cos θ, r sin θ)`` and the class-1 point ``(−r cos θ, −r sin θ)``: 194 points, interleaved 0, 1, 0, 1, ...
(the spec's generator fits the official ``twoSpirals.csv`` to 1e-6). Test set: the same formula at the half steps
``i = 0.5, 1.5, ..., 96.5`` (194 points).

The paper has no validation set and monitors training accuracy, so ``valid`` is the training set: the trainer's
evaluation rows are training accuracy (``iterations to 100% train accuracy`` is read from them) and the test split
is scored once at the best of them. Inputs are ``(N, 1, 2)`` features (one step of two coordinates), the output one
of two classes per example; the trivial baseline (the training majority, the classes are balanced) is 50%.
"""

from __future__ import annotations

import math

import torch

from seqzoo.tasks.base import Task, TaskSpec, TensorDataset, class_prior_baseline
from seqzoo.tasks.registry import register_task

N_PER_CLASS = 97


def spiral_points(offset: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(points (194, 2) float64, labels (194,))`` at ``i = k + offset`` for ``k = 0..96``, classes interleaved."""
    i = torch.arange(N_PER_CLASS, dtype=torch.float64) + offset
    theta = i * math.pi / 16.0
    r = 0.65 + 5.85 * i / 96.0
    p = torch.stack([r * torch.cos(theta), r * torch.sin(theta)], -1)
    points = torch.stack([p, -p], 1).reshape(2 * N_PER_CLASS, 2)
    labels = torch.arange(2).repeat(N_PER_CLASS)
    return points, labels


@register_task
class TwoSpiralsTask(Task):
    """Classify which of two interleaved spirals a 2-D point lies on (194 training, 194 half-step test points)."""

    name = "two_spirals"
    paper = "Lang & Witbrock 1988; Fairbank, Samothrakis & Citi 2022"
    version = 1
    fresh_train_data = False

    def __init__(self) -> None:
        super().__init__()
        self.spec = TaskSpec(input_kind="features", d_input=2, output_kind="per_sequence", d_output=2,
                             loss="cross_entropy", metrics=("accuracy", "cross_entropy"), primary_metric="accuracy",
                             higher_is_better=True, seq_len=1, extra={"valid": "the training set"})

    def dataset(self, split: str) -> TensorDataset:
        points, labels = spiral_points(0.5 if split == "test" else 0.0)
        return TensorDataset({"inputs": points.float().unsqueeze(1), "targets": labels})

    def baseline(self) -> dict[str, float]:
        return class_prior_baseline(self.build("train").tensors["targets"], self.build("test").tensors["targets"], 2)
