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


# ------------------------------------------------------------------------ edits the checksums could not see (#28.2)


def test_row_without_its_checksum_is_excluded_and_named(tmp_path):
    """ce seed 82 edited 0.2 → 0.99 with its row_sha256 deleted: today trusted (and reported); now excluded
    by the report and by the runner's resume (quarantined, the cell runs again), and named in both."""
    _cells, lines = _audit_dir(tmp_path)
    row = json.loads(lines[0])
    del row["row_sha256"]
    row["metrics"]["exact_match"] = 0.99
    (tmp_path / "results.jsonl").write_bytes(json.dumps(row).encode() + b"\n" + b"".join(lines[1:]))
    summary = write_report(tmp_path, **OPTIONS)
    assert _ce_n(summary) == 2 and summary["counts"]["rows"] == 5
    (excluded,) = summary["excluded_rows"]
    assert excluded["line"] == 1 and excluded["cell"] == row["cell"] and "no row_sha256" in excluded["reason"]
    assert any("line 1" in w and "no row_sha256" in w for w in summary["warnings"])
    with pytest.warns(UserWarning, match="no row_sha256"), Store(tmp_path) as s:
        assert not s.is_done(row["cell"]) and len(s.rows()) == 5
    assert b'"exact_match": 0.99' in (tmp_path / "results.jsonl.corrupt").read_bytes()


def test_row_whose_cell_key_disagrees_with_its_fields_is_excluded(tmp_path):
    """A row re-keyed by an edit that recomputed the checksum (seed 82 → 99 under the cell key of seed 82)."""
    _cells, lines = _audit_dir(tmp_path)
    moved = encode_row({**json.loads(lines[0]), "seed": 99})
    (tmp_path / "results.jsonl").write_bytes(moved + b"".join(lines[1:]))
    summary = write_report(tmp_path, **OPTIONS)
    (excluded,) = summary["excluded_rows"]
    assert "does not match its own fields" in excluded["reason"] and "synth__ce__s99__lora" in excluded["reason"]
    assert summary["counts"]["rows"] == 5


def _items_n(summary: dict) -> int:
    return next(e["n_seeds"] for e in summary["items"] if e["metric"] == "exact_match")


def test_edited_predictions_file_is_refused_by_the_item_analyses(tmp_path):
    """Flipping every ce prediction of one seed to correct moved the per-item p today; the runner now records
    each predictions file's sha256 in its row and the report refuses (and names) a file that differs. Rows
    written before the checksum stay readable, with a note."""
    from _fake_cells import fast_cell
    from jepa_audit.audit.runner import run_audit

    cfg = Config()
    cfg.audit.benchmarks, cfg.audit.methods, cfg.audit.seeds = ["synth"], ["ce", "T1"], [82, 23, 37]
    assert run_audit(cfg, tmp_path, workers=1, cell_fn=fast_cell, report=False, live=False) == 0
    rows = {r["cell"]: r for r in (json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines())}
    ce = rows["synth__ce__s82__lora"]
    assert len(ce["predictions_sha256"]) == 64
    assert _items_n(write_report(tmp_path, **OPTIONS)) == 3
    pred = tmp_path / ce["predictions_file"]
    flipped = [{**json.loads(x), "exact": True} for x in pred.read_text().splitlines()]
    pred.write_text("".join(json.dumps(p) + "\n" for p in flipped))
    summary = write_report(tmp_path, **OPTIONS)
    assert _items_n(summary) == 2  # the edited file is left out of the item-level analyses
    (refused,) = [w for w in summary["warnings"] if "does not match" in w]
    assert ce["predictions_file"] in refused and "predictions_sha256" in refused
    # rows from before the checksum: read as before, with one note
    old = [encode_row({k: v for k, v in r.items() if k != "predictions_sha256"}) for r in rows.values()]
    (tmp_path / "results.jsonl").write_bytes(b"".join(old))
    summary = write_report(tmp_path, **OPTIONS)
    assert _items_n(summary) == 3
    assert any("6 row(s) were written before predictions files had a checksum" in w for w in summary["warnings"])


def test_report_refuses_the_calibration_store(tmp_path):
    """#28.3: `report DIR/calibration` built verdicts from validation rows; now one line, and nothing written."""
    from typer.testing import CliRunner

    from _fake_calibration import fake_calibration
    from _fake_cells import fast_cell
    from jepa_audit.audit.runner import run_audit
    from jepa_audit.cli import app

    cfg = Config()
    cfg.audit.benchmarks, cfg.audit.methods, cfg.audit.seeds = ["synth"], ["ce", "T1"], [82, 23]
    cfg.calibration.enabled, cfg.calibration.doses = True, [0.001, 1.0]
    assert run_audit(cfg, tmp_path, workers=1, cell_fn=fast_cell, calibration_fn=fake_calibration, report=False,
                     live=False) == 0
    with pytest.raises(ReportError, match=r"calibration runs scored on the validation split"):
        write_report(tmp_path / "calibration", **OPTIONS)
    r = CliRunner().invoke(app, ["report", str(tmp_path / "calibration")])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output
    assert "kind: calibration" in r.output and not (tmp_path / "calibration" / "report.md").exists()


def test_report_during_a_running_audit_says_in_progress(tmp_path):
    """#28.7: a report while the audit holds the lock says "In progress" before its headline and counts the
    declared cells without rows; a report after some cells failed says "Incomplete"; leftovers of a killed
    report's temporary files are removed."""
    cells, lines = _audit_dir(tmp_path)
    (tmp_path / "results.jsonl").write_bytes(b"".join(lines[:4]))  # two T1 cells have no row yet
    stale = tmp_path / ".report.md.999999999.tmp"
    stale.write_text("half a report")
    import subprocess
    import sys

    hold = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from jepa_audit.audit.store import DirLock; from pathlib import Path\n"
        f"l = DirLock(Path({str(tmp_path / '.lock')!r})); l.acquire(); print('held', flush=True); time.sleep(60)"
    )], stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert hold.stdout.readline().strip() == "held"
        summary = write_report(tmp_path, **OPTIONS)
    finally:
        hold.kill()
        hold.wait()
    assert summary["progress"]["in_progress"] == f"pid {hold.pid} on {os.uname().nodename}"
    assert summary["progress"]["declared"] == 6 and summary["progress"]["with_rows"] == 4
    md = (tmp_path / "report.md").read_text()
    assert "In progress: an audit is running" in md.split("|")[0] and "4 of 6 declared cells" in md
    assert not stale.exists()
    summary = write_report(tmp_path, **OPTIONS)  # the runner is gone: the same rows are an incomplete grid
    assert summary["progress"]["in_progress"] is None
    assert summary["warnings"][0].startswith("Incomplete: 2 of 6 declared cells have no row")


def test_a_report_peeking_at_the_lock_never_blocks_a_starting_runner(tmp_path):
    """`report` checks for a running audit with a shared flock held for microseconds; a runner that starts at
    that moment waits it out instead of refusing the directory."""
    import fcntl

    from jepa_audit.audit.store import lock_holder

    _audit_dir(tmp_path)
    fd = os.open(tmp_path / ".lock", os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # a report in the middle of its peek
        import threading

        threading.Timer(0.05, lambda: fcntl.flock(fd, fcntl.LOCK_UN)).start()
        with Store(tmp_path) as s:
            assert len(s.rows()) == 6
            assert lock_holder(tmp_path) is None  # its own lock does not count as another audit
    finally:
        os.close(fd)
