"""Data: the unit every module sees (:class:`Example`, :class:`Splits`) and how rows are built from it.

The examples of a benchmark come from its task: ``jepa_audit.tasks.load_benchmark(cfg, benchmark)`` and
``jepa_audit.tasks.pretraining_pool(cfg, n, seed)`` (data sits below tasks and never imports them).
``docs/data.md`` describes NL-RX's forms, split policies and embedded corpus; ``docs/tasks.md`` the other
tasks.
"""

from __future__ import annotations

from jepa_audit.data.examples import DataError, Example, Splits

__all__ = ["DataError", "Example", "Splits"]
