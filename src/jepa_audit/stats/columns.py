"""The columns of the report's tables: one specification shared by the summary, report/build.py and both templates.

A table's columns are a tuple of :class:`Column`, in order. Each names the keys of a summary row it reads
(``sources``; by default its own ``key``), a format ``kind`` that report/build.py resolves to one formatter
(``text``, ``int``, ``pp``, ``pp_signed``, ``p``, ``num``, ``signed``, or a composite cell such as ``ci``,
``ci_holm``, ``rejects``, ``note``), its header, and the HTML cell's class. report.md and report.html loop over
the same tuple for the header and for every row's cells, so a column exists in both or in neither.

Adding a statistic to the comparisons table is then one function in :mod:`jepa_audit.stats` that fills a
key of every comparison row (summary.json), plus one :class:`Column` entry in :data:`COMPARISON_COLUMNS`;
:func:`require_sources` (run by build_summary and by the tests) fails, naming the column, when a column
reads a key the summary rows do not have. This module imports nothing torch-side and nothing of the report.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .index import BASELINE

__all__ = [
    "Column",
    "COMPARISON_COLUMNS",
    "COUPLING_COLUMNS",
    "GRAD_COSINE_COLUMNS",
    "ITEM_COLUMNS",
    "SUMMARY_TABLES",
    "VERDICT_COLUMNS",
    "require_sources",
]

#: The HTML cell classes a column may ask for: plain text, right-aligned digits, small grey text.
CSS_CLASSES = ("", "num", "note")


@dataclass(frozen=True, kw_only=True)
class Column:
    """One column of a report table.

    ``key``: the cell's name in the report's row view (the templates print ``row[key]``), and the summary
    key it reads unless ``sources`` says otherwise. ``header``: the header text (plain text; each template
    escapes it). ``kind``: the name of the formatter report/build.py applies (its ``_FORMATS``).
    ``sources``: the summary row's keys that formatter reads, in the order it reads them (``()`` = ``(key,)``).
    ``css``: the HTML cell's class (``"num"``: right-aligned digits; ``"note"``: small grey text; ``""``).
    ``digits``: the number of digits for ``num`` (significant) and ``signed`` (after the point) kinds, when
    not the formatter's default. ``doc``: what the column holds, with its units.
    """

    key: str
    header: str
    kind: str = "text"
    sources: tuple[str, ...] = ()
    css: str = ""
    digits: int | None = None
    doc: str = ""

    def __post_init__(self) -> None:
        if self.css not in CSS_CLASSES:
            raise ValueError(f"column {self.key!r}: css {self.css!r} is not one of {CSS_CLASSES}")

    @property
    def reads(self) -> tuple[str, ...]:
        """The summary row's keys this column's formatter reads."""
        return self.sources or (self.key,)

    @property
    def num(self) -> bool:
        """Whether the cell holds digits (right-aligned in HTML)."""
        return self.css == "num"


def _c(key: str, header: str, kind: str = "text", doc: str = "", **kw: Any) -> Column:
    return Column(key=key, header=header, kind=kind, doc=doc, **kw)


#: The "All comparisons" table: one row per summary.json comparison (stats/comparisons.py fills the keys,
#: stats/families.py the corrections and decision tests). Differences are method − ce in pp.
COMPARISON_COLUMNS: tuple[Column, ...] = (
    _c("benchmark", "benchmark"),
    _c("mode", "mode", doc="lora or full"),
    _c("metric", "metric"),
    _c("aux_family", "family", doc="the auxiliary's family (trajectory, predictive, ...)"),
    _c("method", "method"),
    _c("n", "n", "int", "paired seeds (both arms finished with a finite metric)", css="num"),
    _c("baseline_mean", BASELINE, "pp", f"{BASELINE}'s mean over the paired seeds, %", css="num"),
    _c("method_mean", "method", "pp", "the method's mean over the paired seeds, %", css="num"),
    _c("mean_diff", "Δ pp", "pp_signed", "mean paired difference method − ce, pp", css="num"),
    _c("sd_diff", "SD pp", "pp", "SD of the paired differences, pp", css="num"),
    _c("ci", "95 % CI", "ci", "two-sided 95 % t-interval of the mean difference, pp",
       sources=("ci95_low", "ci95_high"), css="num"),
    _c("t", "t", "signed", "paired t statistic (df = n − 1)", css="num"),
    _c("p_t", "p_t", "p", "two-sided paired t-test", css="num"),
    _c("p_wilcoxon", "p_Wilcoxon", "p", "two-sided Wilcoxon signed-rank", css="num"),
    _c("p_signflip", "p_sign-flip", "p", "exact two-sided sign-flip permutation test", css="num"),
    _c("hedges_gz", "g_z", "signed", "Hedges' g_z (bias-corrected mean/SD of the differences)", css="num"),
    _c("p_bonferroni", "p_Bonf", "p", "Bonferroni-adjusted p_t within the family", css="num"),
    _c("p_holm", "p_Holm", "p", "Holm-adjusted p_t within the family", css="num"),
    _c("ci_holm", "CI at the Holm decision's level", "ci_holm",
       "t-interval at the Holm decision's level (stats/decisions.py: holm_levels), pp, and that level in %",
       sources=("ci_holm_low", "ci_holm_high", "ci_holm_level"), css="num"),
    _c("p_nonsup_holm", "p_nonsup_Holm (Δ)", "p",
       "Holm-adjusted non-superiority p against Δ = sesoi_pp (primary metric only)", css="num"),
    _c("upper95", "one-sided 95 % upper", "pp_signed", "one-sided 95 % upper bound of the difference, pp",
       css="num"),
    _c("p_bh", "p_BH", "p", "Benjamini–Hochberg-adjusted p_t within the family", css="num"),
    _c("rejects", "rejects", "rejects", "the corrections whose adjusted p ≤ α (α, Bonf, Holm, BH)",
       sources=("reject_single", "reject_bonferroni", "reject_holm", "reject_bh")),
    _c("prob_improvement", "P(impr.)", "num",
       "fraction of paired seeds on which the method beats ce (ties ½)", css="num", digits=2),
    _c("note", "note", "note", "why a comparison is degenerate or unreliable, then its unpaired seeds",
       sources=("note", "seeds_method_only", "seeds_baseline_only"), css="note"),
)

#: The verdict table ("The answer"): the keys of a stats.manipulation.verdict_table row, already text.
VERDICT_COLUMNS: tuple[Column, ...] = (
    _c("benchmark", "benchmark"),
    _c("mode", "mode"),
    _c("method", "auxiliary"),
    _c("weight", "λ chosen"),
    _c("dose", "dose", css="num"),
    _c("target", "target key Δ [CI at decision level]"),
    _c("em", "EM Δ pp [CI at decision level]"),
    _c("upper", "gain ruled out above (pp)"),
    _c("representation", "representation"),
    _c("reward", "reward"),
    _c("verdict", "verdict"),
    _c("power", "MDE vs Δ; seeds needed"),
)


#: The per-item table: one row per summary.json items entry (stats/per_item.py), seed-level first. The conditional
#: logit has a table of its own in the templates (its cell depends on which metrics it was fitted for).
ITEM_COLUMNS: tuple[Column, ...] = (
    _c("benchmark", "benchmark"),
    _c("mode", "mode"),
    _c("metric", "metric"),
    _c("method", "method"),
    _c("n_seeds", "seeds", "int", "paired seeds with predictions", css="num"),
    _c("item_level", "item-level: McNemar log OR across seeds", "item_level",
       "t-test across seeds of the per-seed McNemar log-odds ratios log(b/c)"),
    _c("mcnemar", "McNemar per seed", "mcnemar",
       "per seed: exact McNemar p, items only the method / only ce gets right, log OR"),
    _c("bootstrap", "bootstrap Δ pp (95 %)", "bootstrap",
       "hierarchical bootstrap (seeds, then shared items) of the difference, pp, 95 % percentile interval",
       css="num"),
)

#: The coupling table: one row per summary.json coupling entry (stats/coupling_section.py).
COUPLING_COLUMNS: tuple[Column, ...] = (
    _c("benchmark", "benchmark"),
    _c("mode", "mode"),
    _c("kind", "kind", "coupling_kind", "geometry (Δ from the same seed's ce) or gradient cosine (raw)"),
    _c("key", "key", doc="the geometry key (with its layer) or the gradient-cosine key"),
    _c("n", "methods", "int", "auxiliaries (points) in the correlation", css="num"),
    _c("n_cells", "cells", "int", "(auxiliary, seed) cells behind the points", css="num"),
    _c("rho", "ρ", "signed", "Spearman ρ of the per-auxiliary means against ΔEM", css="num"),
    _c("p", "p", "p", "two-sided p of ρ", css="num"),
    _c("p_bh", "p_BH", "p", "Benjamini–Hochberg-adjusted p across the whole table", css="num"),
    _c("note", "note", doc="why ρ is missing or unreliable", css="note"),
)

#: The gradient-cosine table: one row per summary.json grad_cosine entry (auxiliary × benchmark × mode).
GRAD_COSINE_COLUMNS: tuple[Column, ...] = (
    _c("benchmark", "benchmark"),
    _c("mode", "mode"),
    _c("aux_family", "family"),
    _c("method", "method"),
    _c("n_seeds", "seeds", "int", "seeds with a gradient probe", css="num"),
    _c("mean", "mean cos(∇aux, ∇CE)", "signed", "mean over seeds of the per-seed mean cosine", css="num",
       digits=3),
    _c("range", "range over seeds", "range", "min to max over seeds of the per-seed mean cosine",
       sources=("min", "max"), css="num", digits=3),
    _c("frac_positive", "fraction positive", "num", "mean fraction of probes with a positive cosine",
       css="num", digits=2),
)

#: summary.json's sections that the report prints as a table through a column specification → its columns
#: (the verdict table's rows come from stats.manipulation.verdict_table, already text).
SUMMARY_TABLES: dict[str, tuple[Column, ...]] = {
    "comparisons": COMPARISON_COLUMNS,
    "items": ITEM_COLUMNS,
    "coupling": COUPLING_COLUMNS,
    "grad_cosine": GRAD_COSINE_COLUMNS,
}


def require_sources(columns: Iterable[Column], rows: Iterable[Mapping[str, Any]], what: str) -> None:
    """Raise ValueError naming the first column whose source key a row of ``what`` lacks (e.g. a new column
    whose statistic no function of the summary fills yet)."""
    columns = tuple(columns)
    for i, row in enumerate(rows):
        for col in columns:
            missing = [k for k in col.reads if k not in row]
            if missing:
                raise ValueError(
                    f"{what}[{i}]: column {col.key!r} ({col.header!r}) reads {missing}, which the row lacks; "
                    "a column's sources must be keys the summary fills"
                )
