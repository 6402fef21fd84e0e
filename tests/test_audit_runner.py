"""The audit runner with fake cells: full grid, resume, failures and retries, the pool, dry run, presets."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from _fake_cells import fast_cell
from jepa_audit.audit.runner import run_audit
from jepa_audit.audit.store import GridChangedError, Store, StoreLockedError
from jepa_audit.config import PRESET_DIR, PRESETS, Config, load_config


def small_cfg(**audit) -> Config:
    cfg = Config()
    cfg.train.steps = 5
    cfg.audit.benchmarks = ["synth", "turk"]
    cfg.audit.methods = ["ce", "T1"]
    cfg.audit.seeds = [82, 23]
    cfg.audit.workers = 1
    for k, v in audit.items():
        setattr(cfg.audit, k, v)
    return cfg


class Reports:
    """Records report calls (the report module belongs to another issue)."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def __call__(self, out_dir, alpha, family):
        self.calls.append((Path(out_dir), alpha, family))
        (Path(out_dir) / "summary.json").write_text("{}")


def audit(cfg, out, **kw):
    kw.setdefault("cell_fn", fast_cell)
    kw.setdefault("report_fn", Reports())
    kw.setdefault("stream", io.StringIO())
    return run_audit(cfg, out, **kw)


def calls(out: Path) -> list[str]:
    p = out / "calls.log"
    return p.read_text().split() if p.exists() else []


def result_rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def test_full_grid_then_resume_skips_done(tmp_path):
    cfg, rep, log = small_cfg(), Reports(), io.StringIO()
    assert audit(cfg, tmp_path, report_fn=rep, stream=log) == 0
    rows = result_rows(tmp_path)
    keys = [r["cell"] for r in rows]
    assert len(rows) == 8 and len(set(keys)) == 8
    assert {(r["benchmark"], r["method"], r["seed"], r["mode"]) for r in rows} == {
        (b, m, s, "lora") for b in ("synth", "turk") for m in ("ce", "T1") for s in (82, 23)
    }
    assert all(r["status"] == "done" and r["wall_s"] >= 0 for r in rows)
    assert rep.calls == [(tmp_path, 0.10, "per-benchmark")]
    cell_dir = tmp_path / "cells" / "synth__T1__s23__lora"
    attempt = cell_dir / json.loads((cell_dir / "cell.json").read_text())["attempt"]
    for f in ("config.yaml", "cell.json"):
        assert (cell_dir / f).exists(), f
    for f in ("predictions.jsonl", "progress.jsonl", "progress.json"):
        assert (attempt / f).exists(), f
    row = next(r for r in rows if r["cell"] == "synth__T1__s23__lora")
    assert tmp_path / row["predictions_file"] == attempt / "predictions.jsonl"  # this attempt's file
    assert load_config(file=cell_dir / "config.yaml").aux.method == "T1"
    assert "8/8 cells done" in log.getvalue() and "done synth__ce__s82__lora" in log.getvalue()

    before = (tmp_path / "results.jsonl").read_bytes()
    n_calls = len(calls(tmp_path))
    rep2 = Reports()
    assert audit(cfg, tmp_path, report_fn=rep2) == 0
    assert len(calls(tmp_path)) == n_calls  # nothing ran again
    assert (tmp_path / "results.jsonl").read_bytes() == before
    assert len(rep2.calls) == 1  # the report is rewritten from what is there


def test_grown_grid_runs_only_new_cells(tmp_path):
    assert audit(small_cfg(seeds=[82]), tmp_path) == 0
    before = (tmp_path / "results.jsonl").read_bytes()
    assert audit(small_cfg(seeds=[82, 23]), tmp_path) == 0
    assert (tmp_path / "results.jsonl").read_bytes().startswith(before)
    assert len(calls(tmp_path)) == 8 and len(set(calls(tmp_path))) == 8


