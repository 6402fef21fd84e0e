"""λ calibration on the validation slice (never test): the selection rule, as a pure function.

The runs and the bookkeeping live in :mod:`jepa_audit.audit.calibration` (the audit's calibration stage,
also behind `jepa-audit aux calibrate`); this module holds only the rule, so it can be read and tested alone.

The grid is in **dose** units: each run sets λ at step 0 so that λ·‖∇aux‖/‖∇CE‖ equals the grid's dose
(``train.train(target_dose=...)``), so one grid (default 10⁻³ … 1) spans three decades of λ for every
auxiliary whatever its loss scale, and always reaches an auxiliary gradient as large as CE's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(float(x))


def choose_point(grid: Sequence[Mapping[str, Any]]) -> int | None:
    """Index of the winning grid point, or None when no point has a finite score.

    ``grid``: one mapping per point, ascending in dose (hence in λ), with ``val_em`` (mean validation exact
    match over the calibration seeds; None or NaN for a failed or non-finite run) and ``weight`` (λ).  The
    best ``val_em`` wins; ties go to the smaller λ (the earlier point); a non-finite score or λ never wins.
    """
    best: int | None = None
    for i, point in enumerate(grid):
        if not (_finite(point.get("val_em")) and _finite(point.get("weight"))):
            continue
        if best is None or float(point["val_em"]) > float(grid[best]["val_em"]):
            best = i
    return best
