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
for rows written before that key existed, from the objectives registry. ``_Llast``/``_Lmid`` suffixes are
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

from jepa_audit.results import resolve_key

from .multiplicity import holm
from .paired import pair_by_seed, paired_comparison

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
VERDICTS: tuple[str, ...] = (
    "representation_without_reward",
    "representation_and_reward",
    "reward_without_representation",
    "no_effect",
)
Cells = Mapping[tuple[str, str], Mapping[str, Mapping[Hashable, Mapping[str, Any]]]]


def _registry_targets(method: str) -> list[str] | None:
    try:  # rows written before cells recorded target_geometry: ask the registry (imports torch)
        from jepa_audit.objectives import get_objective_class

        return list(get_objective_class(method).spec.target_geometry)
    except (ImportError, KeyError):
        return None


def target_keys(by_seed: Mapping[Hashable, Mapping[str, Any]], method: str) -> tuple[list[str], str | None]:
    """(declared target templates of ``method``, note). The rows' ``target_geometry`` (the most common list
    when rows disagree), else the registry's; a note says where they came from when not from the rows."""
    lists = [tuple(r["target_geometry"]) for r in by_seed.values() if isinstance(r.get("target_geometry"), list)]
    if lists:
        return list(Counter(lists).most_common(1)[0][0]), None
    reg = _registry_targets(method)
    if reg is None:
        return [], f"{method}: no target_geometry in its rows and not in the objectives registry"
    return reg, "target keys from the objectives registry (rows predate target_geometry)"


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
    cells: Cells, alpha: float, declared: Mapping[tuple[str, str], Iterable[str]] | None = None
) -> list[dict[str, Any]]:
    """One entry per (benchmark, mode, method ≠ ce, declared target key); ``cells[(bench, mode)][method][seed]``
    is a finished row (``stats.summary.CellIndex.cells``). ``declared``: the methods the grid defines per
    (benchmark, mode); a declared method without finished rows still gets its entries (n = 0, from the
    registry's targets), so the family size m is the declared one whatever the data do.

    Keys: ``benchmark, mode, method, target`` (the declared template), ``key`` (resolved), ``n, seeds,
    method_mean, baseline_mean, mean_diff, sd_diff, ci95_low, ci95_high, t, p_t, p_holm, reject_holm,
    degenerate, note, family_id, family_m`` (m: every entry of the benchmark and mode), and the size of the
    shift against seed noise: ``baseline_sd`` (SD of the key over the paired ce seeds, n − 1) and
    ``shift_in_seed_sds`` (mean_diff / baseline_sd; None when undefined). Paired deterministic runs make a
    shift far smaller than what a change of seed does to the same key detectable at n = 3; this number says
    how large it is, the test only that it is there.
    """
    out: list[dict[str, Any]] = []
    declared = declared or {}
    for bench, mode in sorted(set(cells) | set(declared)):
        by_method = cells.get((bench, mode), {})
        base = by_method.get(BASELINE, {})
        family: list[dict[str, Any]] = []
        methods = set(by_method) | set(declared.get((bench, mode), ()))
        for method in sorted(m for m in methods if m != BASELINE):
            mine = by_method.get(method, {})
            templates, src_note = target_keys(mine, method)
            for template in templates:
                mvals, key_m = _value_by_seed(mine, template)
                bvals, key_b = _value_by_seed(base, template)
                seeds, a, b = pair_by_seed(mvals, bvals)
                res = paired_comparison(a - b)
                base_sd = float(np.std(b, ddof=1)) if b.size >= 2 else None
                shift = (
                    res.mean_diff / base_sd
                    if base_sd and res.mean_diff is not None and math.isfinite(res.mean_diff)
                    else None
                )
                notes = [n for n in (src_note, res.note) if n]
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
                        "n": res.n,
                        "seeds": seeds,
                        "method_mean": float(a.mean()) if a.size else None,
                        "baseline_mean": float(b.mean()) if b.size else None,
                        "mean_diff": res.mean_diff,
                        "sd_diff": res.sd_diff,
                        "ci95_low": res.ci95_low,
                        "ci95_high": res.ci95_high,
                        "t": res.t,
                        "p_t": res.p_t,
                        "p_holm": None,
                        "reject_holm": False,
                        "degenerate": res.degenerate,
                        "baseline_sd": base_sd,
                        "shift_in_seed_sds": shift,
                        "note": "; ".join(notes) or None,
                        "family_id": f"manipulation / {bench} / {mode}",
                        "family_m": None,
                    }
                )
        # Holm over the declared family: degenerate entries enter as p = 1 (they count in m, never reject)
        if family:
            p = np.array([1.0 if e["p_t"] is None else e["p_t"] for e in family])
            for e, adj in zip(family, holm(p), strict=True):
                e["family_m"] = len(family)
                if e["p_t"] is not None:
                    e["p_holm"] = float(adj)
                    e["reject_holm"] = bool(adj <= alpha)
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
) -> list[dict[str, Any]]:
    """One verdict per (benchmark, mode, method ≠ ce), in the order of ``cells``.

    The reward half is the ``reward_metric`` comparison (the task's primary metric; "EM" below).

    ``verdict``: ``representation_without_reward`` (a target key moved after Holm, EM did not),
    ``representation_and_reward``, ``reward_without_representation``, ``no_effect`` (neither: an
    uninformative null unless the dose shows the auxiliary pushed). Also ``representation_moved``,
    ``reward_moved``, ``em_direction`` (``improvement``/``harm``/None), ``targets`` (per key: ``key, mean_diff,
    ci95_low, ci95_high, p_holm, moved``), ``em`` (``n, mean_diff`` pp, CI, ``p_holm``, ``identical_to_ce``: every
    paired seed's EM equal to ce's; ``answers_changed``: per paired seed, the items whose decoded answer differs
    from ce's, None without predictions files; ``answers_identical``: all of them 0, i.e. not one decoded answer
    changed), ``weight`` and ``dose`` (medians over the method's rows of λ and of the
    run's median λ·‖∇aux‖/‖∇CE‖), ``weight_source`` (calibrated / preset / registry), ``calibration_smallest``
    (the validation grid picked its smallest λ) and a ``note``.
    """
    man: dict[tuple[str, str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for e in manipulation:
        man[(e["benchmark"], e["mode"], e["method"])].append(e)
    em = {
        (c["benchmark"], c["mode"], c["method"]): c for c in comparisons if c.get("metric") == reward_metric
    }
    out = []
    for bench, mode in sorted(cells):
        by_method = cells[(bench, mode)]
        for method in sorted(m for m in by_method if m != BASELINE):
            rows = list(by_method[method].values())
            entries = man.get((bench, mode, method), [])
            c = em.get((bench, mode, method), {})
            rep = any(e["reject_holm"] for e in entries)
            p_em = c.get("p_holm")
            rew = p_em is not None and p_em <= alpha
            diff = c.get("mean_diff")
            identical = bool(c.get("n")) and diff == 0.0 and c.get("sd_diff") in (0.0, None)
            changed = (answers_changed or {}).get((bench, mode, method))
            changed = list(changed) if changed else None
            same_answers = changed is not None and not any(changed)
            verdict = (
                ("representation_and_reward" if rew else "representation_without_reward")
                if rep
                else ("reward_without_representation" if rew else "no_effect")
            )
            dose = _median([(r.get("dose") or {}).get("median") for r in rows])
            notes = []
            if not entries:
                notes.append("no target geometry declared: the representation half is untested")
            small = [
                e["key"] for e in entries
                if e["reject_holm"] and e.get("shift_in_seed_sds") is not None and abs(e["shift_in_seed_sds"]) < 1
            ]  # fmt: skip
            if rep and len(small) == sum(1 for e in entries if e["reject_holm"]):
                notes.append(
                    f"the target moved by less than one ce seed SD ({', '.join(small)}): consistent across the "
                    "paired seeds, small against seed noise"
                )
            if verdict == "no_effect":
                notes.append(
                    "uninformative null: neither the target geometry nor EM moved"
                    + (f" (median dose {dose:.3g})" if dose is not None else " (dose not recorded)")
                )
            smallest = any(r.get("calibration_smallest") for r in rows)
            if identical or same_answers:
                notes.append(
                    ("not one decoded answer differs from ce's on any paired seed" if same_answers else
                     "EM identical to ce on every paired seed")
                    + (f", although {sum(changed)} decoded answers changed (gains and losses cancel)"
                       if changed and any(changed) else "")
                    + (": the validation grid picked its smallest λ" if smallest else "")
                )
            out.append(
                {
                    "benchmark": bench,
                    "mode": mode,
                    "method": method,
                    "verdict": verdict,
                    "representation_moved": rep,
                    "reward_moved": rew,
                    "em_direction": (None if not rew or diff is None else "improvement" if diff > 0 else "harm"),
                    "targets": [
                        {
                            "key": e["key"],
                            "mean_diff": e["mean_diff"],
                            "ci95_low": e["ci95_low"],
                            "ci95_high": e["ci95_high"],
                            "p_holm": e["p_holm"],
                            "moved": e["reject_holm"],
                            "shift_in_seed_sds": e.get("shift_in_seed_sds"),
                        }
                        for e in entries
                    ],
                    "em": {
                        "n": c.get("n"),
                        "mean_diff": diff,
                        "ci95_low": c.get("ci95_low"),
                        "ci95_high": c.get("ci95_high"),
                        "p_holm": p_em,
                        "identical_to_ce": identical,
                        "answers_changed": changed,
                        "answers_identical": same_answers,
                    },
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


def headline(
    verdict_rows: Sequence[Mapping[str, Any]], alpha: float, power_rows: Sequence[Mapping[str, Any]] = ()
) -> str:
    """One paragraph per (benchmark, mode), joined: how many auxiliaries moved their representation and how
    many moved EM after Holm, in which direction; and, from ``power_rows`` (summary.json's ``power``), whether
    ce's EM sits so near 0 % or 100 % that a fall or rise was unlikely to show (:func:`headroom_sentence`)."""
    room = {(p["benchmark"], p["mode"]): headroom_sentence(p) for p in power_rows}
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for v in verdict_rows:
        groups[(v["benchmark"], v["mode"])].append(v)
    if not groups:
        return "No auxiliary was compared with ce: there is no verdict to state."
    parts = []
    for (bench, mode), vs in sorted(groups.items()):
        n = len(vs)
        rep = sum(v["representation_moved"] for v in vs)
        up = [v["method"] for v in vs if v["reward_moved"] and v["em_direction"] == "improvement"]
        down = [v["method"] for v in vs if v["reward_moved"] and v["em_direction"] == "harm"]
        rwr = sum(v["verdict"] == "representation_without_reward" for v in vs)
        null = [v["method"] for v in vs if v["verdict"] == "no_effect"]
        same = [v["method"] for v in vs if v["verdict"] != "no_effect" and _no_answer_changed(v)]
        cancel = [v["method"] for v in vs if v["verdict"] != "no_effect" and v["em"]["identical_to_ce"]
                  and not _no_answer_changed(v)]
        em_words = (
            "none moved exact match"
            if not up and not down
            else ", ".join(
                s
                for s in (
                    f"{len(up)} raised exact match ({', '.join(up)})" if up else "",
                    f"{len(down)} lowered {'it' if up else 'exact match'} ({', '.join(down)})" if down else "",
                )
                if s
            )
        )
        parts.append(
            f"On {bench} ({mode}), {rep} of {n} auxiliaries moved the geometry they target (Holm, α = {alpha:g}); "
            f"{em_words} after Holm correction. {rwr} show representation without reward"
            + (
                f"; {len(null)} moved neither, an uninformative null, not evidence of no effect ({', '.join(null)})."
                if null
                else "."
            )
            + (
                f" {len(same)} changed no decoded answer at all (for reward an uninformative null, read the dose; "
                f"{', '.join(same)})."
                if same
                else ""
            )
            + (
                f" {len(cancel)} had EM identical to ce on every seed although decoded answers changed (gains and "
                f"losses cancel: the auxiliary acted; {', '.join(cancel)})."
                if cancel
                else ""
            )
            + (f" {room[(bench, mode)]}" if room.get((bench, mode)) else "")
        )
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


def verdict_table(
    verdict_rows: Sequence[Mapping[str, Any]], power_rows: Sequence[Mapping[str, Any]] = ()
) -> list[dict[str, str]]:
    """The report's first table, one row per verdict, preformatted: ``benchmark, mode, method, weight
    (λ chosen, with where it came from), dose, target (key Δ [CI] per target), em (Δ pp [CI]), verdict``.
    ``power_rows`` (summary.json's ``power`` for the primary metric) qualify a reward null where ce's EM sits
    at a floor or ceiling (:func:`headroom_sentence`)."""
    edge = {(p["benchmark"], p["mode"]): p for p in power_rows}
    rows = []
    for v in verdict_rows:
        targets = "; ".join(
            f"{t['key']} {_ci(t['mean_diff'], t['ci95_low'], t['ci95_high'])}"
            + (f" ({t['shift_in_seed_sds']:+.2g} seed SD)" if t.get("shift_in_seed_sds") is not None else "")
            + (" *" if t["moved"] else "")
            for t in v["targets"]
        )
        e = v["em"]
        verdict = v["verdict"].replace("_", " ")
        if v["verdict"] == "no_effect":
            verdict = f"no effect: uninformative null (dose {_f(v['dose'])})"
        elif _no_answer_changed(v):
            # the representation moved but not one decoded answer changed: the reward half is uninformative
            verdict += (
                "; reward half an uninformative null ("
                + ("no decoded answer changed" if e.get("answers_changed") is not None else "EM identical to ce")
                + (" at the grid's smallest λ" if v.get("calibration_smallest") else "")
                + f", dose {_f(v['dose'])})"
            )
        elif e["identical_to_ce"] and e.get("answers_changed"):
            verdict += f"; EM identical to ce although {sum(e['answers_changed'])} answers changed"
        p = edge.get((v["benchmark"], v["mode"]), {})
        if not v["reward_moved"] and p.get("floor_hides_decrease"):
            verdict += f"; ce's EM {p['baseline_mean']:.2g} % is a floor: a fall was unlikely to show"
        if not v["reward_moved"] and p.get("ceiling_hides_increase"):
            verdict += f"; ce's EM {p['baseline_mean']:.3g} % is a ceiling: a rise was unlikely to show"
        src = _LAMBDA_WORDS.get(v.get("weight_source") or "", "")
        if v.get("calibration_smallest"):
            src += ", the grid's smallest"
        rows.append(
            {
                "benchmark": v["benchmark"],
                "mode": v["mode"],
                "method": v["method"],
                "weight": _f(v["weight"]) + (f" ({src})" if src else ""),
                "dose": _f(v["dose"]),
                "target": targets or "none declared",
                "em": _ci(e["mean_diff"], e["ci95_low"], e["ci95_high"])
                + (" *" if v["reward_moved"] else "")
                + (" (identical to ce)" if e["identical_to_ce"] else ""),
                "verdict": verdict,
            }
        )
    return rows
