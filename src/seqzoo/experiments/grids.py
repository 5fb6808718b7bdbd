"""``cross``: the grid most cards run — every model on every task, labelled by model and task.

Models and tasks are given by label; each may carry its arguments, and a model's arguments (or an entry's
train fields and extra labels) may depend on the task. The labels are ``{model_label: m, task_label: t,
**extra}`` in that order (entry ids and results read them), tasks in the outer loop unless ``tasks_outer``
is False.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from seqzoo.experiments.card import Entry

# a preset name, (preset, model args), or a function of the task label returning either
ModelSpec = str | tuple[str, Mapping[str, Any]] | Callable[[Any], "str | tuple[str, Mapping[str, Any]]"]
TaskSpec = str | tuple[str, Mapping[str, Any]]
PerCell = Mapping[str, Any] | Callable[[Any, Any], Mapping[str, Any]] | None


def _pair(spec: Any) -> tuple[str, dict[str, Any]]:
    return (spec, {}) if isinstance(spec, str) else (spec[0], dict(spec[1]))


def _cell(value: PerCell, m: Any, t: Any) -> dict[str, Any]:
    if value is None:
        return {}
    return dict(value(m, t) if callable(value) else value)


def cross(models: Mapping[Any, ModelSpec] | Iterable[str], tasks: Mapping[Any, TaskSpec] | Iterable[str], *,
          train: PerCell = None, labels: PerCell = None, model_label: str = "arch", task_label: str = "task",
          tasks_outer: bool = True) -> list[Entry]:
    """Every model on every task as ``Entry``s.

    ``models``: label -> preset, ``(preset, args)`` or a function of the task label returning one (a plain
    list of names uses each name as its own preset). ``tasks`` likewise, without the function form.
    ``train`` / ``labels``: TrainConfig fields / extra labels of a cell, a dict or a function ``(model
    label, task label) -> dict``.
    """
    models = models if isinstance(models, Mapping) else {m: m for m in models}
    tasks = tasks if isinstance(tasks, Mapping) else {t: t for t in tasks}
    cells = [(m, t) for t in tasks for m in models] if tasks_outer else [(m, t) for m in models for t in tasks]
    out = []
    for m, t in cells:
        spec = models[m]
        preset, args = _pair(spec(t) if callable(spec) else spec)
        task, task_args = _pair(tasks[t])
        out.append(Entry(model=preset, task=task, model_args=args, task_args=task_args,
                         labels={model_label: m, task_label: t, **_cell(labels, m, t)}, train=_cell(train, m, t)))
    return out
