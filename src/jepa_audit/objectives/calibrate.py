"""λ calibration on the validation slice (never test): the selection rule, as a pure function.

The runs and the bookkeeping live in :mod:`jepa_audit.audit.calibration` (the audit's calibration stage,
also behind `jepa-audit aux calibrate`); this module holds only the rule, so it can be read and tested alone.

The grid is in **dose** units: each run sets λ at step 0 so that λ·‖∇aux‖/‖∇CE‖ equals the grid's dose
(``train.train(target_dose=...)``), so one grid (default 10⁻³ … 1) spans three decades of λ for every
auxiliary whatever its loss scale, and always reaches an auxiliary gradient as large as CE's.

Two rules (``calibration.rule``):

- ``best`` (the default): the validation-best dose; ties go to the smaller λ (the earlier point). The audit
  asks whether an auxiliary helps at its best shot, so the test cells run at the dose validation ranks
  first. Simulated (3 doses, run noise 1 pp, true gains 0, +2, −2 pp at doses 10⁻³, 0.03, 1), ``best``
  keeps +1.78 pp of the +2 pp gain where the one-SE rule keeps +0.36 pp, and with a flat curve one-SE picks
  the largest dose 99 % of the time (issue #25); on real NL-RX (cpu preset) one-SE gave up 0.96 pp of
  validation EM per pair on average.
- ``one_se``: the **largest** λ whose validation score is within one standard error of the best score, the
  "one-standard-error rule" of cross-validated regularisation (Breiman et al. 1984, *CART* §3.4.3; Hastie,
  Tibshirani & Friedman, *ESL* §7.10; glmnet's ``lambda.1se``): the strongest dose validation cannot tell
  from the best. The SE is **paired** (:func:`paired_se`): every dose is scored on the same validation
  items, so the SE of a dose's difference from the best is the SD of the per-item differences over √items,
  far smaller than the unpaired binomial SE when two doses answer mostly the same items. Without per-item
  scores (rows written before they were logged) the unpaired :func:`score_se` of the best stands in.

In both a non-finite score or λ never wins.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any, Literal

Rule = Literal["best", "one_se"]

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


def paired_se(items: Sequence[str | None], best_items: Sequence[str | None]) -> float | None:
    """SE of (a dose's mean score − the best dose's), paired by validation item and calibration seed.

    ``items`` / ``best_items``: per calibration seed (same order), the run's per-item correctness on the
    primary metric as a string of ``0``/``1`` (validation row order; :func:`item_string`). Per item j,
    d_j = mean over seeds of (x_j − best_j); SE = SD(d)/√n_items (ddof 1). With k ≥ 2 seeds it is at least
    the SD over seeds of the per-seed score differences / √k, which carries run-to-run variance. None when a
    seed lacks its string or the strings differ in length (then the caller falls back to :func:`score_se`).
    Units: the score's (a proportion).
    """
    pairs = list(zip(items, best_items, strict=False))
    if not pairs or any(not a or not b or len(a) != len(b) for a, b in pairs):
        return None
    n = len(pairs[0][0])
    if n < 2 or any(len(a) != n for a, _ in pairs):
        return None
    k = len(pairs)
    d = [sum(int(a[j]) - int(b[j]) for a, b in pairs) / k for j in range(n)]
    se = statistics.stdev(d) / math.sqrt(n)
    if k >= 2:
        per_seed = [(a.count("1") - b.count("1")) / n for a, b in pairs]
        se = max(se, statistics.stdev(per_seed) / math.sqrt(k))
    return se


def item_string(flags: Sequence[Any]) -> str:
    """Per-item correctness as a compact ``0``/``1`` string (``True`` → ``1``, anything else ``0``)."""
    return "".join("1" if f is True else "0" for f in flags)


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
    for ``one_se``, ``se_paired`` (the paired SE of its difference from the best point, :func:`paired_se`;
    0 at the best point itself) or, without it, ``val_em_per_seed``. ``n_items``: validation rows per run
    (``one_se`` without ``se_paired`` only).
    ``best``: the best score, ties to the smaller λ. ``one_se``: the largest λ whose score is ≥ best − SE,
    SE = its ``se_paired`` where finite, else :func:`score_se` of the best. A non-finite score or λ never wins.
    """
    best = best_point(grid)
    if rule not in ("best", "one_se"):
        raise ValueError(f"calibration.rule={rule!r}; expected 'best' or 'one_se'")
    if best is None or rule == "best":
        return best
    paired = all(_finite(p.get("se_paired")) for p in grid if _finite(p.get("val_em")) and _finite(p.get("weight")))
    if not paired and (not n_items or n_items < 1):
        raise ValueError("choose_point(rule='one_se') needs n_items, the validation rows per run (≥ 1), or se_paired per point")
    top = float(grid[best]["val_em"])
    ok = [
        i for i, p in enumerate(grid)
        if _finite(p.get("val_em")) and _finite(p.get("weight"))
        and float(p["val_em"]) >= top - (float(p["se_paired"]) if paired else score_se(grid[best], n_items or 1)) - _EPS
    ]  # fmt: skip
    return max(ok)
