"""The results store: durable commits, torn-line repair, the grid manifest and the directory lock."""

from __future__ import annotations

import json
import os
import socket

import pytest

from _proc import dead_pid, live_process
from jepa_audit.audit.grid import Cell, cell_key, expand_grid
from jepa_audit.audit.store import (
    CHECKSUM,
    GridChangedError,
    Store,
    StoreError,
    StoreLockedError,
    encode_row,
    load_results,
)
from jepa_audit.config import Config, ConfigError


def grid(steps: int = 5, methods=("ce", "T1")) -> list[Cell]:
    cfg = Config()
    cfg.train.steps = steps
    cfg.audit.benchmarks, cfg.audit.methods, cfg.audit.seeds = ["synth"], list(methods), [82, 23]
    return expand_grid(cfg)


def row_for(cell: Cell, em: float = 0.5) -> dict:
    return {
        **cell.ident(),
        "metrics": {"exact_match": em, "dfa_accuracy": em, "n_test": 10},
        "status": "done",
    }


def test_grid_keys_and_hashes():
    cells = grid()
    assert [c.key for c in cells] == [
        "synth__ce__s82__lora",
        "synth__ce__s23__lora",
        "synth__T1__s82__lora",
        "synth__T1__s23__lora",
    ]
    assert len({c.hash for c in cells}) == 4  # method and seed are part of the cell's config
    assert cells[0].config.aux.method == "ce" and cells[2].config.seed == 82
    assert grid()[0].hash == cells[0].hash  # stable
    assert grid(steps=6)[0].hash != cells[0].hash
    assert cell_key("synth", "T3-Global", 4, "full") == "synth__T3-Global__s4__full"


def test_grid_validation():
    cfg = Config()
    cfg.audit.methods = ["ce", "T1", "T3-Globl"]
    with pytest.raises(ConfigError, match=r"T3-Globl.*did you mean T3-Global"):
        expand_grid(cfg, known_methods={"ce", "T1", "T3-Global"})
    cfg.audit.methods = ["ce", "ce"]
    with pytest.raises(ConfigError, match="twice"):
        expand_grid(cfg)
    cfg.audit.methods = []
    with pytest.raises(ConfigError, match="empty"):
        expand_grid(cfg)


def test_commit_is_one_checksummed_line(tmp_path):
    cells = grid()
    with Store(tmp_path) as s:
        stored = s.commit(cells[0], row_for(cells[0]) | {"geometry": {"x": float("nan")}})
        assert s.is_done(cells[0]) and not s.is_done(cells[1])
        with pytest.raises(StoreError, match="already recorded"):
            s.commit(cells[0], row_for(cells[0]))
        with pytest.raises(StoreError, match="seed"):
            s.commit(cells[1], row_for(cells[0]))  # a row that belongs to another cell
        other = s.commit(cells[1], row_for(cells[1]) | {"config_hash": "resolved-elsewhere"})
        assert other["config_hash"] == cells[1].hash and other["resolved_config_hash"] == "resolved-elsewhere"
    lines = (tmp_path / "results.jsonl").read_bytes().splitlines(keepends=True)
    assert len(lines) == 2 and lines[0].endswith(b"\n")
    row = json.loads(lines[0])
    assert row == stored
    assert row["cell"] == cells[0].key and row["config_hash"] == cells[0].hash and CHECKSUM in row
    assert row["geometry"]["x"] is None  # NaN is written as null, never as invalid JSON
    with Store(tmp_path) as s:  # reopening gives the same rows
        assert s.rows() == [stored, other]
    assert load_results(tmp_path) == [stored, other]


def two_committed(tmp_path):
    """The grid's cells, and results.jsonl with its bytes after the first two were committed."""
    cells = grid()
    with Store(tmp_path) as s:
        for c in cells[:2]:
            s.commit(c, row_for(c))
    path = tmp_path / "results.jsonl"
    return cells, path, path.read_bytes()


