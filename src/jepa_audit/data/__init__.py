"""Data: the examples of one benchmark of the configured task, split, and the tiny base's pre-training pool.

``load_benchmark(cfg, benchmark)`` returns :class:`Splits` (train / val / geometry / test of
:class:`Example`) from the task ``cfg.task`` (:mod:`jepa_audit.tasks`); ``pretraining_pool(cfg, n, seed)``
returns the task's pre-training examples, disjoint from every benchmark example, or None when the task has
none.  ``docs/data.md`` describes NL-RX's forms, split policies and embedded corpus; ``docs/tasks.md`` the
other tasks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from jepa_audit.data.examples import BENCHMARKS, DataError, Example, Splits

if TYPE_CHECKING:
    from jepa_audit.config import DataCfg

__all__ = ["BENCHMARKS", "DataError", "Example", "Splits", "load_benchmark", "pretraining_pool"]


def load_benchmark(cfg: DataCfg, benchmark: str) -> Splits:
    """The splits of ``benchmark`` of task ``cfg.task`` under ``cfg`` (see the task's ``load``).

    Raises :class:`DataError` on an unknown benchmark or any data problem."""
    from jepa_audit.tasks import get_task

    return get_task(cfg.task).load(cfg, benchmark)


def pretraining_pool(cfg: DataCfg, n: int, seed: int) -> list[Example] | None:
    """``n`` examples (seed ``seed``) of task ``cfg.task`` to pre-train the tiny base on, disjoint from its
    benchmarks; None when the task has no pool (the base then keeps its random init)."""
    from jepa_audit.tasks import get_task

    return get_task(cfg.task).pretraining_pool(cfg, n, seed)
