"""summary.json's ``calibration`` section from a calibration.json document (stats/curves.py)."""

from __future__ import annotations

import json

import pytest

from jepa_audit.audit.store import encode_row
from jepa_audit.stats.curves import calibration_section
from jepa_audit.stats.summary import build_summary


def _doc(steps: int = 20) -> dict:
    grid = [
        {"dose_target": 0.001, "weight": 0.002, "val_em": 0.30, "se": 0.04, "se_paired": 0.0,
         "dose_median": 0.001, "target": {"curvature_answer_L2": 110.0}},
        {"dose_target": 1.0, "weight": 2.0, "val_em": 0.25, "se": 0.03, "se_paired": 0.02,
         "dose_median": 0.9, "target": {"curvature_answer_L2": 100.0}},
    ]  # fmt: skip
    return {
        "format": 1, "rule": "the validation-best dose", "steps": steps,
        "pairs": {
            "synth/T1/lora": {"benchmark": "synth", "method": "T1", "mode": "lora", "grid": grid,
                              "best_dose": 0.001, "picked_dose": 0.001,
                              "pick": {"dose_target": 0.001, "rule": "best"}},
            # an entry written before curves were logged: no best_dose / se / target
            "synth/V3/lora": {"benchmark": "synth", "method": "V3", "mode": "lora",
                              "grid": [{"dose_target": 0.001, "val_em": 0.1}, {"dose_target": 1.0, "val_em": 0.2}],
                              "pick": {"dose_target": 1.0, "rule": "one_se"}},
        },
    }  # fmt: skip


def test_curves_in_pp_with_best_pick_and_flags():
    rows = [{"benchmark": "synth", "mode": "lora", "train": {"steps": 60}}] * 3
    sec = calibration_section(_doc(20), rows)
    assert sec["steps"] == 20 and sec["test_steps"] == [60] and sec["steps_differ"]
    assert "20 steps, the test cells 60" in sec["steps_note"]
    assert sec["rule"] == ["best", "one_se"] and sec["rule_text"] == "the validation-best dose"
    t1, v3 = sec["pairs"]
    assert t1["method"] == "T1" and t1["picked_smallest"] and not t1["picked_largest"] and t1["picked_is_best"]
    assert [p["val_pp"] for p in t1["curve"]] == pytest.approx([30.0, 25.0])
    assert [p["se_paired_pp"] for p in t1["curve"]] == pytest.approx([0.0, 2.0])
    assert t1["curve"][1]["target"] == {"curvature_answer_L2": 100.0}
    # legacy entry: the best is the top score, the pick is the largest dose and not the best
    assert v3["best_dose"] == 1.0 and v3["picked_largest"] and v3["curve"][0]["se_pp"] is None
    same = calibration_section(_doc(60), rows)
    assert not same["steps_differ"] and same["steps_note"] is None
    assert calibration_section(None)["pairs"] == []


def test_report_reads_calibration_json_into_summary(tmp_path):
    from jepa_audit.report import ReportError, write_report

    rows = [{"benchmark": "synth", "method": m, "seed": s, "mode": "lora", "status": "done",
             "metrics": {"exact_match": 0.3 + 0.01 * s, "dfa_accuracy": 0.3}, "train": {"steps": 60}}
            for m in ("ce", "T1") for s in (1, 2, 3)]  # fmt: skip
    (tmp_path / "results.jsonl").write_bytes(b"".join(encode_row(r) for r in rows))  # checksummed, as the runner writes
    (tmp_path / "calibration.json").write_text(json.dumps(_doc(20)))
    summary = write_report(tmp_path, 0.10)
    assert summary["calibration"]["steps_differ"] and len(summary["calibration"]["pairs"]) == 2
    md, html = (tmp_path / "report.md").read_text(), (tmp_path / "report.html").read_text()
    assert "## Dose-response: the verdict read against the λ calibration curve" in md
    assert "**synth · lora · T1**: validation EM is best at dose 0.001" in md and "(picked the smallest dose)" in md
    assert "Curve (validation): dose 0.001 \\[pick best\\]: EM 30.0 ± 4.0 %, curvature_answer_L2 110; dose 1: EM 25.0 ± 3.0 %" in md
    assert "Calibration budget: the calibration runs trained 20 steps, the test cells 60" in md
    assert html.count("dose-response on validation") >= 1
    assert build_summary(rows, conditional_logit_metrics=())["calibration"]["pairs"] == []
    (tmp_path / "calibration.json").write_text("[1, 2]")
    with pytest.raises(ReportError, match="calibration.json: expected an object with a 'pairs' mapping"):
        write_report(tmp_path, 0.10)


def test_verdict_read_against_the_curve_and_drawn():
    """read_curves sizes each dose's target shift in the test grid's pooled seed SDs and says, in one
    sentence, where EM is best, where the target moves most (and whether as intended), and the verdict at the
    pick; the report draws the curves (one PNG per benchmark and mode, byte-identical on a rerun)."""
    from jepa_audit.report import plots
    from jepa_audit.stats.curves import read_curves

    sec = calibration_section(_doc(20))
    man = [{"benchmark": "synth", "mode": "lora", "method": "T1", "key": "curvature_answer_L2",
            "seed_sd_pooled": 2.0, "direction": "decrease"}]  # fmt: skip
    ver = [{"benchmark": "synth", "mode": "lora", "method": "T1", "verdict": "representation_and_harm"}]
    read_curves(sec, man, ver)
    t1 = sec["pairs"][0]
    assert [p["target_shift_sd"]["curvature_answer_L2"] for p in t1["curve"]] == pytest.approx([0.0, -5.0])
    assert t1["reading"] == (
        "validation EM is best at dose 0.001 (30.0 %); curvature_answer_L2 moves most at dose 1 (-5 seed SD from "
        "the smallest dose as intended), where validation EM is -5.0 pp from the best; at the pick the test grid "
        "says representation and harm."
    )
    assert "logged no target geometry" in sec["pairs"][1]["reading"]
    png = plots.dose_response_plot(sec["pairs"], "synth · lora")
    assert png.startswith(b"\x89PNG") and png == plots.dose_response_plot(sec["pairs"], "synth · lora")
