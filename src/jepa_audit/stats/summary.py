"""From results rows to the audit's answer: the summary.json structure of DESIGN.md.

This is the glue between the row format (results.jsonl, already parsed) and the pure statistics in
the sibling modules. It reads nothing itself: per-item predictions come through an optional
``predictions_loader(relative_path) -> list[dict] | None`` supplied by the caller.

Conventions: differences are method − ce in percentage points (100 × the metric); comparisons are
made within one (benchmark, mode); pairing is by seed over the seeds both arms have with a finite
value of the metric. The output is JSON-safe: no NaN or infinity anywhere, ``null`` instead.
"""

from __future__ import annotations

import hashlib
import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from jepa_audit.results import LEGACY_METRICS, MetricSpec, ResultsRow

from .coupling import group_means, spearman
from .curves import calibration_section, read_curves
from .decisions import (
    holm_levels,
    holm_with_degenerate,
    nonsup_p_moments,
    t_interval_moments,
    upper_bound_moments,
)
from .items import (
    conditional_logit,
    hierarchical_bootstrap,
    mcnemar_exact,
    mcnemar_log_odds,
    probability_of_improvement_paired,
    seed_level_log_odds,
)
from .multiplicity import adjust
from .paired import pair_by_seed, paired_comparison, signflip_floor
from .power import mde_pp, mde_sd, seeds_needed

__all__ = [
    "BASELINE",
    "METRICS",
    "FAMILIES",
    "CellIndex",
    "index_rows",
    "coupling_points",
    "coupling_method_points",
    "declared_comparisons",
    "build_summary",
    "json_safe",
]

BASELINE = "ce"
#: NL-RX's metrics, for rows written before rows declared theirs (``metric_specs``); the metrics of an audit
#: are its rows' (:attr:`CellIndex.metrics`), one family per task, benchmark, mode and metric.
METRICS: tuple[str, ...] = tuple(m.name for m in LEGACY_METRICS)
FAMILIES: tuple[str, ...] = ("per-benchmark", "all")
DEFAULT_MODE = "lora"
UNSPECIFIED_FAMILY = "unspecified"
CORRECTIONS: tuple[str, ...] = ("bonferroni", "holm", "bh")
#: The verdict lists, each split into improvements (mean_diff > 0) and harms (mean_diff < 0).
VERDICT_LISTS: tuple[str, ...] = ("single", "bonferroni", "holm", "bh")
CONDITIONAL_LOGIT_LABEL = "conditional on these trained models; excludes run-to-run variance"
COUPLING_LABEL = (
    "descriptive: one point per auxiliary (mean over its seeds), Spearman rho, "
    "Benjamini-Hochberg across every key tested"
)

PredictionsLoader = Callable[[str], "list[dict[str, Any]] | None"]
Key = tuple[str, str]  # (benchmark, mode)


# --------------------------------------------------------------------------- indexing the rows


@dataclass
class CellIndex:
    """Finished cells, keyed for pairing.

    ``cells[(benchmark, mode)][method][seed]`` is the row of that cell (the last one when the file
    repeats a cell). ``failed`` lists rows whose status is not ``done``; ``warnings`` explains every row
    that was skipped or overridden.
    """

    cells: dict[Key, dict[str, dict[Hashable, dict[str, Any]]]] = field(default_factory=dict)
    aux_family: dict[str, str] = field(default_factory=dict)
    task: str = "nlrx"  # the rows' task (rows before tasks were plug-ins: nlrx)
    metric_specs: tuple[MetricSpec, ...] = LEGACY_METRICS  # what the rows' ``metrics`` hold, primary first
    failed: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    n_rows: int = 0
    n_done: int = 0

    def groups(self) -> list[Key]:
        return sorted(self.cells)

    @property
    def metrics(self) -> tuple[str, ...]:
        """The metric names compared, primary first."""
        return tuple(m.name for m in self.metric_specs)

    @property
    def primary(self) -> str:
        """The primary metric: the reward half of the verdicts and the y axis of the coupling."""
        return self.metric_specs[0].name

    def item_field(self, metric: str) -> str:
        """The per-item field of a predictions file that carries ``metric``'s correctness."""
        return next(m.field for m in self.metric_specs if m.name == metric)

    def metric_rank(self, metric: str) -> int:
        return self.metrics.index(metric) if metric in self.metrics else len(self.metrics)

    def methods(self, key: Key) -> list[str]:
        """Non-baseline methods of one (benchmark, mode), sorted by id."""
        return sorted(m for m in self.cells.get(key, {}) if m != BASELINE)

    def seeds(self) -> list[Hashable]:
        found = {s for by_method in self.cells.values() for by_seed in by_method.values() for s in by_seed}
        return _sorted_seeds(found)


