"""A pool worker prepares the shared parts of a grid once: the base path and the encoded splits are
memoised per process, and the runner's own spawned workers keep them from one cell to the next."""

from __future__ import annotations

import io
import json
from collections import defaultdict

import pytest

from _fake_cells import memo_cell
from jepa_audit.audit.runner import run_audit
from jepa_audit.cell import base_model_path
from jepa_audit.config import load_config

SMALL = ["base.steps=2", "base.pool_size=200", "data.n_train=64", "data.n_test=8", "data.val_size=8",
         "data.geometry_size=16"]


@pytest.mark.slow
def test_pool_workers_keep_the_prepared_base_and_splits_across_cells(tmp_path):
    cfg = load_config("smoke", None, [f"cache_dir={tmp_path / 'cache'}", *SMALL])
    cfg.audit.methods, cfg.audit.seeds = ["ce", "T1", "V3"], [82, 23]  # 6 cells, one benchmark
    base_model_path(cfg)  # built once here, as a real grid's first cell would
    rc = run_audit(cfg, tmp_path / "out", executor="local", workers=2, cell_fn=memo_cell, report=False,
                   stream=io.StringIO())
    assert rc == 0
    rows = [json.loads(x) for x in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    by_pid: dict[int, list[list[int]]] = defaultdict(list)
    for r in rows:
        by_pid[r["pid"]].append(r["memo_before"])
    assert len(rows) == 6 and len(by_pid) == 2
    for memos in by_pid.values():
        assert [0, 0] in memos and memos.count([1, 1]) == len(memos) - 1  # cold once per worker, then warm
