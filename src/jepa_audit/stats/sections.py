"""The summary's decision sections: per-metric verdict lists, power and headroom, and the manipulation checks
with the per-auxiliary verdicts (stats/manipulation.py) they feed."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from jepa_audit.results import TargetLookup

from .index import BASELINE, CellIndex, _sorted_seeds
from .manipulation import manipulation_checks, verdicts
from .paired import signflip_floor
from .power import mde_pp, mde_sd, seeds_needed

__all__ = ["VERDICT_LISTS"]

#: The verdict lists, each split into improvements (mean_diff > 0) and harms (mean_diff < 0).
VERDICT_LISTS: tuple[str, ...] = ("single", "bonferroni", "holm", "bh")


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


# --------------------------------------------------------------------------- manipulation and verdicts


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
    target_lookup: TargetLookup | None = None,
    warnings: list[str] | None = None,
) -> dict[str, Any]:
    """summary.json's ``manipulation`` and per-auxiliary ``verdicts`` (DESIGN.md; stats/manipulation.py);
    ``grid``: the declared methods per (benchmark, mode), so each manipulation family's m is the declared one;
    ``target_lookup``/``warnings``: as :func:`stats.manipulation.manipulation_checks` takes them."""
    manipulation = manipulation_checks(idx.cells, alpha, declared=grid, target_lookup=target_lookup, warnings=warnings)
    return {
        "manipulation": manipulation,
        "verdicts": verdicts(
            idx.cells, manipulation, comparisons, alpha, answers_changed, reward_metric=idx.primary,
            sesoi=sesoi, min_shift_sd=min_shift_sd, power_rows=power_rows,
        ),
    }
