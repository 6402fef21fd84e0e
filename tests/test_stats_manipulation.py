"""Manipulation checks and verdicts on a synthetic results file with designed geometry shifts, checked
against scipy's paired t-test and statsmodels' Holm.

The rows carry ``target_geometry`` but not ``target_direction`` (as rows written before it did): their
directions come from the objectives registry's lookup, which the torch side passes to the summary."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
from statsmodels.stats.multitest import multipletests

from jepa_audit.objectives import declared_targets
from jepa_audit.stats.manipulation import headline, headroom_sentence, verdict_table
from jepa_audit.stats.summary import build_summary

SEEDS = [1, 2, 3, 4, 5]
# method → (declared targets, per-target shift of the target key, EM shift in fractions)
DESIGN = {
    "T1": (["curvature_answer_Llast"], {"curvature_answer_L2": -8.0}, 0.0),  # moves geometry, not EM
    "D7": (["anisotropy_Llast"], {"anisotropy_L2": 0.0}, 0.0),  # moves nothing
    "V1": (["v1_kl"], {"v1_kl": -0.5}, 0.06),  # moves both
    "P1": (["jepa_cos"], {"jepa_cos": 0.0}, -0.06),  # EM only (harm)
}


def _rows(rng: np.random.Generator) -> list[dict]:
    rows = []
    base_geo = {s: {"curvature_answer_L1": 70.0, "curvature_answer_L2": 60 + rng.normal(0, 1),
                    "anisotropy_L2": 0.3 + rng.normal(0, 0.01), "v1_kl": 2.0 + rng.normal(0, 0.05),
                    "jepa_cos": 0.5 + rng.normal(0, 0.01)} for s in SEEDS}
    base_em = {s: 0.5 + rng.normal(0, 0.005) for s in SEEDS}
    for s in SEEDS:
        rows.append({"benchmark": "synth", "method": "ce", "seed": s, "mode": "lora", "status": "done",
                     "metrics": {"exact_match": base_em[s], "dfa_accuracy": base_em[s]},
                     "geometry": base_geo[s], "target_geometry": []})
    for method, (targets, shifts, em_shift) in DESIGN.items():
        for s in SEEDS:
            geo = {k: v + shifts.get(k, 0.0) + rng.normal(0, 0.2 * (abs(shifts.get(k, 0.0)) or 0.01))
                   for k, v in base_geo[s].items()}
            em = base_em[s] + em_shift + rng.normal(0, 0.01)
            rows.append({"benchmark": "synth", "method": method, "seed": s, "mode": "lora", "status": "done",
                         "metrics": {"exact_match": em, "dfa_accuracy": em}, "geometry": geo,
                         "target_geometry": targets, "weight": 0.1, "weight_source": "calibrated",
                         "dose": {"median": 0.25}})
    return rows


@pytest.fixture(scope="module")
def summary_and_rows():
    rows = _rows(np.random.default_rng(0))
    return build_summary(rows, target_lookup=declared_targets, alpha=0.10, conditional_logit_metrics=()), rows


def _geo(rows, method, key):
    return np.array([next(r for r in rows if r["method"] == method and r["seed"] == s)["geometry"][key] for s in SEEDS])


def test_manipulation_equals_scipy_and_statsmodels(summary_and_rows):
    summary, rows = summary_and_rows
    man = summary["manipulation"]
    assert {(e["method"], e["key"]) for e in man} == {
        ("T1", "curvature_answer_L2"), ("D7", "anisotropy_L2"), ("V1", "v1_kl"), ("P1", "jepa_cos")}
    raw = []
    for e in sorted(man, key=lambda e: e["method"]):
        a, b = _geo(rows, e["method"], e["key"]), _geo(rows, "ce", e["key"])
        ref = scipy.stats.ttest_rel(a, b)
        assert e["n"] == 5 and e["mean_diff"] == pytest.approx(float((a - b).mean()))  # the key's own units
        assert e["t"] == pytest.approx(ref.statistic) and e["p_t"] == pytest.approx(ref.pvalue)
        ci = scipy.stats.t.interval(0.95, 4, loc=(a - b).mean(), scale=scipy.stats.sem(a - b))
        assert (e["ci95_low"], e["ci95_high"]) == pytest.approx(ci)
        raw.append(e)
    holm = multipletests([e["p_t"] for e in raw], alpha=0.10, method="holm")[1]
    assert [e["p_holm"] for e in raw] == pytest.approx(list(holm))
    assert all(e["family_m"] == 4 and e["family_id"] == "manipulation / synth / lora" for e in raw)


def test_verdicts_follow_the_design(summary_and_rows):
    summary, _ = summary_and_rows
    v = {x["method"]: x for x in summary["verdicts"]}
    # T1: curvature down as intended (−8.5 pooled seed SD), EM flat with gains ≥ 2 pp ruled out after Holm
    assert (v["T1"]["representation"], v["T1"]["reward"]) == ("moved", "no_gain_shown")
    assert v["T1"]["verdict"] == "representation_without_reward"
    assert v["D7"]["verdict"] == "representation_not_shown_and_no_gain_shown"
    assert v["V1"]["verdict"] == "representation_and_gain" and v["V1"]["em_direction"] == "improvement"
    assert v["P1"]["verdict"] == "representation_not_shown_and_harm" and v["P1"]["em_direction"] == "harm"
    assert "reward" not in v["P1"]["verdict"]  # a harm is never called reward
    assert v["T1"]["dose"] == 0.25 and v["T1"]["weight"] == 0.1
    text = headline(summary["verdicts"], 0.10)
    assert "of 4 auxiliaries: representation (target geometry, Holm, α = 0.1) moved as intended for 2" in text
    assert "gain 1 (V1), harm 1 (P1), no gain shown 2, inconclusive 0" in text
    assert "1 show representation without reward (T1)" in text and "not calibrated" not in text
    pinned = [{**v, "weight_source": "preset"} for v in summary["verdicts"]]
    assert headline(pinned, 0.10).endswith("λ fixed by the preset, not calibrated.")
    table = {r["method"]: r for r in verdict_table(summary["verdicts"])}
    assert table["T1"]["representation"] == "moved" and table["T1"]["reward"] == "no gain shown"
    assert "†" in table["T1"]["upper"] and "†" not in table["V1"]["upper"]
    assert "calibrated" in table["T1"]["weight"]
    null = [{**v["D7"], "reward": "inconclusive", "verdict": "representation_not_shown_and_reward_inconclusive"}]
    assert verdict_table(null)[0]["verdict"].endswith("uninformative null (dose 0.25)")


def test_degenerate_entry_counts_in_m_and_never_rejects():
    rows = _rows(np.random.default_rng(1))
    for r in rows:  # D7 identical to ce on its target: zero variance
        if r["method"] == "D7":
            r["geometry"]["anisotropy_L2"] = next(
                x for x in rows if x["method"] == "ce" and x["seed"] == r["seed"])["geometry"]["anisotropy_L2"]
    man = {e["method"]: e for e in build_summary(rows, target_lookup=declared_targets, conditional_logit_metrics=())["manipulation"]}
    assert man["D7"]["p_t"] is None and man["D7"]["p_holm"] is None and "zero variance" in man["D7"]["note"]
    tested = [man[m]["p_t"] for m in ("P1", "T1", "V1")]
    holm = multipletests([*tested, 1.0], method="holm")[1][:3]  # m = 4 declared, the degenerate as p = 1
    assert [man[m]["p_holm"] for m in ("P1", "T1", "V1")] == pytest.approx(list(holm))


def test_report_opens_with_headline_then_verdict_table(tmp_path):
    import json

    from jepa_audit.report import write_report

    rows = _rows(np.random.default_rng(0))
    from jepa_audit.audit.store import encode_row

    (tmp_path / "results.jsonl").write_bytes(b"".join(encode_row(r) for r in rows))  # as the runner writes them
    write_report(tmp_path, 0.10)
    md = (tmp_path / "report.md").read_text()
    lines = md.splitlines()
    first_table = next(i for i, line in enumerate(lines) if line.startswith("|"))
    head = "\n".join(lines[:first_table])
    assert "## The answer" in head and "of 4 auxiliaries: representation" in head and "families are decided" in head
    assert lines[first_table].startswith("| benchmark | mode | auxiliary | λ chosen | dose |")
    assert "| representation | reward | verdict | MDE vs Δ; seeds needed |" in lines[first_table]
    html = (tmp_path / "report.html").read_text()
    assert html.index("The answer") < html.index("<table>")
    summary = json.loads((tmp_path / "summary.json").read_text())
    from jepa_audit.stats.manipulation import VERDICTS

    assert {v["verdict"] for v in summary["verdicts"]} <= set(VERDICTS) and len(VERDICTS) == 12


def test_declared_method_without_rows_counts_in_m():
    from jepa_audit.stats.manipulation import manipulation_checks
    from jepa_audit.stats.summary import index_rows

    rows = _rows(np.random.default_rng(0))
    idx = index_rows(rows)
    base = manipulation_checks(idx.cells, 0.10)
    grown = manipulation_checks(idx.cells, 0.10, declared={("synth", "lora"): ["ce", *DESIGN, "D6"]},
                                target_lookup=declared_targets)
    d6 = next(e for e in grown if e["method"] == "D6")
    assert d6["n"] == 0 and d6["p_holm"] is None and d6["key"] == "anisotropy_L2"  # registry target, resolved
    assert {e["family_m"] for e in grown} == {5} and {e["family_m"] for e in base} == {4}
    p = [e["p_t"] for e in grown if e["p_t"] is not None]
    assert [e["p_holm"] for e in grown if e["p_t"] is not None] == pytest.approx(
        list(multipletests([*p, 1.0], method="holm")[1][:4]))


def test_rows_before_target_geometry_get_the_lookups_targets_or_a_reason():
    """Rows that predate ``target_geometry``: with the registry's lookup they get its targets (and say so); without
    one, or for a method it does not know, the method has no check and a warning names it and why."""
    rows = _rows(np.random.default_rng(0))
    for r in rows:
        r.pop("target_geometry")
    kw = {"alpha": 0.10, "conditional_logit_metrics": ()}
    looked_up = build_summary(rows, target_lookup=declared_targets, **kw)
    assert {(e["method"], e["target"]) for e in looked_up["manipulation"]} == {
        (m, t) for m, (targets, _, _) in DESIGN.items() for t in targets}
    t1 = next(e for e in looked_up["manipulation"] if e["method"] == "T1")
    assert t1["key"] == "curvature_answer_L2" and t1["direction"] == "decrease" and t1["reject_holm"]
    assert "rows predate target_geometry" in t1["note"]
    assert not any("no target_geometry" in w for w in looked_up["warnings"])

    alone = build_summary(rows, **kw)
    assert alone["manipulation"] == []
    for m in DESIGN:
        assert f"manipulation check on synth/lora: {m}: no target_geometry in its rows" in " | ".join(alone["warnings"])
    unknown = build_summary(rows, target_lookup=lambda m: None if m == "T1" else declared_targets(m), **kw)
    assert "T1" not in {e["method"] for e in unknown["manipulation"]}
    assert any("T1: no target_geometry in its rows and not in the objectives registry" in w for w in unknown["warnings"])


def test_identical_em_marks_the_reward_half_uninformative():
    """Target moved but no decoded answer changed: the verdict stays (DESIGN.md), the table and the headline
    call the reward half an uninformative null and name the grid's smallest λ."""
    row = {
        "benchmark": "turk", "mode": "lora", "method": "T1", "verdict": "representation_without_reward",
        "representation_moved": True, "reward_moved": False, "em_direction": None,
        "targets": [{"key": "curvature_answer_L2", "mean_diff": -0.08, "ci95_low": -0.09, "ci95_high": -0.07,
                     "p_holm": 0.01, "moved": True}],
        "em": {"n": 3, "mean_diff": 7.4e-17, "ci95_low": None, "ci95_high": None, "p_holm": None,
               "identical_to_ce": True},
        "weight": 0.0045, "dose": 0.00128, "weight_source": "calibrated", "calibration_smallest": True,
    }  # fmt: skip
    (t,) = verdict_table([row])
    assert t["verdict"].startswith("representation without reward; reward half an uninformative null")
    assert "at the grid's smallest λ" in t["verdict"] and "dose 0.00128" in t["verdict"]
    assert t["em"] == "+0 (no CI) (identical to ce)"  # float noise of exact ties prints as 0
    text = headline([row], 0.10)
    assert "1 changed no decoded answer at all" in text and "T1" in text


