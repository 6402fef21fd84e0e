"""The audit's λ calibration stage: picks on validation, frozen into calibration.json and the test cells'
hashes before they run; seeds disjoint from the test seeds; resumable after kill -9; never reads test rows."""

from __future__ import annotations

import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _fake_calibration import fake_calibration
from _fake_cells import fast_cell
from _proc import complete_lines, env, kill_when, pid_files, running, spawn
from jepa_audit.audit.calibration import (
    apply_picks,
    calibration_cells,
    read_calibration,
    run_calibration_cell,
)
from jepa_audit.audit.grid import expand_grid
from jepa_audit.audit.runner import run_audit
from jepa_audit.audit.store import GridChangedError, load_results
from jepa_audit.config import Config, ConfigError, load_config


def _cfg(**cal) -> Config:
    cfg = Config()
    cfg.audit.benchmarks, cfg.audit.methods, cfg.audit.seeds = ["synth"], ["ce", "T1", "llm-jepa", "V1"], [82, 23]
    cfg.calibration.enabled = True
    for k, v in cal.items():
        setattr(cfg.calibration, k, v)
    return cfg


def _run(cfg: Config, out: Path, **kw) -> int:
    return run_audit(cfg, out, workers=1, cell_fn=fast_cell, calibration_fn=fake_calibration, report=False,
                     live=False, **kw)


def test_picks_frozen_into_calibration_json_and_test_cells(tmp_path):
    cfg = _cfg(seeds=[1001, 1002], rule="best")
    assert _run(cfg, tmp_path) == 0
    cal = read_calibration(tmp_path)
    pairs = cal["pairs"]
    assert sorted(pairs) == ["synth/T1/lora", "synth/V1/lora", "synth/llm-jepa/lora"]
    t1 = pairs["synth/T1/lora"]
    assert [g["dose_target"] for g in t1["grid"]] == [0.001, 0.01, 0.1, 1.0]
    assert t1["grid"][2]["val_em"] == pytest.approx(0.5005)  # mean over the two calibration seeds
    assert t1["pick"]["dose_target"] == 0.1 and t1["pick"]["weight"] == pytest.approx(1.0)
    assert pairs["synth/llm-jepa/lora"]["pick"]["dose_target"] == 0.001  # a tie goes to the smaller λ
    v1 = pairs["synth/V1/lora"]
    assert v1["grid"][3]["val_em"] is None and v1["pick"]["dose_target"] == 0.1  # NaN never wins
    grid_span = t1["grid"][-1]["weight"] / t1["grid"][0]["weight"]
    assert grid_span >= 1000 * (1 - 1e-9) and t1["grid"][-1]["dose_median"] >= 1.0  # 3 decades, dose ≥ 1
    # the test cells ran with the pick, and their rows carry its hash
    rows = {r["cell"]: r for r in load_results(tmp_path)}
    assert len(rows) == 8 and all(r.get("kind") != "calibration" for r in rows.values())
    t1_cfg = load_config(file=tmp_path / "cells" / "synth__T1__s82__lora" / "config.yaml")
    assert t1_cfg.aux.weight == pytest.approx(1.0) and t1_cfg.aux.calibrated_dose == 0.1
    assert load_config(file=tmp_path / "cells" / "synth__ce__s82__lora" / "config.yaml").aux.weight is None
    assert rows["synth__T1__s82__lora"]["config_hash"] == t1_cfg.cell_hash()
    # a rerun recomputes nothing: the calibration is frozen and every test cell is done
    calls = (tmp_path / "cal_calls.log").read_text().split()
    assert len(calls) == len(set(calls)) == 3 * 4 * 2
    assert _run(cfg, tmp_path) == 0
    assert (tmp_path / "cal_calls.log").read_text().split() == calls


