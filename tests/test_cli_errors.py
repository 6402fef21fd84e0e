"""User errors through the CLI: one literal line, exit 2, no traceback (#14 items 6, 7 and 9)."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from _fs import fill, make_read_only, tmpfs
from jepa_audit.cli import app

runner = CliRunner()
SMOKE = ["--preset", "smoke", "--set", "audit.methods=[ce]", "--set", "audit.seeds=[82]"]


def _assert_one_error_line(r, *needles: str) -> str:
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    lines = [x for x in r.output.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.output
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def test_bracketed_user_text_is_printed_literally(tmp_path):
    for name in ("run[red]1", "a[/]b", "x[/bold]"):
        r = runner.invoke(app, ["report", str(tmp_path / name)])
        _assert_one_error_line(r, str(tmp_path / name))
    r = runner.invoke(app, ["audit", "--set", "audit.modes=[qlora]", "--out", str(tmp_path / "o")])
    _assert_one_error_line(r, "audit.modes=[qlora]")


@pytest.mark.parametrize("bad", ["0", "-3"])
def test_workers_must_be_positive(tmp_path, bad):
    r = runner.invoke(app, ["audit", *SMOKE, "--workers", bad, "--out", str(tmp_path / "o")])
    _assert_one_error_line(r, "--workers", bad)
    assert not (tmp_path / "o").exists()


def test_seed_true_is_refused(tmp_path):
    r = runner.invoke(app, ["audit", *SMOKE, "--set", "audit.seeds=[true]", "--out", str(tmp_path / "o")])
    _assert_one_error_line(r, "audit.seeds")


def test_results_or_lock_being_a_directory(tmp_path):
    for name in ("results.jsonl", ".lock"):
        out = tmp_path / name.strip(".")
        (out / name).mkdir(parents=True)
        r = runner.invoke(app, ["audit", *SMOKE, "--out", str(out)])
        _assert_one_error_line(r, str(out / name), "Is a directory")
    r = runner.invoke(app, ["report", str(tmp_path / "results.jsonl")])
    _assert_one_error_line(r, "is a directory")


def test_read_only_out_is_one_clear_error(tmp_path):
    with tmpfs(tmp_path / "ro") as mnt:
        make_read_only(mnt)
        for out in (mnt, mnt / "new"):
            r = runner.invoke(app, ["audit", *SMOKE, "--out", str(out)])
            _assert_one_error_line(r, str(out), "Read-only file system")


def test_stale_lock_notice_is_one_plain_line(tmp_path):
    """The stale-lock takeover is said in one line, not as a Python UserWarning with its source line."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    tmp_path.joinpath(".lock").write_text(f"{p.pid} {socket.gethostname()}\n")
    script = (
        "import sys; from pathlib import Path; sys.path.insert(0, sys.argv[2]); from _fake_cells import fast_cell; "
        "from jepa_audit.audit.runner import run_audit; from jepa_audit.config import Config; cfg = Config(); "
        "cfg.audit.benchmarks, cfg.audit.methods, cfg.audit.seeds = ['synth'], ['ce'], [82]; "
        "sys.exit(run_audit(cfg, Path(sys.argv[1]), cell_fn=fast_cell, report=False))"
    )
    tests = str(Path(__file__).parent)
    r = subprocess.run([sys.executable, "-c", script, str(tmp_path), tests], capture_output=True, text=True,
                       timeout=60, env=dict(os.environ))
    assert r.returncode == 0, r.stderr
    assert "UserWarning" not in r.stderr + r.stdout and "warnings.warn" not in r.stderr
    notes = [x for x in r.stdout.splitlines() if "stale lock" in x]
    assert len(notes) == 1 and notes[0].startswith("note: taking over a stale lock")


def _fill_when_training(cfg, cell_dir, progress=None):
    """A cell that fills the disk, then fails writing its predictions (ENOSPC mid-cell)."""
    fill(Path(cell_dir).parents[2])
    (Path(cell_dir) / "predictions.jsonl").write_bytes(b"x" * 65536)
    raise AssertionError("unreachable: the disk is full")


def test_full_disk_during_a_cell_is_one_clear_error(tmp_path):
    from jepa_audit.audit.runner import run_audit
    from jepa_audit.audit.store import StoreError
    from jepa_audit.config import Config

    cfg = Config()
    cfg.audit.benchmarks, cfg.audit.methods, cfg.audit.seeds = ["synth"], ["ce"], [82]
    with tmpfs(tmp_path / "mnt", size="256k") as out:
        with pytest.raises(StoreError, match=r"No space left on device") as e:
            run_audit(cfg, out, cell_fn=_fill_when_training, report=False, stream=io.StringIO())
        assert str(out) in str(e.value) and e.value.__cause__ is None and e.value.__suppress_context__
        assert not [p for p in out.rglob("*.tmp")], "temporary files left behind"
        assert (out / ".lock").read_text() == ""  # released


def _fill_then_report(out_dir, alpha, family):
    from jepa_audit.report import write_report

    fill(Path(out_dir))
    return write_report(out_dir, alpha, family, bootstrap_reps=20, conditional_logit_metrics=())


def test_full_disk_during_the_audits_report_is_one_clear_error(tmp_path):
    """ENOSPC while the runner writes the report: one StoreError line (exit 2 in the CLI), the cells
    committed, no report file half-written, no temporary file left."""
    from _fake_cells import fast_cell
    from jepa_audit.audit.runner import run_audit
    from jepa_audit.audit.store import StoreError
    from jepa_audit.config import Config

    cfg = Config()
    cfg.audit.benchmarks, cfg.audit.methods, cfg.audit.seeds = ["synth"], ["ce", "T1"], [82, 23]
    with tmpfs(tmp_path / "mnt", size="512k") as out:
        with pytest.raises(StoreError, match=r"cannot write the report \(No space left on device\)"):
            run_audit(cfg, out, cell_fn=fast_cell, report_fn=_fill_then_report, stream=io.StringIO())
        assert len((out / "results.jsonl").read_text().splitlines()) == 4
        assert not any((out / n).exists() for n in ("summary.json", "report.md", "report.html"))
        assert not [p for p in out.rglob("*.tmp")], "temporary files left behind"