def test_failed_cell_is_recorded_and_retried(tmp_path):
    bad, nan = "turk__T1__s82__lora", "synth__ce__s23__lora"
    (tmp_path / "fail.txt").write_text(bad)
    (tmp_path / "nan.txt").write_text(nan)
    rep, log = Reports(), io.StringIO()
    assert audit(small_cfg(), tmp_path, report_fn=rep, stream=log) == 1
    assert len(rep.calls) == 1  # the report is written on what finished
    keys = [r["cell"] for r in result_rows(tmp_path)]
    assert len(keys) == 6 and bad not in keys and nan not in keys
    fails = {
        json.loads(line)["cell"]: json.loads(line)
        for line in (tmp_path / "failures.jsonl").read_text().splitlines()
    }
    assert set(fails) == {bad, nan}
    assert fails[bad]["status"] == "failed" and "injected failure" in fails[bad]["error"]
    assert "RuntimeError" in fails[bad]["traceback"]
    assert "exact_match" in fails[nan]["error"] and "NaN" in fails[nan]["error"]
    assert "injected failure" in (tmp_path / "cells" / bad / "error.txt").read_text()
    assert "FAILED turk__T1__s82__lora" in log.getvalue()

    (tmp_path / "fail.txt").unlink()
    (tmp_path / "nan.txt").unlink()
    assert audit(small_cfg(), tmp_path) == 0
    assert sorted(calls(tmp_path)[8:]) == sorted([bad, nan])  # only the failed cells ran again
    assert len(result_rows(tmp_path)) == 8
    with Store(tmp_path, lock=False) as s:
        assert s.failures() == []  # nothing outstanding; the history stays in failures.jsonl


def test_changed_config_refused_then_forced(tmp_path):
    assert audit(small_cfg(), tmp_path) == 0
    cfg = small_cfg()
    cfg.train.steps = 6
    with pytest.raises(GridChangedError, match="synth__ce__s82__lora"):
        audit(cfg, tmp_path)
    assert len(calls(tmp_path)) == 8
    cfg.audit.workers = 3  # not part of a cell's hash: never a reason to refuse
    assert audit(cfg, tmp_path, force=True, workers=1) == 0
    rows = result_rows(tmp_path)
    assert len(rows) == 8 and {r["config_hash"] for r in rows} == {c.hash for c in _cells(cfg)}
    assert len((tmp_path / "superseded.jsonl").read_text().splitlines()) == 8


def _cells(cfg):
    from jepa_audit.audit.grid import expand_grid

    return expand_grid(cfg)


def test_second_runner_refused(tmp_path):
    with Store(tmp_path), pytest.raises(StoreLockedError, match="another audit runner"):
        audit(small_cfg(), tmp_path)


def test_process_pool_two_workers(tmp_path):
    import os

    assert audit(small_cfg(), tmp_path, workers=2) == 0
    rows = result_rows(tmp_path)
    assert len({r["cell"] for r in rows}) == 8
    pids = {r["pid"] for r in rows}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2  # ran in spawned workers, at most two


def test_dry_run_prints_cells_and_estimate(tmp_path):
    out = io.StringIO()
    rc = run_audit(
        small_cfg(), tmp_path / "d", dry_run=True, stream=out, step_time_fn=lambda cfg: 0.1, cell_fn=fast_cell
    )
    text = out.getvalue()
    assert rc == 0 and not (tmp_path / "d").exists()
    assert "synth__T1__s23__lora" in text and "8 cells (0 done, 8 to run)" in text
    assert "100.0 ms (measured)" in text and "estimate" in text


def test_dry_run_falls_back_to_a_documented_guess(tmp_path):
    out = io.StringIO()

    def broken(cfg):
        raise RuntimeError("no model")

    run_audit(small_cfg(), tmp_path, dry_run=True, stream=out, step_time_fn=broken, cell_fn=fast_cell)
    assert "a fixed guess" in out.getvalue()


