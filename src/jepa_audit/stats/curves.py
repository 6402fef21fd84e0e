"""The λ calibration's dose-response curves, as summary.json carries them (no file I/O, no torch).

The calibration stage (``audit/calibration.py``) writes ``DIR/calibration.json``: per (benchmark, method, mode)
a grid of doses, each with its validation score (mean over calibration seeds, a proportion), its SE, the
paired SE of its difference from the validation-best dose, and the objective's target geometry keys measured
on the fixed held-out geometry batch. :func:`calibration_section` turns that document into summary.json's
``calibration`` list (scores in percentage points, like every other EM number of the summary), and says
whether the calibration budget (optimizer steps) differs from the test cells'.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["calibration_section", "read_curves"]


def _num(x: object) -> float | None:
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    return float(x) if math.isfinite(float(x)) else None


def _pp(x: object) -> float | None:
    v = _num(x)
    return None if v is None else 100.0 * v


def _test_steps(rows: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], int]:
    """The most common ``train.steps`` of the test rows per (benchmark, mode)."""
    seen: dict[tuple[str, str], Counter[int]] = {}
    for r in rows:
        steps = (r.get("train") or {}).get("steps") if isinstance(r.get("train"), Mapping) else None
        if isinstance(steps, int) and not isinstance(steps, bool) and isinstance(r.get("benchmark"), str):
            seen.setdefault((r["benchmark"], str(r.get("mode") or "lora")), Counter())[steps] += 1
    return {k: c.most_common(1)[0][0] for k, c in seen.items()}


def calibration_section(doc: Mapping[str, Any] | None, rows: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """summary.json's ``calibration``: ``{"rule", "rule_text", "steps", "test_steps", "steps_differ", "steps_note",
    "pairs"}`` (``rule``: the pairs' selection rule, ``best`` or ``one_se``, a list if they differ).

    ``doc``: the parsed calibration.json (None: no calibration stage ran; then ``pairs`` is empty).
    ``rows``: the test rows, for the test cells' ``train.steps``. Each pair: ``benchmark, mode, method,
    picked_dose, best_dose, picked_smallest, picked_largest, rule`` and ``curve``, one point per dose:
    ``dose`` (the grid's target dose), ``dose_median`` (measured), ``weight`` (λ), ``val_pp`` (validation
    score in pp), ``se_pp`` (its SE), ``se_paired_pp`` (paired SE of its difference from the best dose),
    ``target`` ({geometry key: value in the key's units}).
    """
    if not doc:
        return {"rule": None, "rule_text": None, "steps": None, "test_steps": None, "steps_differ": False, "steps_note": None,
                "pairs": []}  # fmt: skip
    steps = doc.get("steps") if isinstance(doc.get("steps"), int) else None
    test = sorted(set(_test_steps(rows).values()))
    differ = bool(steps is not None and test and test != [steps])
    note = (
        f"the calibration runs trained {steps} steps, the test cells {', '.join(map(str, test))}: the picked "
        "dose is the best at the calibration budget, not necessarily at the test's (set calibration.steps to "
        "the test's train.steps, or leave it null, to match them)"
        if differ else None
    )  # fmt: skip
    pairs = []
    for pid, e in sorted((doc.get("pairs") or {}).items()):
        if not isinstance(e, Mapping):
            continue
        grid = [g for g in e.get("grid") or [] if isinstance(g, Mapping)]
        pick = e.get("pick") if isinstance(e.get("pick"), Mapping) else None
        picked = e.get("picked_dose", pick.get("dose_target") if pick else None)
        best = e.get("best_dose")
        if best is None:  # entries written before curves were logged: the best is the grid's top score
            scored = [g for g in grid if _num(g.get("val_em")) is not None]
            best = max(scored, key=lambda g: (g["val_em"], -g["dose_target"]))["dose_target"] if scored else None
        doses = [g.get("dose_target") for g in grid]
        pairs.append(
            {
                "pair": pid,
                "benchmark": e.get("benchmark"),
                "mode": e.get("mode"),
                "method": e.get("method"),
                "rule": (pick or {}).get("rule"),
                "picked_dose": picked,
                "best_dose": best,
                "picked_smallest": None if picked is None or not doses else picked == doses[0],
                "picked_largest": None if picked is None or not doses else picked == doses[-1],
                "picked_is_best": None if picked is None or best is None else picked == best,
                "curve": [
                    {
                        "dose": g.get("dose_target"),
                        "dose_median": _num(g.get("dose_median")),
                        "weight": _num(g.get("weight")),
                        "val_pp": _pp(g.get("val_em")),
                        "se_pp": _pp(g.get("se")),
                        "se_paired_pp": _pp(g.get("se_paired")),
                        "target": {str(k): _num(v) for k, v in (g.get("target") or {}).items()},
                    }
                    for g in grid
                ],
                "note": e.get("note"),
            }
        )
    rules = sorted({p["rule"] for p in pairs if p["rule"]})
    return {"rule": rules[0] if len(rules) == 1 else (rules or None), "rule_text": doc.get("rule"), "steps": steps, "test_steps": test or None, "steps_differ": differ,
            "steps_note": note, "pairs": pairs}  # fmt: skip


def read_curves(
    section: dict[str, Any], manipulation: Sequence[Mapping[str, Any]], verdicts: Sequence[Mapping[str, Any]]
) -> None:
    """Read each pair's verdict against its dose-response curve, in place: every curve point gains
    ``target_shift_sd`` ({key: (value − value at the smallest dose) / the key's pooled seed SD of the test grid,
    from ``manipulation``}), and the pair gains ``reading``, one sentence: where validation EM is best, where
    the target moves most (in its intended direction or against it), what EM does there, and the test
    verdict at the picked dose (e.g. "at the dose where the representation moves, EM falls")."""
    sd = {(e["benchmark"], e["mode"], e["method"], e["key"]): (e.get("seed_sd_pooled"), e.get("direction"))
          for e in manipulation}  # fmt: skip
    verdict = {(v["benchmark"], v["mode"], v["method"]): v for v in verdicts}
    for pair in section.get("pairs", []):
        curve = pair["curve"]
        ident = (pair["benchmark"], pair["mode"], pair["method"])
        base = curve[0]["target"] if curve else {}
        for point in curve:
            point["target_shift_sd"] = {}
            for key, value in point["target"].items():
                s, _ = sd.get((*ident, key), (None, None))
                ref = base.get(key)
                point["target_shift_sd"][key] = (value - ref) / s if s and value is not None and ref is not None else None
        pair["reading"] = _reading(pair, sd, verdict.get(ident))


def _reading(pair: Mapping[str, Any], sd: Mapping[tuple, tuple], v: Mapping[str, Any] | None) -> str | None:
    curve = [p for p in pair["curve"] if p["val_pp"] is not None]
    if not curve:
        return None
    best = max(curve, key=lambda p: (p["val_pp"], -p["dose"]))
    picked = next((p for p in curve if p["dose"] == pair.get("picked_dose")), None)
    words = [f"validation EM is best at dose {best['dose']:g} ({best['val_pp']:.1f} %)"
             + ("" if picked is None or picked is best else f"; the pick is dose {picked['dose']:g} "
                f"({picked['val_pp']:.1f} %)")]  # fmt: skip
    moves = [(abs(x), key, p, x) for p in curve for key, x in (p.get("target_shift_sd") or {}).items() if x is not None]
    if moves:
        _, key, at, x = max(moves, key=lambda t: (t[0], -t[2]["dose"]))
        direction = sd.get((pair["benchmark"], pair["mode"], pair["method"], key), (None, "either"))[1] or "either"
        aim = "" if direction == "either" else (" as intended" if (x > 0) == (direction == "increase") else
                                                " against its aim")  # fmt: skip
        em = at["val_pp"] - best["val_pp"]
        words.append(
            f"{key} moves most at dose {at['dose']:g} ({x:+.3g} seed SD from the smallest dose{aim}), where "
            + ("validation EM is the best" if at is best else f"validation EM is {em:+.1f} pp from the best")
        )
    elif any(p["target"] for p in curve):
        words.append("the target's shift along the curve cannot be sized (no seed SD from the test grid)")
    else:
        words.append("the calibration runs logged no target geometry")
    if v is not None:
        words.append(f"at the pick the test grid says {v['verdict'].replace('_', ' ')}")
    return "; ".join(words) + "."