def test_shift_is_sized_against_the_pooled_seed_sd(summary_and_rows):
    """Each check says how large its shift is against seed noise: mean_diff / the key's SD over seeds pooled
    within methods over every cell of the benchmark and mode (df = Σ(n − 1) = 5 methods × 4 = 20)."""
    summary, rows = summary_and_rows
    e = next(x for x in summary["manipulation"] if x["method"] == "T1")
    assert e["baseline_sd"] == pytest.approx(float(np.std(_geo(rows, "ce", e["key"]), ddof=1)))
    per_method = [_geo(rows, m, e["key"]) for m in ("ce", *DESIGN)]
    pooled = np.sqrt(sum(((x - x.mean()) ** 2).sum() for x in per_method) / sum(x.size - 1 for x in per_method))
    assert e["seed_sd_pooled"] == pytest.approx(pooled) and e["seed_sd_df"] == 20
    assert e["shift_in_seed_sds"] == pytest.approx(e["mean_diff"] / pooled) and e["shift_in_seed_sds"] < -1
    assert e["direction"] == "decrease"
    v = next(x for x in summary["verdicts"] if x["method"] == "T1")
    assert v["targets"][0]["shift_in_seed_sds"] == pytest.approx(e["shift_in_seed_sds"])
    assert "seed SD" in next(r for r in verdict_table(summary["verdicts"]) if r["method"] == "T1")["target"]


