"""The report: built from results.jsonl alone, deterministic, self-contained, escaping hostile data."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html import unescape
from pathlib import Path

import numpy as np
import pytest

from jepa_audit.audit.grid import cell_key
from jepa_audit.audit.store import encode_row
from jepa_audit.report import ReportError, write_report

HOSTILE_METHOD = "<img src=x onerror=alert(1)>"
HOSTILE_PRED = '</code><script>alert("pred")</script>'
HOSTILE_GEOMETRY = "<svg onload=alert(3)>"
CHROMIUM = Path("/usr/bin/chromium")
OPTIONS = {"bootstrap_reps": 200}


def _write_results(out: Path) -> None:
    """A small audit: one benchmark, ce + two auxiliaries (one with a hostile id), 3 seeds, 12 items."""
    rng = np.random.default_rng(0)
    (out / "cells").mkdir(parents=True)
    rows = []
    for method, family, p in (
        ("ce", "reference", 0.5),
        ("t1_straight", "trajectory", 0.75),
        (HOSTILE_METHOD, "predictive", 0.5),
    ):
        for seed in (82, 23, 37):
            correct = rng.random(12) < p
            rel = f"cells/{len(rows)}/predictions.jsonl"
            (out / rel).parent.mkdir()
            with open(out / rel, "w", encoding="utf-8") as f:
                for i, c in enumerate(correct):
                    pred = HOSTILE_PRED if (method == HOSTILE_METHOD and i < 6) else f"([a-z])*{i}"
                    rec = {
                        "item": i,
                        "gold": "(a|b)*",
                        "pred": pred,
                        "exact": bool(c),
                        "dfa": bool(c),
                        "parse_error": None,
                    }
                    f.write(json.dumps(rec) + "\n")
            rows.append(
                {
                    "benchmark": "synth", "method": method, "seed": seed, "mode": "lora", "family": family,
                    "metrics": {"exact_match": float(correct.mean()), "dfa_accuracy": float(correct.mean()), "n_test": 12},
                    "geometry": {"curvature_answer_L2": float(rng.normal(30, 2)), HOSTILE_GEOMETRY: float(rng.normal())},
                    "grad_cosine": None if method == "ce" else {"mean": float(rng.normal(0, 0.1)), "frac_positive": 0.6},
                    "config_hash": "x", "wall_s": 1.0, "status": "done", "predictions_file": rel,
                }
            )  # fmt: skip
    rows.append({"benchmark": "synth", "method": "t1_straight", "seed": 4, "mode": "lora", "status": "failed",
                 "error": "<b>boom</b>"})  # fmt: skip
    (out / "results.jsonl").write_bytes(b"".join(encode_row(r) for r in rows))  # checksummed, as the runner writes


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("audit")
    _write_results(out)
    summary = write_report(out, **OPTIONS)
    return out, summary


def test_writes_the_three_files_and_returns_the_summary(built) -> None:
    out, summary = built
    for name in ("summary.json", "report.md", "report.html"):
        assert (out / name).is_file()
    assert json.loads((out / "summary.json").read_text(encoding="utf-8")) == summary
    assert summary["family"] == "per-benchmark" and summary["alpha"] == 0.10
    assert len(summary["comparisons"]) == 4
    assert summary["failed"][0]["error"] == "<b>boom</b>"
    cl = [e["conditional_logit"] for e in summary["items"] if e["metric"] == "exact_match"]
    assert len(cl) == 2 and all(c is not None and c["n_rows"] == 72 and c["n_seeds"] == 3 for c in cl)
    assert all(e["conditional_logit"] is None for e in summary["items"] if e["metric"] == "dfa_accuracy")
    assert summary["settings"]["conditional_logit_metrics"] == ["exact_match"]


def test_report_shows_the_conditional_logit_labelled_apart_from_the_verdict(built) -> None:
    out, summary = built
    md = (out / "report.md").read_text(encoding="utf-8")
    html = unescape((out / "report.html").read_text(encoding="utf-8"))
    label = "conditional on these trained models; excludes run-to-run variance"
    assert all(e["conditional_logit"]["label"] == label for e in summary["items"] if e["conditional_logit"])
    for text in (md, html):
        assert f"conditional logit (item strata; {label})" in text and "mixed model" not in text.lower()
        assert f"Conditional logit: {label}" in text
        # never beside the verdict: it appears only after the per-item section starts
        verdict = text.index("Headline verdict")
        assert text.index("log-odds") > text.index("Per-item analyses") > verdict
        assert "item-level: McNemar log OR across seeds" in text
        assert "correct ~ method + seed" in text and "stratified by test item" in text
        assert "not fitted (fitted for exact_match only)" in text  # the dfa_accuracy rows
    for e in summary["items"]:
        cl = e["conditional_logit"]
        if cl is not None and cl["converged"]:
            cell = f"log-odds {cl['coef']:+.3f} ± {cl['se']:.2g}, OR "
            assert cell in md and cell in html
        elif cl is not None:
            assert f"no estimate: {cl['note']}" in html


def test_report_states_family_floor_power_and_bootstrap_caveat(built) -> None:
    out, _ = built
    for text in (
        (out / "report.md").read_text(encoding="utf-8"),
        unescape((out / "report.html").read_text(encoding="utf-8")),
    ):
        assert "Family 'per-benchmark'" in text
        assert "m = 2" in text
        assert "cannot go below p = 0.25 (2/2^3) at n = 3" in text  # 3 seeds
        assert "they can never pass α = 0.1" in text
        assert "only the t-test can reach corrected significance" in text
        assert "80 % power" in text and "SD)" in text
        assert "coarse" in text
        assert "Survive Bonferroni" in text and "Survive Holm" in text and "Benjamini" in text
        assert "still count in m" in text and "m (declared)" in text
        # every verdict list comes split by direction
        verdict = text[text.index("Headline verdict") : text.index("Power and the floors")]
        assert (
            verdict.count("Improvements (auxiliary better than ce)") == 2
            and verdict.count("Harms (auxiliary worse than ce)") == 2
        )
        assert verdict.count("Survive Holm") == 4
        # the family-wise error across families and the --family all hint
        assert "family-wise error rate" in text and "--family all" in text
        assert "Coupling: geometry and gradient agreement against ΔEM (descriptive)" in text
        assert "One point per auxiliary" in text and "p_BH" in text
        assert "The seed-level t-interval is the primary CI" in text
        assert "paired probability of improvement" in text


def test_html_escapes_hostile_strings(built) -> None:
    html = (built[0] / "report.html").read_text(encoding="utf-8")
    assert HOSTILE_METHOD not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "<script" not in html.lower()
    assert "&lt;script&gt;alert(&#34;pred&#34;)&lt;/script&gt;" in html
    assert HOSTILE_GEOMETRY not in html and "&lt;svg onload=alert(3)&gt;" in html
    assert "<b>boom</b>" not in html and "&lt;b&gt;boom&lt;/b&gt;" in html
    assert not re.search(r"<img(?![^>]*src=\"data:image/png;base64,)", html)  # every img is an inline PNG


def test_markdown_escapes_hostile_strings(built) -> None:
    md = (built[0] / "report.md").read_text(encoding="utf-8")
    assert HOSTILE_METHOD not in md and "&lt;img src=x onerror=alert(1)&gt;" in md
    assert "<script" not in md.lower()
    assert "(a\\|b)\\*" in md  # pipes cannot break the tables


def test_html_is_self_contained(built) -> None:
    html = (built[0] / "report.html").read_text(encoding="utf-8")
    assert not re.search(r"(src|href)\s*=\s*\"(https?:|//|file:)", html)
    assert "Content-Security-Policy" in html
    assert len(re.findall(r'<img src="data:image/png;base64,', html)) >= 4
    assert not (built[0] / "report_files").exists()


def test_two_builds_are_byte_identical(built, tmp_path) -> None:
    out, _ = built
    shutil.copy(out / "results.jsonl", tmp_path / "results.jsonl")
    shutil.copytree(out / "cells", tmp_path / "cells")
    write_report(tmp_path, **OPTIONS)
    for name in ("report.md", "report.html", "summary.json"):
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes(), name


def test_family_all_and_alpha_are_passed_through(built, tmp_path) -> None:
    shutil.copy(built[0] / "results.jsonl", tmp_path / "results.jsonl")  # no prediction files here
    summary = write_report(tmp_path, alpha=0.05, family="all", bootstrap_reps=50)
    assert summary["family"] == "all" and summary["alpha"] == 0.05
    assert summary["items"] == [] and summary["items_note"]
    assert any("missing or unreadable" in w for w in summary["warnings"])
    assert "Family 'all'" in (tmp_path / "report.md").read_text(encoding="utf-8")


def test_missing_and_malformed_results_raise_report_error(tmp_path) -> None:
    with pytest.raises(ReportError, match=r"results\.jsonl.*not found"):
        write_report(tmp_path)
    (tmp_path / "results.jsonl").write_text('{"benchmark": "synth"}\n{not json}\n[1, 2]\n', encoding="utf-8")
    excluded = write_report(tmp_path)["excluded_rows"]  # untrusted lines are left out and listed
    assert [(e["line"], e["reason"][:14]) for e in excluded] == [
        (1, "no row_sha256 "), (2, "not valid JSON"), (3, "expected a JSO")
    ]  # a row without its checksum is not trusted (#28.2)
    with pytest.raises(ReportError, match="family"):
        write_report(tmp_path, family="per-method")


def test_predictions_outside_the_directory_are_not_read(tmp_path) -> None:
    secret = tmp_path / "secret.jsonl"
    secret.write_text(json.dumps({"item": 0, "pred": "SECRET", "exact": True}) + "\n", encoding="utf-8")
    out = tmp_path / "audit"
    out.mkdir()
    rows = [
        {"benchmark": "b", "method": m, "seed": s, "mode": "lora", "status": "done",
         "metrics": {"exact_match": 0.5 + 0.1 * s * (m == "x"), "dfa_accuracy": None, "n_test": 1},
         "predictions_file": "../secret.jsonl"}
        for m in ("ce", "x") for s in (1, 2)
    ]  # fmt: skip
    (out / "results.jsonl").write_bytes(b"".join(encode_row(r) for r in rows))
    summary = write_report(out, bootstrap_reps=20)
    assert summary["items"] == []
    assert "SECRET" not in (out / "report.html").read_text(encoding="utf-8")


@pytest.mark.skipif(
    not CHROMIUM.exists(), reason="headless Chromium not installed (Debian package 'chromium')"
)
def test_html_renders_in_headless_chromium(built, tmp_path) -> None:
    shot = tmp_path / "shot.png"
    cmd = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={shot}", "--window-size=1200,2000", (built[0] / "report.html").resolve().as_uri(),
    ]  # fmt: skip
    subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    assert shot.is_file(), "Chromium wrote no screenshot"
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    import matplotlib.image

    pixels = matplotlib.image.imread(str(shot))
    assert pixels.shape[:2] == (2000, 1200)
    assert float(pixels[..., :3].std()) > 0.02  # not a blank page


def test_family_size_comes_from_the_grid_manifest(tmp_path) -> None:
    out = tmp_path / "audit"
    _write_results(out)
    cells = {
        cell_key("synth", m, s, "lora"): {"benchmark": "synth", "method": m, "seed": s, "mode": "lora", "hash": "x"}
        for m in ("ce", "t1_straight", HOSTILE_METHOD, "never_ran")
        for s in (82, 23, 37)
    }
    (out / "grid.json").write_text(json.dumps({"format": 1, "cells": cells}), encoding="utf-8")
    summary = write_report(out, bootstrap_reps=20, conditional_logit_metrics=())
    fam = next(f for f in summary["families"] if f["metric"] == "exact_match")
    assert fam["m"] == 3 and fam["n_tested"] == 2 and fam["degenerate"][0]["method"] == "never_ran"
    assert summary["settings"]["declared_from_grid"] is True
    (out / "grid.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ReportError, match="grid.json"):
        write_report(out, bootstrap_reps=20)