def _fill_then_big_row(cfg, cell_dir, progress=None):
    """A cell that fills the disk and returns a row larger than what is left: its append is cut short."""
    from _fake_cells import fast_cell

    row = fast_cell(cfg, cell_dir, progress)
    fill(Path(cell_dir).parents[2])
    return {**row, "padding": "x" * 16384}


def test_full_disk_during_a_row_append_leaves_no_fragment_and_names_results(tmp_path):
    """#28.6: ENOSPC part-way through a results.jsonl append left a partial row, and the error named
    failures.jsonl (the runner took the write error for a bad row and tried to record a failure). Now the file
    is cut back to its last whole row and the one error line names results.jsonl."""
    from jepa_audit.audit.runner import run_audit
    from jepa_audit.audit.store import StoreError
    from jepa_audit.config import Config

    cfg = Config()
    cfg.audit.benchmarks, cfg.audit.methods, cfg.audit.seeds = ["synth"], ["ce"], [82, 23]
    with tmpfs(tmp_path / "mnt", size="256k") as out:
        from _fake_cells import fast_cell

        one = Config()
        one.audit.benchmarks, one.audit.methods, one.audit.seeds = ["synth"], ["ce"], [82]
        assert run_audit(one, out, cell_fn=fast_cell, report=False, stream=io.StringIO()) == 0
        before = (out / "results.jsonl").read_bytes()
        with pytest.raises(StoreError, match=r"No space left on device") as e:
            run_audit(cfg, out, cell_fn=_fill_then_big_row, report=False, stream=io.StringIO())
        assert str(e.value).startswith(f"{out / 'results.jsonl'}: cannot write")
        assert (out / "results.jsonl").read_bytes() == before  # no fragment of the new row
        assert not (out / "failures.jsonl").exists()


def test_append_line_cuts_back_a_short_write(tmp_path, monkeypatch):
    """The same on any file system: a write that takes only part of the line is truncated back."""
    from jepa_audit.audit import store as S

    path = tmp_path / "results.jsonl"
    S.append_line(path, b'{"a": 1}\n')
    real = os.write
    monkeypatch.setattr(S.os, "write", lambda fd, data: real(fd, bytes(data)[:5]))  # the disk takes 5 bytes
    with pytest.raises(S.StoreError, match=r"results\.jsonl: cannot write .*No space left on device"):
        S.append_line(path, b'{"b": 2}\n')
    assert path.read_bytes() == b'{"a": 1}\n'


# ------------------------------------------------------------------------ every input checked first (#28.4)

NLRX = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "nl-rx"
needs_nlrx = pytest.mark.skipif(not NLRX.is_dir(), reason=f"the real NL-RX data is not at {NLRX}")


def _nlrx_copy(tmp_path: Path) -> Path:
    import shutil

    d = tmp_path / "nl-rx"
    shutil.copytree(NLRX, d)
    return d


def _real_data(d: Path) -> list[str]:
    return [*SMOKE, "--set", "data.source=nl-rx", "--set", f"data.path={d}", "--set", "data.split=llm-jepa",
            "--set", "audit.benchmarks=[synth]"]  # fmt: skip


@needs_nlrx
def test_unreadable_data_file_is_one_line_before_anything_runs(tmp_path, monkeypatch):
    """Mode 000 gave a 117-line traceback and exit 1. The tests run as root, where chmod 000 does not stop a
    read, so the refusal is simulated where the kernel would make it (the file's read)."""
    d = _nlrx_copy(tmp_path)
    bad = d / "NL-RX-Synth" / "src.txt"
    real = Path.read_bytes

    def read_bytes(self: Path) -> bytes:
        if self == bad:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    r = runner.invoke(app, ["audit", *_real_data(d), "--out", str(tmp_path / "o")])
    _assert_one_error_line(r, f"{bad}: cannot read (Permission denied)")
    assert not (tmp_path / "o").exists()  # nothing ran, nothing was created


@needs_nlrx
def test_unreadable_data_folder_is_one_line(tmp_path, monkeypatch):
    d = _nlrx_copy(tmp_path)
    real = Path.is_file

    def is_file(self: Path) -> bool:  # what stat() does inside a folder of mode 000 for a non-root user
        if self.parent == d / "NL-RX-Synth":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "is_file", is_file)
    r = runner.invoke(app, ["audit", *_real_data(d), "--out", str(tmp_path / "o")])
    _assert_one_error_line(r, str(d / "NL-RX-Synth"), "cannot read (Permission denied)")


@needs_nlrx
def test_a_line_too_long_for_the_model_is_named_by_the_preflight(tmp_path):
    """A 5 MB line passed the preflight, the base pre-trained, then every cell failed without naming it."""
    d = _nlrx_copy(tmp_path)
    src = d / "NL-RX-Synth" / "src.txt"
    lines = src.read_text().split("\n")
    lines[4] = "lines with the word dog " * 220_000
    src.write_text("\n".join(lines))
    r = runner.invoke(app, ["audit", *_real_data(d), "--out", str(tmp_path / "o")])
    _assert_one_error_line(r, f"{src}: line 5 has 5,280,000 characters", "model.max_positions")
    assert not (tmp_path / "o").exists()