def _sorted_seeds(seeds: Iterable[Hashable]) -> list[Hashable]:
    return sorted(seeds, key=lambda s: (type(s).__name__, s))


def _is_seed(x: object) -> bool:
    return isinstance(x, str) or (isinstance(x, int) and not isinstance(x, bool))


def index_rows(rows: Sequence[Mapping[str, Any]]) -> CellIndex:
    """Index parsed results rows; failed or malformed rows are recorded, never used in statistics."""
    idx = CellIndex(n_rows=len(rows))
    families: dict[str, Counter[str]] = defaultdict(Counter)
    declared: tuple[str, tuple[MetricSpec, ...]] | None = None  # (task, metric specs) of the first done row
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            idx.warnings.append(f"row {i}: not a JSON object; skipped")
            continue
        bench, method, seed = row.get("benchmark"), row.get("method"), row.get("seed")
        mode = row.get("mode") if row.get("mode") is not None else DEFAULT_MODE
        if row.get("status") != "done":
            idx.failed.append(
                {
                    "benchmark": bench if isinstance(bench, str) else None,
                    "method": method if isinstance(method, str) else None,
                    "seed": seed if _is_seed(seed) else None,
                    "mode": mode if isinstance(mode, str) else None,
                    "status": str(row.get("status")),
                    "error": str(row["error"]) if row.get("error") is not None else None,
                }
            )
            continue
        if not (
            isinstance(bench, str) and isinstance(method, str) and _is_seed(seed) and isinstance(mode, str)
        ):
            idx.warnings.append(
                f"row {i}: benchmark, method, seed or mode missing or of the wrong type; skipped"
            )
            continue
        if not isinstance(row.get("metrics"), Mapping):
            idx.warnings.append(f"row {i} ({bench}/{mode}/{method}/seed {seed}): no metrics object; skipped")
            continue
        try:
            parsed = ResultsRow.parse(row)
            mine = (parsed.task, parsed.specs())
        except ValueError as e:
            idx.warnings.append(f"row {i} ({bench}/{mode}/{method}/seed {seed}): {e}; skipped")
            continue
        if declared is None:
            declared = mine
            idx.task, idx.metric_specs = mine
        elif mine != declared:
            idx.warnings.append(
                f"row {i} ({bench}/{mode}/{method}/seed {seed}): task {mine[0]} with metrics "
                f"{[m.name for m in mine[1]]}, not the audit's {declared[0]} {list(idx.metrics)}; skipped"
            )
            continue
        by_seed = idx.cells.setdefault((bench, mode), {}).setdefault(method, {})
        if seed in by_seed:
            idx.warnings.append(
                f"cell {bench}/{mode}/{method}/seed {seed} appears more than once; the last row is used"
            )
        by_seed[seed] = dict(row)
        idx.n_done += 1
        fam = row.get("family")
        if isinstance(fam, str) and fam:
            families[method][fam] += 1
    for method in {m for by_method in idx.cells.values() for m in by_method}:
        counts = families.get(method)
        idx.aux_family[method] = (
            sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0][0] if counts else UNSPECIFIED_FAMILY
        )
    return idx


def _number(x: object) -> float | None:
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _metric_by_seed(
    by_seed: Mapping[Hashable, Mapping[str, Any]], metric: str, where: str, warnings: list[str]
) -> dict[Hashable, float]:
    out: dict[Hashable, float] = {}
    for seed, row in by_seed.items():
        value = _number(row["metrics"].get(metric))
        if value is None:
            continue
        if not 0.0 <= value <= 1.0:
            warnings.append(f"{where}/seed {seed}: {metric} = {value} is outside [0, 1]; not used")
            continue
        out[seed] = value
    return out


# --------------------------------------------------------------------------- seed-level comparisons


