"""Optimizers and learning-rate schedules.

The schedule is a pure function of the step number, written into the optimizer's param groups before
every step. It holds no state beyond the step, so a resumed run gets exactly the learning rates an
uninterrupted run would, with nothing to restore but the step.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from seqzoo.training.config import TrainConfig


def optimizer_params(model: torch.nn.Module, config: TrainConfig) -> list:
    """What the optimizer gets: the trainable parameters, or groups where modules ask for their own settings
    through the ``param_settings`` hook (``hooks.optimizer_param_groups``; e.g. S5's ``ssm_lr``)."""
    from seqzoo.training.hooks import optimizer_param_groups

    return optimizer_param_groups(model, config)


def build_optimizer(params: Iterable, config: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer named by ``config.optimizer`` with its learning rate, weight decay and momentum.

    ``params`` are parameters or parameter-group dicts (e.g. from ``optimizer_params``); groups keep their own
    ``lr`` and ``weight_decay``.
    """
    params = [p for p in params if isinstance(p, dict) or p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    name, lr, wd = config.optimizer, config.lr, config.weight_decay
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=wd, momentum=config.momentum)
    if name == "nag":  # Nesterov's accelerated gradient, the GCNN paper's optimizer (Dauphin et al. 2017)
        return torch.optim.SGD(params, lr=lr, weight_decay=wd, momentum=config.momentum, nesterov=True)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, weight_decay=wd, momentum=config.momentum)
    raise ValueError(f"unknown optimizer {name!r}")  # unreachable: TrainConfig validates the choice


class LRSchedule:
    """Linear warm-up over ``warmup_steps``, then constant, cosine decay to ``min_lr_ratio``, or step decay.

    ``factor(step)`` is the multiplier of the base learning rate for optimizer step ``step`` (1-based).
    """

    def __init__(self, config: TrainConfig) -> None:
        self.kind = config.schedule
        self.total = config.steps
        self.warmup = config.warmup_steps
        self.step_size = config.step_size
        self.gamma = config.gamma
        self.min_ratio = config.min_lr_ratio
        self.base_lr = config.lr

    def factor(self, step: int) -> float:
        if self.warmup > 0 and step <= self.warmup:
            return step / self.warmup
        after = step - self.warmup
        if self.kind == "cosine":
            span = max(1, self.total - self.warmup)
            progress = min(1.0, after / span)
            return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
        if self.kind == "step":
            return self.gamma ** (max(0, after - 1) // self.step_size)
        return 1.0

    def lr(self, step: int) -> float:
        return self.base_lr * self.factor(step)

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        """Set the learning rate of every param group for optimizer step ``step``; returns it."""
        lr = self.lr(step)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)  # e.g. S5's separate SSM learning rate
        return lr

    def state_dict(self) -> dict:
        return {"kind": self.kind, "total": self.total, "warmup": self.warmup, "step_size": self.step_size,
                "gamma": self.gamma, "min_ratio": self.min_ratio, "base_lr": self.base_lr}
