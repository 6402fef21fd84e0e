"""The report reads rows through the runner's validation, lists what it excluded, and writes its three
files all or nothing (#14 items 2, 6 and 9)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from _fs import fill, make_read_only, tmpfs
from jepa_audit.audit.grid import Cell, expand_grid
from jepa_audit.audit.store import Store, encode_row
from jepa_audit.config import Config
from jepa_audit.report import ReportError, write_report

OPTIONS = {"bootstrap_reps": 50, "conditional_logit_metrics": ()}


def _grid() -> list[Cell]:
    cfg = Config()
    cfg.audit.benchmarks, cfg.audit.methods, cfg.audit.seeds = ["synth"], ["ce", "T1"], [82, 23, 37]
    return expand_grid(cfg)


def _audit_dir(out: Path) -> tuple[list[Cell], list[bytes]]:
    """A directory as the runner leaves it: grid.json and six checksummed rows (ce at 20 %, T1 at 25 %)."""
    cells = _grid()
    with Store(out) as s:
        s.check_grid(cells)
        for c in cells:
            em = 0.2 if c.method == "ce" else 0.25
            s.commit(c, {"metrics": {"exact_match": em, "dfa_accuracy": em, "n_test": 10}, "status": "done"})
    return cells, (out / "results.jsonl").read_bytes().splitlines(keepends=True)


def _ce_n(summary: dict) -> int:
    return next(c["n"] for c in summary["comparisons"] if c["metric"] == "exact_match")


def test_tampered_row_and_foreign_config_are_excluded_and_listed(tmp_path):
    cells, lines = _audit_dir(tmp_path)
    tampered = lines[0].replace(b'"exact_match": 0.2', b'"exact_match": 0.99')
    assert tampered != lines[0]
    foreign = encode_row({**json.loads(lines[1]), "config_hash": "another-config"})
    (tmp_path / "results.jsonl").write_bytes(tampered + foreign + b"".join(lines[2:]))
    summary = write_report(tmp_path, **OPTIONS)
    assert _ce_n(summary) == 1  # only ce seed 37 is paired: the tampered and the foreign ce rows are out
    reasons = {e["line"]: e["reason"] for e in summary["excluded_rows"]}
    assert set(reasons) == {1, 2}
    assert "row_sha256" in reasons[1] and "another config" in reasons[2]
    md = (tmp_path / "report.md").read_text()
    assert "line 1" in md and "row\\_sha256" in md.replace("row_sha256", "row\\_sha256")
    assert summary["counts"]["rows"] == 4


def test_torn_last_line_is_read_up_to_and_reported(tmp_path):
    _cells, lines = _audit_dir(tmp_path)
    (tmp_path / "results.jsonl").write_bytes(b"".join(lines[:5]) + lines[5][:40])  # a kill mid-append
    summary = write_report(tmp_path, **OPTIONS)
    assert summary["counts"]["rows"] == 5
    assert [e["line"] for e in summary["excluded_rows"]] == [6]
    assert summary["excluded_rows"][0]["reason"].startswith("torn last line")
    assert any("torn last line" in w for w in summary["warnings"])


def test_results_path_that_is_a_directory_is_one_clear_error(tmp_path):
    (tmp_path / "results.jsonl").mkdir()
    with pytest.raises(ReportError, match=r"results\.jsonl: is a directory"):
        write_report(tmp_path, **OPTIONS)


def _no_temp_files(d: Path) -> None:
    assert not [p.name for p in d.iterdir() if p.name.endswith(".tmp")]


def test_full_disk_during_the_report_leaves_the_old_files(tmp_path):
    with tmpfs(tmp_path / "mnt", size="256k") as out:
        _audit_dir(out)
        write_report(out, **OPTIONS)
        before = {n: (out / n).read_bytes() for n in ("summary.json", "report.md", "report.html")}
        (out / "results.jsonl").write_bytes((out / "results.jsonl").read_bytes()[:-300])  # a different report
        fill(out)
        with pytest.raises(ReportError, match=r"cannot write the report \(No space left on device\)"):
            write_report(out, **OPTIONS)
        assert {n: (out / n).read_bytes() for n in before} == before  # nothing half-written
        _no_temp_files(out)


def test_read_only_directory_report_is_one_clear_error(tmp_path):
    with tmpfs(tmp_path / "mnt") as out:
        _audit_dir(out)
        make_read_only(out)
        with pytest.raises(ReportError, match=r"summary\.json: cannot write the report \(Read-only file system\)"):
            write_report(out, **OPTIONS)
        assert not (out / "report.md").exists()
        _no_temp_files(out)
        assert os.statvfs(out).f_flag & os.ST_RDONLY
