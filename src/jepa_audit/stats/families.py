"""The families of comparisons: their declared size m, the corrections within each, and the error rates.

A family is one benchmark × mode × metric (``per-benchmark``) or one metric × mode across benchmarks
(``all``). Bonferroni, Holm and Benjamini-Hochberg adjust within a family; degenerate comparisons count in m
and are never rejected. Also the decision tests at each Holm level (stats/decisions.py) and the family-wise
error across every family the report decides on.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .decisions import (
    holm_levels,
    holm_with_degenerate,
    nonsup_p_moments,
    t_interval_moments,
    upper_bound_moments,
)
from .index import BASELINE, CellIndex
from .multiplicity import adjust

__all__ = ["FAMILIES", "CORRECTIONS"]

FAMILIES: tuple[str, ...] = ("per-benchmark", "all")
CORRECTIONS: tuple[str, ...] = ("bonferroni", "holm", "bh")


def _family_of(comp: Mapping[str, Any], family: str) -> tuple[str | None, str, str]:
    bench = comp["benchmark"] if family == "per-benchmark" else None
    return bench, comp["mode"], comp["metric"]


def _family_id(fkey: tuple[str | None, str, str]) -> str:
    bench, mode, metric = fkey
    return f"{bench if bench is not None else 'all benchmarks'} / {mode} / {metric}"


def _apply_families(
    comparisons: list[dict[str, Any]], family: str, alpha: float, idx: CellIndex
) -> list[dict[str, Any]]:
    grouped: dict[tuple[str | None, str, str], list[dict[str, Any]]] = defaultdict(list)
    for comp in comparisons:
        grouped[_family_of(comp, family)].append(comp)
    families = []
    for fkey in sorted(grouped, key=lambda k: (k[0] or "", k[1], idx.metric_rank(k[2]))):
        members = grouped[fkey]
        tested = [c for c in members if not c["degenerate"]]
        # m is the declared family size: a degenerate comparison enters the correction as p = 1, which
        # can never be rejected and is exactly "counted in m" for Bonferroni, Holm and BH alike
        m = len(members)
        fid = _family_id(fkey)
        if tested:
            p = np.array([1.0 if c["degenerate"] else c["p_t"] for c in members])
            for name in CORRECTIONS:
                for comp, adj in zip(members, adjust(p, name), strict=True):
                    if not comp["degenerate"]:
                        comp[f"p_{name}"] = float(adj)
                        comp[f"reject_{name}"] = bool(adj <= alpha)
            for comp in tested:
                comp["reject_single"] = bool(comp["p_t"] <= alpha)
        for comp in members:
            comp["family_id"] = fid
            comp["family_m"] = m
        families.append(
            {
                "id": fid,
                "task": idx.task,
                "benchmark": fkey[0],
                "mode": fkey[1],
                "metric": fkey[2],
                "m": m,
                "m_declared": m,
                "n_tested": len(tested),
                # degenerate comparisons: counted in m, no p-value, never rejected
                "degenerate": [
                    {"benchmark": c["benchmark"], "method": c["method"], "note": c["note"]}
                    for c in members
                    if c["degenerate"]
                ],
                "n_two_seeds": sum(1 for c in tested if c["n"] == 2),
                "bonferroni_threshold": alpha / m if m else None,
            }
        )
    return families


def _family_definition(family: str, alpha: float, families: Sequence[Mapping[str, Any]]) -> str:
    scope = (
        "one benchmark, one fine-tuning mode and one metric"
        if family == "per-benchmark"
        else "one metric across all benchmarks (within one fine-tuning mode)"
    )
    listed = "; ".join(
        f"{f['id']}: m = {f['m']}"
        + (f" ({f['m'] - f['n_tested']} degenerate, counted in m)" if f["n_tested"] != f["m"] else "")
        + (
            f" ({f['n_two_seeds']} tested on n = 2 seeds: t with df = 1, sign-flip floor 0.5)"
            if f["n_two_seeds"]
            else ""
        )
        for f in families
    )
    return (
        f"Family '{family}': the comparisons against {BASELINE} of {scope}. m is the declared family size: "
        f"every comparison the grid defines, whatever the data do. Bonferroni, Holm and "
        f"Benjamini-Hochberg adjust p_t within each family at alpha = {alpha:g}. Degenerate comparisons "
        f"(n < 2, zero variance, or no finished cells) carry no p-value and are never rejected, but count "
        f"in m. Families: {listed if listed else 'none'}."
    )


def _family_fwer(family: str, alpha: float, families: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Family-wise error rate across the families of one metric, under the global null.

    Each family is controlled at ``alpha``; across k families of the same metric the chance of at least one
    false rejection is 1 − (1 − α)^k if the families are independent (≤ k·α in any case).
    """
    per_metric = Counter(f["metric"] for f in families if f["m"])
    k = max(per_metric.values(), default=0)
    fwer = 1.0 - (1.0 - alpha) ** k if k else None
    if k == 0:
        text = f"No family has a comparison; alpha = {alpha:g}"
    elif k == 1:
        text = (
            f"One family per metric, controlled at alpha = {alpha:g}: its family-wise error rate is {alpha:g}"
        )
    else:
        text = (
            f"Each family is controlled at alpha = {alpha:g} on its own. Across the {k} families of one metric the "
            f"family-wise error rate under the global null is 1 - (1 - {alpha:g})^{k} = {fwer:.3g} for independent "
            f"families (at most {min(1.0, k * alpha):.3g} in any case)"
        )
    if k > 1 and family == "per-benchmark":
        text += (
            "; to control it across benchmarks instead, rerun `jepa-audit report DIR --family all`, which puts "
            "every benchmark of one metric and mode in one family"
        )
    elif family == "per-benchmark":
        text += (
            "; `jepa-audit report DIR --family all` pools the benchmarks of one metric and mode in one family"
        )
    return {
        "k_per_metric": k,
        "alpha": alpha,
        "fwer_independent": fwer,
        "fwer_bound": min(1.0, k * alpha) if k else None,
        "text": text + ".",
    }


