"""Multiple-comparison adjusted p-values within one declared family.

Each function takes ``p``, a ``(m,)`` array of raw p-values (the family, no NaN) and returns a
``(m,)`` array of adjusted p-values in the same order: monotone in the raw p-values and capped at 1.
Reject hypothesis i at level α when ``adjusted[i] ≤ α``; this is equivalent to the textbook
threshold procedures (Bonferroni p ≤ α/m, Holm step-down, Benjamini–Hochberg step-up).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

__all__ = ["bonferroni", "holm", "benjamini_hochberg", "adjust", "Correction"]

Correction = Literal["bonferroni", "holm", "bh"]


def _as_p(p: np.ndarray) -> np.ndarray:
    p = np.asarray(p, dtype=float)
    if p.ndim != 1:
        raise ValueError(f"p-values must be a 1-D array, got shape {p.shape}")
    if p.size and (not np.all(np.isfinite(p)) or p.min() < 0.0 or p.max() > 1.0):
        raise ValueError("p-values must be finite and in [0, 1]")
    return p


def bonferroni(p: np.ndarray) -> np.ndarray:
    """Bonferroni: min(1, m·p_i). ``p``: (m,) → (m,)."""
    p = _as_p(p)
    return np.minimum(1.0, p * p.size)


def holm(p: np.ndarray) -> np.ndarray:
    """Holm step-down: p_(i)·(m − i + 1), running maximum over sorted order, capped at 1."""
    p = _as_p(p)
    m = p.size
    if m == 0:
        return p.copy()
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate(p[order] * (m - np.arange(m)))
    out = np.empty(m)
    out[order] = np.minimum(1.0, stepped)
    return out


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg step-up: p_(i)·m/i, running minimum from the largest, capped at 1."""
    p = _as_p(p)
    m = p.size
    if m == 0:
        return p.copy()
    order = np.argsort(p, kind="stable")
    scaled = p[order] * m / np.arange(1, m + 1)
    stepped = np.minimum.accumulate(scaled[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(1.0, stepped)
    return out


def adjust(p: np.ndarray, method: Correction) -> np.ndarray:
    """Dispatch to :func:`bonferroni`, :func:`holm` or :func:`benjamini_hochberg`."""
    funcs = {"bonferroni": bonferroni, "holm": holm, "bh": benjamini_hochberg}
    if method not in funcs:
        raise ValueError(f"unknown correction {method!r}; expected one of {sorted(funcs)}")
    return funcs[method](p)
