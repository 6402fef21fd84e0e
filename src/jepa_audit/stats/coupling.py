"""Coupling between representation geometry (or gradient agreement) and the task metric.

The unit is the method: each auxiliary contributes one point, its mean over seeds of x = the change in a
geometry metric relative to the same seed's baseline (or the raw auxiliary–CE gradient cosine, which the
baseline does not have) and of y = ΔEM in percentage points. Spearman's ρ over those points, with
Benjamini–Hochberg across every key tested, is descriptive. Per-(method, seed) cells are not independent
points: all cells of one seed subtract the same baseline values on both axes, and cells of one method
share its effect, so a cell-level ρ rejects far above α under the null (docs/statistics.md).
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import numpy as np
import scipy.stats

__all__ = ["EXACT_MAX_N", "SpearmanResult", "spearman", "group_means"]


@dataclass(frozen=True)
class SpearmanResult:
    """Spearman rank correlation over the ``n`` points where both x and y are finite."""

    n: int
    rho: float | None
    p: float | None
    note: str | None = None

    def as_dict(self) -> dict[str, float | int | str | None]:
        return asdict(self)


#: Up to this many points the p-value is exact over all n! pairings; scipy's t-approximation is far off there
#: (at n = 3 it gives p = 0 for |ρ| = 1, whose exact p is 1/3).
EXACT_MAX_N = 8


def _rank_corr(x: np.ndarray, y_ranks: np.ndarray) -> np.ndarray:
    """Spearman ρ of each row of ``x`` (shape ``(..., n)``) with fixed ranks ``y_ranks`` (``(n,)``)."""
    rx = scipy.stats.rankdata(x, axis=-1)
    rx = rx - rx.mean(axis=-1, keepdims=True)
    ry = y_ranks - y_ranks.mean()
    return (rx * ry).sum(axis=-1) / np.sqrt((rx**2).sum(axis=-1) * (ry**2).sum())


def spearman(x: np.ndarray, y: np.ndarray) -> SpearmanResult:
    """Spearman ρ of ``x`` and ``y``, shape ``(n,)``, and its two-sided p.

    Pairs with a non-finite value on either side are dropped first. Fewer than 3 points or a constant side
    give ``None`` with a note. ρ is ``scipy.stats.spearmanr``'s. For n ≤ ``EXACT_MAX_N`` the p-value is the
    exact permutation p over all n! pairings (``scipy.stats.permutation_test``, two-sided); above that,
    scipy's t-approximation.
    """
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same length, got {x.size} and {y.size}")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = int(x.size)
    if n < 3:
        return SpearmanResult(n, None, None, note=f"only {n} paired cells (need ≥ 3)")
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return SpearmanResult(n, None, None, note="one side is constant: ρ undefined")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = scipy.stats.spearmanr(x, y)
    rho, p = float(res.statistic), float(res.pvalue)
    note = None
    if n <= EXACT_MAX_N:
        y_ranks = scipy.stats.rankdata(y)
        perm = scipy.stats.permutation_test(
            (x,),
            lambda xs, axis=-1: _rank_corr(np.moveaxis(xs, axis, -1), y_ranks),
            permutation_type="pairings",
            n_resamples=np.inf,
            alternative="two-sided",
            vectorized=True,
        )
        p = float(min(1.0, perm.pvalue))
        note = f"exact permutation p over all {n}! pairings"
    if not (np.isfinite(rho) and np.isfinite(p)):
        return SpearmanResult(n, None, None, note="ρ undefined")
    return SpearmanResult(n, rho, p, note=note)


def group_means(labels: list[str], values: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Mean of ``values`` (shape ``(n_cells,)``) per label, ignoring non-finite entries.

    ``labels``: the group (method) of each cell. Returns the sorted distinct labels and a
    ``(n_groups,)`` array of their means (NaN for a group with no finite value).
    """
    v = np.asarray(values, dtype=float).ravel()
    if len(labels) != v.size:
        raise ValueError(f"need one label per value, got {len(labels)} labels and {v.size} values")
    groups = sorted(set(labels))
    lab = np.asarray(labels, dtype=object)
    out = np.full(len(groups), np.nan)
    for i, g in enumerate(groups):
        x = v[(lab == g) & np.isfinite(v)]
        if x.size:
            out[i] = float(x.mean())
    return groups, out