def _add_decision_tests(comparisons: list[dict[str, Any]], primary: str, alpha: float, sesoi: float) -> None:
    """Per family: the interval at each Holm decision's level (every metric: ``ci_holm_low``/``_high`` at
    ``ci_holm_level``), and for the primary metric the non-superiority test against ``sesoi`` pp (``p_nonsup``,
    ``p_nonsup_holm`` over the same family as ``p_holm``, ``upper95``, and ``upper_holm`` at
    ``upper_holm_level``, the one-sided bound at that decision's level). stats/decisions.py has the rules."""
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for c in comparisons:
        grouped[c["family_id"]].append(c)
    for members in grouped.values():
        for c, lev in zip(members, holm_levels([c["p_t"] for c in members], alpha), strict=True):
            c["ci_holm_low"], c["ci_holm_high"] = t_interval_moments(c["n"], c["mean_diff"], c["sd_diff"], 1 - lev)
            c["ci_holm_level"] = None if c["ci_holm_low"] is None else 1 - lev
        primary_metric = members[0]["metric"] == primary
        p_ns = [nonsup_p_moments(c["n"], c["mean_diff"], c["sd_diff"], sesoi) if primary_metric else None
                for c in members]  # fmt: skip
        adj = holm_with_degenerate(p_ns) if primary_metric else [None] * len(members)
        levels = holm_levels(p_ns, alpha)
        for c, p, a, lev in zip(members, p_ns, adj, levels, strict=True):
            c["p_nonsup"], c["p_nonsup_holm"] = p, a
            c["reject_nonsup_holm"] = bool(a is not None and a <= alpha)
            c["upper95"] = upper_bound_moments(c["n"], c["mean_diff"], c["sd_diff"], 0.95) if primary_metric else None
            c["upper_holm"] = upper_bound_moments(c["n"], c["mean_diff"], c["sd_diff"], 1 - lev) if p is not None else None
            c["upper_holm_level"] = None if c["upper_holm"] is None else 1 - lev


def _fwer_all(alpha: float, families: Sequence[Mapping[str, Any]], manipulation: Sequence[Mapping[str, Any]],
              primary: str) -> dict[str, Any]:
    """The family-wise error across every family the report decides on: the primary metric's superiority and
    non-superiority families, the other metrics' families (DFA for NL-RX) and the manipulation families (one
    per benchmark and mode). Each is Holm-controlled at α; across k of them the chance of at least one false
    decision is at most min(1, k·α) (Bonferroni over families), 1 − (1 − α)^k if they were independent."""
    n_primary = sum(1 for f in families if f["m"] and f["metric"] == primary)
    n_other = sum(1 for f in families if f["m"] and f["metric"] != primary)
    n_man = len({e["family_id"] for e in manipulation})
    counts = {"primary_superiority": n_primary, "primary_nonsuperiority": n_primary, "other_metrics": n_other,
              "manipulation": n_man}  # fmt: skip
    k = sum(counts.values())
    bound = min(1.0, k * alpha) if k else None
    indep = 1.0 - (1.0 - alpha) ** k if k else None
    text = (
        f"{k} families are decided here, each Holm-controlled at α = {alpha:g}: {n_primary} for {primary} (gain or "
        f"harm), {n_primary} for its non-superiority test (no gain ≥ Δ), {n_other} for the other metrics and "
        f"{n_man} manipulation families; the chance of at least one false decision across all of them is at most "
        f"{bound:.3g} (k·α), {indep:.3g} if they were independent"
        if k else f"No family is decided; α = {alpha:g}"
    )  # fmt: skip
    return {"k": k, "counts": counts, "alpha": alpha, "fwer_bound": bound, "fwer_independent": indep,
            "text": text + "."}  # fmt: skip
