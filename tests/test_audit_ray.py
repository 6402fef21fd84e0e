"""The Ray executor on a local two-CPU instance: four fake cells as tasks, results committed by the driver."""

from __future__ import annotations

import io
import json

import pytest

from _fake_cells import fast_cell
from jepa_audit.audit.runner import run_audit
from jepa_audit.config import Config


@pytest.mark.xdist_group("ray")  # one local Ray instance at a time (--dist loadgroup)
def test_ray_local_two_cpus(tmp_path, monkeypatch):
    ray = pytest.importorskip("ray", reason="Ray is optional: pip install 'jepa-audit[ray]'")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)  # a local instance, never someone's cluster
    if ray.is_initialized():
        ray.shutdown()
    cfg = Config()
    cfg.audit.benchmarks, cfg.audit.methods, cfg.audit.seeds = ["synth"], ["ce", "T1"], [82, 23]
    (tmp_path / "fail.txt").write_text("synth__T1__s23__lora")  # one task fails; the grid goes on
    reports = []
    rc = run_audit(
        cfg,
        tmp_path,
        executor="ray",
        workers=2,
        cell_fn=fast_cell,
        report_fn=lambda *a: reports.append(a),
        stream=io.StringIO(),
    )
    assert not ray.is_initialized()  # the instance we started is shut down
    assert rc == 1 and len(reports) == 1
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert sorted(r["cell"] for r in rows) == [
        "synth__T1__s82__lora",
        "synth__ce__s23__lora",
        "synth__ce__s82__lora",
    ]
    assert all((tmp_path / r["predictions_file"]).exists() for r in rows)  # in each cell's attempt directory
    fail = json.loads((tmp_path / "failures.jsonl").read_text())
    assert fail["cell"] == "synth__T1__s23__lora" and "injected failure" in fail["error"]
