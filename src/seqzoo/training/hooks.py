"""Hook points of the training loop, for methods that change how a step is taken rather than the model.

A ``TrainHook`` is passed to ``train(..., hooks=[...])`` (or ``Trainer``); every method is optional and the
trainer calls the hooks in order at these points of each training step::

    batch = first hook.train_batch(...) that is not None   # e.g. a Poisson-sampled lot (DP-SGD); else the task's
    loss = first hook.compute_gradients(...) not None      # fills p.grad itself (DP-SGD's per-sample gradients);
                                                           # else: task loss + sum(hook.extra_loss(...)), backward
    hook.transform_gradients(...)                          # e.g. a gradient projection
    clip (clip_norm), optimizer.step()
    hook.after_step(...)                                   # e.g. clip the shadow weights of a quantized net
    hook.metrics(...) -> {name: value}                     # averaged into the next train log row
    hook.final_metrics(...) -> {name: value}               # once, added to the test row (e.g. the ε spent)

Modules inside the model take part without a hook object:

* ``module.module_metrics() -> dict[str, float]``: statistics since the last call (e.g. a fixed-point solver's
  iterations and residual); logged with the train rows (and TensorBoard) under ``<module path>.<name>``.
* ``module.param_settings(config) -> {parameter name: {"lr_scale": ..., "weight_decay": ...}} | None``:
  optimizer settings for the module's own parameters (e.g. S5's separate SSM learning rate ``ssm_lr``);
  ``optimizer_param_groups`` turns them into parameter groups.
* ``module.awaits_plateau`` / ``module.switch_on_plateau()``: a phase that ends when the validation loss stops
  falling (MemN2N's linear start); the trainer adds a ``PlateauSwitchHook`` for it (``module_hooks``).

Hooks run on every rank under data parallelism; they must not draw from the global RNG unless they re-seed it
from the step (``derive_seed``), or resumed runs stop being bit-identical.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

if TYPE_CHECKING:  # pragma: no cover
    from seqzoo.training.trainer import Trainer


class TrainHook:
    """Base class of training hooks; override what you need (see the module docstring for the call order)."""

    def train_batch(self, trainer: Trainer, step: int) -> dict[str, Any] | None:
        """The training batch of ``step`` (None: the task's ``train_batch``); must be a pure function of the step."""
        return None

    def compute_gradients(self, trainer: Trainer, model: nn.Module, batch: dict[str, Any]) -> Tensor | None:
        """Set ``p.grad`` of every trainable parameter and return the step's (detached) loss, replacing the
        trainer's forward and backward (None: the trainer's own, with every hook's ``extra_loss``)."""
        return None

    def extra_loss(self, trainer: Trainer, model: nn.Module, batch: dict[str, Any]) -> Tensor | None:
        """A scalar added to the task's loss before ``backward`` (None: nothing)."""
        return None

    def transform_gradients(self, trainer: Trainer, model: nn.Module) -> None:
        """Change ``p.grad`` in place after ``backward`` and before clipping and the optimizer step."""

    def after_step(self, trainer: Trainer, model: nn.Module) -> None:
        """Change parameters in place after the optimizer step (under ``torch.no_grad``)."""

    def metrics(self, trainer: Trainer, model: nn.Module) -> dict[str, float]:
        """Scalars of this step, averaged over the steps of a train log row."""
        return {}

    def final_metrics(self, trainer: Trainer, model: nn.Module) -> dict[str, float]:
        """Scalars of the whole run, added once to the test metrics (result.json, the index, ``compare``)."""
        return {}


def module_metrics(model: nn.Module) -> dict[str, float]:
    """``module_metrics()`` of every submodule that has one, keyed ``<module path>.<name>`` (root: ``<name>``)."""
    out: dict[str, float] = {}
    for path, module in model.named_modules():
        fn = getattr(module, "module_metrics", None)
        if callable(fn):
            for key, value in (fn() or {}).items():
                out[f"{path}.{key}" if path else key] = float(value)
    return out


def optimizer_param_groups(model: nn.Module, config: Any) -> list:
    """The optimizer's parameters: plain trainable parameters, or groups when modules ask for their own settings.

    Every submodule with ``param_settings(config)`` may give settings (``lr_scale``, ``weight_decay``) to its own
    parameters by name; parameters with equal settings form one group (named by the settings' ``group`` key),
    in order of first appearance, with the remaining parameters last in the group ``"regular"``. ``lr_scale``
    multiplies the scheduled learning rate (``LRSchedule.apply``).
    """
    settings: dict[int, dict[str, Any]] = {}
    for module in model.modules():
        fn = getattr(module, "param_settings", None)
        if not callable(fn):
            continue
        own = fn(config)
        if not own:
            continue
        params = dict(module.named_parameters(recurse=False))
        for name, s in own.items():
            if name not in params:
                raise ValueError(f"{type(module).__name__}.param_settings names {name!r}, not one of its parameters")
            settings[id(params[name])] = dict(s)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not settings:
        return trainable
    groups: dict[str, dict[str, Any]] = {}
    for p in trainable:
        s = settings.get(id(p))
        name = "regular" if s is None else str(s.get("group", "custom"))
        if name not in groups:
            base = {"lr_scale": 1.0, "weight_decay": float(config.weight_decay)} if s is None else s
            groups[name] = {"name": name, "params": [],
                            "lr_scale": float(base.get("lr_scale", 1.0)),
                            "weight_decay": float(base.get("weight_decay", config.weight_decay))}
        groups[name]["params"].append(p)
    ordered = [g for n, g in groups.items() if n != "regular"] + ([groups["regular"]] if "regular" in groups else [])
    for g in ordered:
        g["lr"] = float(config.lr) * g["lr_scale"]
    return ordered


class PlateauSwitchHook(TrainHook):
    """Calls ``switch_on_plateau()`` on the modules that wait for the validation loss to stop falling.

    A module takes part by having ``awaits_plateau`` (True while it waits) and ``switch_on_plateau()``, and
    optionally ``plateau_patience`` (evaluations without a new lowest loss that count as a plateau; default 1).
    MemN2N's linear start is one: its hops drop the softmax until the plateau. The watched value is the task's loss
    metric (``spec.loss``, e.g. ``cross_entropy``) on the evaluation split, read from the loop's evaluation history,
    so the decision is a function of the checkpointed history and the module's own (saved) phase: a resumed run
    switches at the same step. The trainer adds this hook by itself when the model has such a module
    (``module_hooks``); it checks after every optimizer step, so the switch lands on the step after the evaluation
    that showed the plateau.
    """

    def after_step(self, trainer: Trainer, model: nn.Module) -> None:
        waiting = [m for m in model.modules() if getattr(m, "awaits_plateau", False)]
        if not waiting:
            return
        spec = trainer.task.spec
        metric = spec.loss if spec.loss in spec.metrics else spec.primary_metric
        values = [row[metric] for row in trainer.state.history if metric in row]
        for module in waiting:
            if plateaued(values, int(getattr(module, "plateau_patience", 1))):
                module.switch_on_plateau()


def plateaued(values: list[float], patience: int) -> bool:
    """True when none of the last ``patience`` values is below the lowest value before them (a loss stopped
    falling); False while there are not more than ``patience`` values."""
    if len(values) <= patience:
        return False
    return min(values[-patience:]) >= min(values[:-patience])


def module_hooks(model: nn.Module, given: list[TrainHook]) -> list[TrainHook]:
    """The hooks the model's own modules need and ``given`` lacks: a ``PlateauSwitchHook`` when a module has
    ``switch_on_plateau``."""
    wants = any(callable(getattr(m, "switch_on_plateau", None)) for m in model.modules())
    if wants and not any(isinstance(h, PlateauSwitchHook) for h in given):
        return [PlateauSwitchHook()]
    return []
