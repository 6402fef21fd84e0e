"""The smoke preset end to end through the real CLI: grid → results.jsonl → summary.json → report.

One run (module-scoped) feeds every assertion: the DESIGN.md row contract, finite geometry for every key of
every cell, a finite gradient cosine for every auxiliary cell, and the summary/report files.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "jepa_audit.cli"]
pytestmark = pytest.mark.slow  # a whole smoke audit through the CLI: 8 training cells and the report


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke")
    cache = tmp_path_factory.mktemp("cache")
    p = subprocess.run([*CLI, "audit", "--preset", "smoke", "--out", str(out), "--set", f"cache_dir={cache}"],
                       capture_output=True, text=True, timeout=1200)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines() if x.strip()]
    return out, rows


def test_every_cell_once_with_the_row_contract(smoke_run):
    out, rows = smoke_run
    keys = [(r["benchmark"], r["method"], r["seed"], r["mode"]) for r in rows]
    assert len(keys) == len(set(keys)) == 8  # 4 methods × 2 seeds × synth
    for r in rows:
        assert r["status"] == "done" and isinstance(r["config_hash"], str) and r["wall_s"] > 0
        m = r["metrics"]
        assert 0.0 <= m["exact_match"] <= 1.0 and 0.0 <= m["dfa_accuracy"] <= 1.0 and m["n_test"] == 100
        assert (out / r["predictions_file"]).is_file()


def test_geometry_is_finite_for_every_key_of_every_cell(smoke_run):
    _, rows = smoke_run
    keys = set(rows[0]["geometry"])
    for fam in ("curvature", "anisotropy", "std", "rank", "twonn", "jepa_cos", "v1_kl"):
        assert any(fam in k for k in keys), fam
    for r in rows:
        assert set(r["geometry"]) == keys  # same keys, same layers, for the baseline and every auxiliary
        bad = {k: v for k, v in r["geometry"].items() if not (isinstance(v, (int, float)) and math.isfinite(v))}
        assert not bad, (r["method"], bad)


def test_gradient_cosine_is_finite_for_every_auxiliary_cell(smoke_run):
    _, rows = smoke_run
    for r in rows:
        gc = r["grad_cosine"]
        if r["method"] == "ce":
            assert gc is None
            continue
        assert -1.0 <= gc["mean"] <= 1.0 and 0.0 <= gc["frac_positive"] <= 1.0
        assert gc["n_probes"] >= 1 and gc["per_layer"]
        assert all(math.isfinite(v) for v in gc["per_layer"].values())


def test_summary_and_report_are_written_and_rebuildable(smoke_run):
    out, _ = smoke_run
    summary = json.loads((out / "summary.json").read_text())
    assert summary["alpha"] == pytest.approx(0.10) and summary["family"] == "per-benchmark"
    comps = summary["comparisons"]
    assert {c["method"] for c in comps} == {"T1", "llm-jepa", "V3"}
    assert {c["metric"] for c in comps} == {"exact_match", "dfa_accuracy"}
    html = (out / "report.html").read_text()
    assert "<img" in html and "data:image/png;base64," in html  # plots inline: one self-contained file
    p = subprocess.run([*CLI, "report", str(out), "--family", "all", "--no-item-logit"], capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert json.loads((out / "summary.json").read_text())["family"] == "all"


def test_rerun_skips_finished_cells(smoke_run):
    out, rows = smoke_run
    before = (out / "results.jsonl").read_bytes()
    p = subprocess.run([*CLI, "audit", "--preset", "smoke", "--out", str(out), "--set",
                        f"cache_dir={Path(out).parent}/unused"], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert (out / "results.jsonl").read_bytes() == before
