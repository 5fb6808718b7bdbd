"""Task registry: ``register_task`` / ``create_task`` / ``list_tasks`` / ``task_info``."""

from __future__ import annotations

from typing import Any

from seqzoo.registry_utils import Registry, build_checked, check_kwargs, signature_params
from seqzoo.tasks.base import Task

TASKS: Registry[type[Task]] = Registry("task")


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: register a task under ``cls.name``."""
    TASKS.add(cls.name, cls)
    return cls


def create_task(name: str, **params: Any) -> Task:
    """Build a registered task; unknown parameters raise naming the closest valid one."""
    cls = TASKS.get(name)
    check_kwargs(f"task {name!r}", params, signature_params(cls.__init__))
    return build_checked("task", name, cls, params)


def list_tasks(pattern: str | None = None) -> list[str]:
    return TASKS.names(pattern)


def task_info(name: str) -> dict[str, Any]:
    cls = TASKS.get(name)
    import inspect

    sig = inspect.signature(cls.__init__)
    defaults = {p.name: p.default for p in sig.parameters.values()
                if p.name != "self" and p.default is not inspect.Parameter.empty}
    return {"name": name, "version": cls.version, "description": (cls.__doc__ or "").strip(), "defaults": defaults,
            "paper": getattr(cls, "paper", "")}
