"""kill -9 and resume, with real processes: the runner (and its pool workers) die by SIGKILL after the first
row is committed; the same command then finishes the grid. Every cell ends up exactly once and the rows
committed before the kill are unchanged, byte for byte."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from _proc import complete_lines, env, kill_when, pid_files, running, spawn, wait_for
from jepa_audit.config import Config

SCRIPT = """
import sys
from pathlib import Path
from _fake_cells import slow_cell
from jepa_audit.audit.runner import run_audit
from jepa_audit.config import Config

cfg = Config()
cfg.audit.benchmarks, cfg.audit.methods, cfg.audit.seeds = ["synth"], ["ce", "T1", "llm-jepa"], [82, 23, 37]
sys.exit(run_audit(cfg, Path(sys.argv[1]), workers=int(sys.argv[2]), cell_fn=slow_cell, report=False))
"""
N_CELLS = 9


def _cmd(out: Path, workers: int) -> list[str]:
    return [sys.executable, "-c", SCRIPT, str(out), str(workers)]


def _kill_after_first_row(out: Path, workers: int) -> list[bytes]:
    res = out / "results.jsonl"
    p = spawn(_cmd(out, workers), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    kill_when(p, lambda: bool(complete_lines(res)))  # the runner and its workers, mid-grid
    assert p.returncode == -signal.SIGKILL, (
        f"not killed (rc={p.returncode}): {p.stderr.read().decode()[-500:]}"
    )
    return complete_lines(res)


def _check_resume(out: Path, before: list[bytes], workers: int) -> None:
    assert 1 <= len(before) < N_CELLS
    done = subprocess.run(_cmd(out, workers), env=env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-1000:]
    after = complete_lines(out / "results.jsonl")
    assert after[: len(before)] == before  # earlier rows unchanged, byte for byte, in place
    rows = [json.loads(line) for line in after]
    keys = [(r["benchmark"], r["method"], r["seed"], r["mode"]) for r in rows]
    assert len(keys) == N_CELLS and len(set(keys)) == N_CELLS
    # the dead runner's lock did not block the resume, and the new runner released it
    assert (out / ".lock").read_text() == ""


def test_sigkill_then_resume_process_pool(tmp_path):
    before = _kill_after_first_row(tmp_path, workers=2)
    _check_resume(tmp_path, before, workers=2)


def test_sigkill_twice_then_resume_in_process(tmp_path):
    first = _kill_after_first_row(tmp_path, workers=1)
    # second kill: wait for one more row than we had, so the resumed run is itself interrupted
    res = tmp_path / "results.jsonl"
    p = spawn(_cmd(tmp_path, 1), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill_when(p, lambda: len(complete_lines(res)) > len(first))
    second = complete_lines(res)
    assert second[: len(first)] == first
    _check_resume(tmp_path, second, workers=1)


HANG = """
import sys
from pathlib import Path
from _fake_cells import hang_cell
from jepa_audit.audit.runner import run_audit
from jepa_audit.config import Config

cfg = Config()
cfg.audit.benchmarks, cfg.audit.methods, cfg.audit.seeds = ["synth"], ["ce", "T1"], [82]
sys.exit(run_audit(cfg, Path(sys.argv[1]), workers=2, cell_fn=hang_cell, report=False))
"""


def test_pool_workers_die_with_a_killed_runner(tmp_path):
    """#14.3: kill -9 of the runner alone (not its process group): its workers must not live on."""
    from jepa_audit.audit.store import pid_alive

    with running([sys.executable, "-c", HANG, str(tmp_path)], stdout=subprocess.DEVNULL,
                 stderr=subprocess.DEVNULL) as p:
        pids = pid_files(tmp_path / "pids", 2)
        os.kill(p.pid, signal.SIGKILL)  # only the parent
        p.wait()
        assert wait_for(lambda: not any(pid_alive(q) for q in pids.values()), timeout=15), (
            f"orphaned workers still running: {pids}"
        )


def test_one_dead_worker_fails_only_its_own_cell(tmp_path):
    """#14.4: SIGKILL one of two workers mid-cell: its cell fails, the other worker's cell finishes."""
    with running([sys.executable, "-c", HANG, str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                 text=True) as p:
        pids = pid_files(tmp_path / "pids", 2)
        os.kill(pids["synth__ce__s82__lora"], signal.SIGKILL)
        time.sleep(0.5)
        (tmp_path / "release").write_text("")
        out, _ = p.communicate(timeout=60)
    assert p.returncode == 1, out
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r["cell"] for r in rows] == ["synth__T1__s82__lora"]
    fails = [json.loads(line) for line in (tmp_path / "failures.jsonl").read_text().splitlines()]
    assert [f["cell"] for f in fails] == ["synth__ce__s82__lora"]
    assert "SIGKILL" in fails[0]["error"] and "only this cell failed" in fails[0]["error"]


def test_stale_writer_cannot_touch_the_current_attempt(tmp_path):
    """#14.3: each attempt has its own directory; a writer of an earlier attempt writes only there."""
    from jepa_audit.audit.grid import expand_grid
    from jepa_audit.audit.store import Store

    cfg = Config()
    cfg.audit.benchmarks, cfg.audit.methods, cfg.audit.seeds = ["synth"], ["ce"], [82]
    (cell,) = expand_grid(cfg)
    with Store(tmp_path) as s:
        old = s.prepare_cell(cell)
        (old / "progress.jsonl").write_text('{"step": 1}\n')
        new = s.prepare_cell(cell)
        assert new != old and new.parent == old.parent and not old.exists()
        assert s.attempt_dir(cell) == new
        old.mkdir(parents=True)  # a stale writer that recreates its directory and writes on
        (old / "predictions.jsonl").write_text('{"stale": true}\n')
        assert list(new.iterdir()) == []
