"""The per-comparison rows of summary.json: one method against ce on one (benchmark, mode) and metric.

Pairing is by seed over the seeds both arms have with a finite value of the metric; differences are
method − ce in percentage points. :func:`declared_comparisons` lists the comparisons the grid declares
(each family's m counts them whatever the data do).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from .index import BASELINE, DEFAULT_MODE, UNSPECIFIED_FAMILY, CellIndex, Key, _metric_by_seed, _sorted_seeds
from .items import probability_of_improvement_paired
from .paired import TEST_FIELDS, pair_by_seed, paired_comparison

__all__ = ["declared_comparisons"]


# --------------------------------------------------------------------------- seed-level comparisons


def declared_comparisons(
    idx: CellIndex, declared: Iterable[Mapping[str, Any]] | None = None
) -> dict[Key, list[str]]:
    """Every (benchmark, mode) → its methods ≠ ce that the grid declares, plus any the rows add.

    ``declared``: the grid's cells, each a mapping with at least ``benchmark`` and ``method`` (``mode``
    defaults to lora), e.g. the entries of the audit directory's grid.json. The family size m counts
    these comparisons whatever the data do; rows of methods outside the grid are still compared.
    """
    out: dict[Key, set[str]] = {key: set(idx.methods(key)) for key in idx.groups()}
    for i, cell in enumerate(declared or ()):
        if not isinstance(cell, Mapping):
            raise ValueError(
                f"declared cell {i}: expected a mapping with benchmark, method, mode; got {cell!r}"
            )
        bench, method = cell.get("benchmark"), cell.get("method")
        mode = cell.get("mode") if cell.get("mode") is not None else DEFAULT_MODE
        if not (isinstance(bench, str) and isinstance(method, str) and isinstance(mode, str)):
            raise ValueError(
                f"declared cell {i}: benchmark, method and mode must be strings; got {dict(cell)!r}"
            )
        methods = out.setdefault((bench, mode), set())
        if method != BASELINE:
            methods.add(method)
    return {key: sorted(methods) for key, methods in sorted(out.items())}


def _n_test(rows: Iterable[Mapping[str, Any]]) -> int | None:
    """The largest ``metrics.n_test`` of some rows (the finest step of the metric), or None."""
    ns = [
        int(n)
        for r in rows
        if isinstance(n := r["metrics"].get("n_test"), int) and not isinstance(n, bool) and n > 0
    ]
    return max(ns) if ns else None


def _comparison(idx: CellIndex, key: Key, method: str, metric: str) -> dict[str, Any]:
    bench, mode = key
    where = f"{bench}/{mode}/{method}"
    by_method = idx.cells.get(key, {})
    method_scores = _metric_by_seed(by_method.get(method, {}), metric, where, idx.warnings)
    base_scores = _metric_by_seed(
        by_method.get(BASELINE, {}), metric, f"{bench}/{mode}/{BASELINE}", idx.warnings
    )
    seeds, a, b = pair_by_seed(method_scores, base_scores)
    # Rounded to 1e-9 pp: differences of metric fractions that are equal in exact arithmetic (ties, zero
    # variance) are then equal in floating point too, as the rank and sign-flip tests need.
    res = paired_comparison(np.round(100.0 * (a - b), 9))
    notes = [res.note] if res.note else []
    if method not in by_method:
        notes.insert(0, "declared by the grid but no finished cells")
    elif BASELINE not in by_method:
        notes.insert(0, f"no {BASELINE} baseline cells on {bench}/{mode}")
    n_test = _n_test([by_method[method][s] for s in seeds] + [by_method[BASELINE][s] for s in seeds])
    step = 100.0 / n_test if n_test else None
    below_step = bool(step is not None and res.sd_diff is not None and 0.0 < res.sd_diff < step)
    if below_step:
        notes.append(
            f"sd_diff {res.sd_diff:.3g} pp is below one test item's step (100/n_test = {step:.3g} pp): "
            "the differences move by less than one item, so the t-test is unreliable"
        )
    note = "; ".join(notes) if notes else None
    return {
        "benchmark": bench,
        "mode": mode,
        "method": method,
        "aux_family": idx.aux_family.get(method, UNSPECIFIED_FAMILY),
        "metric": metric,
        "n": res.n,
        "seeds": seeds,
        "seeds_method_only": _sorted_seeds(set(method_scores) - set(base_scores)),
        "seeds_baseline_only": _sorted_seeds(set(base_scores) - set(method_scores)),
        "method_mean": 100.0 * float(a.mean()) if a.size else None,
        "baseline_mean": 100.0 * float(b.mean()) if b.size else None,
        **res.as_dict(TEST_FIELDS),
        "p_bonferroni": None,
        "p_holm": None,
        "p_bh": None,
        "reject_single": False,
        "reject_bonferroni": False,
        "reject_holm": False,
        "reject_bh": False,
        "prob_improvement": probability_of_improvement_paired(a - b),
        "n_test": n_test,
        "item_step_pp": step,
        "sd_below_item_step": below_step,
        "degenerate": res.degenerate,
        "note": note,
        "family_id": None,
        "family_m": None,
    }
