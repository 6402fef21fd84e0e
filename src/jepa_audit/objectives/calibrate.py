"""λ calibration on the validation slice (never test): the grid and the selection rule, as pure functions.

Procedure (docs/objectives.md): for each auxiliary train one cell per λ in :func:`calibration_grid` plus
the CE baseline (λ = 0) on the same seed, evaluate each on the validation slice carved from train, and
pick λ with :func:`choose_weight`.  The registry's ``default_weight`` is the grid's top: the value the
source uses where it gives one, our proposal otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from jepa_audit.objectives.base import ObjectiveSpec

MULTIPLIERS: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0)  # × the registry default λ
CE_TOLERANCE = 0.01  # a λ is acceptable while its validation CE stays within 1 % of the baseline's


def calibration_grid(spec: ObjectiveSpec, multipliers: Sequence[float] = MULTIPLIERS) -> list[float]:
    """λ values to try for ``spec``, ascending: multiplier × ``spec.default_weight``.

    An objective whose default λ is 0 (``ce``) has nothing to calibrate: ``[0.0]``.
    """
    base = float(spec.default_weight)
    if base == 0.0:
        return [0.0]
    return sorted({round(m * base, 12) for m in multipliers})


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and math.isfinite(float(x))


def choose_weight(
    results: Mapping[float, Mapping[str, Any]],
    criterion: Literal["ce", "em"] = "ce",
    tolerance: float = CE_TOLERANCE,
) -> float:
    """Pick λ from validation results ``{λ: {"val_ce": float, "val_em": float}}``; key 0.0 is the CE baseline.

    ``criterion="ce"``: the largest λ > 0 whose ``val_ce`` ≤ (1 + tolerance) × the baseline's; if none
    qualifies, the smallest λ > 0 tried (the most conservative).  ``criterion="em"``: the λ > 0 with the
    best ``val_em``, ties to the smaller λ.  Runs with a non-finite metric (failed cells) never win.
    Raises ValueError when there is nothing to choose from.
    """
    cands = sorted(w for w in results if w > 0.0)
    if not cands:
        raise ValueError("choose_weight: no λ > 0 in the results")
    if criterion == "em":
        ok = [w for w in cands if _finite(results[w].get("val_em"))]
        if not ok:
            raise ValueError("choose_weight: no λ > 0 has a finite val_em")
        return max(ok, key=lambda w: (float(results[w]["val_em"]), -w))
    if criterion != "ce":
        raise ValueError(f"choose_weight: unknown criterion {criterion!r}; expected 'ce' or 'em'")
    base = results.get(0.0, {}).get("val_ce")
    if not _finite(base):
        raise ValueError("choose_weight: criterion 'ce' needs the baseline's finite val_ce under key 0.0")
    limit = (1.0 + tolerance) * float(base)
    ok = [w for w in cands if _finite(results[w].get("val_ce")) and float(results[w]["val_ce"]) <= limit]
    return max(ok) if ok else cands[0]
