"""Tasks as plug-ins: what the audited model learns, one module per task (see :mod:`jepa_audit.tasks.base`).

``get_task(cfg.data.task)`` is the only way the rest of the code reaches a task's data, prompt, metrics and
scoring.  Every module of this package is imported here (its ``@register_task`` classes register
themselves), so adding a task is one module in this folder plus one preset in ``presets/``;
``docs/tasks.md`` walks through it.
"""

import importlib
import pkgutil

from jepa_audit.tasks.base import (
    EvalResult,
    MetricSpec,
    Task,
    carved_splits,
    get_task,
    list_tasks,
    load_benchmark,
    metric_specs_of_row,
    pretraining_pool,
    register_task,
    task_rows,
)

for _mod in pkgutil.iter_modules(__path__):
    if not _mod.name.startswith("_") and _mod.name != "base":
        importlib.import_module(f"{__name__}.{_mod.name}")

__all__ = [
    "EvalResult",
    "MetricSpec",
    "Task",
    "carved_splits",
    "get_task",
    "list_tasks",
    "load_benchmark",
    "metric_specs_of_row",
    "pretraining_pool",
    "register_task",
    "task_rows",
]
