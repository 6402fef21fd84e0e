"""Manipulation checks and per-auxiliary verdicts: did the auxiliary move the geometry it targets, and EM?

The audited claim has two halves: an auxiliary **changes the representation** and **does not change the
reward**. A comparison of exact match alone tests the second half; this module tests the first, and
combines the two into one verdict per (benchmark, mode, method ≠ ce) (DESIGN.md, summary.json
``manipulation`` and ``verdicts``).

- :func:`manipulation_checks`: one entry per (benchmark, mode, method ≠ ce, target geometry key): the
  paired statistics of :func:`stats.paired.paired_comparison` on method − ce of the key's value, seed by
  seed, in the key's own units (degrees, hidden units, nats, unitless); Holm over the entries of one
  benchmark and mode (:func:`stats.multiplicity.holm`), with m the declared family size (degenerate entries
  count as p = 1, as DESIGN.md asks).
- :func:`verdicts`: representation moved = some target key's ``p_holm`` ≤ α; reward moved = the primary
  metric's comparison's ``p_holm`` ≤ α (NL-RX, SCAN, GSM8K: exact_match; from ``comparisons``, so the EM
  family is the summary's).
- :func:`headline` and :func:`verdict_table`: the report's first paragraph and first table, as strings.

Target keys come from each row's ``target_geometry`` (written by the cell from its objective's spec), or,
for rows written before that key existed, from the caller's ``target_lookup`` (the torch side passes the
objectives registry's, ``objectives.declared_targets``; this module never imports it). ``_Llast``/``_Lmid`` suffixes are
resolved against the row's geometry keys by :func:`jepa_audit.results.resolve_key` (the torch-free row
schema, which ``objectives.base.resolve_target_key`` uses too).
"""

from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from jepa_audit.results import TargetLookup, resolve_key

from .decisions import (
    REPRESENTATION_STATES,
    REWARD_STATES,
    holm_levels,
    representation_state,
    reward_state,
    t_interval_moments,
    verdict_label,
)
from .multiplicity import holm
from .paired import T_TEST_FIELDS, pair_by_seed, paired_comparison

__all__ = [
    "VERDICTS",
    "resolve_key",
    "target_keys",
    "manipulation_checks",
    "verdicts",
    "headline",
    "verdict_table",
]

BASELINE = "ce"
#: every verdict label (stats/decisions.py: verdict_label over the three representation and four reward states)
VERDICTS: tuple[str, ...] = tuple(
    dict.fromkeys(verdict_label(rep, rew) for rep in REPRESENTATION_STATES for rew in REWARD_STATES)
)
Cells = Mapping[tuple[str, str], Mapping[str, Mapping[Hashable, Mapping[str, Any]]]]


def target_keys(
    by_seed: Mapping[Hashable, Mapping[str, Any]], method: str, lookup: TargetLookup | None = None
) -> tuple[list[str], str | None]:
    """(declared target templates of ``method``, note). The rows' ``target_geometry`` (the most common list
    when rows disagree), else ``lookup(method)``'s (rows written before cells recorded it); a note says where
    they came from when not from the rows, or why there are none."""
    lists = [tuple(r["target_geometry"]) for r in by_seed.values() if isinstance(r.get("target_geometry"), list)]
    if lists:
        return list(Counter(lists).most_common(1)[0][0]), None
    if lookup is None:
        return [], f"{method}: no target_geometry in its rows (and no objectives registry was given to look it up)"
    declared = lookup(method)
    if declared is None:
        return [], f"{method}: no target_geometry in its rows and not in the objectives registry"
    return list(declared[0]), "target keys from the objectives registry (rows predate target_geometry)"


def target_directions(
    by_seed: Mapping[Hashable, Mapping[str, Any]], method: str, lookup: TargetLookup | None = None
) -> tuple[dict[str, str], str | None]:
    """({target template: intended direction}, note). The rows' ``target_direction`` (the most common map),
    else ``lookup(method)``'s; a template neither declares is ``either`` (any significant shift counts), said in
    the note."""
    maps = [tuple(sorted(r["target_direction"].items())) for r in by_seed.values()
            if isinstance(r.get("target_direction"), Mapping)]  # fmt: skip
    if maps:
        return dict(Counter(maps).most_common(1)[0][0]), None
    declared = lookup(method) if lookup is not None else None
    if declared is not None:
        return dict(declared[1]), None
    return {}, f"{method}: no target_direction in its rows or the registry: every target read as 'either'"


