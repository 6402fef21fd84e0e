"""Precision of the objectives: their own maths in fp32 under the caller's autocast (:func:`fp32_scope`), the
model rows they run under the caller's autocast again (:func:`caller_precision`), and :class:`AuxObjective`,
the base of every registered objective, which runs ``forward`` inside the fp32 scope.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar
from typing import Any

import torch

from jepa_audit.objectives.base import Objective

_AUTOCAST_DEVICES = ("cuda", "cpu")


_CALLER_AUTOCAST: ContextVar[tuple[tuple[str, bool, torch.dtype], ...] | None] = ContextVar(
    "jepa_audit_caller_autocast", default=None
)


@contextmanager
def fp32_scope() -> Iterator[None]:
    """Turn autocast off for an objective's own maths (Gram matrices, einsums, projections would otherwise
    run in bf16), remembering the caller's autocast state for :func:`caller_precision`.  Nested scopes (an
    inner objective, V3 → V1) keep the outermost caller's state."""
    if _CALLER_AUTOCAST.get() is not None:
        yield
        return
    state = tuple(
        (dev, torch.is_autocast_enabled(dev), torch.get_autocast_dtype(dev)) for dev in _AUTOCAST_DEVICES
    )
    token = _CALLER_AUTOCAST.set(state)
    try:
        with ExitStack() as stack:
            for dev, enabled, _ in state:
                if enabled:
                    stack.enter_context(torch.autocast(dev, enabled=False))
            yield
    finally:
        _CALLER_AUTOCAST.reset(token)


@contextmanager
def caller_precision() -> Iterator[None]:
    """Inside :func:`fp32_scope`: re-enter the caller's autocast for a forward through the model (extra rows
    run exactly as the CE row does)."""
    with ExitStack() as stack:
        for dev, enabled, dtype in _CALLER_AUTOCAST.get() or ():
            if enabled:
                stack.enter_context(torch.autocast(dev, dtype=dtype))
        yield


class AuxObjective(Objective):
    """Base of every registered objective here: ``objective(ctx)`` runs ``forward`` inside
    :func:`fp32_scope` (geometry and loss maths in fp32 whatever the loop's autocast)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with fp32_scope():
            return super().__call__(*args, **kwargs)
