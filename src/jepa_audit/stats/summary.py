"""From results rows to the audit's answer: the summary.json structure of DESIGN.md.

This is the glue between the row format (results.jsonl, already parsed) and the pure statistics in
the sibling modules. It reads nothing itself: per-item predictions come through an optional
``predictions_loader(relative_path) -> list[dict] | None`` supplied by the caller.

Conventions: differences are method − ce in percentage points (100 × the metric); comparisons are
made within one (benchmark, mode); pairing is by seed over the seeds both arms have with a finite
value of the metric. The output is JSON-safe: no NaN or infinity anywhere, ``null`` instead.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .coupling import spearman
from .items import conditional_logit, hierarchical_bootstrap, mcnemar_exact, probability_of_improvement
from .multiplicity import adjust
from .paired import pair_by_seed, paired_comparison, signflip_floor
from .power import mde_pp, mde_sd

__all__ = [
    "BASELINE",
    "METRICS",
    "FAMILIES",
    "CellIndex",
    "index_rows",
    "coupling_points",
    "build_summary",
    "json_safe",
]

BASELINE = "ce"
METRICS: tuple[str, ...] = ("exact_match", "dfa_accuracy")
#: Per-item field in a predictions file that carries each metric's correctness.
ITEM_FIELDS: dict[str, str] = {"exact_match": "exact", "dfa_accuracy": "dfa"}
FAMILIES: tuple[str, ...] = ("per-benchmark", "all")
DEFAULT_MODE = "lora"
UNSPECIFIED_FAMILY = "unspecified"
CORRECTIONS: tuple[str, ...] = ("bonferroni", "holm", "bh")

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
    failed: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    n_rows: int = 0
    n_done: int = 0

    def groups(self) -> list[Key]:
        return sorted(self.cells)

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


def _comparison(idx: CellIndex, key: Key, method: str, metric: str) -> dict[str, Any]:
    bench, mode = key
    where = f"{bench}/{mode}/{method}"
    by_method = idx.cells[key]
    method_scores = _metric_by_seed(by_method[method], metric, where, idx.warnings)
    base_scores = _metric_by_seed(
        by_method.get(BASELINE, {}), metric, f"{bench}/{mode}/{BASELINE}", idx.warnings
    )
    seeds, a, b = pair_by_seed(method_scores, base_scores)
    # Rounded to 1e-9 pp: differences of metric fractions that are equal in exact arithmetic (ties, zero
    # variance) are then equal in floating point too, as the rank and sign-flip tests need.
    res = paired_comparison(np.round(100.0 * (a - b), 9))
    note = res.note
    if BASELINE not in by_method:
        note = f"no {BASELINE} baseline cells on {bench}/{mode}; " + (note or "")
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
        "prob_improvement": probability_of_improvement(a, b),
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


def _apply_families(comparisons: list[dict[str, Any]], family: str, alpha: float) -> list[dict[str, Any]]:
    grouped: dict[tuple[str | None, str, str], list[dict[str, Any]]] = defaultdict(list)
    for comp in comparisons:
        grouped[_family_of(comp, family)].append(comp)
    families = []
    for fkey in sorted(grouped, key=lambda k: (k[0] or "", k[1], METRICS.index(k[2]))):
        members = grouped[fkey]
        tested = [c for c in members if not c["degenerate"]]
        m = len(tested)
        fid = _family_id(fkey)
        if m:
            p = np.array([c["p_t"] for c in tested])
            for name in CORRECTIONS:
                for comp, adj in zip(tested, adjust(p, name), strict=True):
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
                "benchmark": fkey[0],
                "mode": fkey[1],
                "metric": fkey[2],
                "m": m,
                "m_declared": len(members),
                "excluded": [
                    {"benchmark": c["benchmark"], "method": c["method"], "note": c["note"]}
                    for c in members
                    if c["degenerate"]
                ],
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
        + (f" ({f['m_declared'] - f['m']} degenerate left out)" if f["m_declared"] != f["m"] else "")
        for f in families
    )
    return (
        f"Family '{family}': the comparisons against {BASELINE} of {scope}. Bonferroni, Holm and "
        f"Benjamini-Hochberg adjust p_t within each family at alpha = {alpha:g}. Degenerate comparisons "
        f"(n < 2 or zero variance) carry no p-value and are left out of their family and of m. "
        f"Families: {listed if listed else 'none'}."
    )


# --------------------------------------------------------------------------- verdicts and power


def _verdict_rows(comparisons: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    grouped: dict[tuple[str, str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for comp in comparisons:
        grouped[(comp["benchmark"], comp["mode"], comp["metric"])].append(comp)
    out = []
    for (bench, mode, metric), members in sorted(
        grouped.items(), key=lambda kv: (kv[0][0], kv[0][1], METRICS.index(kv[0][2]))
    ):

        def passing(
            flag: str, p_key: str, members: Sequence[Mapping[str, Any]] = members
        ) -> list[dict[str, Any]]:
            hits = [c for c in members if c[flag]]
            hits.sort(key=lambda c: (c[p_key], c["method"]))
            return [{"method": c["method"], "mean_diff": c["mean_diff"], "p": c[p_key]} for c in hits]

        out.append(
            {
                "benchmark": bench,
                "mode": mode,
                "metric": metric,
                "family_id": members[0]["family_id"],
                "family_m": members[0]["family_m"],
                "n_comparisons": len(members),
                "n_degenerate": sum(1 for c in members if c["degenerate"]),
                "single": passing("reject_single", "p_t"),
                "bonferroni": passing("reject_bonferroni", "p_bonferroni"),
                "holm": passing("reject_holm", "p_holm"),
                "bh": passing("reject_bh", "p_bh"),
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
) -> list[dict[str, Any]]:
    out = []
    for v in verdicts:
        members = [
            c
            for c in comparisons
            if (c["benchmark"], c["mode"], c["metric"]) == (v["benchmark"], v["mode"], v["metric"])
            and not c["degenerate"]
        ]
        m = v["family_m"] or 0
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
            "mde_sd_single": None,
            "mde_sd_corrected": None,
            "mde_pp_single": None,
            "mde_pp_corrected": None,
            "floor_nonparametric": None,
            "floor_blocks_single": None,
            "floor_blocks_corrected": None,
            "note": None,
        }
        if not members:
            row["note"] = "no testable comparison (all degenerate or none)"
            out.append(row)
            continue
        n = _typical_n([c["n"] for c in members])
        sd = float(statistics.median(c["sd_diff"] for c in members))
        floor = signflip_floor(n)
        row.update(
            n=n,
            sd_diff_median=sd,
            mde_sd_single=mde_sd(n, alpha, power),
            mde_pp_single=mde_pp(n, alpha, sd, power),
            mde_sd_corrected=mde_sd(n, alpha / m, power),
            mde_pp_corrected=mde_pp(n, alpha / m, sd, power),
            floor_nonparametric=floor,
            floor_blocks_single=floor > alpha,
            floor_blocks_corrected=floor > alpha / m,
        )
        if len(row["n_values"]) > 1:
            row["note"] = (
                f"comparisons have different n {row['n_values']}; power uses the most common, n = {n}"
            )
        out.append(row)
    return out


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
    field_name = ITEM_FIELDS[metric]
    per_seed = []
    diffs: list[np.ndarray] = []
    long_rows: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    for seed in seeds:
        mine = _item_vector(load(by_method[method][seed]), field_name)
        base = _item_vector(load(by_method[BASELINE][seed]), field_name)
        if mine is None or base is None:
            continue
        items = _sorted_seeds(set(mine) & set(base))
        a = np.array([mine[i] for i in items], dtype=bool)
        b = np.array([base[i] for i in items], dtype=bool)
        per_seed.append({"seed": seed, **mcnemar_exact(a, b).as_dict()})
        if items:
            diffs.append(a.astype(float) - b.astype(float))
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
    entry: dict[str, Any] = {
        "benchmark": key[0],
        "mode": key[1],
        "method": method,
        "metric": metric,
        "n_seeds": len(per_seed),
        "mcnemar": per_seed,
        "bootstrap": hierarchical_bootstrap(diffs, rng, reps=bootstrap_reps).as_dict(),
        "conditional_logit": None,
    }
    if fit_logit and long_rows:
        y, x, item, seed = (np.concatenate(parts) for parts in zip(*long_rows, strict=True))
        entry["conditional_logit"] = conditional_logit(y, x, item, seed).as_dict()
    return entry


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
    exact match.
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
                _number(row["metrics"].get("exact_match")),
                _number(ref["metrics"].get("exact_match")),
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


def _coupling_rows(idx: CellIndex) -> list[dict[str, Any]]:
    out = []
    for key in idx.groups():
        pts = coupling_points(idx, key)
        for kind, columns in (("geometry", pts["geometry"]), ("grad_cosine", pts["grad_cosine"])):
            for name, x in columns.items():
                res = spearman(x, pts["delta_em"])
                out.append(
                    {
                        "benchmark": key[0],
                        "mode": key[1],
                        "kind": kind,
                        "key": name,
                        "versus": "delta_exact_match_pp",
                        **res.as_dict(),
                    }
                )
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
    power: float = 0.80,
    seed: int = 0,
    bootstrap_reps: int = 2_000,
    conditional_logit_metrics: Sequence[str] = ("exact_match",),
) -> dict[str, Any]:
    """The summary.json structure of DESIGN.md, plus the secondary analyses.

    ``rows``: parsed results.jsonl rows. ``alpha``: the level for every ``reject_*``. ``family``:
    ``"per-benchmark"`` (one benchmark × mode × metric) or ``"all"`` (one metric × mode across
    benchmarks). ``predictions_loader``: maps a row's ``predictions_file`` to its parsed per-item rows
    (or None); without it the per-item section is empty. ``conditional_logit_metrics``: the metrics
    whose items get the conditional logit (``()``: none; ~2 s per fit on 20,000 rows). ``seed`` fixes
    every bootstrap (the conditional logit needs no randomness), so the output is a deterministic
    function of the inputs.

    Top-level keys: ``alpha``, ``family``, ``comparisons`` (the DESIGN.md contract, plus ``mode``,
    ``aux_family``, ``seeds``, ``note``, ``family_id``, ``family_m`` and a few descriptive extras),
    ``family_definition``, ``families``, ``metric_verdicts`` (per metric: which methods pass), ``verdicts`` (per auxiliary), ``manipulation``, ``power``, ``items``, ``coupling``,
    ``grad_cosine``, ``failed``, ``warnings``, ``counts``.
    """
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {list(FAMILIES)}, got {family!r}")
    if not (isinstance(alpha, int | float) and 0.0 < alpha < 1.0):
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    alpha = float(alpha)
    idx = index_rows(rows)

    comparisons = [
        _comparison(idx, key, method, metric)
        for key in idx.groups()
        for metric in METRICS
        for method in idx.methods(key)
    ]
    for key in idx.groups():
        if BASELINE not in idx.cells[key]:
            idx.warnings.append(f"{key[0]}/{key[1]} has no {BASELINE} cells: nothing to pair against")
    families = _apply_families(comparisons, family, alpha)
    verdicts = _verdict_rows(comparisons)

    items: list[dict[str, Any]] = []
    items_note = "no predictions loader: per-item analyses skipped"
    if predictions_loader is not None:
        load = _cached_loader(predictions_loader, idx.warnings)
        root = np.random.SeedSequence(seed)
        for k, comp in enumerate(comparisons):
            if comp["n"] < 1 or BASELINE not in idx.cells[(comp["benchmark"], comp["mode"])]:
                continue
            rng = np.random.default_rng(np.random.SeedSequence(root.entropy, spawn_key=(k,)))
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
        "comparisons": comparisons,
        "family_definition": _family_definition(family, alpha, families),
        "families": families,
        "metric_verdicts": verdicts,
        "power": _power_rows(comparisons, verdicts, alpha, power),
        "items": items,
        "items_note": items_note,
        "coupling": _coupling_rows(idx),
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
        },
    }
    summary.update(_manipulation_section(idx, comparisons, alpha))
    return json_safe(summary)


def _manipulation_section(idx: CellIndex, comparisons: list[dict[str, Any]], alpha: float) -> dict[str, Any]:
    """summary.json's ``manipulation`` and per-auxiliary ``verdicts`` (DESIGN.md; stats/manipulation.py)."""
    from .manipulation import manipulation_checks, verdicts

    manipulation = manipulation_checks(idx.cells, alpha)
    return {"manipulation": manipulation, "verdicts": verdicts(idx.cells, manipulation, comparisons, alpha)}