def test_live_display_and_tracking(tmp_path):
    pytest.importorskip("mlflow")
    cfg = small_cfg(benchmarks=["synth"], methods=["ce"])
    cfg.tracking.mlflow = True
    cfg.tracking.tensorboard = pytest.importorskip("tensorboard") is not None
    out = io.StringIO()
    assert audit(cfg, tmp_path, stream=out, live=True) == 0
    assert "synth__ce__s82__lora" in out.getvalue()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"file:{tmp_path / 'mlruns'}")
    exp = client.get_experiment_by_name("audit")
    runs = client.search_runs([exp.experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["synth__ce__s23__lora", "synth__ce__s82__lora"]
    assert runs[0].data.metrics["metrics.exact_match"] >= 0
    assert "train.loss" in runs[0].data.metrics
    with Store(tmp_path, lock=False) as s:
        assert list((s.attempt_dir("synth__ce__s82__lora") / "tb").glob("events.out.tfevents.*"))


@pytest.mark.parametrize("name", PRESETS)
def test_presets_validate(name):
    from jepa_audit.audit.grid import expand_grid
    from jepa_audit.audit.runner import registry_methods

    cfg = load_config(preset=name)
    cells = expand_grid(cfg, known_methods=registry_methods())
    methods = set(cfg.audit.methods)
    assert "ce" in methods and len(methods) >= 2
    header = (PRESET_DIR / f"{name}.yaml").read_text().splitlines()[0]
    assert header.startswith(f"# {name}:")
    if name in ("quick", "cpu", "paper"):
        assert len(methods) == 24 and "llm-jepa" in methods
    if name == "smoke":
        assert len(cells) <= 8 and cfg.audit.benchmarks == ["synth"]
    if name in ("cpu", "paper", "paper-full-ft"):
        assert cfg.audit.seeds == [82, 23, 37, 84, 4] and cfg.data.source == "nl-rx"
    if name.startswith("paper"):
        assert cfg.model.kind == "hf" and cfg.model.autocast == "bf16"  # bf16 compute on the GPU
    if name == "paper-full-ft":
        assert cfg.audit.modes == ["full"] and cfg.train.lr == 2e-5


def _writes_predictions(cfg, cell_dir, progress):
    (Path(cell_dir) / "predictions.jsonl").write_text('{"item": 0}\n')
    return {"metrics": {"exact_match": 1.0, "dfa_accuracy": 1.0}}


def test_ray_task_without_shared_filesystem_ships_files_back(tmp_path):
    """A Ray task on a node that cannot see the audit directory runs in a temporary one and returns the
    cell's files with its row (no Ray needed to test the task body)."""
    from jepa_audit.audit.executors import CellJob, _ray_execute

    job = CellJob("synth__ce__s82__lora", Config(), str(tmp_path / "not-on-this-node"), "abc")
    out = _ray_execute(_writes_predictions, job)
    assert out.ok and out.files == {"predictions.jsonl": b'{"item": 0}\n'}
    assert not (tmp_path / "not-on-this-node").exists()


def test_when_every_cell_fails_the_report_is_not_pointed_at(tmp_path):
    """#14.9: with nothing finished a rerun of `report` cannot help, so the runner does not suggest it."""
    cfg = small_cfg(benchmarks=["synth"], methods=["ce"], seeds=[82])
    (tmp_path / "fail.txt").write_text("synth__ce__s82__lora")
    log = io.StringIO()
    assert audit(cfg, tmp_path, report_fn=None, stream=log) == 1
    text = log.getvalue()
    assert "no cell has finished" in text and "jepa-audit report" not in text
    assert not (tmp_path / "report_error.txt").exists()


def test_measured_step_time_needs_no_base(tmp_path):
    """The dry run's step time comes from a randomly initialised model of the configured shape: a positive,
    finite number of seconds, and no tiny base is pre-trained or cached for it."""
    import math

    from jepa_audit.audit.step_time import measure_step_time
    from jepa_audit.config import load_config

    cfg = load_config("smoke", None, [f"cache_dir={tmp_path / 'cache'}", "train.batch_size=4"])
    s = measure_step_time(cfg, steps=2)
    assert math.isfinite(s) and s > 0
    assert not (tmp_path / "cache" / "base").exists()
