"""Figures for the report: functions from summary pieces to PNG bytes.

Every function takes parts of the summary.json structure (plain dicts) and returns the bytes of one
PNG. Rendering uses the Agg backend, math-text parsing is off (labels come from data and may contain
``$``), and the PNG carries no software or date metadata, so equal inputs give byte-identical files.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter, NullFormatter  # noqa: E402

__all__ = ["forest_plot", "p_ladder", "coupling_scatter", "grad_cosine_plot", "dose_response_plot", "family_colors"]

_RC = {
    "text.parse_math": False,
    "text.usetex": False,
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.titlesize": 10,
    "svg.hashsalt": "jepa-audit",
    "path.simplify": True,
}
_PALETTE = ["#1b6ca8", "#d1495b", "#2e8b57", "#e08e0b", "#7b4fa0", "#5c6b73", "#00798c", "#a05a2c"]
_NEUTRAL = "#444444"


def family_colors(families: Sequence[str]) -> dict[str, str]:
    """A stable colour per auxiliary family (sorted order → palette order)."""
    return {f: _PALETTE[i % len(_PALETTE)] for i, f in enumerate(sorted(set(families)))}


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # missing glyphs for exotic characters in data labels
        fig.savefig(buf, format="png", dpi=100, metadata={"Software": None}, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _label(text: str, limit: int = 40) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def forest_plot(comparisons: Sequence[Mapping[str, Any]], title: str, alpha: float | None = None) -> bytes:
    """ΔEM (pp) per auxiliary with intervals at the levels of its marks, grouped by auxiliary family.

    ``comparisons``: the comparisons of one (benchmark, mode, metric), each with ``method``,
    ``aux_family``, ``mean_diff``, ``sd_diff``, ``n``, ``ci95_low``, ``ci95_high``, ``ci_holm_low``,
    ``ci_holm_high``, ``reject_single``, ``reject_holm``, ``degenerate``. Filled markers pass single-cell α,
    drawn with the thick 1 − α t-interval (without ``alpha``: the 95 % one); a black ring marks survival of
    Holm, and the thin whisker is the interval at the Holm decision's level, so neither mark sits beside an
    interval that contradicts it.
    """
    from jepa_audit.stats.decisions import t_interval_moments
    rows = sorted(comparisons, key=lambda c: (c["aux_family"], c["method"]))
    colors = family_colors([c["aux_family"] for c in rows])
    with plt.rc_context(_RC):
        fig, ax = plt.subplots(figsize=(7.5, 1.2 + 0.28 * (len(rows) + len(colors))))
        y, ticks, labels, last_family = 0.0, [], [], None
        for c in rows:
            if c["aux_family"] != last_family:
                y -= 0.6 if last_family is not None else 0.0
                ax.text(
                    0.0,
                    y + 0.45,
                    _label(c["aux_family"], 30),
                    transform=ax.get_yaxis_transform(),
                    ha="right",
                    va="bottom",
                    fontsize=8,
                    fontweight="bold",
                    color=colors[c["aux_family"]],
                )
                last_family = c["aux_family"]
            color = colors[c["aux_family"]]
            if c["mean_diff"] is not None:
                if c.get("ci_holm_low") is not None and c.get("ci_holm_high") is not None:
                    ax.plot([c["ci_holm_low"], c["ci_holm_high"]], [y, y], color=color, lw=0.7)
                lo, hi = (
                    t_interval_moments(c.get("n") or 0, c["mean_diff"], c.get("sd_diff"), 1 - alpha)
                    if alpha is not None else (c["ci95_low"], c["ci95_high"])
                )  # fmt: skip
                if lo is not None and hi is not None:
                    ax.plot([lo, hi], [y, y], color=color, lw=2.2)
                ax.plot(
                    [c["mean_diff"]],
                    [y],
                    marker="D" if c["degenerate"] else "o",
                    ms=6,
                    color=color,
                    mfc=color if c["reject_single"] else "white",
                    mec="black" if c["reject_holm"] else color,
                    mew=1.6 if c["reject_holm"] else 1.0,
                )
            ticks.append(y)
            labels.append(_label(c["method"]) + (" (degenerate)" if c["degenerate"] else ""))
            y -= 1.0
        ax.axvline(0.0, color=_NEUTRAL, lw=0.8, ls="--")
        ax.set_yticks(ticks, labels)
        ax.set_ylim(y + 0.3, 1.0)
        ax.set_xlabel(
            "difference vs ce (percentage points); thick: "
            + ("95 %" if alpha is None else f"{100 * (1 - alpha):g} %")
            + " t-interval, thin: at the Holm decision's level"
        )
        ax.set_title(_label(title, 90))
        ax.grid(axis="x", color="#dddddd", lw=0.5)
        return _png(fig)


def p_ladder(comparisons: Sequence[Mapping[str, Any]], alpha: float, m: int, title: str) -> bytes:
    """Sorted p_t of one family against the single-cell, Bonferroni, Holm and BH thresholds.

    ``comparisons``: the non-degenerate members of one family (``method``, ``p_t``, ``p_wilcoxon``,
    ``p_signflip``, ``n``); ``m`` the family size. Hollow markers show the non-parametric p-values;
    the dotted line is their floor 2/2^n at the smallest n.
    """
    rows = sorted((c for c in comparisons if c["p_t"] is not None), key=lambda c: (c["p_t"], c["method"]))
    with plt.rc_context(_RC):
        fig, ax = plt.subplots(figsize=(7.5, 3.8))
        if not rows:
            ax.text(0.5, 0.5, "no testable comparison", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
            return _png(fig)
        k = np.arange(1, len(rows) + 1)
        ax.plot(k, [c["p_t"] for c in rows], "o", color="#1b6ca8", label="p (paired t)", zorder=3)
        for key, marker, name in (("p_wilcoxon", "^", "p (Wilcoxon)"), ("p_signflip", "s", "p (sign-flip)")):
            vals = [c[key] if c[key] is not None else np.nan for c in rows]
            ax.plot(k, vals, marker, mfc="none", color="#888888", ms=5, label=name, zorder=2)
        ax.axhline(alpha, color="#2e8b57", lw=1.2, label=f"α = {alpha:g}")
        ax.axhline(alpha / m, color="#d1495b", lw=1.2, label=f"Bonferroni α/m = {alpha / m:.2g}")
        steps = np.arange(1, m + 1)
        ax.step(steps, alpha / (m - steps + 1), where="mid", color="#e08e0b", lw=1.0, label="Holm α/(m−i+1)")
        ax.plot(steps, steps * alpha / m, color="#7b4fa0", lw=1.0, ls="--", label="BH iα/m")
        n_min = min(c["n"] for c in rows)
        floor = 2.0 / 2**n_min
        ax.axhline(
            floor, color=_NEUTRAL, lw=0.8, ls=":", label=f"non-parametric floor 2/2^{n_min} = {floor:.3g}"
        )
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        low = min([c["p_t"] for c in rows] + [alpha / m, floor])
        ax.set_ylim(max(low / 3.0, 1e-12), 1.5)
        ax.set_xlim(0.5, max(len(rows), 1) + 0.5)
        ax.set_xticks(k, [_label(c["method"], 24) for c in rows], rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("p-value (log scale)")
        ax.set_title(_label(title, 90))
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        return _png(fig)


def coupling_scatter(
    panels: Sequence[Mapping[str, Any]], families: Sequence[str], title: str, columns: int = 3
) -> bytes:
    """Δgeometry (or gradient cosine) against ΔEM, one panel per key, with Spearman ρ in the title.

    ``panels``: ``{"key", "x": (n,), "y": (n,) ΔEM pp, "rho", "n"}``; ``families``: the auxiliary
    family of each point (``(n,)``, shared by all panels), used for colour.
    """
    colors = family_colors(families)
    point_colors = [colors[f] for f in families]
    rows = max(1, math.ceil(len(panels) / columns))
    with plt.rc_context(_RC):
        fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.7 * rows), squeeze=False)
        for ax, panel in zip(axes.ravel(), panels, strict=False):
            x, y = np.asarray(panel["x"], dtype=float), np.asarray(panel["y"], dtype=float)
            keep = np.isfinite(x) & np.isfinite(y)
            ax.scatter(x[keep], y[keep], s=14, c=[c for c, k in zip(point_colors, keep, strict=True) if k])
            ax.axhline(0.0, color=_NEUTRAL, lw=0.6, ls="--")
            rho = "undefined" if panel["rho"] is None else f"{panel['rho']:+.2f}"
            ax.set_title(f"{_label(panel['key'], 34)}\nρ = {rho} (n = {panel['n']})", fontsize=8)
            ax.tick_params(labelsize=7)
        for ax in axes.ravel()[len(panels) :]:
            ax.set_axis_off()
        for ax in axes[:, 0]:
            ax.set_ylabel("ΔEM (pp)")
        handles = [
            plt.Line2D([], [], ls="", marker="o", color=c, label=_label(f, 24)) for f, c in colors.items()
        ]
        if handles:
            fig.legend(
                handles=handles,
                loc="lower center",
                ncol=min(4, len(handles)),
                fontsize=7,
                frameon=False,
                bbox_to_anchor=(0.5, -0.02),
            )
        fig.suptitle(_label(title, 90), fontsize=10)
        fig.tight_layout(rect=(0, 0.04, 1, 0.97))
        return _png(fig)


def grad_cosine_plot(rows: Sequence[Mapping[str, Any]], title: str) -> bytes:
    """Auxiliary–CE gradient cosine per auxiliary: mean over seeds (whiskers: min–max over seeds) and
    the fraction of probes with a positive cosine. ``rows``: the summary's ``grad_cosine`` entries of
    one (benchmark, mode)."""
    rows = sorted(rows, key=lambda r: (r["aux_family"], r["method"]))
    colors = family_colors([r["aux_family"] for r in rows])
    with plt.rc_context(_RC):
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(8.5, 1.0 + 0.26 * max(len(rows), 1)), sharey=True)
        y = -np.arange(len(rows), dtype=float)
        for yi, r in zip(y, rows, strict=True):
            color = colors[r["aux_family"]]
            if r["mean"] is not None:
                ax1.barh(yi, r["mean"], color=color, height=0.7)
                ax1.plot([r["min"], r["max"]], [yi, yi], color="black", lw=0.8)
            if r["frac_positive"] is not None:
                ax2.barh(yi, r["frac_positive"], color=color, height=0.7)
        ax1.axvline(0.0, color=_NEUTRAL, lw=0.8)
        ax2.axvline(0.5, color=_NEUTRAL, lw=0.8, ls="--")
        ax1.set_yticks(y, [_label(r["method"]) for r in rows])
        ax1.set_xlabel("mean cos(∇aux, ∇CE)")
        ax2.set_xlabel("fraction of probes with cos > 0")
        ax2.set_xlim(0.0, 1.0)
        fig.suptitle(_label(title, 90), fontsize=10)
        fig.tight_layout()
        return _png(fig)


def dose_response_plot(pairs: Sequence[Mapping[str, Any]], title: str, columns: int = 4) -> bytes:
    """The λ calibration's dose-response curves of one (benchmark, mode), one panel per auxiliary: validation
    EM (pp, with ±1 SE bars; left axis, blue) and each target key's shift from the smallest dose in pooled
    seed SDs of the test grid (right axis, red; the raw value when no SD is known) against the dose (log
    axis). The picked dose is marked by a vertical line, the validation-best dose by a hollow ring.

    ``pairs``: summary.json ``calibration.pairs`` entries (``method``, ``picked_dose``, ``best_dose``,
    ``curve``: per dose ``dose``, ``val_pp``, ``se_pp``, ``target``, ``target_shift_sd``).
    """
    columns = max(1, min(columns, len(pairs)))
    rows = max(1, math.ceil(len(pairs) / columns))
    with plt.rc_context(_RC):
        fig, axes = plt.subplots(rows, columns, figsize=(3.0 * columns, 2.4 * rows), squeeze=False)
        for ax, pair in zip(axes.ravel(), pairs, strict=False):
            curve = [p for p in pair["curve"] if p.get("dose")]
            x = np.array([p["dose"] for p in curve], dtype=float)
            y = np.array([np.nan if p.get("val_pp") is None else p["val_pp"] for p in curve], dtype=float)
            se = np.array([0.0 if p.get("se_pp") is None else p["se_pp"] for p in curve], dtype=float)
            ax.errorbar(x, y, yerr=se, color=_PALETTE[0], marker="o", ms=4, lw=1.2, capsize=2)
            best = [i for i, p in enumerate(curve) if p["dose"] == pair.get("best_dose")]
            if best and np.isfinite(y[best[0]]):
                ax.plot(x[best[0]], y[best[0]], "o", ms=10, mfc="none", mec=_PALETTE[0])
            if pair.get("picked_dose") is not None:
                ax.axvline(pair["picked_dose"], color=_NEUTRAL, lw=0.9, ls="--")
            ax.set_xscale("log")
            ax.set_xticks(x)  # the grid's doses, written plainly (math text is off)
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.tick_params(labelsize=7)
            ax.set_title(_label(pair["method"], 30), fontsize=8)
            keys = sorted({k for p in curve for k in (p.get("target") or {})})
            if keys:
                tw = ax.twinx()
                for j, key in enumerate(keys):
                    shift = [(p.get("target_shift_sd") or {}).get(key) for p in curve]
                    sized = any(v is not None for v in shift)
                    vals = shift if sized else [(p.get("target") or {}).get(key) for p in curve]
                    v = np.array([np.nan if a is None else a for a in vals], dtype=float)
                    tw.plot(x, v, color=_PALETTE[1 + j % (len(_PALETTE) - 1)], marker="s", ms=3, lw=1.0,
                            label=_label(key + ("" if sized else " (raw)"), 28))  # fmt: skip
                tw.axhline(0.0, color=_PALETTE[1], lw=0.5, ls=":")
                tw.tick_params(labelsize=7, colors=_PALETTE[1])
                tw.legend(fontsize=6, loc="best", frameon=False)
        for ax in axes.ravel()[len(pairs) :]:
            ax.set_axis_off()
        for ax in axes[:, 0]:
            ax.set_ylabel("validation EM (%)", color=_PALETTE[0])
        for ax in axes[-1, :]:
            ax.set_xlabel("dose λ·‖∇aux‖/‖∇CE‖")
        fig.suptitle(_label(title, 90), fontsize=10)
        fig.tight_layout(rect=(0, 0, 1, 0.96))
        return _png(fig)