def test_a_tiny_consistent_shift_is_not_a_manipulation():
    """A shift far below the seeds' spread but the same on every seed passes Holm; below stats.min_shift_sd it does
    not count as moved (representation not_shown), and the note says why."""
    rows = []
    for s, base in zip(SEEDS, [0.30, 0.34, 0.28, 0.33, 0.31], strict=True):
        geo = {"anisotropy_L2": base}
        rows.append({"benchmark": "synth", "method": "ce", "seed": s, "mode": "lora", "status": "done",
                     "metrics": {"exact_match": 0.5 + 0.01 * s, "dfa_accuracy": 0.5}, "geometry": geo,
                     "target_geometry": []})
        rows.append({"benchmark": "synth", "method": "D7", "seed": s, "mode": "lora", "status": "done",
                     "metrics": {"exact_match": 0.5 + 0.01 * s, "dfa_accuracy": 0.5},
                     "geometry": {"anisotropy_L2": base + 0.001 + 1e-5 * s}, "target_geometry": ["anisotropy_Llast"]})
    summary = build_summary(rows, target_lookup=declared_targets, alpha=0.10, conditional_logit_metrics=())
    v = summary["verdicts"][0]
    assert v["targets"][0]["reject_holm"] and abs(v["targets"][0]["shift_in_seed_sds"]) < 0.5
    assert v["representation"] == "not_shown" and not v["representation_moved"]
    assert "by less than 0.5 pooled seed SD (anisotropy_L2)" in v["note"]
    assert verdict_table([v])[0]["target"].endswith("(passed Holm, below the minimum shift)")
    loose = build_summary(rows, target_lookup=declared_targets, alpha=0.10, conditional_logit_metrics=(), min_shift_sd=0.0)["verdicts"][0]
    assert loose["representation"] == "moved_against"  # D7 aims to lower anisotropy; this raised it


