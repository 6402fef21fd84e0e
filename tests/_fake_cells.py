"""Fake cell functions for the audit runner tests: fast, deterministic, importable by spawned workers.

They follow run_cell's contract (cfg, cell_dir, progress) -> row without training anything. Behaviour is
steered through files in the audit directory (so it reaches pool workers and Ray tasks too):
``DIR/fail.txt`` lists cell keys that raise; ``DIR/nan.txt`` lists keys whose metrics come back NaN;
every call appends its key to ``DIR/calls.log``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from jepa_audit.config import Config


def _key(cfg: Config) -> str:
    from jepa_audit.audit.grid import cell_key

    return cell_key(cfg.benchmark, cfg.aux.method, cfg.seed, cfg.adapter.mode)


def _listed(audit_dir: Path, name: str, key: str) -> bool:
    p = audit_dir / name
    return p.exists() and key in p.read_text().split()


def audit_dir_of(cell_dir: Path) -> Path:
    """The audit directory above a cell's attempt directory (``DIR/cells/<key>/<attempt>``)."""
    for d in Path(cell_dir).parents:
        if (d / "grid.json").exists():
            return d
    return Path(cell_dir).parent.parent


def fast_cell(cfg: Config, cell_dir: Path, progress=None) -> dict[str, Any]:
    audit_dir = audit_dir_of(cell_dir)
    key = _key(cfg)
    with open(audit_dir / "calls.log", "a") as f:
        f.write(key + "\n")
    total = 3
    for step in range(1, total + 1):
        if progress is not None:
            progress({"step": step, "total": total, "loss": 1.0 / step})
    if _listed(audit_dir, "fail.txt", key):
        raise RuntimeError(f"injected failure in {key}")
    with open(Path(cell_dir) / "predictions.jsonl", "w") as f:
        for i in range(3):
            f.write(json.dumps({"item": i, "pred": "a*", "exact": i % 2 == 0}) + "\n")
    em = ((cfg.seed * 31 + len(cfg.aux.method) * 7) % 97) / 97
    if _listed(audit_dir, "nan.txt", key):
        em = float("nan")
    return {
        "benchmark": cfg.benchmark,
        "method": cfg.aux.method,
        "seed": cfg.seed,
        "mode": cfg.adapter.mode,
        "metrics": {"exact_match": em, "dfa_accuracy": min(1.0, em + 0.05), "n_test": 3},
        "geometry": {"anisotropy": 0.5, "curvature": float("inf")},
        "grad_cosine": {"mean": 0.1, "frac_positive": 0.6},
        "config_hash": cfg.cell_hash(),
        "status": "done",
        "pid": os.getpid(),
        "predictions_file": str(Path(Path(cell_dir).parent.name) / Path(cell_dir).name / "predictions.jsonl"),
    }


def slow_cell(cfg: Config, cell_dir: Path, progress=None) -> dict[str, Any]:
    time.sleep(0.3)
    return fast_cell(cfg, cell_dir, progress)


def device_cell(cfg: Config, cell_dir: Path, progress=None) -> dict[str, Any]:
    """fast_cell plus what the worker saw: its CUDA_VISIBLE_DEVICES and, under Ray, its GPU ids."""
    row = fast_cell(cfg, cell_dir, progress)
    row["cuda_visible"] = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        import ray

        row["ray_gpu_ids"] = [str(g) for g in ray.get_gpu_ids()] if ray.is_initialized() else None
    except ImportError:
        row["ray_gpu_ids"] = None
    time.sleep(0.2)  # long enough that a pool hands jobs to both workers
    return row


def hang_cell(cfg: Config, cell_dir: Path, progress=None) -> dict[str, Any]:
    """Write this worker's pid to ``DIR/pids/<key>``, then wait (up to 60 s) for ``DIR/release`` to exist
    before finishing like :func:`fast_cell`: a cell that is reliably running while a test kills things."""
    audit_dir = audit_dir_of(cell_dir)
    (audit_dir / "pids").mkdir(exist_ok=True)
    (audit_dir / "pids" / _key(cfg)).write_text(str(os.getpid()))
    t0 = time.monotonic()
    while not (audit_dir / "release").exists() and time.monotonic() - t0 < 60:
        time.sleep(0.05)
    return fast_cell(cfg, cell_dir, progress)


def node_cell(cfg: Config, cell_dir: Path, progress=None) -> dict[str, Any]:
    """slow_cell plus the Ray node it ran on (None outside Ray): shows a grid really spread over nodes."""
    row = slow_cell(cfg, cell_dir, progress)
    try:
        import ray

        row["ray_node"] = ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    except ImportError:
        row["ray_node"] = None
    return row


def memo_cell(cfg: Config, cell_dir: Path, progress=None) -> dict[str, Any]:
    """fast_cell after the real :func:`jepa_audit.cell.prepare` (base, tokenizer, encoded splits, adapter),
    reporting what this worker process had memoised before it (``memo_before``: base paths, encoded splits)
    and how long prepare took (``prepare_s``)."""
    from jepa_audit import cell as C

    memo = [len(C._BASE_PATHS), len(C._ENCODED)]
    t0 = time.perf_counter()
    C.prepare(cfg)
    row = fast_cell(cfg, cell_dir, progress)
    row.update(memo_before=memo, prepare_s=time.perf_counter() - t0)
    return row