def test_one_se_rule_picks_the_strongest_dose_validation_cannot_tell_from_the_best(tmp_path):
    """calibration.rule = one_se without per-item scores (rows before they were logged): T1's dose 1 (0.40) is
    within one SE of its best (0.5005 at 0.1, SE = √(p(1−p)/20) ≈ 0.11 over 2 seeds × 10 rows); a flat grid goes
    to its largest λ; NaN still never wins. Switching the rule afterwards re-picks from the stored runs without
    rerunning any."""
    assert Config().calibration.rule == "best"  # the default: the validation-best dose
    cfg = _cfg(seeds=[1001, 1002], rule="one_se")
    assert _run(cfg, tmp_path) == 0
    pairs = read_calibration(tmp_path)["pairs"]
    t1 = pairs["synth/T1/lora"]["pick"]
    assert t1["dose_target"] == 1.0 and t1["rule"] == "one_se" and not t1["smallest"]
    assert t1["best_val_em"] == pytest.approx(0.5005)
    assert t1["se"] == pytest.approx(math.sqrt(0.5005 * 0.4995 / 20))
    assert pairs["synth/llm-jepa/lora"]["pick"]["dose_target"] == 1.0
    assert pairs["synth/V1/lora"]["pick"]["dose_target"] == 0.1
    t1_cfg = load_config(file=tmp_path / "cells" / "synth__T1__s82__lora" / "config.yaml")
    assert t1_cfg.aux.calibrated_dose == 1.0
    calls = (tmp_path / "cal_calls.log").read_text().split()
    best = _cfg(seeds=[1001, 1002], rule="best")
    assert _run(best, tmp_path, force=True) == 0
    again = (tmp_path / "cal_calls.log").read_text().split()
    # no run repeated: V1's NaN dose-1 runs finished with a non-finite score (a result, committed), not lost
    assert again == calls
    assert read_calibration(tmp_path)["pairs"]["synth/T1/lora"]["pick"]["dose_target"] == 0.1


def test_calibration_json_carries_the_dose_response_curve_and_a_paired_one_se(tmp_path):
    """Each pair's grid carries score, SE, paired SE against the best, and the target keys per dose (mean over
    seeds of the runs' geometry pass); the pair carries best and picked dose and the smallest/largest flags.
    The one-SE rule reads the paired SE: T1's dose 1 is outside it (paired SE 0.073 < 0.10 gap), so one_se
    keeps the best dose, where the unpaired SE (0.11) took dose 1."""
    from _fake_calibration import curve_calibration

    cfg = _cfg(seeds=[1001, 1002], rule="one_se")
    assert run_audit(cfg, tmp_path, workers=1, cell_fn=fast_cell, calibration_fn=curve_calibration, report=False,
                     live=False) == 0
    t1 = read_calibration(tmp_path)["pairs"]["synth/T1/lora"]
    g = {p["dose_target"]: p for p in t1["grid"]}
    d = [int(a) - int(b) for a, b in zip("1" * 8 + "0" * 12, "1" * 10 + "0" * 10, strict=True)]
    assert g[1.0]["se_paired"] == pytest.approx(statistics.stdev(d) / math.sqrt(20))
    assert g[0.1]["se_paired"] == 0.0 and g[0.1]["val_em"] == pytest.approx(0.5)
    assert g[0.1]["se"] == pytest.approx(math.sqrt(0.25 / 40))  # unpaired, 2 seeds × 20 rows
    assert t1["pick"]["dose_target"] == 0.1 and t1["best_dose"] == 0.1 and t1["picked_dose"] == 0.1
    assert t1["picked_smallest"] is False and t1["picked_largest"] is False and t1["pick"]["largest"] is False
    # target geometry per dose: curvature_answer_Llast resolves to L2; mean of 100·dose + (0, 1) over 2 seeds
    assert g[0.01]["target"] == {"curvature_answer_L2": pytest.approx(1.5)}
    assert g[1.0]["target"] == {"curvature_answer_L2": pytest.approx(100.5)}
    # llm-jepa is flat and has no per-item scores: the unpaired fallback takes the largest dose, flagged
    flat = read_calibration(tmp_path)["pairs"]["synth/llm-jepa/lora"]
    assert flat["picked_largest"] is True and flat["best_dose"] == 0.001 and flat["grid"][0]["se_paired"] is None
    assert flat["grid"][0]["target"] == {}  # llm-jepa's target (jepa_cos) is not in the fake's geometry