def pooled_seed_sd(by_method: Mapping[str, Mapping[Hashable, Mapping[str, Any]]], template: str) -> tuple[float | None, int]:
    """(SD, df) of a geometry key over seeds, pooled within methods over every cell of one benchmark and mode
    (ce included): √(Σ_methods Σ_seeds (x − mean_method)² / Σ_methods (n_method − 1)). ce's own seeds alone give
    df = n − 1 (2 at n = 3: a true 1 SD shift then reads "< 1 SD" 37 % of the time); pooling gives
    df = Σ(n_method − 1). (None, 0) when no method has two finite values."""
    ss, df = 0.0, 0
    for by_seed in by_method.values():
        vals, _ = _value_by_seed(by_seed, template)
        x = np.array(list(vals.values()), dtype=float)
        if x.size >= 2:
            ss += float(((x - x.mean()) ** 2).sum())
            df += x.size - 1
    return (math.sqrt(ss / df) if df else None), df


def _value_by_seed(by_seed: Mapping[Hashable, Mapping[str, Any]], template: str) -> tuple[dict[Hashable, float], str | None]:
    out: dict[Hashable, float] = {}
    resolved: str | None = None
    for seed, row in by_seed.items():
        geo = row.get("geometry")
        if not isinstance(geo, Mapping):
            continue
        key = resolve_key(template, geo)
        if key is None:
            continue
        resolved = resolved or key
        v = geo.get(key)
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
            out[seed] = float(v)
    return out, resolved


def manipulation_checks(
    cells: Cells,
    alpha: float,
    declared: Mapping[tuple[str, str], Iterable[str]] | None = None,
    *,
    target_lookup: TargetLookup | None = None,
    warnings: list[str] | None = None,
) -> list[dict[str, Any]]:
    """One entry per (benchmark, mode, method ≠ ce, declared target key); ``cells[(bench, mode)][method][seed]``
    is a finished row (``stats.index.CellIndex.cells``). ``declared``: the methods the grid defines per
    (benchmark, mode); a declared method without finished rows still gets its entries (n = 0, from
    ``target_lookup``'s targets), so the family size m is the declared one whatever the data do.
    ``target_lookup``: method → its declared (targets, directions) for rows without ``target_geometry`` /
    ``target_direction`` (results.TargetLookup; None: such a method has no entries). ``warnings``: where to
    append one line per method left without targets that way (the reason).

    Keys: ``benchmark, mode, method, target`` (the declared template), ``key`` (resolved), ``n, seeds,
    method_mean, baseline_mean, mean_diff, sd_diff, ci95_low, ci95_high, t, p_t, p_holm, reject_holm,
    degenerate, note, family_id, family_m`` (m: every entry of the benchmark and mode), and the size of the
    shift against seed noise: ``baseline_sd`` (SD of the key over the paired ce seeds, n − 1),
    ``seed_sd_pooled`` and ``seed_sd_df`` (:func:`pooled_seed_sd`: pooled within methods over every cell of the
    benchmark and mode) and ``shift_in_seed_sds`` (mean_diff / seed_sd_pooled; None when undefined). Paired
    deterministic runs make a shift far smaller than what a change of seed does to the same key detectable at
    n = 3; this number says how large it is, the test only that it is there. ``direction``: the objective's
    intended direction for the key (``increase``/``decrease``/``either``). ``ci_holm_low``/``ci_holm_high`` at
    ``ci_holm_level``: the t-interval at the Holm decision's level (:func:`stats.decisions.holm_levels`).
    """
    out: list[dict[str, Any]] = []
    declared = declared or {}
    for bench, mode in sorted(set(cells) | set(declared)):
        by_method = cells.get((bench, mode), {})
        base = by_method.get(BASELINE, {})
        family: list[dict[str, Any]] = []
        methods = set(by_method) | set(declared.get((bench, mode), ()))
        pooled: dict[str, tuple[float | None, int]] = {}
        for method in sorted(m for m in methods if m != BASELINE):
            mine = by_method.get(method, {})
            templates, src_note = target_keys(mine, method, target_lookup)
            directions, dir_note = target_directions(mine, method, target_lookup)
            if not templates and src_note and warnings is not None:
                warnings.append(f"manipulation check on {bench}/{mode}: {src_note}")
            for template in templates:
                mvals, key_m = _value_by_seed(mine, template)
                bvals, key_b = _value_by_seed(base, template)
                seeds, a, b = pair_by_seed(mvals, bvals)
                res = paired_comparison(a - b)
                base_sd = float(np.std(b, ddof=1)) if b.size >= 2 else None
                if template not in pooled:
                    pooled[template] = pooled_seed_sd(by_method, template)
                seed_sd, seed_df = pooled[template]
                shift = (
                    res.mean_diff / seed_sd
                    if seed_sd and res.mean_diff is not None and math.isfinite(res.mean_diff)
                    else None
                )
                notes = [n for n in (src_note, dir_note, res.note) if n]
                if not base:
                    notes.insert(0, f"no {BASELINE} cells on {bench}/{mode}")
                if key_m is None and key_b is None:
                    notes.insert(0, f"no geometry key matches {template!r} in these rows")
                family.append(
                    {
                        "benchmark": bench,
                        "mode": mode,
                        "method": method,
                        "target": template,
                        "key": key_m or key_b or template,
                        "direction": directions.get(template, "either"),
                        "n": res.n,
                        "seeds": seeds,
                        "method_mean": float(a.mean()) if a.size else None,
                        "baseline_mean": float(b.mean()) if b.size else None,
                        **res.as_dict(T_TEST_FIELDS),
                        "p_holm": None,
                        "reject_holm": False,
                        "degenerate": res.degenerate,
                        "baseline_sd": base_sd,
                        "seed_sd_pooled": seed_sd,
                        "seed_sd_df": seed_df,
                        "shift_in_seed_sds": shift,
                        "ci_holm_low": None,
                        "ci_holm_high": None,
                        "ci_holm_level": None,
                        "note": "; ".join(notes) or None,
                        "family_id": f"manipulation / {bench} / {mode}",
                        "family_m": None,
                    }
                )
        # Holm over the declared family: degenerate entries enter as p = 1 (they count in m, never reject)
        if family:
            p = np.array([1.0 if e["p_t"] is None else e["p_t"] for e in family])
            levels = holm_levels([e["p_t"] for e in family], alpha)
            for e, adj, lev in zip(family, holm(p), levels, strict=True):
                e["family_m"] = len(family)
                if e["p_t"] is not None:
                    e["p_holm"] = float(adj)
                    e["reject_holm"] = bool(adj <= alpha)
                    # the interval at the Holm decision's own level: it excludes 0 exactly when Holm rejects
                    e["ci_holm_low"], e["ci_holm_high"] = t_interval_moments(e["n"], e["mean_diff"], e["sd_diff"], 1 - lev)
                    e["ci_holm_level"] = 1 - lev
        out.extend(family)
    return out


