"""``task_baseline``: a task's trivial-model score, computed once per (task, arguments, split) in a process.

Cards compare models with the task's own baseline (memoryless loss, majority class, unigram perplexity);
building the task to ask can read a corpus or generate a data set, so the answer is cached.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any


def task_baseline(task: str, metric: str | None = None, task_args: Mapping[str, Any] | None = None,
                  split: str | None = None) -> Any:
    """``create_task(task, **task_args).baseline()`` (``baseline(split)`` when ``split`` is given), cached.

    With ``metric`` the one number ``baseline()[metric]`` as a float, else the whole dict.
    """
    out = _baseline(task, json.dumps(dict(task_args or {}), sort_keys=True, default=str), split)
    return float(out[metric]) if metric is not None else dict(out)


@functools.lru_cache(maxsize=64)
def _baseline(task: str, task_args_json: str, split: str | None) -> dict[str, float]:
    from seqzoo.tasks import create_task

    t = create_task(task, **json.loads(task_args_json))
    return dict(t.baseline() if split is None else t.baseline(split))
