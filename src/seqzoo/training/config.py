"""``TrainConfig``: every knob of the training loop, validated, JSON-serialisable via ``asdict``.

Validation happens in ``__post_init__`` so a config built in Python, read from JSON or assembled by the
command line fails the same way: an unknown key names the closest valid key, a wrong type or choice says
what is expected.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from seqzoo.errors import ConfigError, ConfigTypeError
from seqzoo.registry_utils import closest

OPTIMIZERS = ("adam", "adamw", "sgd", "nag", "rmsprop")  # nag: SGD with Nesterov momentum
SCHEDULES = ("constant", "cosine", "step")
DEVICES = ("auto", "cpu", "cuda")

# Fields that change only how a run is shown, not what it computes: left out of the run hash and free
# to differ when a run is resumed.
PRESENTATION_FIELDS = ("progress", "tensorboard")
# Optional fields added after runs were already recorded: left out of the run hash while unset (None), so the
# run directories of existing configurations keep their names.
UNHASHED_WHEN_NONE = ("ssm_lr", "privacy")
# Fields that may also differ on resume (a longer time budget continues a run stopped by its budget).
RESUMABLE_CHANGES = (*PRESENTATION_FIELDS, "time_budget")

# field -> (kind, nullable, choices, lower bound, lower bound inclusive)
_RULES: dict[str, tuple[str, bool, tuple[str, ...] | None, float | None, bool]] = {
    "steps": ("int", False, None, 1, True),
    "batch_size": ("int", False, None, 1, True),
    "optimizer": ("str", False, OPTIMIZERS, None, True),
    "lr": ("float", False, None, 0.0, False),
    "weight_decay": ("float", False, None, 0.0, True),
    "ssm_lr": ("float", True, None, 0.0, False),
    "momentum": ("float", False, None, 0.0, True),
    "schedule": ("str", False, SCHEDULES, None, True),
    "warmup_steps": ("int", False, None, 0, True),
    "step_size": ("int", False, None, 1, True),
    "gamma": ("float", False, None, 0.0, False),
    "min_lr_ratio": ("float", False, None, 0.0, True),
    "clip_norm": ("float", True, None, 0.0, False),
    "eval_every": ("int", False, None, 1, True),
    "eval_split": ("str", False, ("train", "valid", "test"), None, True),
    "eval_batch_size": ("int", False, None, 1, True),
    "test_split": ("str", True, ("train", "valid", "test"), None, True),
    "early_stopping": ("int", True, None, 1, True),
    "time_budget": ("float", True, None, 0.0, False),
    "seed": ("int", False, None, 0, True),
    "bf16": ("bool", False, None, None, True),
    "checkpoint_every": ("int", True, None, 1, True),
    "progress": ("bool", False, None, None, True),
    "tensorboard": ("bool", False, None, None, True),
    "log_every": ("int", False, None, 1, True),
    "device": ("str", False, DEVICES, None, True),
    "privacy": ("dict", True, None, None, True),
}

_KIND_NAMES = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false",
               "dict": "a dict of settings"}


@dataclass
class TrainConfig:
    """Settings of one training run (see docs/training.md)."""

    steps: int = 1000  # optimizer steps (the step budget)
    batch_size: int = 32  # global batch; split evenly across ranks under torchrun
    optimizer: str = "adam"  # adam | adamw | sgd | nag (Nesterov momentum) | rmsprop
    lr: float = 1e-3
    weight_decay: float = 0.0
    ssm_lr: float | None = None  # S5 models: lr of Lambda, B, log_step, without weight decay (spec §5.5); None = off
    momentum: float = 0.0  # sgd / rmsprop; nag needs > 0
    schedule: str = "constant"  # constant | cosine | step
    warmup_steps: int = 0  # linear warm-up, then the schedule
    step_size: int = 1000  # step schedule: multiply by gamma every step_size steps after warm-up
    gamma: float = 0.5  # step schedule
    min_lr_ratio: float = 0.0  # cosine floor, as a fraction of lr
    clip_norm: float | None = 1.0  # gradient clipping by global norm (None = off)
    eval_every: int = 100  # evaluate on eval_split every N steps (and at the end)
    eval_split: str = "valid"
    eval_batch_size: int = 256
    test_split: str | None = "test"  # evaluated once at the end with the best weights
    early_stopping: int | None = None  # patience in evaluations without improvement of the primary metric
    time_budget: float | None = None  # seconds of wall time (summed over resumes); stops cleanly when exceeded
    seed: int = 0
    bf16: bool = False  # torch.autocast(dtype=torch.bfloat16) around the forward pass
    checkpoint_every: int | None = None  # default = eval_every
    progress: bool = True  # tqdm bar (auto-off when not a TTY or CI=true)
    tensorboard: bool = True
    log_every: int = 10  # train loss rows in metrics.jsonl (mean loss over the last log_every steps)
    device: str = "auto"  # auto (cuda when available) | cpu | cuda
    privacy: dict | None = None  # DP-SGD settings (training/privacy.py), e.g. {"sigma": 1.0}; None = off

    def __post_init__(self) -> None:
        for f in fields(self):
            setattr(self, f.name, _check_value(f.name, getattr(self, f.name)))
        if self.min_lr_ratio > 1.0:
            raise ConfigError(f"train config 'min_lr_ratio' must be in [0, 1], got {self.min_lr_ratio!r}")
        if self.optimizer == "nag" and self.momentum <= 0.0:
            raise ConfigError(f"train config 'momentum' must be > 0 for optimizer 'nag' (Nesterov momentum), got "
                              f"{self.momentum!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build from a plain dict; unknown keys raise naming the closest valid key."""
        if not isinstance(d, dict):
            raise ConfigTypeError(f"train config must be a dict of settings, got {type(d).__name__}")
        valid = [f.name for f in fields(cls)]
        for key in d:
            if key not in valid:
                hint = closest(str(key), valid)
                msg = f"unknown train config key {key!r}"
                if hint is not None:
                    msg += f"; did you mean {hint!r}?"
                raise ConfigError(msg + f" Valid keys: {', '.join(valid)}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def checkpoint_interval(self) -> int:
        return self.checkpoint_every if self.checkpoint_every is not None else self.eval_every


def _check_value(name: str, value: Any) -> Any:
    kind, nullable, choices, low, inclusive = _RULES[name]
    expected = _KIND_NAMES[kind] + (" or null" if nullable else "")
    if value is None:
        if nullable:
            return None
        raise ConfigError(f"train config {name!r} must be {expected}, got None")
    if kind == "dict":
        from seqzoo.training.privacy import check_settings  # the only dict setting; checked by its owner

        return {**value, **check_settings(value)} if isinstance(value, dict) else check_settings(value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"train config {name!r} must be {expected}, got {value!r} ({type(value).__name__})")
        return value
    if kind == "str":
        if not isinstance(value, str):
            raise ConfigError(f"train config {name!r} must be {expected}, got {value!r} ({type(value).__name__})")
        if choices is not None and value not in choices:
            hint = closest(value, choices)
            msg = f"train config {name!r} must be one of {', '.join(choices)}; got {value!r}"
            raise ConfigError(msg + (f" (did you mean {hint!r}?)" if hint else ""))
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"train config {name!r} must be {expected}, got {value!r} ({type(value).__name__})")
    if kind == "int":
        if isinstance(value, float):
            if not value.is_integer():
                raise ConfigError(f"train config {name!r} must be {expected}, got {value!r}")
            value = int(value)
    else:
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"train config {name!r} must be a finite number, got {value!r}")
    if low is not None and (value < low or (value == low and not inclusive)):
        relation = ">=" if inclusive else ">"
        raise ConfigError(f"train config {name!r} must be {relation} {low}, got {value!r}")
    return value
