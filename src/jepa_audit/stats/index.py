"""The cell index: finished results rows keyed by (benchmark, mode) → method → seed, for pairing.

Reads parsed results rows into cells (:func:`index_rows`), records failed or malformed rows and why, and
reads one metric's per-seed values out of a cell's rows. The baseline every comparison pairs against is
``BASELINE`` (ce).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from jepa_audit.results import LEGACY_METRICS, MetricSpec, ResultsRow

__all__ = ["BASELINE", "METRICS", "DEFAULT_MODE", "UNSPECIFIED_FAMILY", "Key", "CellIndex", "index_rows"]

BASELINE = "ce"
#: NL-RX's metrics, for rows written before rows declared theirs (``metric_specs``); the metrics of an audit
#: are its rows' (:attr:`CellIndex.metrics`), one family per task, benchmark, mode and metric.
METRICS: tuple[str, ...] = tuple(m.name for m in LEGACY_METRICS)
DEFAULT_MODE = "lora"
UNSPECIFIED_FAMILY = "unspecified"

Key = tuple[str, str]  # (benchmark, mode)


# --------------------------------------------------------------------------- indexing the rows


@dataclass
class CellIndex:
    """Finished cells, keyed for pairing.

    ``cells[(benchmark, mode)][method][seed]`` is the row of that cell (the last one when the file
    repeats a cell). ``failed`` lists rows whose status is not ``done``; ``warnings`` explains every row
    that was skipped or overridden.
    """

    cells: dict[Key, dict[str, dict[Hashable, dict[str, Any]]]] = field(default_factory=dict)
    aux_family: dict[str, str] = field(default_factory=dict)
    task: str = "nlrx"  # the rows' task (rows before tasks were plug-ins: nlrx)
    metric_specs: tuple[MetricSpec, ...] = LEGACY_METRICS  # what the rows' ``metrics`` hold, primary first
    failed: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    n_rows: int = 0
    n_done: int = 0

    def groups(self) -> list[Key]:
        return sorted(self.cells)

    @property
    def metrics(self) -> tuple[str, ...]:
        """The metric names compared, primary first."""
        return tuple(m.name for m in self.metric_specs)

    @property
    def primary(self) -> str:
        """The primary metric: the reward half of the verdicts and the y axis of the coupling."""
        return self.metric_specs[0].name

    def item_field(self, metric: str) -> str:
        """The per-item field of a predictions file that carries ``metric``'s correctness."""
        return next(m.field for m in self.metric_specs if m.name == metric)

    def metric_rank(self, metric: str) -> int:
        return self.metrics.index(metric) if metric in self.metrics else len(self.metrics)

    def methods(self, key: Key) -> list[str]:
        """Non-baseline methods of one (benchmark, mode), sorted by id."""
        return sorted(m for m in self.cells.get(key, {}) if m != BASELINE)

    def seeds(self) -> list[Hashable]:
        found = {s for by_method in self.cells.values() for by_seed in by_method.values() for s in by_seed}
        return _sorted_seeds(found)


def _sorted_seeds(seeds: Iterable[Hashable]) -> list[Hashable]:
    return sorted(seeds, key=lambda s: (type(s).__name__, s))


def _is_seed(x: object) -> bool:
    return isinstance(x, str) or (isinstance(x, int) and not isinstance(x, bool))


def index_rows(rows: Sequence[Mapping[str, Any]]) -> CellIndex:
    """Index parsed results rows; failed or malformed rows are recorded, never used in statistics."""
    idx = CellIndex(n_rows=len(rows))
    families: dict[str, Counter[str]] = defaultdict(Counter)
    declared: tuple[str, tuple[MetricSpec, ...]] | None = None  # (task, metric specs) of the first done row
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            idx.warnings.append(f"row {i}: not a JSON object; skipped")
            continue
        bench, method, seed = row.get("benchmark"), row.get("method"), row.get("seed")
        mode = row.get("mode") if row.get("mode") is not None else DEFAULT_MODE
        if row.get("status") != "done":
            idx.failed.append(
                {
                    "benchmark": bench if isinstance(bench, str) else None,
                    "method": method if isinstance(method, str) else None,
                    "seed": seed if _is_seed(seed) else None,
                    "mode": mode if isinstance(mode, str) else None,
                    "status": str(row.get("status")),
                    "error": str(row["error"]) if row.get("error") is not None else None,
                }
            )
            continue
        if not (
            isinstance(bench, str) and isinstance(method, str) and _is_seed(seed) and isinstance(mode, str)
        ):
            idx.warnings.append(
                f"row {i}: benchmark, method, seed or mode missing or of the wrong type; skipped"
            )
            continue
        if not isinstance(row.get("metrics"), Mapping):
            idx.warnings.append(f"row {i} ({bench}/{mode}/{method}/seed {seed}): no metrics object; skipped")
            continue
        try:
            parsed = ResultsRow.parse(row)
            mine = (parsed.task, parsed.specs())
        except ValueError as e:
            idx.warnings.append(f"row {i} ({bench}/{mode}/{method}/seed {seed}): {e}; skipped")
            continue
        if declared is None:
            declared = mine
            idx.task, idx.metric_specs = mine
        elif mine != declared:
            idx.warnings.append(
                f"row {i} ({bench}/{mode}/{method}/seed {seed}): task {mine[0]} with metrics "
                f"{[m.name for m in mine[1]]}, not the audit's {declared[0]} {list(idx.metrics)}; skipped"
            )
            continue
        by_seed = idx.cells.setdefault((bench, mode), {}).setdefault(method, {})
        if seed in by_seed:
            idx.warnings.append(
                f"cell {bench}/{mode}/{method}/seed {seed} appears more than once; the last row is used"
            )
        by_seed[seed] = dict(row)
        idx.n_done += 1
        fam = row.get("family")
        if isinstance(fam, str) and fam:
            families[method][fam] += 1
    for method in {m for by_method in idx.cells.values() for m in by_method}:
        counts = families.get(method)
        idx.aux_family[method] = (
            sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0][0] if counts else UNSPECIFIED_FAMILY
        )
    return idx


def _number(x: object) -> float | None:
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _metric_by_seed(
    by_seed: Mapping[Hashable, Mapping[str, Any]], metric: str, where: str, warnings: list[str]
) -> dict[Hashable, float]:
    out: dict[Hashable, float] = {}
    for seed, row in by_seed.items():
        value = _number(row["metrics"].get(metric))
        if value is None:
            continue
        if not 0.0 <= value <= 1.0:
            warnings.append(f"{where}/seed {seed}: {metric} = {value} is outside [0, 1]; not used")
            continue
        out[seed] = value
    return out
