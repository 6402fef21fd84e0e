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

__all__ = ["SpearmanResult", "spearman", "group_means"]


@dataclass(frozen=True)
class SpearmanResult:
    """Spearman rank correlation over the ``n`` points where both x and y are finite."""

    n: int
    rho: float | None
    p: float | None
    note: str | None = None

    def as_dict(self) -> dict[str, float | int | str | None]:
        return asdict(self)


def spearman(x: np.ndarray, y: np.ndarray) -> SpearmanResult:
    """Spearman ρ and its two-sided p (``scipy.stats.spearmanr``) of ``x`` and ``y``, shape ``(n,)``.

    Pairs with a non-finite value on either side are dropped first. Fewer than 3 points or a
    constant side give ``None`` with a note.
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
    if not (np.isfinite(rho) and np.isfinite(p)):
        return SpearmanResult(n, None, None, note="ρ undefined")
    return SpearmanResult(n, rho, p)


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