def test_a_shift_against_the_intended_direction_is_moved_against():
    """D7 aims to lower anisotropy; raising it by many seed SDs passes Holm but is ``moved_against``, and the
    verdict names that half (never representation_without_reward)."""
    rows = _rows(np.random.default_rng(0))
    for r in rows:
        if r["method"] == "D7":
            r["geometry"]["anisotropy_L2"] += 0.2 + 0.002 * r["seed"]
    v = next(x for x in build_summary(rows, target_lookup=declared_targets, alpha=0.10, conditional_logit_metrics=())["verdicts"] if x["method"] == "D7")
    assert v["representation"] == "moved_against" and v["targets"][0]["against"]
    assert v["verdict"].startswith("representation_against_and_") and "against its intended direction" in v["note"]
    assert "↯" in next(r for r in verdict_table([v]))["target"]


def test_equal_em_with_changed_answers_is_not_called_an_unchanged_output():
    """EM identical to ce on every seed is not "no decoded answer changed": with predictions files the summary
    counts, per paired seed, the items whose answer differs from ce's. T4 flips one item each way (EM equal,
    two answers changed); T1 decodes ce's answers exactly."""
    preds = {
        "ce": ["a", "b", "c", "d"],
        "T4": ["a", "x", "c", "d"],  # item 1 right → wrong ...
        "T1": ["a", "b", "c", "d"],
    }
    gold = ["a", "b", "c", "z"]
    files = {}
    rows = []
    for method, p in preds.items():
        for s in (1, 2, 3):
            answers = list(p)
            if method == "T4":
                answers[3] = "z"  # ... and item 3 wrong → right: EM unchanged
            items = [{"item": i, "pred": a, "gold": g, "exact": a == g, "dfa": a == g}
                     for i, (a, g) in enumerate(zip(answers, gold, strict=True))]
            name = f"{method}_{s}.jsonl"
            files[name] = items
            em = sum(x["exact"] for x in items) / 4
            rows.append({"benchmark": "turk", "method": method, "seed": s, "mode": "lora", "status": "done",
                         "metrics": {"exact_match": em, "dfa_accuracy": em}, "predictions_file": name,
                         "geometry": {"curvature_answer_L2": 10.0 + (0.5 + 0.01 * s if method != "ce" else 0.0)},
                         "target_geometry": [] if method == "ce" else ["curvature_answer_Llast"]})
    summary = build_summary(rows, target_lookup=declared_targets, alpha=0.10, predictions_loader=files.get, conditional_logit_metrics=())
    v = {x["method"]: x for x in summary["verdicts"]}
    assert v["T4"]["em"]["identical_to_ce"] and v["T4"]["em"]["answers_changed"] == [2, 2, 2]
    assert not v["T4"]["em"]["answers_identical"] and "gains and losses cancel" in v["T4"]["note"]
    assert v["T1"]["em"]["answers_changed"] == [0, 0, 0] and v["T1"]["em"]["answers_identical"]
    table = {r["method"]: r for r in verdict_table(summary["verdicts"])}
    assert "uninformative null" not in table["T4"]["verdict"] and "6 answers changed" in table["T4"]["verdict"]
    assert "no decoded answer changed" in table["T1"]["verdict"]
    text = headline(summary["verdicts"], 0.10)
    assert "1 changed no decoded answer at all" in text and "although decoded answers changed" in text