def test_torn_last_line_is_cut_and_earlier_bytes_kept(tmp_path):
    cells, path, good = two_committed(tmp_path)
    torn = encode_row({**row_for(cells[2]), "cell": cells[2].key})[:57]  # a kill in the middle of a write
    path.write_bytes(good + torn)
    assert len(load_results(tmp_path)) == 2  # readers skip it without repairing
    with pytest.warns(UserWarning, match="incomplete last line"), Store(tmp_path) as s:
        assert [r["cell"] for r in s.rows()] == [c.key for c in cells[:2]]
        assert not s.is_done(cells[2])
    assert path.read_bytes() == good


def test_whole_row_missing_only_its_newline_is_kept(tmp_path):
    cells = grid()
    with Store(tmp_path) as s:
        s.commit(cells[0], row_for(cells[0]))
    path = tmp_path / "results.jsonl"
    last = encode_row({**row_for(cells[1]), "cell": cells[1].key, "config_hash": cells[1].hash})
    path.write_bytes(path.read_bytes() + last[:-1])
    with Store(tmp_path) as s:
        assert s.is_done(cells[1])
    assert path.read_bytes().endswith(last)


def test_bad_checksum_and_duplicates_are_dropped_others_unchanged(tmp_path):
    cells = grid()
    with Store(tmp_path) as s:
        for c in cells[:3]:
            s.commit(c, row_for(c))
    path = tmp_path / "results.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    tampered = lines[1].replace(b'"exact_match": 0.5', b'"exact_match": 0.9')
    assert tampered != lines[1]
    path.write_bytes(lines[0] + tampered + lines[2] + lines[0])  # corrupt middle line + a duplicate
    with pytest.warns(UserWarning, match="corrupt or duplicate"), Store(tmp_path) as s:
        assert [r["cell"] for r in s.rows()] == [cells[0].key, cells[2].key]
    assert path.read_bytes() == lines[0] + lines[2]
    assert (tmp_path / "results.jsonl.corrupt").read_bytes() == tampered + lines[0]


def test_changed_config_is_refused_unless_forced(tmp_path):
    old, new = grid(steps=5), grid(steps=7)
    with Store(tmp_path) as s:
        assert s.check_grid(old) == []
        s.commit(old[0], row_for(old[0]))
    manifest = json.loads((tmp_path / "grid.json").read_text())
    assert manifest["cells"][old[1].key]["hash"] == old[1].hash
    with Store(tmp_path) as s:
        with pytest.raises(GridChangedError) as e:
            s.check_grid(new)
        msg = str(e.value)
        assert old[0].key in msg and old[0].hash in msg and new[0].hash in msg and "--force" in msg
        assert s.is_done(old[0])  # a refusal changes nothing
        changed = s.check_grid(new, force=True)
        assert {c.key for c in changed} == {c.key for c in new}
        assert not s.is_done(new[0]) and s.rows() == []
    assert json.loads((tmp_path / "superseded.jsonl").read_text())["cell"] == old[0].key
    assert json.loads((tmp_path / "grid.json").read_text())["cells"][new[0].key]["hash"] == new[0].hash
    with Store(tmp_path) as s:  # the new hashes are now the recorded ones
        assert s.check_grid(new) == []
        assert s.check_grid(grid(steps=7, methods=("ce", "T1", "T2"))) == []  # a grown grid is fine


def test_changed_config_detected_from_rows_without_manifest(tmp_path):
    old, new = grid(steps=5), grid(steps=7)
    with Store(tmp_path) as s:
        s.commit(old[0], row_for(old[0]))  # no manifest written
    with Store(tmp_path) as s, pytest.raises(GridChangedError):
        s.check_grid(new)


def test_second_runner_refused_with_pid(tmp_path):
    with Store(tmp_path):
        text = (tmp_path / ".lock").read_text()
        assert text.split()[:2] == [str(os.getpid()), socket.gethostname()]
        with pytest.raises(StoreLockedError, match=rf"pid {os.getpid()}"):
            Store(tmp_path)
    with Store(tmp_path):  # released on close
        pass
    assert (tmp_path / ".lock").read_text() == ""


