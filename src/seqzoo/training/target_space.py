"""The realisation batch of a target-space model, taken from its task when a run is resolved.

A target-space model (``seqzoo.models.target_space``) solves its weights on a fixed realisation batch ``X̄``; the
paper takes ``X̄`` from the training inputs (the whole two-spirals training set, the first training sequences of
the bit tasks; spec §6.2). The model tier cannot see tasks, so ``resolve_run`` (the one rule that builds a run)
calls ``use_task_realisation``: a model with ``set_realisation(inputs)`` and ``realisation_size`` gets the first
``realisation_size`` training inputs of its task. The realisation is a buffer saved with the weights, so a loaded
or resumed run keeps the one it trained with; a model built without a task keeps its fixed-noise realisation.
"""

from __future__ import annotations

from torch import Tensor, nn

from seqzoo.errors import ConfigError
from seqzoo.tasks.base import Task


def realisation_inputs(task: Task, n: int, seed: int) -> Tensor:
    """The first ``n`` training inputs of ``task``: rows of its fixed training set, or the first ``n`` sequences of
    the training batch of step 0 (tasks that draw fresh data every step)."""
    if task.fresh_train_data:
        inputs = task.train_batch(0, n, seed)["inputs"]
    else:
        data = task.build("train")
        if len(data) < n:
            raise ConfigError(f"realisation_size={n} exceeds the {len(data)} training examples of task "
                              f"{task.name!r}; use realisation_size <= {len(data)}")
        inputs = data.batch(slice(0, n))["inputs"]
    if not inputs.is_floating_point():
        raise ConfigError(f"a target-space model needs feature inputs for its realisation batch, but task "
                          f"{task.name!r} gives {inputs.dtype} tokens")
    return inputs


def use_task_realisation(model: nn.Module, task: Task, seed: int) -> None:
    """Give ``model`` its task's training inputs as realisation batch (nothing for other models)."""
    setter, n = getattr(model, "set_realisation", None), getattr(model, "realisation_size", None)
    if not callable(setter) or not isinstance(n, int) or getattr(model, "space", "target") != "target":
        return
    inputs = realisation_inputs(task, n, seed)
    try:
        setter(inputs)
    except ValueError as err:
        raise ConfigError(f"task {task.name!r} cannot give the realisation batch: {err}") from err