def test_calibration_json_round_trips_and_a_changed_pick_changes_hashes(tmp_path):
    cfg = _cfg()
    assert _run(cfg, tmp_path) == 0
    cells = expand_grid(cfg)
    picks = read_calibration(tmp_path)["pairs"]
    applied = {c.key: c.hash for c in apply_picks(cells, picks)}
    rows = {r["cell"]: r["config_hash"] for r in load_results(tmp_path)}
    assert applied == rows  # calibration.json alone reproduces the test cells' hashes
    doc = json.loads((tmp_path / "calibration.json").read_text())
    doc["pairs"]["synth/T1/lora"]["pick"]["weight"] = 0.123
    (tmp_path / "calibration.json").write_text(json.dumps(doc))
    changed = {c.key: c.hash for c in apply_picks(cells, read_calibration(tmp_path)["pairs"])}
    assert {k for k in changed if changed[k] != rows[k]} == {"synth__T1__s82__lora", "synth__T1__s23__lora"}
    with pytest.raises(GridChangedError):  # the frozen (edited) pick reaches the grid and is refused
        _run(cfg, tmp_path)


def test_calibration_seeds_disjoint_from_test_seeds():
    cfg = _cfg(seeds=[1001, 1002])
    runs = [c for rs in calibration_cells(cfg, expand_grid(cfg)).values() for c in rs]
    assert runs and {c.seed for c in runs}.isdisjoint(cfg.audit.seeds)
    with pytest.raises(ConfigError, match="share"):
        load_config(None, None, ["calibration.enabled=true", "audit.seeds=[1, 2]", "calibration.seeds=[2, 3]"])
    with pytest.raises(ConfigError, match="three decades"):
        load_config(None, None, ["calibration.doses=[0.01, 1.0]"])


def test_pinned_lambda_skips_the_stage_and_dry_run_counts_runs(tmp_path, capsys):
    import io

    buf = io.StringIO()
    cfg = _cfg()
    run_audit(cfg, tmp_path / "d", dry_run=True, cell_fn=fast_cell, step_time_fn=lambda c: 0.01, stream=buf)
    assert "= 12 runs" in buf.getvalue() and "12 run(s) to go" in buf.getvalue()
    assert not (tmp_path / "d").exists()
    pinned = _cfg()
    pinned.aux.weight = 0.05
    assert _run(pinned, tmp_path / "p") == 0
    assert not (tmp_path / "p" / "calibration.json").exists() and not (tmp_path / "p" / "cal_calls.log").exists()
    assert {r["config_hash"] for r in load_results(tmp_path / "p")} == {c.hash for c in expand_grid(pinned)}


SCRIPT = """
import sys
from pathlib import Path
from _fake_calibration import slow_calibration
from _fake_cells import fast_cell
from jepa_audit.audit.runner import run_audit
from jepa_audit.config import Config

cfg = Config()
cfg.audit.benchmarks, cfg.audit.methods, cfg.audit.seeds = ["synth"], ["ce", "T1", "V1"], [82, 23]
cfg.calibration.enabled = True
sys.exit(run_audit(cfg, Path(sys.argv[1]), workers=int(sys.argv[2]), cell_fn=fast_cell,
                   calibration_fn=slow_calibration, report=False, live=False))
"""


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_sigkill_during_the_stage_resumes_without_repeating_finished_runs(tmp_path, workers):
    cmd = [sys.executable, "-c", SCRIPT, str(tmp_path), str(workers)]
    res = tmp_path / "calibration" / "results.jsonl"
    p = spawn(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    kill_when(p, lambda: len(complete_lines(res)) >= 2)  # the runner and its workers, mid-stage
    assert p.returncode == -signal.SIGKILL, p.stderr.read().decode()[-500:]
    before = complete_lines(res)
    done_before = {json.loads(x)["cell"] for x in before}
    assert 2 <= len(done_before) < 8
    frozen = read_calibration(tmp_path)["pairs"]  # a pair is frozen only once all its runs are committed
    assert all(set(run for g in e["grid"] for run in g["runs"]) <= done_before for e in frozen.values())
    n_calls = len((tmp_path / "cal_calls.log").read_text().split())
    r = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-1000:]
    after_calls = (tmp_path / "cal_calls.log").read_text().split()[n_calls:]
    assert done_before.isdisjoint(after_calls)  # no finished run ran again
    after = complete_lines(res)
    # 8 runs, 8 committed: V1 at dose 1 scores NaN (a finished run with a non-finite score, never picked)
    assert after[: len(before)] == before and len({json.loads(x)["cell"] for x in after}) == len(after) == 8
    assert set(read_calibration(tmp_path)["pairs"]) == {"synth/T1/lora", "synth/V1/lora"}
    assert len(load_results(tmp_path)) == 6  # then the test grid