def test_live_pid_in_lock_file_refused_even_without_flock(tmp_path):
    """Where flock is not honoured (some network file systems) the pid in the file still protects."""
    from jepa_audit.audit.store import boot_id, process_start

    with live_process() as p:  # the text a runner writes: pid host boot-id start-time, all matching the live process
        (tmp_path / ".lock").write_text(f"{p.pid} {socket.gethostname()} {boot_id()} {process_start(p.pid)}\n")
        with pytest.raises(StoreLockedError, match=rf"pid {p.pid}"):
            Store(tmp_path)


@pytest.mark.parametrize("hint", ["other-start", "legacy"])
def test_lock_naming_a_reused_pid_is_taken_over(tmp_path, hint):
    """#28.5: the pid in a stale lock now belongs to an unrelated live process. Today the directory was refused
    ("stop it"); the free flock is the truth: the lock is taken over, and the note says why."""
    from jepa_audit.audit.store import boot_id

    with live_process() as p:  # the unrelated process
        extra = f" {boot_id()} 1" if hint == "other-start" else ""  # started at tick 1: not this process
        (tmp_path / ".lock").write_text(f"{p.pid} {socket.gethostname()}{extra}\n")
        why = "unrelated process" if hint == "other-start" else "no start time"
        with pytest.warns(UserWarning, match=rf"stale lock .* pid {p.pid} \(.*{why}.*flock is the truth"), Store(tmp_path):
            assert (tmp_path / ".lock").read_text().split()[0] == str(os.getpid())
        assert p.poll() is None  # nothing was done to it


def test_stale_lock_is_taken_over(tmp_path):
    gone = dead_pid()
    (tmp_path / ".lock").write_text(f"{gone} {socket.gethostname()}\n")
    with pytest.warns(UserWarning, match=rf"stale lock .* pid {gone}"), Store(tmp_path):
        assert (tmp_path / ".lock").read_text().split()[0] == str(os.getpid())


def test_lock_from_another_host_refused(tmp_path):
    (tmp_path / ".lock").write_text("12345 some-other-host\n")
    with pytest.raises(StoreLockedError, match="some-other-host"):
        Store(tmp_path)


def test_read_only_store_creates_and_repairs_nothing(tmp_path):
    d = tmp_path / "nope"
    s = Store(d, lock=False)
    assert s.rows() == [] and not d.exists()
    with pytest.raises(StoreError, match="read-only"):
        s.commit(grid()[0], {})


def test_failures_are_kept_apart_from_results(tmp_path):
    cells = grid()
    with Store(tmp_path) as s:
        s.record_failure(cells[0], "RuntimeError: boom", "Traceback ...\nRuntimeError: boom")
        assert not s.is_done(cells[0])
        assert [f["cell"] for f in s.failures()] == [cells[0].key]
        assert "boom" in (s.cell_dir(cells[0]) / "error.txt").read_text()
        s.commit(cells[0], row_for(cells[0]))
        assert s.failures() == [] and len(s.failures(outstanding_only=False)) == 1
    assert not (tmp_path / "results.jsonl").read_text().count("failed")


def _three_rows(tmp_path) -> tuple[list[Cell], list[bytes]]:
    cells = grid()
    with Store(tmp_path) as s:
        for c in cells[:3]:
            s.commit(c, row_for(c))
    return cells, (tmp_path / "results.jsonl").read_bytes().splitlines(keepends=True)


def test_complete_corrupt_last_line_is_quarantined_not_cut(tmp_path):
    """#14.1: only a line without its newline is torn; a complete line with a bad checksum is quarantined
    wherever it sits, the last line included."""
    cells, lines = _three_rows(tmp_path)
    path = tmp_path / "results.jsonl"
    tampered = lines[2].replace(b'"exact_match": 0.5', b'"exact_match": 0.9')
    path.write_bytes(lines[0] + lines[1] + tampered)
    with pytest.warns(UserWarning, match="line 3: row_sha256 does not match"), Store(tmp_path) as s:
        assert not s.is_done(cells[2])
    assert path.read_bytes() == lines[0] + lines[1]
    assert (tmp_path / "results.jsonl.corrupt").read_bytes() == tampered


