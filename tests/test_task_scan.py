"""SCAN: the splits (simple and the generalisation splits), the one-word action form, scoring, errors."""

from __future__ import annotations

import pytest

from jepa_audit.config import DataCfg, load_config
from jepa_audit.data import DataError, Example
from jepa_audit.tasks import get_task, load_benchmark
from jepa_audit.tasks.scan import ACTION_WORDS, read_scan


def _cfg(path, **kw) -> DataCfg:
    return DataCfg(task="scan", source="local", path=str(path), **kw)


def test_lines_become_command_and_one_word_actions(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("IN: run opposite left after walk right OUT: I_TURN_RIGHT I_WALK I_TURN_LEFT I_TURN_LEFT I_RUN\n"
                 "IN: jump OUT: I_JUMP\n")
    assert read_scan(f) == [
        Example("run opposite left after walk right", "RTURN WALK LTURN LTURN RUN", 0), Example("jump", "JUMP", 1)]
    assert len(set(ACTION_WORDS.values())) == len(ACTION_WORDS)  # a bijection: EM on words = EM on actions


def test_bad_lines_name_the_file_line_and_what_was_expected(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("IN: jump OUT: I_JUMP\nrun twice\n")
    with pytest.raises(DataError, match=r"t\.txt line 2: expected 'IN: <command> OUT: <actions>'"):
        read_scan(f)
    f.write_text("IN: hop OUT: I_HOP\n")
    with pytest.raises(DataError, match=r"line 1: unknown action\(s\) \['I_HOP'\]"):
        read_scan(f)
    with pytest.raises(DataError, match=r"tasks_train_simple\.txt: file not found"):
        load_benchmark(_cfg(tmp_path), "simple")
    with pytest.raises(DataError, match=r"unknown benchmark 'jump'; expected one of: simple, length"):
        load_benchmark(_cfg(tmp_path), "jump")


def test_scoring_is_exact_match_of_the_sequence_up_to_spacing():
    ex = [Example("walk twice", "WALK WALK", 0), Example("look", "LOOK", 1)]
    res = get_task("scan").score(ex, ["  WALK  WALK ", "LOOK LOOK"], cfg=None)
    assert res.metrics == {"exact_match": 0.5, "n_test": 2} and [p["exact"] for p in res.predictions] == [True, False]


@pytest.mark.parametrize(("bench", "n_train", "n_test"), [
    ("simple", 16728, 4182), ("length", 16990, 3920), ("addprim_jump", 14670, 7706), ("around_right", 15225, 4476)])
def test_real_splits_carve_val_and_geometry_from_train(shared_data, bench, n_train, n_test):
    s = load_benchmark(_cfg(shared_data / "scan", val_size=200, geometry_size=64), bench)
    assert s.sizes() == {"train": n_train - 264, "val": 200, "geometry": 64, "test": n_test}
    held, train = {e.prompt for e in s.val + s.geometry}, {e.prompt for e in s.train}
    assert held & train <= {"jump"}  # the addprim_jump train file repeats "jump" 1,467 times (as the paper)
    assert not {e.prompt for e in s.test} & train
    if bench == "length":  # the generalisation split: train ≤ 22 actions, test longer
        assert max(len(e.target.split()) for e in s.train) <= 22 < min(len(e.target.split()) for e in s.test)
    if bench == "addprim_jump":  # "jump" only alone in training
        assert {e.prompt for e in s.train + s.val + s.geometry if "jump" in e.prompt.split()} <= {"jump"}


def test_scan_preset_is_the_cpu_audit_of_the_issue():
    cfg = load_config("scan")
    assert cfg.data.task == "scan" and cfg.model.kind == "tiny" and cfg.adapter.mode == "full"
    assert len(cfg.audit.methods) == 24 and len(cfg.audit.seeds) == 5 and set(cfg.audit.benchmarks) <= set(
        get_task("scan").benchmarks)


def test_max_test_samples_the_whole_split_not_its_easiest_prefix(shared_data):
    """The length split's test file is ordered by length: its first 400 lines are all 24–25 actions long."""
    full = load_benchmark(_cfg(shared_data / "scan", val_size=200, geometry_size=64), "length").test
    s = load_benchmark(_cfg(shared_data / "scan", val_size=200, geometry_size=64, max_test=400), "length")
    again = load_benchmark(_cfg(shared_data / "scan", val_size=200, geometry_size=64, max_test=400), "length")
    assert [e.prompt for e in s.test] == [e.prompt for e in again.test]  # fixed seed: every cell, same items
    assert len(s.test) == 400 and [e.idx for e in s.test] == list(range(400))
    assert {e.prompt for e in s.test} <= {e.prompt for e in full}
    lengths = {len(e.target.split()) for e in s.test}
    assert max(lengths) >= 40 and lengths - {24, 25}  # the long tail is sampled, not just the prefix's 24–25
    assert "sampled uniformly" in s.source
