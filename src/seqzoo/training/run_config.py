"""One rule from (model, task, overrides) to the full configuration of a run, used by everything that needs it.

``resolve_run`` is the only place that fills a model's sizes from its task, merges preset defaults, validates
every value (types from the builders' annotations, then the builders' own checks), builds the task and the
model once and runs the model on one training batch, so a model/task pair that cannot work together is refused
before any folder exists. The command line (``seqzoo train``, ``--print-config``), the trainer, the cards and
parameter matching all call it; ``--print-config`` prints ``RunConfig.to_dict()``, which is exactly the
``config.json`` the trainer writes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from seqzoo.errors import ConfigError, ConfigTypeError
from seqzoo.tasks.base import Task, TaskSpec
from seqzoo.training.config import PRESENTATION_FIELDS, UNHASHED_WHEN_NONE, TrainConfig
from seqzoo.training.runs import default_run_name, jsonable, run_hash


def model_args_for(model: str, model_args: dict[str, Any] | None, spec: TaskSpec) -> dict[str, Any]:
    """The user's model arguments plus the task's sizes (``spec.model_kwargs()``) that the preset accepts.

    The user's arguments win. A preset that pools the whole sequence (``decoder`` "last" or "mean", e.g. CDIL's
    ensembled per-position logits) keeps its own decoder on per-sequence tasks; only a per-step head is replaced.
    """
    from seqzoo.models import model_info

    if model_args is not None and not isinstance(model_args, dict):
        raise ConfigTypeError(f"model_args must be a dict, got {type(model_args).__name__}")
    info = model_info(model)
    accepted, preset_decoder = info["arguments"], info["defaults"].get("decoder")
    args = dict(model_args or {})
    for key, value in spec.model_kwargs().items():
        if key in accepted and key not in args:
            if key == "decoder" and value != "step" and preset_decoder in ("last", "mean"):
                continue
            args[key] = value
    return args


def check_run_name(name: str) -> str:
    """``name`` when it is one plain path component (no separators, not ``.``/``..``), else a ConfigError."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"run name must be a non-empty string, got {name!r}")
    seps = {"/", "\\", os.sep} | ({os.altsep} if os.altsep else set())
    if name in (".", "..") or any(s in name for s in seps) or "\0" in name or Path(name).is_absolute():
        raise ConfigError(f"run name {name!r} must be one folder name inside the output folder (no '/', '\\', "
                          f"'.' or '..')")
    return name


@dataclass
class RunConfig:
    """Everything that determines what a run computes: ``config.json`` is ``to_dict()``."""

    model: str
    model_args: dict[str, Any]  # fully resolved: preset defaults + task sizes + user overrides
    task: str
    task_args: dict[str, Any]  # the task's parameters as it recorded them
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return jsonable({"model": self.model, "model_args": self.model_args, "task": self.task,
                         "task_args": self.task_args, "train": self.train.to_dict()})

    def hashed(self) -> dict[str, Any]:
        """``to_dict()`` minus the fields that only change how a run is shown (and unset late additions)."""
        d = self.to_dict()
        d["train"] = {k: v for k, v in d["train"].items()
                      if k not in PRESENTATION_FIELDS and not (k in UNHASHED_WHEN_NONE and v is None)}
        return d

    def run_name(self) -> str:
        """``<task>-<model>-s<seed>-<hash8>``: equal configurations share a folder, others never do."""
        return default_run_name(self.task, self.model, self.train.seed, run_hash(self.hashed()))

    def with_seed(self, seed: int) -> RunConfig:
        return RunConfig(self.model, dict(self.model_args), self.task, dict(self.task_args),
                         TrainConfig.from_dict({**self.train.to_dict(), "seed": seed}))


@dataclass
class Resolved:
    """A resolved run with the task and the freshly initialised model it was checked with."""

    config: RunConfig
    task: Task
    model: nn.Module


def as_train_config(config: TrainConfig | dict | None) -> TrainConfig:
    """A validated ``TrainConfig`` from a TrainConfig (re-validated after edits), a dict or None (defaults)."""
    if config is None:
        return TrainConfig()
    if isinstance(config, TrainConfig):
        return TrainConfig.from_dict(config.to_dict())
    if isinstance(config, dict):
        return TrainConfig.from_dict(config)
    raise ConfigTypeError(f"config must be a TrainConfig, a dict or None, got {type(config).__name__}")


def resolve_run(model: str, task: str, *, model_args: dict[str, Any] | None = None,
                task_args: dict[str, Any] | None = None, config: TrainConfig | dict | None = None,
                data_dir: str | os.PathLike | None = None, check: bool = True,
                device: torch.device | str = "cpu") -> Resolved:
    """Resolve and validate a run: builds the task and the model (seeded as training seeds it) and, with
    ``check``, runs the model on one training batch so every error surfaces before any work or file.

    ``data_dir`` is handed to a task that reads data (and is an error for one that does not).
    """
    from seqzoo.models import create_model
    from seqzoo.tasks import TASKS, create_task
    from seqzoo.training.evaluation import check_fit, to_device
    from seqzoo.training.target_space import use_task_realisation

    for what, value in (("model", model), ("task", task)):
        if not isinstance(value, str):
            raise ConfigTypeError(f"{what} must be a registered name (str), got {type(value).__name__}; "
                              f"register a custom module with seqzoo.register_model and pass its name")
    if task_args is not None and not isinstance(task_args, dict):
        raise ConfigTypeError(f"task_args must be a dict, got {type(task_args).__name__}")
    train = as_train_config(config)
    t_args = dict(task_args or {})
    if data_dir is not None:
        from seqzoo.registry_utils import signature_params

        if "data_dir" in signature_params(TASKS.get(task).__init__):
            t_args.setdefault("data_dir", str(data_dir))
    task_obj = create_task(task, **t_args)
    args = model_args_for(model, model_args, task_obj.spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(train.seed)
        net = create_model(model, **args)
        use_task_realisation(net, task_obj, train.seed)  # target-space models: X̄ from the task's training inputs
    if train.privacy is not None:  # DP-SGD: the derived (N, L, q, T, ε, ...) are part of the configuration
        from seqzoo.training.privacy import resolve_privacy

        privacy = resolve_privacy(train.privacy, task_obj, net, train.steps, train.batch_size)
        train = TrainConfig.from_dict({**train.to_dict(), "privacy": privacy})
    params = getattr(task_obj, "params", None)
    rc = RunConfig(model, dict(getattr(net, "seqzoo_config", args)), task,
                   dict(params) if isinstance(params, dict) else t_args, train)
    device = torch.device(device)
    if check:
        batch = task_obj.train_batch(0, min(2, train.batch_size), train.seed)
        try:
            with torch.random.fork_rng(devices=[]):
                check_fit(net.to(device), task_obj, to_device(batch, device), device=device, model_name=model,
                          task_name=task)
        except ValueError as err:  # the pair does not fit: a configuration mistake, said in one line
            if isinstance(err, ConfigError):
                raise
            raise ConfigError(str(err).splitlines()[0]) from err
    return Resolved(rc, task_obj, net)
