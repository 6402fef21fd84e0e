"""λ calibration on the validation slice (never test): the selection rule, as a pure function.

The runs and the bookkeeping live in :mod:`jepa_audit.audit.calibration` (the audit's calibration stage,
also behind `jepa-audit aux calibrate`); this module holds only the rule, so it can be read and tested alone.

The grid is in **dose** units: each run sets λ at step 0 so that λ·‖∇aux‖/‖∇CE‖ equals the grid's dose
(``train.train(target_dose=...)``), so one grid (default 10⁻³ … 1) spans three decades of λ for every
auxiliary whatever its loss scale, and always reaches an auxiliary gradient as large as CE's.

Two rules (``calibration.rule``):

- ``one_se`` (the default): the **largest** λ whose validation score is within one standard error of the best
  score, the "one-standard-error rule" of cross-validated regularisation (Breiman et al. 1984, *CART* §3.4.3;
  Hastie, Tibshirani & Friedman, *ESL* §7.10; glmnet's ``lambda.1se``). The auxiliaries are regularisers, and
  the audit asks whether an auxiliary that *acts* helps: among the doses validation cannot tell apart from
  the best, the rule takes the strongest, so a null at the pick is as informative as the validation data
  allow. Measured on the quick preset with the plain rule below, validation EM on 200 rows tied between
  doses 10⁻³ and 0.03 for 19 of 23 TURK pairs (one-item steps of 0.5 pp against a standard error of ≈ 3.5 pp),
  so "ties to the smaller λ" picked dose 10⁻³ for 20 pairs, where test EM equalled ce's on every seed and at
  most 3 of 750 decoded test answers differed from ce's (none for 7 of them) (docs/audit.md).
- ``best``: the best score; ties go to the smaller λ (the earlier point).

In both a non-finite score or λ never wins.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any, Literal

Rule = Literal["one_se", "best"]

#: float slack for "within one SE" and for ties, so that 0.645 + 0.035 ≥ 0.68 is not lost to rounding
_EPS = 1e-12


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(float(x))


def score_se(point: Mapping[str, Any], n_items: int) -> float:
    """Standard error of a grid point's mean validation score (a proportion), in the score's units.

    The binomial SE √(p(1−p)/(n_items·k)) over the k calibration seeds' n_items rows each; with k ≥ 2 seeds
    it is at least the seeds' own standard error SD/√k, which also carries run-to-run variance. 0 when the
    score is 0 or 1 and the seeds agree (then only exact ties are "within one SE").
    """
    p = float(point["val_em"])
    per_seed = [float(x) for x in point.get("val_em_per_seed") or [] if _finite(x)]
    k = max(1, len(per_seed))
    se = math.sqrt(max(0.0, p * (1.0 - p)) / max(1, n_items * k))
    if len(per_seed) >= 2:
        se = max(se, statistics.stdev(per_seed) / math.sqrt(k))
    return se


def best_point(grid: Sequence[Mapping[str, Any]]) -> int | None:
    """Index of the best finite ``val_em`` (ties to the smaller λ), or None when no point is finite."""
    best: int | None = None
    for i, point in enumerate(grid):
        if not (_finite(point.get("val_em")) and _finite(point.get("weight"))):
            continue
        if best is None or float(point["val_em"]) > float(grid[best]["val_em"]) + _EPS:
            best = i
    return best


def choose_point(grid: Sequence[Mapping[str, Any]], rule: Rule = "best", n_items: int | None = None) -> int | None:
    """Index of the winning grid point, or None when no point has a finite score.

    ``grid``: one mapping per point, ascending in dose (hence in λ), with ``val_em`` (mean validation score
    over the calibration seeds, a proportion; None or NaN for a failed or non-finite run), ``weight`` (λ) and,
    for ``one_se``, ``val_em_per_seed``. ``n_items``: validation rows per run (``one_se`` only).
    ``best``: the best score, ties to the smaller λ. ``one_se``: the largest λ whose score is ≥ best − SE(best)
    (:func:`score_se`). A non-finite score or λ never wins.
    """
    best = best_point(grid)
    if best is None or rule == "best":
        return best
    if rule != "one_se":
        raise ValueError(f"calibration.rule={rule!r}; expected 'one_se' or 'best'")
    if not n_items or n_items < 1:
        raise ValueError("choose_point(rule='one_se') needs n_items, the validation rows per run (≥ 1)")
    floor = float(grid[best]["val_em"]) - score_se(grid[best], n_items) - _EPS
    ok = [
        i for i, p in enumerate(grid)
        if _finite(p.get("val_em")) and _finite(p.get("weight")) and float(p["val_em"]) >= floor
    ]  # fmt: skip
    return max(ok)
