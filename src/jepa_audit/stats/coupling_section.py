"""The coupling section: per-cell and per-method points (Δ of the primary metric against Δ geometry and the
gradient cosine), their Spearman screen with Benjamini-Hochberg across every key, and the gradient-cosine rows."""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from .coupling import group_means, spearman
from .index import BASELINE, UNSPECIFIED_FAMILY, CellIndex, Key, _number, _sorted_seeds
from .multiplicity import adjust

__all__ = ["COUPLING_LABEL", "coupling_points", "coupling_method_points"]

COUPLING_LABEL = (
    "descriptive: one point per auxiliary (mean over its seeds), Spearman rho, "
    "Benjamini-Hochberg across every key tested"
)


# --------------------------------------------------------------------------- coupling


def coupling_points(idx: CellIndex, key: Key) -> dict[str, Any]:
    """Per-cell points for the coupling analysis of one (benchmark, mode).

    Returns ``{"cells": [(method, seed), ...], "delta_em": (n_cells,) pp, "geometry": {name: (n_cells,)
    Δ vs the same seed's ce, NaN where missing}, "grad_cosine": {"mean": (n_cells,), "frac_positive":
    (n_cells,)}}`` over every (method ≠ ce, seed) cell whose seed also has a ce cell with a finite
    primary metric (``delta_em``: Δ of the task's primary metric, exact match for NL-RX).
    """
    by_method = idx.cells.get(key, {})
    base = by_method.get(BASELINE, {})
    cells: list[tuple[str, Hashable]] = []
    delta_em: list[float] = []
    geo_rows: list[dict[str, float | None]] = []
    grad_rows: list[dict[str, float | None]] = []
    for method in idx.methods(key):
        for seed in _sorted_seeds(by_method[method]):
            row, ref = by_method[method][seed], base.get(seed)
            if ref is None:
                continue
            em, em_ref = (
                _number(row["metrics"].get(idx.primary)),
                _number(ref["metrics"].get(idx.primary)),
            )
            if em is None or em_ref is None:
                continue
            cells.append((method, seed))
            delta_em.append(round(100.0 * (em - em_ref), 9))
            geo, geo_ref = row.get("geometry"), ref.get("geometry")
            geo = geo if isinstance(geo, Mapping) else {}
            geo_ref = geo_ref if isinstance(geo_ref, Mapping) else {}
            deltas: dict[str, float | None] = {}
            for name in geo:
                x, x_ref = _number(geo.get(name)), _number(geo_ref.get(name))
                deltas[str(name)] = x - x_ref if x is not None and x_ref is not None else None
            geo_rows.append(deltas)
            gc = row.get("grad_cosine")
            gc = gc if isinstance(gc, Mapping) else {}
            grad_rows.append(
                {"mean": _number(gc.get("mean")), "frac_positive": _number(gc.get("frac_positive"))}
            )
    names = sorted({n for r in geo_rows for n in r})

    def column(rows: Sequence[Mapping[str, float | None]], name: str) -> np.ndarray:
        return np.array([np.nan if r.get(name) is None else r[name] for r in rows], dtype=float)

    return {
        "cells": cells,
        "delta_em": np.array(delta_em, dtype=float),
        "geometry": {n: column(geo_rows, n) for n in names},
        "grad_cosine": {n: column(grad_rows, n) for n in ("mean", "frac_positive")},
    }


def coupling_method_points(idx: CellIndex, key: Key) -> dict[str, Any]:
    """One point per auxiliary of one (benchmark, mode): its means over seeds of the cell points.

    Returns ``{"methods": [...], "n_cells": (n_methods,), "delta_em": (n_methods,) pp, "geometry": {name:
    (n_methods,)}, "grad_cosine": {...}}``; each mean is over the method's cells where that value is finite
    (NaN if none). See :func:`coupling_points` for the cell values.
    """
    pts = coupling_points(idx, key)
    labels = [m for m, _ in pts["cells"]]
    methods, delta_em = group_means(labels, pts["delta_em"])
    counts = Counter(labels)
    return {
        "methods": methods,
        "n_cells": np.array([counts[m] for m in methods], dtype=int),
        "delta_em": delta_em,
        "geometry": {n: group_means(labels, x)[1] for n, x in pts["geometry"].items()},
        "grad_cosine": {n: group_means(labels, x)[1] for n, x in pts["grad_cosine"].items()},
    }


def _coupling_rows(idx: CellIndex, alpha: float) -> list[dict[str, Any]]:
    out = []
    for key in idx.groups():
        pts = coupling_method_points(idx, key)
        n_cells = int(pts["n_cells"].sum())
        for kind, columns in (("geometry", pts["geometry"]), ("grad_cosine", pts["grad_cosine"])):
            for name, x in columns.items():
                res = spearman(x, pts["delta_em"])
                out.append(
                    {
                        "benchmark": key[0],
                        "mode": key[1],
                        "kind": kind,
                        "key": name,
                        "versus": f"delta_{idx.primary}_pp",
                        "unit": "method (mean over seeds)",
                        "n_cells": n_cells,
                        **res.as_dict(),
                        "p_bh": None,
                        "reject_bh": False,
                    }
                )
    # BH across every key, layer, benchmark and mode tested: the table is a screen, not a set of findings
    tested = [r for r in out if r["p"] is not None]
    if tested:
        for r, adj in zip(tested, adjust(np.array([r["p"] for r in tested]), "bh"), strict=True):
            r["p_bh"] = float(adj)
            r["reject_bh"] = bool(adj <= alpha)
    return out


def _grad_cosine_rows(idx: CellIndex) -> list[dict[str, Any]]:
    out = []
    for key in idx.groups():
        for method in idx.methods(key):
            means, fracs = [], []
            for seed in _sorted_seeds(idx.cells[key][method]):
                gc = idx.cells[key][method][seed].get("grad_cosine")
                if isinstance(gc, Mapping):
                    if (v := _number(gc.get("mean"))) is not None:
                        means.append(v)
                    if (v := _number(gc.get("frac_positive"))) is not None:
                        fracs.append(v)
            out.append(
                {
                    "benchmark": key[0],
                    "mode": key[1],
                    "method": method,
                    "aux_family": idx.aux_family.get(method, UNSPECIFIED_FAMILY),
                    "n_seeds": len(means),
                    "mean": float(np.mean(means)) if means else None,
                    "min": float(np.min(means)) if means else None,
                    "max": float(np.max(means)) if means else None,
                    "frac_positive": float(np.mean(fracs)) if fracs else None,
                }
            )
    return out