def _median(xs: Sequence[float]) -> float | None:
    xs = [x for x in xs if isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)]
    return float(statistics.median(xs)) if xs else None


def _lambda_source(rows: Iterable[Mapping[str, Any]]) -> str | None:
    srcs = Counter(r.get("weight_source") for r in rows if r.get("weight_source"))
    return srcs.most_common(1)[0][0] if srcs else None


def verdicts(
    cells: Cells,
    manipulation: Sequence[Mapping[str, Any]],
    comparisons: Sequence[Mapping[str, Any]],
    alpha: float,
    answers_changed: Mapping[tuple[str, str, str], Sequence[int]] | None = None,
    reward_metric: str = "exact_match",
    *,
    sesoi: float = 2.0,
    min_shift_sd: float = 0.5,
    power_rows: Sequence[Mapping[str, Any]] = (),
) -> list[dict[str, Any]]:
    """One verdict per (benchmark, mode, method ≠ ce), in the order of ``cells`` (DESIGN.md; stats/decisions.py).

    The reward half is the ``reward_metric`` comparison (the task's primary metric; "EM" below), whose
    ``p_holm``, ``p_nonsup_holm`` (against ``sesoi`` pp) and family size decide ``reward`` ∈ {gain, harm,
    no_gain_shown, inconclusive}; the manipulation entries decide ``representation`` ∈ {moved, moved_against,
    not_shown} (a key counts as moved only in its intended direction and by ≥ ``min_shift_sd`` pooled seed
    SDs). ``verdict`` = :func:`stats.decisions.verdict_label` of the two: ``representation_without_reward``
    only for (moved, no_gain_shown).

    Also: ``representation_moved`` (= moved), ``reward_moved`` (gain or harm), ``em_direction``
    (``improvement``/``harm``/None), ``reward_note`` (how a degenerate comparison was decided), ``targets`` (per
    key: ``key, direction, mean_diff, ci95_low, ci95_high, ci_holm_low, ci_holm_high, ci_holm_level, p_holm,
    moved`` (passes Holm in the intended direction by ≥ min_shift_sd), ``against``, ``shift_in_seed_sds``),
    ``em`` (``n, mean_diff`` pp, CI, decision-level CI, ``p_holm``, ``p_nonsup``, ``p_nonsup_holm``, ``upper95``,
    ``upper_holm``, ``identical_to_ce``, ``answers_changed``, ``answers_identical``), ``sesoi_pp``,
    ``mde_pp_corrected`` and ``seeds_needed`` (from ``power_rows``: the family's corrected MDE, and the seeds
    the non-superiority test needs for 80 % power after Holm at the family's pooled SD), ``weight``, ``dose``,
    ``weight_source``, ``calibration_smallest`` and a ``note``.
    """
    man: dict[tuple[str, str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for e in manipulation:
        man[(e["benchmark"], e["mode"], e["method"])].append(e)
    em = {
        (c["benchmark"], c["mode"], c["method"]): c for c in comparisons if c.get("metric") == reward_metric
    }
    power = {(p["benchmark"], p["mode"]): p for p in power_rows if p.get("metric") == reward_metric}
    out = []
    for bench, mode in sorted(cells):
        by_method = cells[(bench, mode)]
        for method in sorted(m for m in by_method if m != BASELINE):
            rows = list(by_method[method].values())
            entries = man.get((bench, mode, method), [])
            c = em.get((bench, mode, method), {})
            representation, moved, against, small = representation_state(entries, alpha, min_shift_sd)
            diff = c.get("mean_diff")
            reward, reward_note = reward_state(
                n=int(c.get("n") or 0), mean_diff=diff, p_holm=c.get("p_holm"), p_nonsup_holm=c.get("p_nonsup_holm"),
                alpha=alpha, m=int(c.get("family_m") or 1), sesoi=sesoi, p_signflip=c.get("p_signflip"),
            )  # fmt: skip
            verdict = verdict_label(representation, reward)
            identical = bool(c.get("n")) and diff == 0.0 and c.get("sd_diff") in (0.0, None)
            changed = (answers_changed or {}).get((bench, mode, method))
            changed = list(changed) if changed else None
            same_answers = changed is not None and not any(changed)
            dose = _median([(r.get("dose") or {}).get("median") for r in rows])
            pw = power.get((bench, mode), {})
            notes = []
            if not entries:
                notes.append("no target geometry declared: the representation half is untested")
            if small:
                notes.append(
                    f"passed Holm by less than {min_shift_sd:g} pooled seed SD "
                    f"({', '.join(small)}): consistent across the paired seeds, too small to count as moved"
                )
            if against:
                notes.append(f"moved against its intended direction: {', '.join(against)}")
            if reward_note:
                notes.append(f"reward: {reward_note}")
            if representation == "not_shown" and reward == "inconclusive":
                notes.append(
                    "uninformative null: neither the target geometry nor EM is shown to move"
                    + (f" (median dose {dose:.3g})" if dose is not None else " (dose not recorded)")
                )
            smallest = any(r.get("calibration_smallest") for r in rows)
            if identical or same_answers:
                notes.append(
                    ("not one decoded answer differs from ce's on any paired seed" if same_answers else
                     "EM identical to ce on every paired seed")
                    + (f", although {sum(changed)} decoded answer{'s' if sum(changed) != 1 else ''} changed (gains and losses cancel)"
                       if changed and any(changed) else "")
                    + (": the validation grid picked its smallest λ" if smallest else "")
                )  # fmt: skip
            out.append(
                {
                    "benchmark": bench,
                    "mode": mode,
                    "method": method,
                    "verdict": verdict,
                    "representation": representation,
                    "reward": reward,
                    "reward_note": reward_note,
                    "representation_moved": representation == "moved",
                    "reward_moved": reward in ("gain", "harm"),
                    "em_direction": {"gain": "improvement", "harm": "harm"}.get(reward),
                    "targets": [
                        {
                            "key": e["key"],
                            "direction": e.get("direction", "either"),
                            "mean_diff": e["mean_diff"],
                            "ci95_low": e["ci95_low"],
                            "ci95_high": e["ci95_high"],
                            "ci_holm_low": e.get("ci_holm_low"),
                            "ci_holm_high": e.get("ci_holm_high"),
                            "ci_holm_level": e.get("ci_holm_level"),
                            "p_holm": e["p_holm"],
                            "moved": e["key"] in moved,
                            "against": e["key"] in against,
                            "reject_holm": e["reject_holm"],
                            "shift_in_seed_sds": e.get("shift_in_seed_sds"),
                        }
                        for e in entries
                    ],
                    "em": {
                        "n": c.get("n"),
                        "mean_diff": diff,
                        "ci95_low": c.get("ci95_low"),
                        "ci95_high": c.get("ci95_high"),
                        "ci_holm_low": c.get("ci_holm_low"),
                        "ci_holm_high": c.get("ci_holm_high"),
                        "ci_holm_level": c.get("ci_holm_level"),
                        "p_holm": c.get("p_holm"),
                        "p_nonsup": c.get("p_nonsup"),
                        "p_nonsup_holm": c.get("p_nonsup_holm"),
                        "upper95": c.get("upper95"),
                        "upper_holm": c.get("upper_holm"),
                        "upper_holm_level": c.get("upper_holm_level"),
                        "family_m": c.get("family_m"),
                        "identical_to_ce": identical,
                        "answers_changed": changed,
                        "answers_identical": same_answers,
                    },
                    "sesoi_pp": sesoi,
                    "mde_pp_corrected": pw.get("mde_pp_corrected"),
                    "seeds_needed": pw.get("seeds_needed"),
                    "weight": _median([r.get("weight") for r in rows]),
                    "weight_source": _lambda_source(rows),
                    "calibration_smallest": smallest,
                    "dose": dose,
                    "note": "; ".join(notes) or None,
                }
            )
    return out


# --------------------------------------------------------------------------- the report's first words


def _f(x: float | None, digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}g}"


def _ci(x: float | None, lo: float | None, hi: float | None) -> str:
    if x is None:
        return "—"

    def g(v: float) -> str:
        return f"{0.0 if abs(v) < 1e-12 else v:+.3g}"  # a mean of exact ties prints as +0, not +7.4e-17

    return g(x) + (f" [{g(lo)}, {g(hi)}]" if lo is not None and hi is not None else " (no CI)")


_LAMBDA_WORDS = {
    "calibrated": "calibrated on validation",
    "preset": "λ fixed by the preset, not calibrated",
    "registry": "registry default, not calibrated",
}


def headroom_sentence(p: Mapping[str, Any]) -> str:
    """What a ``power`` row's floor/ceiling flags mean for a null ("" when neither is set)."""
    out = []
    if p.get("floor_hides_decrease"):
        out.append(f"ce's {p['metric']} is {p['baseline_mean']:.2f} % on {p['benchmark']} ({p['mode']}): even a "
                   f"fall to 0 is below the {p['mde_pp_corrected']:.2f} pp detectable at 80 % power after "
                   "correction (a floor), so a null there is weak evidence against harm.")
    if p.get("ceiling_hides_increase"):
        out.append(f"ce's {p['metric']} is {p['baseline_mean']:.2f} % on {p['benchmark']} ({p['mode']}): even a "
                   f"rise to 100 % is below the {p['mde_pp_corrected']:.2f} pp detectable at 80 % power after "
                   "correction (a ceiling), so a null there is weak evidence against a gain.")
    return " ".join(out)


def _names(vs: Sequence[Mapping[str, Any]]) -> str:
    return f" ({', '.join(v['method'] for v in vs)})" if vs else ""


def headline(
    verdict_rows: Sequence[Mapping[str, Any]],
    alpha: float,
    power_rows: Sequence[Mapping[str, Any]] = (),
    *,
    fwer_text: str | None = None,
    sesoi_note: str | None = None,
) -> str:
    """One paragraph per (benchmark, mode), joined: how many auxiliaries are in each of the three
    representation states and the four reward states, how many show representation without reward (and
    which), uninformative nulls, unchanged outputs; from ``power_rows`` (summary.json's ``power``) whether ce's
    EM sits so near 0 % or 100 % that a fall or rise was unlikely to show (:func:`headroom_sentence`).
    ``fwer_text`` (summary.json's ``family_fwer_all.text``): the family-wise error across every family reported;
    ``sesoi_note``: said when Δ differs from the one declared before the run."""
    room = {(p["benchmark"], p["mode"]): headroom_sentence(p) for p in power_rows}
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for v in verdict_rows:
        groups[(v["benchmark"], v["mode"])].append(v)
    if not groups:
        return "No auxiliary was compared with ce: there is no verdict to state."
    parts = []
    for (bench, mode), vs in sorted(groups.items()):
        n = len(vs)
        by_rep = {k: [v for v in vs if v.get("representation") == k] for k in REPRESENTATION_STATES}
        by_rew = {k: [v for v in vs if v.get("reward") == k] for k in REWARD_STATES}
        sesoi = next((v.get("sesoi_pp") for v in vs if v.get("sesoi_pp") is not None), None)
        delta = f", Δ = {sesoi:g} pp" if sesoi is not None else ""
        rwr = [v for v in vs if v["verdict"] == "representation_without_reward"]
        null = [v["method"] for v in vs if v.get("representation") == "not_shown" and v.get("reward") == "inconclusive"]
        same = [v["method"] for v in vs if v["method"] not in null and _no_answer_changed(v)]
        cancel = [v["method"] for v in vs if v["method"] not in null and v["em"]["identical_to_ce"]
                  and not _no_answer_changed(v)]  # fmt: skip
        parts.append(
            f"On {bench} ({mode}), of {n} auxiliaries: representation (target geometry, Holm, α = {alpha:g}) "
            f"moved as intended for {len(by_rep['moved'])}, against its intended direction for "
            f"{len(by_rep['moved_against'])}{_names(by_rep['moved_against'])}, not shown for {len(by_rep['not_shown'])}; "
            f"reward (exact match, Holm{delta}): gain {len(by_rew['gain'])}{_names(by_rew['gain'])}, "
            f"harm {len(by_rew['harm'])}{_names(by_rew['harm'])}, no gain shown {len(by_rew['no_gain_shown'])}, "
            f"inconclusive {len(by_rew['inconclusive'])}. "
            f"{len(rwr)} show representation without reward{_names(rwr)}"
            + (f"; {len(null)} moved neither, an uninformative null, not evidence of no effect ({', '.join(null)})."
               if null else ".")
            + (f" {len(same)} changed no decoded answer at all (for reward an uninformative null, read the dose; "
               f"{', '.join(same)})." if same else "")
            + (f" {len(cancel)} had EM identical to ce on every seed although decoded answers changed (gains and "
               f"losses cancel: the auxiliary acted; {', '.join(cancel)})." if cancel else "")
            + (f" {room[(bench, mode)]}" if room.get((bench, mode)) else "")
        )  # fmt: skip
    if sesoi_note:
        parts.append(sesoi_note)
    if fwer_text:
        parts.append(fwer_text)
    sources = {v.get("weight_source") for v in verdict_rows} - {None}
    if sources and sources <= {"preset", "registry"}:
        parts.append(
            "λ fixed by the preset, not calibrated." if sources == {"preset"} else
            "λ is not calibrated (registry defaults" + (" or the preset's" if "preset" in sources else "") + ")."
        )
    return " ".join(parts)


def _no_answer_changed(v: Mapping[str, Any]) -> bool:
    """Not one decoded answer differs from ce's (from the predictions files), or, when those were not read,
    EM identical to ce on every paired seed (the closest evidence the rows give)."""
    e = v["em"]
    return bool(e.get("answers_identical")) if e.get("answers_changed") is not None else bool(e["identical_to_ce"])


_REP_TEXT = {"moved": "moved", "moved_against": "moved against its aim", "not_shown": "not shown"}
_REWARD_TEXT = {"gain": "gain", "harm": "harm", "no_gain_shown": "no gain shown", "inconclusive": "inconclusive"}


def _level(x: float | None) -> str:
    """A confidence level as a percentage, with enough digits to tell 1 − α/m apart (99.57 %)."""
    return "—" if x is None else f"{100 * x:.4g} %"


def verdict_table(
    verdict_rows: Sequence[Mapping[str, Any]], power_rows: Sequence[Mapping[str, Any]] = ()
) -> list[dict[str, str]]:
    """The report's first table, one row per verdict, preformatted: ``benchmark, mode, method, weight (λ chosen,
    with where it came from), dose, target`` (per key: Δ [interval at its Holm decision's level], shift in
    pooled seed SDs, intended direction; * moved as intended, ↯ passed Holm against it), ``em`` (Δ pp [interval
    at the Holm decision's level], * gain or harm), ``upper`` (the one-sided bound at the non-superiority
    decision's level, † no gain ≥ Δ shown, and the one-sided 95 % bound), ``representation``, ``reward``,
    ``verdict``, ``power`` (corrected MDE against Δ, seeds needed). ``power_rows`` qualify a reward null where
    ce's EM sits at a floor or ceiling (:func:`headroom_sentence`)."""
    edge = {(p["benchmark"], p["mode"]): p for p in power_rows}
    rows = []
    for v in verdict_rows:
        targets = "; ".join(
            f"{t['key']} {_ci(t['mean_diff'], t.get('ci_holm_low'), t.get('ci_holm_high'))}"
            + (f" at {_level(t.get('ci_holm_level'))}" if t.get("ci_holm_level") is not None else "")
            + (f" ({t['shift_in_seed_sds']:+.2g} seed SD" if t.get("shift_in_seed_sds") is not None else " (")
            + f"{', ' if t.get('shift_in_seed_sds') is not None else ''}aim: {t.get('direction', 'either')})"
            + (" *" if t["moved"] else " ↯" if t.get("against") else
               " (passed Holm, below the minimum shift)" if t.get("reject_holm") else "")
            for t in v["targets"]
        )
        e = v["em"]
        verdict = v["verdict"].replace("_", " ")
        if v.get("representation") == "not_shown" and v.get("reward") == "inconclusive":
            verdict += f": uninformative null (dose {_f(v['dose'])})"
        elif _no_answer_changed(v):
            # not one decoded answer changed: the reward half is an uninformative null
            verdict += (
                "; reward half an uninformative null ("
                + ("no decoded answer changed" if e.get("answers_changed") is not None else "EM identical to ce")
                + (" at the grid's smallest λ" if v.get("calibration_smallest") else "")
                + f", dose {_f(v['dose'])})"
            )
        elif e["identical_to_ce"] and e.get("answers_changed"):
            k = sum(e["answers_changed"])
            verdict += f"; EM identical to ce although {k} answer{'s' if k != 1 else ''} changed"
        if v.get("reward_note"):
            verdict += f" ({v['reward_note']})"
        p = edge.get((v["benchmark"], v["mode"]), {})
        if not v["reward_moved"] and p.get("floor_hides_decrease"):
            verdict += f"; ce's EM {p['baseline_mean']:.2g} % is a floor: a fall was unlikely to show"
        if not v["reward_moved"] and p.get("ceiling_hides_increase"):
            verdict += f"; ce's EM {p['baseline_mean']:.3g} % is a ceiling: a rise was unlikely to show"
        src = _LAMBDA_WORDS.get(v.get("weight_source") or "", "")
        if v.get("calibration_smallest"):
            src += ", the grid's smallest"
        up = e.get("upper_holm")
        upper = "—" if up is None else (
            f"{up:+.3g} at {_level(e.get('upper_holm_level'))}" + (" †" if v.get("reward") == "no_gain_shown" else "")
            + (f" (95 %: {e['upper95']:+.3g})" if e.get("upper95") is not None else "")
        )  # fmt: skip
        mde, need, sesoi = v.get("mde_pp_corrected"), v.get("seeds_needed"), v.get("sesoi_pp")
        power = "—" if sesoi is None else (
            f"MDE {_f(mde)} vs Δ {sesoi:g}; "
            + (f"{need} seeds" if need is not None else "seeds: —")
        )  # fmt: skip
        rows.append(
            {
                "benchmark": v["benchmark"],
                "mode": v["mode"],
                "method": v["method"],
                "weight": _f(v["weight"]) + (f" ({src})" if src else ""),
                "dose": _f(v["dose"]),
                "target": targets or "none declared",
                "em": _ci(e["mean_diff"], e.get("ci_holm_low"), e.get("ci_holm_high"))
                + (f" at {_level(e.get('ci_holm_level'))}" if e.get("ci_holm_level") is not None else "")
                + (" *" if v["reward_moved"] else "")
                + (" (identical to ce)" if e["identical_to_ce"] else ""),
                "upper": upper,
                "representation": _REP_TEXT.get(v.get("representation") or "", "—"),
                "reward": _REWARD_TEXT.get(v.get("reward") or "", "—"),
                "verdict": verdict,
                "power": power,
            }
        )
    return rows
