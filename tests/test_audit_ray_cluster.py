"""The grid on a real two-node Ray cluster, started as a user would (docs/audit.md, "Ray cluster").

``ray start --head`` and a second ``ray start --address=...`` on this machine, one CPU each; the audit
runs in a separate driver process with ``RAY_ADDRESS`` set, as ``jepa-audit audit --executor ray`` would.
Every cell must run exactly once, on both nodes, and give the rows the local executor gives for the same
seeds (the fake cells are deterministic functions of the cell)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from _fake_cells import node_cell
from _ray_cluster import ray_cluster
from jepa_audit.audit.runner import run_audit
from jepa_audit.config import Config

DRIVER = """
import io, sys, time
from _fake_cells import node_cell
from jepa_audit.audit.runner import run_audit
from jepa_audit.config import Config
cfg = Config()
cfg.audit.benchmarks, cfg.audit.methods, cfg.audit.seeds = {grid}
t = time.perf_counter()
rc = run_audit(cfg, sys.argv[1], executor="ray", workers=1, cell_fn=node_cell, report=False, stream=io.StringIO())
print(f"{{rc}} {{time.perf_counter() - t:.2f}}")
"""
GRID = (["synth", "turk"], ["ce", "T1", "llm-jepa"], [82, 23])  # 12 cells
SAME = ("benchmark", "method", "seed", "mode", "metrics", "geometry", "grad_cosine", "config_hash", "status")


def _rows(d: Path) -> dict[str, dict]:
    return {r["cell"]: r for r in map(json.loads, (d / "results.jsonl").read_text().splitlines())}


@pytest.mark.slow
@pytest.mark.xdist_group("ray")  # one local Ray instance at a time (--dist loadgroup)
@pytest.mark.skipif(
    os.environ.get("JEPA_AUDIT_RAY_CLUSTER") != "1",
    reason="opt-in (JEPA_AUDIT_RAY_CLUSTER=1): `ray start` binds its nodes to the machine's network address, "
    "never to loopback, and this suite sends traffic to loopback only",
)
def test_grid_on_a_two_node_ray_cluster_matches_the_local_executor(tmp_path):
    pytest.importorskip("ray", reason="Ray is optional: pip install 'jepa-audit[ray]'")
    on_ray, local = tmp_path / "ray", tmp_path / "local"
    with ray_cluster(nodes=2, cpus_per_node=1) as env:
        p = subprocess.run([sys.executable, "-c", DRIVER.format(grid=GRID), str(on_ray)], env=env,
                           capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and p.stdout.split()[0] == "0", p.stdout + p.stderr[-3000:]

    cfg = Config()
    cfg.audit.benchmarks, cfg.audit.methods, cfg.audit.seeds = GRID
    assert run_audit(cfg, local, executor="local", workers=1, cell_fn=node_cell, report=False) == 0

    ray_rows, local_rows = _rows(on_ray), _rows(local)
    calls = Counter((on_ray / "calls.log").read_text().split())
    assert len(ray_rows) == 12 and set(calls) == set(ray_rows) and set(calls.values()) == {1}  # each once
    assert len({r["ray_node"] for r in ray_rows.values()}) == 2  # spread over both nodes
    assert all((on_ray / r["predictions_file"]).is_file() for r in ray_rows.values())
    assert set(ray_rows) == set(local_rows)
    for key, r in ray_rows.items():
        assert {k: r[k] for k in SAME} == {k: local_rows[key][k] for k in SAME}, key