SMALL = [
    "data.n_train=160", "data.n_test=20", "data.val_size=16", "base.pool_size=300", "model.vocab_size=300",
    "base.steps=1", "train.steps=4", "train.batch_size=8", "probe.every=2", "eval.max_new_tokens=24",
    "aux.method=T1", "aux.dose=0.1", "aux.weight=0.01", "calibration.val_rows=10",
]


@pytest.mark.slow
def test_real_calibration_run_reads_train_and_validation_only(tmp_path, monkeypatch):
    import jepa_audit.evaluate
    import jepa_audit.train
    from jepa_audit.cell import prepare

    cfg = load_config(None, None, [*SMALL, f"cache_dir={tmp_path / 'cache'}"])
    seen: dict[str, list] = {"eval": [], "train": []}
    real_eval, real_train = jepa_audit.evaluate.evaluate, jepa_audit.train.train

    def spy_eval(model, tok, rows, examples, *a, **k):
        seen["eval"].append((list(rows), list(examples)))
        return real_eval(model, tok, rows, examples, *a, **k)

    def spy_train(model, rows, **k):
        seen["train"].append(list(rows))
        return real_train(model, rows, **k)

    monkeypatch.setattr(jepa_audit.evaluate, "evaluate", spy_eval)
    monkeypatch.setattr(jepa_audit.train, "train", spy_train)
    row = run_calibration_cell(cfg, tmp_path / "cell")
    prep = prepare(cfg)
    (rows, examples), = seen["eval"]
    assert examples == list(prep.splits.val[:10]) and len(rows) == 10
    test_items = {(e.prompt, e.target) for e in prep.splits.test}
    assert not test_items & {(e.prompt, e.target) for e in examples}  # not one test item is decoded
    # the last call is the fine-tune (an earlier one may be the tiny base's pre-training on its own pool)
    assert [r.full for r in seen["train"][-1]] == [r.full for r in prep.train_rows]
    assert row["metrics"]["split"] == "validation" and row["metrics"]["n_val"] == 10
    assert math.isfinite(row["metrics"]["exact_match"])
    assert row["dose"]["anchored"] and row["dose"]["step0"] == pytest.approx(0.1, rel=1e-5)
    assert row["weight"] != 0.01  # λ resolved from the dose, not the fallback


# ---------------------------------------------------------------------------------------------- lost runs (#28.1)

from _fake_calibration import flaky_calibration  # noqa: E402


def _picks(out: Path) -> dict[str, tuple]:
    return {pid: (e["pick"]["dose_target"], e["pick"]["weight"]) for pid, e in read_calibration(out)["pairs"].items()}


def _run_flaky(cfg: Config, out: Path, capsys=None) -> int:
    return run_audit(cfg, out, workers=1, cell_fn=fast_cell, calibration_fn=flaky_calibration, report=False,
                     live=False)