def declared_comparisons(
    idx: CellIndex, declared: Iterable[Mapping[str, Any]] | None = None
) -> dict[Key, list[str]]:
    """Every (benchmark, mode) → its methods ≠ ce that the grid declares, plus any the rows add.

    ``declared``: the grid's cells, each a mapping with at least ``benchmark`` and ``method`` (``mode``
    defaults to lora), e.g. the entries of the audit directory's grid.json. The family size m counts
    these comparisons whatever the data do; rows of methods outside the grid are still compared.
    """
    out: dict[Key, set[str]] = {key: set(idx.methods(key)) for key in idx.groups()}
    for i, cell in enumerate(declared or ()):
        if not isinstance(cell, Mapping):
            raise ValueError(
                f"declared cell {i}: expected a mapping with benchmark, method, mode; got {cell!r}"
            )
        bench, method = cell.get("benchmark"), cell.get("method")
        mode = cell.get("mode") if cell.get("mode") is not None else DEFAULT_MODE
        if not (isinstance(bench, str) and isinstance(method, str) and isinstance(mode, str)):
            raise ValueError(
                f"declared cell {i}: benchmark, method and mode must be strings; got {dict(cell)!r}"
            )
        methods = out.setdefault((bench, mode), set())
        if method != BASELINE:
            methods.add(method)
    return {key: sorted(methods) for key, methods in sorted(out.items())}


def _n_test(rows: Iterable[Mapping[str, Any]]) -> int | None:
    """The largest ``metrics.n_test`` of some rows (the finest step of the metric), or None."""
    ns = [
        int(n)
        for r in rows
        if isinstance(n := r["metrics"].get("n_test"), int) and not isinstance(n, bool) and n > 0
    ]
    return max(ns) if ns else None


def _comparison(idx: CellIndex, key: Key, method: str, metric: str) -> dict[str, Any]:
    bench, mode = key
    where = f"{bench}/{mode}/{method}"
    by_method = idx.cells.get(key, {})
    method_scores = _metric_by_seed(by_method.get(method, {}), metric, where, idx.warnings)
    base_scores = _metric_by_seed(
        by_method.get(BASELINE, {}), metric, f"{bench}/{mode}/{BASELINE}", idx.warnings
    )
    seeds, a, b = pair_by_seed(method_scores, base_scores)
    # Rounded to 1e-9 pp: differences of metric fractions that are equal in exact arithmetic (ties, zero
    # variance) are then equal in floating point too, as the rank and sign-flip tests need.
    res = paired_comparison(np.round(100.0 * (a - b), 9))
    notes = [res.note] if res.note else []
    if method not in by_method:
        notes.insert(0, "declared by the grid but no finished cells")
    elif BASELINE not in by_method:
        notes.insert(0, f"no {BASELINE} baseline cells on {bench}/{mode}")
    n_test = _n_test([by_method[method][s] for s in seeds] + [by_method[BASELINE][s] for s in seeds])
    step = 100.0 / n_test if n_test else None
    below_step = bool(step is not None and res.sd_diff is not None and 0.0 < res.sd_diff < step)
    if below_step:
        notes.append(
            f"sd_diff {res.sd_diff:.3g} pp is below one test item's step (100/n_test = {step:.3g} pp): "
            "the differences move by less than one item, so the t-test is unreliable"
        )
    note = "; ".join(notes) if notes else None
    return {
        "benchmark": bench,
        "mode": mode,
        "method": method,
        "aux_family": idx.aux_family.get(method, UNSPECIFIED_FAMILY),
        "metric": metric,
        "n": res.n,
        "seeds": seeds,
        "seeds_method_only": _sorted_seeds(set(method_scores) - set(base_scores)),
        "seeds_baseline_only": _sorted_seeds(set(base_scores) - set(method_scores)),
        "method_mean": 100.0 * float(a.mean()) if a.size else None,
        "baseline_mean": 100.0 * float(b.mean()) if b.size else None,
        "mean_diff": res.mean_diff,
        "sd_diff": res.sd_diff,
        "ci95_low": res.ci95_low,
        "ci95_high": res.ci95_high,
        "t": res.t,
        "p_t": res.p_t,
        "p_wilcoxon": res.p_wilcoxon,
        "p_signflip": res.p_signflip,
        "hedges_gz": res.hedges_gz,
        "p_bonferroni": None,
        "p_holm": None,
        "p_bh": None,
        "reject_single": False,
        "reject_bonferroni": False,
        "reject_holm": False,
        "reject_bh": False,
        "prob_improvement": probability_of_improvement_paired(a - b),
        "n_test": n_test,
        "item_step_pp": step,
        "sd_below_item_step": below_step,
        "degenerate": res.degenerate,
        "note": note,
        "family_id": None,
        "family_m": None,
    }


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


