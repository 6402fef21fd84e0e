"""From results rows to the audit's answer: the summary.json structure of DESIGN.md.

This is the glue between the row format (results.jsonl, already parsed) and the pure statistics in
the sibling modules. It reads nothing itself: per-item predictions come through an optional
``predictions_loader(relative_path) -> list[dict] | None`` supplied by the caller.

Conventions: differences are method − ce in percentage points (100 × the metric); comparisons are
made within one (benchmark, mode); pairing is by seed over the seeds both arms have with a finite
value of the metric. The output is JSON-safe: no NaN or infinity anywhere, ``null`` instead.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from jepa_audit.results import TargetLookup

from .columns import SUMMARY_TABLES, require_sources
from .comparisons import _comparison, declared_comparisons
from .coupling_section import (
    COUPLING_LABEL,
    _coupling_rows,
    _grad_cosine_rows,
    coupling_method_points,
    coupling_points,
)
from .curves import calibration_section, read_curves
from .families import (
    FAMILIES,
    _add_decision_tests,
    _apply_families,
    _family_definition,
    _family_fwer,
    _fwer_all,
)
from .index import BASELINE, METRICS, CellIndex, index_rows
from .per_item import (
    CONDITIONAL_LOGIT_LABEL,
    PredictionsLoader,
    _cached_loader,
    _comparison_rng,
    _items_entry,
)
from .sections import _answers_changed, _manipulation_section, _power_rows, _verdict_rows

__all__ = [
    "BASELINE",
    "METRICS",
    "FAMILIES",
    "CellIndex",
    "index_rows",
    "coupling_points",
    "coupling_method_points",
    "declared_comparisons",
    "build_summary",
    "json_safe",
]


# --------------------------------------------------------------------------- entry point


def json_safe(obj: Any) -> Any:
    """Recursively turn numpy scalars and arrays into Python values and non-finite floats into None."""
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [json_safe(v) for v in obj.tolist()]
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    return obj


def build_summary(
    rows: Sequence[Mapping[str, Any]],
    alpha: float = 0.10,
    family: str = "per-benchmark",
    predictions_loader: PredictionsLoader | None = None,
    *,
    declared: Iterable[Mapping[str, Any]] | None = None,
    power: float = 0.80,
    seed: int = 0,
    bootstrap_reps: int = 2_000,
    conditional_logit_metrics: Sequence[str] | None = None,
    calibration: Mapping[str, Any] | None = None,
    sesoi_pp: float = 2.0,
    min_shift_sd: float = 0.5,
    sesoi_declared: float | None = None,
    target_lookup: TargetLookup | None = None,
) -> dict[str, Any]:
    """The summary.json structure of DESIGN.md, plus the secondary analyses.

    ``rows``: parsed results.jsonl rows. ``alpha``: the level for every ``reject_*``. ``family``:
    ``"per-benchmark"`` (one benchmark × mode × metric) or ``"all"`` (one metric × mode across
    benchmarks). ``predictions_loader``: maps a row's ``predictions_file`` to its parsed per-item rows
    (or None); without it the per-item section is empty. ``declared``: the cells the grid defines (mappings
    with ``benchmark``, ``method``, ``mode``, e.g. grid.json's entries); every comparison they imply is in
    its family's m even without data (default: only the comparisons the rows have).
    ``sesoi_pp``: the smallest effect of interest of the primary metric (pp) the reward half decides against;
    ``sesoi_declared``: the value declared before the run (grid.json), when known, so a different ``sesoi_pp``
    is flagged (``sesoi_overridden``). ``min_shift_sd``: how many pooled seed SDs a target key must move to
    count (stats/decisions.py). ``target_lookup``: method → its declared (targets, directions), for rows
    written before cells recorded ``target_geometry``/``target_direction`` (results.TargetLookup; the torch
    side passes ``objectives.declared_targets``); None: such methods get no manipulation check, and a warning.
    ``calibration``: the parsed calibration.json of the audit's λ calibration stage (None: none ran), whose
    per-pair dose-response curves go into ``calibration`` (:func:`stats.curves.calibration_section`).
    ``conditional_logit_metrics``: the metrics
    whose items get the conditional logit (None: the primary metric; ``()``: none; ~2 s per fit on 20,000 rows).
    The metrics compared are those the rows declare (``metric_specs``; NL-RX's for older rows). ``seed`` fixes
    every bootstrap (the conditional logit needs no randomness), so the output is a deterministic
    function of the inputs.

    Top-level keys: ``alpha``, ``family``, ``comparisons`` (the DESIGN.md contract, plus ``mode``,
    ``aux_family``, ``seeds``, ``note``, ``family_id``, ``family_m``, ``n_test``, ``item_step_pp``,
    ``sd_below_item_step`` and a few descriptive extras), ``family_definition``, ``family_fwer``,
    ``families``, ``metric_verdicts`` (per metric: which methods pass; each list also split into
    ``improvements`` and ``harms``), ``verdicts`` (per auxiliary: representation vs reward),
    ``manipulation``, ``power``, ``items`` (``item_level``: the seed-level McNemar log-odds t-test),
    ``coupling`` (one point per method, with ``p_bh``), ``coupling_label``, ``grad_cosine``, ``failed``,
    ``warnings``, ``counts``, ``settings``.
    """
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {list(FAMILIES)}, got {family!r}")
    if not (isinstance(alpha, int | float) and 0.0 < alpha < 1.0):
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    alpha = float(alpha)
    if not (isinstance(sesoi_pp, int | float) and not isinstance(sesoi_pp, bool) and sesoi_pp > 0):
        raise ValueError(f"sesoi_pp must be a positive number of percentage points, got {sesoi_pp!r}")
    if not (isinstance(min_shift_sd, int | float) and not isinstance(min_shift_sd, bool) and min_shift_sd >= 0):
        raise ValueError(f"min_shift_sd must be a number ≥ 0 (seed SDs), got {min_shift_sd!r}")
    idx = index_rows(rows)
    if conditional_logit_metrics is None:
        conditional_logit_metrics = (idx.primary,)

    grid = declared_comparisons(idx, declared)
    comparisons = [
        {"task": idx.task, **_comparison(idx, key, method, metric)}
        for key, methods in grid.items()
        for metric in idx.metrics
        for method in methods
    ]
    for key in idx.groups():
        if BASELINE not in idx.cells[key]:
            idx.warnings.append(f"{key[0]}/{key[1]} has no {BASELINE} cells: nothing to pair against")
    families = _apply_families(comparisons, family, alpha, idx)
    _add_decision_tests(comparisons, idx.primary, alpha, float(sesoi_pp))
    verdicts = _verdict_rows(comparisons, idx)
    power_rows = _power_rows(comparisons, verdicts, alpha, power, float(sesoi_pp), idx.primary)

    items: list[dict[str, Any]] = []
    items_note = "no predictions loader: per-item analyses skipped"
    # one cache for every reader of the predictions files (items, answers changed): each file is read once
    load = _cached_loader(predictions_loader, idx.warnings) if predictions_loader is not None else None
    if load is not None:
        for comp in comparisons:
            if comp["n"] < 1:
                continue
            rng = _comparison_rng(seed, comp)
            entry = _items_entry(
                idx,
                (comp["benchmark"], comp["mode"]),
                comp["method"],
                comp["metric"],
                comp["seeds"],
                load,
                rng,
                bootstrap_reps,
                comp["metric"] in conditional_logit_metrics,
            )
            if entry is not None:
                items.append(entry)
        items_note = None if items else "no per-item predictions found for any paired cell"

    summary: dict[str, Any] = {
        "alpha": alpha,
        "family": family,
        "sesoi_pp": float(sesoi_pp),
        "sesoi_declared_pp": sesoi_declared,
        "sesoi_overridden": sesoi_declared is not None and float(sesoi_declared) != float(sesoi_pp),
        "min_shift_sd": float(min_shift_sd),
        "task": idx.task,
        "metrics": [m.as_dict() for m in idx.metric_specs],  # what was compared, primary first
        "comparisons": comparisons,
        "family_definition": _family_definition(family, alpha, families),
        "family_fwer": _family_fwer(family, alpha, families),
        "families": families,
        "metric_verdicts": verdicts,
        "power": power_rows,
        "items": items,
        "items_note": items_note,
        "coupling": _coupling_rows(idx, alpha),
        "coupling_label": COUPLING_LABEL,
        "grad_cosine": _grad_cosine_rows(idx),
        "failed": idx.failed,
        "warnings": list(dict.fromkeys(idx.warnings)),
        "counts": {
            "rows": idx.n_rows,
            "done": idx.n_done,
            "failed": len(idx.failed),
            "benchmarks": sorted({k[0] for k in idx.groups()}),
            "modes": sorted({k[1] for k in idx.groups()}),
            "methods": sorted({m for k in idx.groups() for m in idx.methods(k)}),
            "seeds": idx.seeds(),
        },
        "settings": {
            "power": power,
            "seed": seed,
            "bootstrap_reps": bootstrap_reps,
            "conditional_logit_metrics": list(conditional_logit_metrics),
            "conditional_logit_label": CONDITIONAL_LOGIT_LABEL,
            "declared_from_grid": declared is not None,
        },
    }
    summary["calibration"] = calibration_section(calibration, rows)
    changed = _answers_changed(idx, load) if load is not None else None
    no_targets: list[str] = []
    summary.update(
        _manipulation_section(
            idx, comparisons, alpha, grid, changed, float(sesoi_pp), float(min_shift_sd), power_rows,
            target_lookup=target_lookup, warnings=no_targets,
        )
    )
    summary["warnings"] = list(dict.fromkeys([*summary["warnings"], *no_targets]))
    summary["family_fwer_all"] = _fwer_all(alpha, families, summary["manipulation"], idx.primary)
    read_curves(summary["calibration"], summary["manipulation"], summary["verdicts"])
    for section, columns in SUMMARY_TABLES.items():  # every column the report prints reads a key filled above
        require_sources(columns, summary[section], section)
    return json_safe(summary)