def test_a_lost_run_is_retried_and_its_pair_never_picked_from_a_partial_curve(tmp_path, capsys):
    """#28.1: T1's dose-0.1 run (its best) is lost. Today the pick came from the other doses and the audit went
    on with exit 0; now the pair is not picked, no test cell runs, the message names the run, exit 1, and the
    rerun retries only that run and ends with the picks of an undisturbed run."""
    cfg = _cfg(seeds=[1001], rule="best")
    ref = tmp_path / "undisturbed"
    assert _run_flaky(cfg, ref) == 0
    out = tmp_path / "lost"
    out.mkdir()
    lost = "cal__synth__T1__s1001__lora__d0.1"
    (out / "cal_fail.txt").write_text(lost)
    capsys.readouterr()
    assert _run_flaky(cfg, out) == 1
    said = capsys.readouterr().out
    assert f"{lost} (RuntimeError: injected loss of {lost})" in said and "synth/T1/lora" in said
    assert not (out / "results.jsonl").exists()  # no test cell ran on a λ from a partial curve
    pairs = read_calibration(out)["pairs"]
    assert sorted(pairs) == ["synth/V1/lora", "synth/llm-jepa/lora"]  # the complete pairs are frozen
    assert all(e["pick"] is not None and e["complete"] for e in pairs.values())
    # a second run without the fix still refuses (the lost run is retried, not forgotten)
    assert _run_flaky(cfg, out) == 1
    (out / "cal_fail.txt").unlink()
    n_calls = len((out / "cal_seen.log").read_text().splitlines())
    assert _run_flaky(cfg, out) == 0
    retried = [line.split()[0] for line in (out / "cal_seen.log").read_text().splitlines()[n_calls:]]
    assert retried == [lost]
    assert _picks(out) == _picks(ref) and _picks(out)["synth/T1/lora"][0] == 0.1
    assert sorted(r["cell"] for r in load_results(out)) == sorted(r["cell"] for r in load_results(ref))


def test_calibration_json_grows_pair_by_pair(tmp_path):
    """#28.1: docs/audit.md says a pair is frozen the moment its runs are done: V1's first run already sees
    T1 and llm-jepa in calibration.json (today the file was written once, at the end of the stage)."""
    cfg = _cfg(seeds=[1001], rule="best")
    assert _run_flaky(cfg, tmp_path) == 0
    seen = dict(line.split(" ", 1) for line in (tmp_path / "cal_seen.log").read_text().splitlines())
    assert seen["cal__synth__T1__s1001__lora__d0.001"].strip() == ""
    assert seen["cal__synth__V1__s1001__lora__d0.001"].strip() == "synth/T1/lora,synth/llm-jepa/lora"


def test_a_diverged_run_is_a_result_not_a_lost_run(tmp_path):
    """A run whose training diverges (TrainError) is a non-finite score of its dose: committed, never picked,
    not retried; the audit goes on (a rerun would diverge again)."""
    cfg = _cfg(seeds=[1001], rule="best")
    (tmp_path / "cal_diverge.txt").write_text("cal__synth__T1__s1001__lora__d0.1")
    assert _run_flaky(cfg, tmp_path) == 0
    t1 = read_calibration(tmp_path)["pairs"]["synth/T1/lora"]
    assert t1["grid"][2]["val_em"] is None and t1["pick"]["dose_target"] == 1.0  # 0.40 beats 0.35 and 0.30
    rows = {r["cell"]: r for r in load_results(tmp_path / "calibration")}
    assert rows["cal__synth__T1__s1001__lora__d0.1"]["score"] == "non-finite"
    n = len((tmp_path / "cal_seen.log").read_text().splitlines())
    assert _run_flaky(cfg, tmp_path) == 0 and len((tmp_path / "cal_seen.log").read_text().splitlines()) == n


def test_a_pick_frozen_from_a_partial_curve_is_not_trusted(tmp_path):
    """A calibration.json written before #28 could hold a pair picked without a lost run (``pick`` from the
    survivors): its run is missing from DIR/calibration/, so the pair is re-picked after the run is retried."""
    cfg = _cfg(seeds=[1001], rule="best")
    assert _run_flaky(cfg, tmp_path) == 0
    from jepa_audit.audit.store import RESULTS, read_results

    res = tmp_path / "calibration" / RESULTS
    found = read_results(res)
    lost = "cal__synth__T1__s1001__lora__d0.1"
    res.write_bytes(b"".join(raw for k, raw in found.raws.items() if k != lost))  # as if it had failed
    doc = json.loads((tmp_path / "calibration.json").read_text())
    doc["pairs"]["synth/T1/lora"]["pick"]["dose_target"] = 1.0  # what the survivors would have given
    del doc["pairs"]["synth/T1/lora"]["complete"]
    (tmp_path / "calibration.json").write_text(json.dumps(doc))
    n = len((tmp_path / "cal_seen.log").read_text().splitlines())
    assert _run_flaky(cfg, tmp_path) == 0
    retried = [line.split()[0] for line in (tmp_path / "cal_seen.log").read_text().splitlines()[n:]]
    assert retried == [lost] and _picks(tmp_path)["synth/T1/lora"][0] == 0.1