# --------------------------------------------------------------------------- verdicts and power


def _verdict_rows(comparisons: Sequence[Mapping[str, Any]], idx: CellIndex) -> list[dict[str, Any]]:
    grouped: dict[tuple[str, str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for comp in comparisons:
        grouped[(comp["benchmark"], comp["mode"], comp["metric"])].append(comp)
    out = []
    for (bench, mode, metric), members in sorted(
        grouped.items(), key=lambda kv: (kv[0][0], kv[0][1], idx.metric_rank(kv[0][2]))
    ):

        def passing(
            flag: str, p_key: str, members: Sequence[Mapping[str, Any]] = members
        ) -> list[dict[str, Any]]:
            hits = [c for c in members if c[flag]]
            hits.sort(key=lambda c: (c[p_key], c["method"]))
            return [{"method": c["method"], "mean_diff": c["mean_diff"], "p": c[p_key]} for c in hits]

        lists = {
            name: passing(f"reject_{name}", "p_t" if name == "single" else f"p_{name}")
            for name in VERDICT_LISTS
        }

        out.append(
            {
                "benchmark": bench,
                "mode": mode,
                "metric": metric,
                "family_id": members[0]["family_id"],
                "family_m": members[0]["family_m"],
                "n_comparisons": len(members),
                "n_degenerate": sum(1 for c in members if c["degenerate"]),
                **lists,
                # the same lists split by direction: a rejected harm is not a win
                "improvements": {k: [h for h in v if h["mean_diff"] > 0] for k, v in lists.items()},
                "harms": {k: [h for h in v if h["mean_diff"] < 0] for k, v in lists.items()},
            }
        )
    return out


def _typical_n(ns: Sequence[int]) -> int:
    counts = Counter(ns)
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]


def _power_rows(
    comparisons: Sequence[Mapping[str, Any]],
    verdicts: Sequence[Mapping[str, Any]],
    alpha: float,
    power: float,
    sesoi: float | None = None,
    primary: str | None = None,
) -> list[dict[str, Any]]:
    out = []
    for v in verdicts:
        members = [
            c
            for c in comparisons
            if (c["benchmark"], c["mode"], c["metric"]) == (v["benchmark"], v["mode"], v["metric"])
            and not c["degenerate"]
        ]
        m = v["family_m"] or 0  # the declared family size
        row: dict[str, Any] = {
            "benchmark": v["benchmark"],
            "mode": v["mode"],
            "metric": v["metric"],
            "family_id": v["family_id"],
            "m": m,
            "alpha": alpha,
            "alpha_corrected": alpha / m if m else None,
            "power": power,
            "n": None,
            "n_values": sorted({c["n"] for c in members}),
            "sd_diff_median": None,
            "sd_diff_pooled": None,
            "mde_sd_single": None,
            "mde_sd_corrected": None,
            "mde_pp_single": None,
            "mde_pp_corrected": None,
            "floor_nonparametric": None,
            "floor_blocks_single": None,
            "floor_blocks_corrected": None,
            "baseline_mean": None,
            "room_below_pp": None,
            "room_above_pp": None,
            "floor_hides_decrease": None,
            "ceiling_hides_increase": None,
            "sesoi_pp": sesoi if v["metric"] == primary else None,
            "seeds_needed": None,
            "note": None,
        }
        if not members:
            row["note"] = "no testable comparison (all degenerate or none)"
            out.append(row)
            continue
        if alpha >= power:  # power at level alpha is at least alpha: no MDE to solve for
            row["note"] = f"no MDE: alpha = {alpha:g} is not below the target power {power:g}"
            out.append(row)
            continue
        n = _typical_n([c["n"] for c in members])
        # pooled SD: root of the mean variance. The median of per-method SDs (each on n − 1 df) is biased
        # low, because the SD is a concave function of the variance; it made the MDE ~8 % optimistic.
        sd = float(np.sqrt(np.mean([c["sd_diff"] ** 2 for c in members])))
        floor = signflip_floor(n)
        row.update(
            n=n,
            sd_diff_median=float(statistics.median(c["sd_diff"] for c in members)),
            sd_diff_pooled=sd,
            mde_sd_single=mde_sd(n, alpha, power),
            mde_pp_single=mde_pp(n, alpha, sd, power),
            mde_sd_corrected=mde_sd(n, alpha / m, power),
            mde_pp_corrected=mde_pp(n, alpha / m, sd, power),
            floor_nonparametric=floor,
            floor_blocks_single=floor > alpha,
            floor_blocks_corrected=floor > alpha / m,
        )
        row.update(_headroom(members, row["mde_pp_corrected"]))
        if sesoi is not None and v["metric"] == primary:
            # seeds for the non-superiority test to rule out Δ with this power after Holm (its first step, α/m,
            # the level every member is sure to be tested at) when there is no effect, at the pooled SD
            row["seeds_needed"] = seeds_needed(sesoi, sd, alpha / m, power)
        if len(row["n_values"]) > 1:
            row["note"] = (
                f"comparisons have different n {row['n_values']}; power uses the most common, n = {n}"
            )
        out.append(row)
    return out


def _headroom(members: Sequence[Mapping[str, Any]], mde_pp_corrected: float) -> dict[str, Any]:
    """How far ce's mean (pp of a 0–100 % metric) sits from the metric's ends, against the corrected MDE.

    A baseline at 0.9 % cannot fall by more than 0.9 pp: when even that whole fall is below the change the
    family detects at 80 % power after correction, a null on that side is weak evidence (a floor); the same
    above for a ceiling.  Not flagged when some comparison of the family did move that way after Holm: the
    data then show that such a change could be seen.  Direction-neutral: which side is a harm is the
    metric's ``higher_is_better``."""
    base = float(statistics.median(c["baseline_mean"] for c in members))
    below, above = base, 100.0 - base
    fell = any(c["reject_holm"] and c["mean_diff"] < 0 for c in members)
    rose = any(c["reject_holm"] and c["mean_diff"] > 0 for c in members)
    return {
        "baseline_mean": base,
        "room_below_pp": below,
        "room_above_pp": above,
        "floor_hides_decrease": below < mde_pp_corrected and not fell,
        "ceiling_hides_increase": above < mde_pp_corrected and not rose,
    }


# --------------------------------------------------------------------------- per-item analyses


def _item_vector(preds: Sequence[Mapping[str, Any]] | None, field_name: str) -> dict[Hashable, bool] | None:
    if preds is None:
        return None
    out: dict[Hashable, bool] = {}
    for p in preds:
        if not isinstance(p, Mapping):
            continue
        item, value = p.get("item"), p.get(field_name)
        if _is_seed(item) and isinstance(value, bool):
            out[item] = value
    return out


def _items_entry(
    idx: CellIndex,
    key: Key,
    method: str,
    metric: str,
    seeds: Sequence[Hashable],
    load: Callable[[Mapping[str, Any]], list[dict[str, Any]] | None],
    rng: np.random.Generator,
    bootstrap_reps: int,
    fit_logit: bool,
) -> dict[str, Any] | None:
    by_method = idx.cells[key]
    field_name = idx.item_field(metric)
    per_seed = []
    diffs: dict[Hashable, dict[Hashable, float]] = {}
    long_rows: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    for seed in seeds:
        mine = _item_vector(load(by_method[method][seed]), field_name)
        base = _item_vector(load(by_method[BASELINE][seed]), field_name)
        if mine is None or base is None:
            continue
        items = _sorted_seeds(set(mine) & set(base))
        a = np.array([mine[i] for i in items], dtype=bool)
        b = np.array([base[i] for i in items], dtype=bool)
        mc = mcnemar_exact(a, b)
        per_seed.append(
            {
                "seed": seed,
                **mc.as_dict(),
                "log_odds_ratio": mcnemar_log_odds(mc.n_method_only, mc.n_baseline_only),
            }
        )
        if items:
            diffs[seed] = {i: float(x) - float(y) for i, x, y in zip(items, a, b, strict=True)}
            ids = np.array([str(i) for i in items])
            long_rows.append(
                (
                    np.r_[a, b],
                    np.r_[np.ones_like(a), np.zeros_like(b)],
                    np.r_[ids, ids],
                    np.full(2 * ids.size, str(seed)),
                )
            )
    if not per_seed:
        return None
    # the bootstrap redraws the same items in every seed, so it uses the items every seed has
    shared = _sorted_seeds(set.intersection(*(set(d) for d in diffs.values()))) if diffs else []
    matrix = [np.array([d[i] for i in shared], dtype=float) for d in diffs.values()]
    boot = hierarchical_bootstrap(matrix if shared else [], rng, reps=bootstrap_reps).as_dict()
    dropped = max((len(d) for d in diffs.values()), default=0) - len(shared)
    if dropped > 0 and boot["note"] is not None:
        boot["note"] += f"; {dropped} item(s) not shared by every seed left out of the bootstrap"
    entry: dict[str, Any] = {
        "benchmark": key[0],
        "mode": key[1],
        "method": method,
        "metric": metric,
        "n_seeds": len(per_seed),
        "mcnemar": per_seed,
        # the item-level result: per-seed McNemar log-odds ratios, t-test across seeds (df = n − 1)
        "item_level": seed_level_log_odds(
            [s["n_method_only"] for s in per_seed], [s["n_baseline_only"] for s in per_seed]
        ).as_dict(),
        "bootstrap": boot,
        "conditional_logit": None,
    }
    if fit_logit and long_rows:
        y, x, item, seed = (np.concatenate(parts) for parts in zip(*long_rows, strict=True))
        entry["conditional_logit"] = {
            "label": CONDITIONAL_LOGIT_LABEL,
            **conditional_logit(y, x, item, seed).as_dict(),
        }
    return entry


def _comparison_rng(seed: int, comp: Mapping[str, Any]) -> np.random.Generator:
    """A generator keyed by (benchmark, mode, metric, method), so adding a method moves no other interval."""
    name = "\x1f".join(str(comp[k]) for k in ("benchmark", "mode", "metric", "method"))
    words = np.frombuffer(hashlib.sha256(name.encode("utf-8")).digest()[:16], dtype=np.uint32)
    return np.random.default_rng(np.random.SeedSequence([seed, *words.tolist()]))


def _cached_loader(
    loader: PredictionsLoader, warnings: list[str]
) -> Callable[[Mapping[str, Any]], list[dict[str, Any]] | None]:
    cache: dict[str, list[dict[str, Any]] | None] = {}

    def load(row: Mapping[str, Any]) -> list[dict[str, Any]] | None:
        rel = row.get("predictions_file")
        if not isinstance(rel, str) or not rel:
            return None
        if rel not in cache:
            cache[rel] = loader(rel)
            if cache[rel] is None:
                warnings.append(
                    f"predictions file {rel!r} is missing or unreadable; its cell has no item analysis"
                )
        return cache[rel]

    return load


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


# --------------------------------------------------------------------------- entry point


def json_safe(obj: Any) -> Any:
    """Recursively turn numpy scalars and arrays into Python values and non-finite floats into None."""
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [json_safe(v) for v in obj.tolist()]
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    return obj


def build_summary(
    rows: Sequence[Mapping[str, Any]],
    alpha: float = 0.10,
    family: str = "per-benchmark",
    predictions_loader: PredictionsLoader | None = None,
    *,
    declared: Iterable[Mapping[str, Any]] | None = None,
    power: float = 0.80,
    seed: int = 0,
    bootstrap_reps: int = 2_000,
    conditional_logit_metrics: Sequence[str] | None = None,
    calibration: Mapping[str, Any] | None = None,
    sesoi_pp: float = 2.0,
    min_shift_sd: float = 0.5,
    sesoi_declared: float | None = None,
) -> dict[str, Any]:
    """The summary.json structure of DESIGN.md, plus the secondary analyses.

    ``rows``: parsed results.jsonl rows. ``alpha``: the level for every ``reject_*``. ``family``:
    ``"per-benchmark"`` (one benchmark × mode × metric) or ``"all"`` (one metric × mode across
    benchmarks). ``predictions_loader``: maps a row's ``predictions_file`` to its parsed per-item rows
    (or None); without it the per-item section is empty. ``declared``: the cells the grid defines (mappings
    with ``benchmark``, ``method``, ``mode``, e.g. grid.json's entries); every comparison they imply is in
    its family's m even without data (default: only the comparisons the rows have).
    ``sesoi_pp``: the smallest effect of interest of the primary metric (pp) the reward half decides against;
    ``sesoi_declared``: the value declared before the run (grid.json), when known, so a different ``sesoi_pp``
    is flagged (``sesoi_overridden``). ``min_shift_sd``: how many pooled seed SDs a target key must move to
    count (stats/decisions.py).
    ``calibration``: the parsed calibration.json of the audit's λ calibration stage (None: none ran), whose
    per-pair dose-response curves go into ``calibration`` (:func:`stats.curves.calibration_section`).
    ``conditional_logit_metrics``: the metrics
    whose items get the conditional logit (None: the primary metric; ``()``: none; ~2 s per fit on 20,000 rows).
    The metrics compared are those the rows declare (``metric_specs``; NL-RX's for older rows). ``seed`` fixes
    every bootstrap (the conditional logit needs no randomness), so the output is a deterministic
    function of the inputs.

    Top-level keys: ``alpha``, ``family``, ``comparisons`` (the DESIGN.md contract, plus ``mode``,
    ``aux_family``, ``seeds``, ``note``, ``family_id``, ``family_m``, ``n_test``, ``item_step_pp``,
    ``sd_below_item_step`` and a few descriptive extras), ``family_definition``, ``family_fwer``,
    ``families``, ``metric_verdicts`` (per metric: which methods pass; each list also split into
    ``improvements`` and ``harms``), ``verdicts`` (per auxiliary: representation vs reward),
    ``manipulation``, ``power``, ``items`` (``item_level``: the seed-level McNemar log-odds t-test),
    ``coupling`` (one point per method, with ``p_bh``), ``coupling_label``, ``grad_cosine``, ``failed``,
    ``warnings``, ``counts``, ``settings``.
    """
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {list(FAMILIES)}, got {family!r}")
    if not (isinstance(alpha, int | float) and 0.0 < alpha < 1.0):
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    alpha = float(alpha)
    if not (isinstance(sesoi_pp, int | float) and not isinstance(sesoi_pp, bool) and sesoi_pp > 0):
        raise ValueError(f"sesoi_pp must be a positive number of percentage points, got {sesoi_pp!r}")
    if not (isinstance(min_shift_sd, int | float) and not isinstance(min_shift_sd, bool) and min_shift_sd >= 0):
        raise ValueError(f"min_shift_sd must be a number ≥ 0 (seed SDs), got {min_shift_sd!r}")
    idx = index_rows(rows)
    if conditional_logit_metrics is None:
        conditional_logit_metrics = (idx.primary,)

    grid = declared_comparisons(idx, declared)
    comparisons = [
        {"task": idx.task, **_comparison(idx, key, method, metric)}
        for key, methods in grid.items()
        for metric in idx.metrics
        for method in methods
    ]
    for key in idx.groups():
        if BASELINE not in idx.cells[key]:
            idx.warnings.append(f"{key[0]}/{key[1]} has no {BASELINE} cells: nothing to pair against")
    families = _apply_families(comparisons, family, alpha, idx)
    _add_decision_tests(comparisons, idx.primary, alpha, float(sesoi_pp))
    verdicts = _verdict_rows(comparisons, idx)
    power_rows = _power_rows(comparisons, verdicts, alpha, power, float(sesoi_pp), idx.primary)

    items: list[dict[str, Any]] = []
    items_note = "no predictions loader: per-item analyses skipped"
    # one cache for every reader of the predictions files (items, answers changed): each file is read once
    load = _cached_loader(predictions_loader, idx.warnings) if predictions_loader is not None else None
    if load is not None:
        for comp in comparisons:
            if comp["n"] < 1:
                continue
            rng = _comparison_rng(seed, comp)
            entry = _items_entry(
                idx,
                (comp["benchmark"], comp["mode"]),
                comp["method"],
                comp["metric"],
                comp["seeds"],
                load,
                rng,
                bootstrap_reps,
                comp["metric"] in conditional_logit_metrics,
            )
            if entry is not None:
                items.append(entry)
        items_note = None if items else "no per-item predictions found for any paired cell"

    summary: dict[str, Any] = {
        "alpha": alpha,
        "family": family,
        "sesoi_pp": float(sesoi_pp),
        "sesoi_declared_pp": sesoi_declared,
        "sesoi_overridden": sesoi_declared is not None and float(sesoi_declared) != float(sesoi_pp),
        "min_shift_sd": float(min_shift_sd),
        "task": idx.task,
        "metrics": [m.as_dict() for m in idx.metric_specs],  # what was compared, primary first
        "comparisons": comparisons,
        "family_definition": _family_definition(family, alpha, families),
        "family_fwer": _family_fwer(family, alpha, families),
        "families": families,
        "metric_verdicts": verdicts,
        "power": power_rows,
        "items": items,
        "items_note": items_note,
        "coupling": _coupling_rows(idx, alpha),
        "coupling_label": COUPLING_LABEL,
        "grad_cosine": _grad_cosine_rows(idx),
        "failed": idx.failed,
        "warnings": list(dict.fromkeys(idx.warnings)),
        "counts": {
            "rows": idx.n_rows,
            "done": idx.n_done,
            "failed": len(idx.failed),
            "benchmarks": sorted({k[0] for k in idx.groups()}),
            "modes": sorted({k[1] for k in idx.groups()}),
            "methods": sorted({m for k in idx.groups() for m in idx.methods(k)}),
            "seeds": idx.seeds(),
        },
        "settings": {
            "power": power,
            "seed": seed,
            "bootstrap_reps": bootstrap_reps,
            "conditional_logit_metrics": list(conditional_logit_metrics),
            "conditional_logit_label": CONDITIONAL_LOGIT_LABEL,
            "declared_from_grid": declared is not None,
        },
    }
    summary["calibration"] = calibration_section(calibration, rows)
    changed = _answers_changed(idx, load) if load is not None else None
    summary.update(
        _manipulation_section(idx, comparisons, alpha, grid, changed, float(sesoi_pp), float(min_shift_sd), power_rows)
    )
    summary["family_fwer_all"] = _fwer_all(alpha, families, summary["manipulation"], idx.primary)
    read_curves(summary["calibration"], summary["manipulation"], summary["verdicts"])
    return json_safe(summary)


def _answers_changed(
    idx: CellIndex, load: Callable[[Mapping[str, Any]], list[dict[str, Any]] | None]
) -> dict[tuple[str, str, str], list[int]]:
    """Per (benchmark, mode, method ≠ ce): for each seed paired with ce (both predictions files readable), the
    number of shared items whose decoded answer (``pred``) differs from ce's. EM can be equal while answers
    change (gains and losses cancel); only zero changes says the auxiliary did not act on the outputs."""
    out: dict[tuple[str, str, str], list[int]] = {}
    for key in idx.groups():
        by_method = idx.cells[key]
        base = by_method.get(BASELINE, {})
        for method in idx.methods(key):
            counts = []
            for seed in _sorted_seeds(set(by_method[method]) & set(base)):
                mine, ref = load(by_method[method][seed]), load(base[seed])
                if mine is None or ref is None:
                    continue
                ref_pred = {r.get("item"): r.get("pred") for r in ref}
                counts.append(sum(1 for r in mine if r.get("item") in ref_pred and r.get("pred") != ref_pred[r["item"]]))
            if counts:
                out[(key[0], key[1], method)] = counts
    return out


def _manipulation_section(
    idx: CellIndex,
    comparisons: list[dict[str, Any]],
    alpha: float,
    grid: Mapping[tuple[str, str], Any],
    answers_changed: Mapping[tuple[str, str, str], list[int]] | None = None,
    sesoi: float = 2.0,
    min_shift_sd: float = 0.5,
    power_rows: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """summary.json's ``manipulation`` and per-auxiliary ``verdicts`` (DESIGN.md; stats/manipulation.py);
    ``grid``: the declared methods per (benchmark, mode), so each manipulation family's m is the declared one."""
    from .manipulation import manipulation_checks, verdicts

    manipulation = manipulation_checks(idx.cells, alpha, declared=grid)
    return {
        "manipulation": manipulation,
        "verdicts": verdicts(
            idx.cells, manipulation, comparisons, alpha, answers_changed, reward_metric=idx.primary,
            sesoi=sesoi, min_shift_sd=min_shift_sd, power_rows=power_rows,
        ),
    }
