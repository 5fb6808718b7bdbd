"""Registered tasks (generated or read from a path)."""

from seqzoo.tasks import adding as _adding  # noqa: F401
from seqzoo.tasks import arma_sim as _arma_sim  # noqa: F401
from seqzoo.tasks import babi as _babi  # noqa: F401
from seqzoo.tasks import bit_delay as _bit_delay  # noqa: F401
from seqzoo.tasks import cfl as _cfl  # noqa: F401
from seqzoo.tasks import copy as _copy  # noqa: F401
from seqzoo.tasks import denoise as _denoise  # noqa: F401
from seqzoo.tasks import digits as _digits  # noqa: F401
from seqzoo.tasks import forecasting as _forecasting  # noqa: F401
from seqzoo.tasks import formal_languages as _formal_languages  # noqa: F401
from seqzoo.tasks import language_modeling as _language_modeling  # noqa: F401
from seqzoo.tasks import listops as _listops  # noqa: F401
from seqzoo.tasks import long_classification as _long_classification  # noqa: F401
from seqzoo.tasks import memorization as _memorization  # noqa: F401
from seqzoo.tasks import mnist as _mnist  # noqa: F401
from seqzoo.tasks import music as _music  # noqa: F401
from seqzoo.tasks import parenthesis as _parenthesis  # noqa: F401
from seqzoo.tasks import title_recall as _title_recall  # noqa: F401
from seqzoo.tasks import translation as _translation  # noqa: F401
from seqzoo.tasks import two_spirals as _two_spirals  # noqa: F401
from seqzoo.tasks.base import Batch, Task, TaskSpec, TensorDataset
from seqzoo.tasks.registry import TASKS, create_task, list_tasks, register_task, task_info

__all__ = ["TASKS", "Batch", "Task", "TaskSpec", "TensorDataset", "create_task", "list_tasks", "register_task",
           "task_info"]
