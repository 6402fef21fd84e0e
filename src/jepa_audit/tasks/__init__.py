"""Tasks as plug-ins: what the audited model learns, one module per task (see :mod:`jepa_audit.tasks.base`).

``get_task(cfg.data.task)`` is the only way the rest of the code reaches a task's data, prompt, metrics and
scoring.  Adding a task is one module here (or anywhere that is imported before the config is resolved)
plus one preset in ``configs/``; ``docs/tasks.md`` walks through it.
"""

from jepa_audit.tasks import nlrx  # noqa: E402,F401  (registers the built-in tasks)
from jepa_audit.tasks.base import (
    EvalResult,
    MetricSpec,
    Task,
    get_task,
    list_tasks,
    metric_specs_of_row,
    register_task,
    task_rows,
)

__all__ = [
    "EvalResult",
    "MetricSpec",
    "Task",
    "get_task",
    "list_tasks",
    "metric_specs_of_row",
    "register_task",
    "task_rows",
]