HANG = """
import sys
from pathlib import Path
from _fake_calibration import hang_calibration
from _fake_cells import fast_cell
from jepa_audit.audit.runner import run_audit
from jepa_audit.config import Config

if __name__ == "__main__":
    cfg = Config()
    cfg.audit.benchmarks, cfg.audit.methods, cfg.audit.seeds = ["synth"], ["ce", "T1"], [82]
    cfg.calibration.enabled, cfg.calibration.doses, cfg.calibration.seeds = True, [0.001, 1.0], [1001]
    cfg.calibration.rule = "best"
    sys.exit(run_audit(cfg, Path(sys.argv[1]), workers=2, cell_fn=fast_cell, calibration_fn=hang_calibration,
                       report=False, live=False))
"""


@pytest.mark.slow
def test_sigkill_of_a_calibration_worker_then_resume_gives_the_undisturbed_picks(tmp_path):
    """#28.1 with a real SIGKILL: two workers run T1's two doses; the dose-1 run's worker is killed. Today the
    pick came from dose 0.001 alone (exit 0); now the runner exits 1 naming the lost run, T1 is not frozen,
    and the resume runs only that run and ends with the picks of an undisturbed run."""
    script = tmp_path / "hang.py"
    script.write_text(HANG)
    ref, out = tmp_path / "ref", tmp_path / "out"
    for d in (ref, out):
        d.mkdir()
    (ref / "release").write_text("")
    r = subprocess.run([sys.executable, str(script), str(ref)], env=env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-1000:]
    with running([sys.executable, str(script), str(out)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                 text=True) as p:
        pids = pid_files(out / "calpids", 2, p)  # the calibration runs started (a hang guard, not a timing check)
        lost = "cal__synth__T1__s1001__lora__d1"
        os.kill(pids[lost], signal.SIGKILL)
        time.sleep(0.5)
        (out / "release").write_text("")
        said, _ = p.communicate(timeout=60)
    assert p.returncode == 1, said
    assert lost in said and "SIGKILL" in said and "synth/T1/lora" in said
    assert read_calibration(out)["pairs"] == {} and not (out / "results.jsonl").exists()
    r = subprocess.run([sys.executable, str(script), str(out)], env=env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-1000:] + r.stderr[-1000:]
    assert sorted(f.name for f in (out / "calpids").iterdir()) == sorted([lost, "cal__synth__T1__s1001__lora__d0.001"])
    assert _picks(out) == _picks(ref) and _picks(out)["synth/T1/lora"][0] == 1.0
    assert len(load_results(out)) == len(load_results(ref)) == 2


def test_calibration_store_notes_are_plain_lines(tmp_path, capsys):
    """#28.7: a repair in DIR/calibration/ printed as a raw Python warning with a source line; now one
    `note:` line like the test store's."""
    cfg = _cfg(seeds=[1001], rule="best")
    cfg.audit.methods = ["ce", "T1"]
    assert _run(cfg, tmp_path) == 0
    res = tmp_path / "calibration" / "results.jsonl"
    res.write_bytes(res.read_bytes() + b"torn")
    (tmp_path / "calibration.json").unlink()  # so that the stage opens its store again
    capsys.readouterr()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a StoreNotice escaping as a warning fails the test
        assert _run(cfg, tmp_path) == 0
    out = capsys.readouterr()
    notes = [x for x in out.out.splitlines() if "incomplete last line" in x]
    assert len(notes) == 1 and notes[0].startswith("note: ") and "warn" not in out.err.lower()


def test_aux_calibrate_takes_the_directory_lock(tmp_path):
    """#28.7: `aux calibrate --out DIR` wrote into a directory whose audit was running."""
    from jepa_audit.audit.calibration import calibrate_method
    from jepa_audit.audit.store import Store, StoreLockedError

    with Store(tmp_path), pytest.raises(StoreLockedError, match="in use by another audit runner"):
        calibrate_method(_cfg(seeds=[1001]), "T1", tmp_path)
    assert not (tmp_path / "calibration").exists()