def test_duplicate_last_line_is_quarantined_and_its_cell_kept(tmp_path):
    cells, lines = _three_rows(tmp_path)
    path = tmp_path / "results.jsonl"
    path.write_bytes(b"".join(lines) + lines[0])
    with pytest.warns(UserWarning, match="line 4: duplicate of line 1"), Store(tmp_path) as s:
        assert s.is_done(cells[0]) and len(s.rows()) == 3  # the duplicate's cell is not lost
    assert path.read_bytes() == b"".join(lines)
    assert (tmp_path / "results.jsonl.corrupt").read_bytes() == lines[0]


def test_two_different_rows_for_one_cell_are_both_quarantined(tmp_path):
    cells, lines = _three_rows(tmp_path)
    path = tmp_path / "results.jsonl"
    other = encode_row({**row_for(cells[0], em=0.7), "cell": cells[0].key, "config_hash": cells[0].hash})
    path.write_bytes(b"".join(lines) + other)
    with pytest.warns(UserWarning, match="conflicts with line"), Store(tmp_path) as s:
        assert not s.is_done(cells[0])  # neither row is trusted: the cell runs again
        assert [r["cell"] for r in s.rows()] == [cells[1].key, cells[2].key]
    assert path.read_bytes() == lines[1] + lines[2]
    assert (tmp_path / "results.jsonl.corrupt").read_bytes() == lines[0] + other


def test_reader_excludes_rows_of_another_config(tmp_path):
    from jepa_audit.audit.store import manifest_hashes, read_results

    cells, lines = _three_rows(tmp_path)
    with Store(tmp_path) as s:
        s.check_grid(cells)
    path = tmp_path / "results.jsonl"
    foreign = encode_row({**row_for(cells[3]), "cell": cells[3].key, "config_hash": "0123abcd"})
    path.write_bytes(b"".join(lines) + foreign + b'{"torn": ')
    found = read_results(path, manifest_hashes(tmp_path))
    assert list(found.rows) == [c.key for c in cells[:3]]
    reasons = {d["line"]: d["reason"] for d in found.excluded()}
    assert "not the grid's" in reasons[4] and reasons[5].startswith("torn last line")
    # load_results (the read-only helper) is exactly as strict: the foreign row is left out there too
    assert [r["cell"] for r in load_results(tmp_path)] == [c.key for c in cells[:3]]


# ------------------------------------------------------------------------------- leftovers, half-truths (#28.7)


def test_garbage_last_line_is_quarantined_not_deleted(tmp_path):
    """A last line without a newline that is not a row was deleted, and the note promised a rerun of a cell
    that had none. Now its bytes go to results.jsonl.corrupt and the note says only what is true."""
    cells, path, good = two_committed(tmp_path)
    path.write_bytes(good + b"garbage, not a row")
    with pytest.warns(UserWarning, match=r"moved an incomplete last line .* to results\.jsonl\.corrupt; the cell "
                      r"it was recording, if any"), Store(tmp_path):  # fmt: skip
        pass
    assert path.read_bytes() == good
    assert (tmp_path / "results.jsonl.corrupt").read_bytes() == b"garbage, not a row\n"


def test_temporary_files_of_a_killed_writer_are_removed_on_the_next_start(tmp_path):
    """`.config.yaml.<pid>.tmp` (and the report's) survived a kill; the next runner removes them, but never
    the temporary file of a writer that is still running."""
    dead = dead_pid()
    with live_process() as live:
        tmp_path.mkdir(exist_ok=True)
        left = [tmp_path / f".config.yaml.{dead}.tmp", tmp_path / f".report.html.{dead}.tmp"]
        busy = tmp_path / f".summary.json.{live.pid}.tmp"
        for f in [*left, busy]:
            f.write_text("half")
        with pytest.warns(UserWarning, match=r"removed 2 temporary file\(s\)"), Store(tmp_path):
            pass
        assert not any(f.exists() for f in left) and busy.exists()