def test_headline_names_a_floor_that_hides_harm(summary_and_rows):
    """SCAN's length split: ce at 0.9 % EM cannot fall by the 3.46 pp detectable after correction, so a
    "without reward" there says nothing about harm, and the headline must say so."""
    summary, _ = summary_and_rows
    bench, mode = summary["verdicts"][0]["benchmark"], summary["verdicts"][0]["mode"]
    floor = {"benchmark": bench, "mode": mode, "metric": "exact_match", "baseline_mean": 0.9,
             "mde_pp_corrected": 3.46, "floor_hides_decrease": True, "ceiling_hides_increase": False}
    text = headline(summary["verdicts"], 0.10, [floor])
    assert f"ce's exact_match is 0.90 % on {bench} ({mode}): even a fall to 0 is below the 3.46 pp" in text
    assert "(a floor)" in text
    assert headroom_sentence({**floor, "floor_hides_decrease": False}) == ""
    top = headroom_sentence({**floor, "baseline_mean": 98.0, "floor_hides_decrease": False,
                             "ceiling_hides_increase": True})
    assert "rise to 100 % is below the 3.46 pp" in top and "(a ceiling)" in top
    assert "floor" not in headline(summary["verdicts"], 0.10)  # no power rows: nothing claimed
    table = {r["method"]: r["verdict"] for r in verdict_table(summary["verdicts"], [floor])}
    assert table["T1"].endswith("; ce's EM 0.9 % is a floor: a fall was unlikely to show")  # EM did not move
    assert "floor" not in table["V1"]  # EM moved (up): nothing hidden
    assert "floor" not in "".join(r["verdict"] for r in verdict_table(summary["verdicts"]))
