"""The results row: one line of results.jsonl (DESIGN.md), as a typed model.

A cell returns a plain dict (JSON is the contract); the readers (the runner's row check, progress, tracking,
the summary) parse it with :meth:`ResultsRow.parse` instead of each reading the dict literal its own way.
Keys beyond those declared here are kept as they are (``extra="allow"``): DESIGN.md lets rows grow.
Rows written before ``task`` / ``metric_specs`` existed read as NL-RX's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from jepa_audit.tasks.base import MetricSpec, metric_specs_of_row

__all__ = ["ResultsRow", "RowError"]


class RowError(ValueError):
    """A results row does not have the DESIGN.md shape; the message names the key."""


def _finite(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    return float(x) if math.isfinite(x) else None


class ResultsRow(BaseModel):
    """``benchmark, method, seed, mode, metrics, geometry, grad_cosine, config_hash, wall_s, status`` (DESIGN.md)
    plus ``task`` and ``metric_specs`` (what ``metrics`` holds, primary first)."""

    model_config = ConfigDict(extra="allow")

    benchmark: str
    method: str
    seed: int | str
    mode: str = "lora"
    status: str = "done"
    task: str = "nlrx"
    metric_specs: list[dict[str, Any]] | None = None
    metrics: dict[str, Any]
    geometry: dict[str, Any] | None = None
    grad_cosine: dict[str, Any] | None = None
    config_hash: str | None = None
    wall_s: float | None = None

    @classmethod
    def parse(cls, row: Mapping[str, Any]) -> ResultsRow:
        """Validate ``row``; :class:`RowError` naming the first bad key otherwise."""
        try:
            return cls.model_validate(dict(row))
        except ValidationError as e:
            err = e.errors()[0]
            key = ".".join(str(x) for x in err["loc"]) or "(row)"
            raise RowError(f"results row: key {key!r}: {err['msg']}") from None

    def specs(self) -> tuple[MetricSpec, ...]:
        """The metric specs the row declares (NL-RX's when it declares none; :func:`metric_specs_of_row`)."""
        return metric_specs_of_row({"metric_specs": self.metric_specs})

    def metric(self, name: str) -> float | None:
        """``metrics[name]`` as a finite float, else None."""
        return _finite(self.metrics.get(name))

    def scores(self) -> dict[str, float | None]:
        """Every declared metric's value (None where missing or not finite), primary first."""
        return {s.name: self.metric(s.name) for s in self.specs()}

    def numeric(self) -> dict[str, float]:
        """The row's finite numbers as flat names (``metrics.exact_match``, ``grad_cosine.mean``, ``wall_s``)."""
        out: dict[str, float] = {}

        def walk(prefix: str, obj: Any, depth: int) -> None:
            if (v := _finite(obj)) is not None:
                out[prefix] = v
            elif isinstance(obj, Mapping) and depth < 3:
                for k, x in obj.items():
                    walk(f"{prefix}.{k}", x, depth + 1)

        for section in ("metrics", "geometry", "grad_cosine"):
            walk(section, getattr(self, section), 0)
        if (w := _finite(self.wall_s)) is not None:
            out["wall_s"] = w
        return out
