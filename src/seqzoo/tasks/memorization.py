"""Random memorization task (Illium et al. 2022, "limits for memory distance"; spec §7).

Inputs are i.i.d. ``U(0, 1)`` values, one feature per step, with no temporal structure; the target
at step ``t`` is the input ``distance`` steps earlier, ``x[t - distance]``. Only steps
``t >= distance`` count (``loss_mask``), since earlier steps have nothing to recall. The target of a
step is never that step's own input (``distance >= 1``), so a model can only succeed by memorizing.

The paper's metric is mean absolute error; the training loss is MSE by default or MAE. Its
sequence length, optimizer and data size were not published: length 64 and fresh batches follow
the spec's suggestion. Predicting the constant 0.5 gives MAE 0.25 and MSE 1/12.
"""

from __future__ import annotations

import torch

from seqzoo.errors import ConfigError
from seqzoo.tasks.base import Batch, Task, TaskSpec, check_int
from seqzoo.tasks.registry import register_task

MEMORIZATION_LOSSES = ("mse", "mae")


@register_task
class MemorizationTask(Task):
    """Recall the random input seen ``distance`` steps ago, at every step."""

    name = "memorization"
    paper = "Illium et al. 2022"
    version = 1
    non_data_params = ("n_valid", "n_test", "loss")

    def __init__(self, seq_len: int = 64, distance: int = 5, loss: str = "mse", n_valid: int = 1000,
                 n_test: int = 1000) -> None:
        check_int("memorization", "seq_len", seq_len, 2)
        check_int("memorization", "distance", distance, 1)
        if distance >= seq_len:
            raise ConfigError(f"memorization: distance must be < seq_len so some step has a target, "
                             f"got distance={distance}, seq_len={seq_len}")
        if loss not in MEMORIZATION_LOSSES:
            raise ConfigError(f"memorization: loss must be one of {MEMORIZATION_LOSSES}, got {loss!r}")
        check_int("memorization", "n_valid", n_valid, 1)
        check_int("memorization", "n_test", n_test, 1)
        super().__init__(seq_len=seq_len, distance=distance, loss=loss, n_valid=n_valid, n_test=n_test)
        self.seq_len, self.distance = seq_len, distance
        self.eval_sizes = {"valid": n_valid, "test": n_test}
        self.spec = TaskSpec(input_kind="features", d_input=1, output_kind="masked_steps", d_output=1,
                             loss=loss, metrics=("mae", "mse"), primary_metric="mae", seq_len=seq_len,
                             extra={"distance": distance})

    def sample(self, n: int, g: torch.Generator) -> Batch:
        X = self.distance
        x = torch.rand(n, self.seq_len, 1, generator=g)
        targets = torch.zeros_like(x)
        targets[:, X:] = x[:, :-X]
        loss_mask = torch.zeros(n, self.seq_len, dtype=torch.bool)
        loss_mask[:, X:] = True
        return {"inputs": x, "targets": targets, "loss_mask": loss_mask}

    def baseline(self) -> dict[str, float]:
        return {"mae": 0.25, "mse": 1.0 / 12.0}
