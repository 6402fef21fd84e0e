"""GPU placement without a GPU: a mocked device count for the local pool, fake GPU resources for Ray."""

from __future__ import annotations

import os

import pytest
import torch

from _fake_cells import device_cell
from jepa_audit.audit.devices import DeviceError, pool_gpus, ray_task_options
from jepa_audit.audit.executors import CellJob, LocalExecutor, RayExecutor, make_executor
from jepa_audit.config import Config


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def _jobs(tmp_path, n: int) -> list[CellJob]:
    cfg, jobs = Config(), []
    for seed in range(n):
        c = cfg.cell("synth", "ce", seed, "lora")
        d = tmp_path / "cells" / f"c{seed}"
        d.mkdir(parents=True)
        jobs.append(CellJob(f"c{seed}", c, str(d), c.cell_hash()))
    return jobs


def test_pool_gpus_one_per_worker_or_a_clear_refusal(two_gpus, monkeypatch):
    assert pool_gpus("auto", 2) == ["0", "1"]
    assert pool_gpus("cuda", 1) is None  # in-process: the config's device as given
    assert pool_gpus("cpu", 2) is None
    with pytest.raises(DeviceError, match="only 2 GPU.*--executor ray"):
        pool_gpus("cuda", 3)
    with pytest.warns(UserWarning, match="cells share GPUs"):  # auto: tiny presets may share
        assert pool_gpus("auto", 3) == ["0", "1", "0"]
    with pytest.raises(DeviceError, match="pins all 2 local workers"):
        pool_gpus("cuda:1", 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")  # physical ids of the visible devices
    assert pool_gpus("cuda", 2) == ["3", "5"]
    cfg = Config()
    cfg.model.device = "cuda"
    assert make_executor("local", 2, cfg).gpus == ["3", "5"]


def test_pool_gpus_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pool_gpus("auto", 4) is None
    with pytest.raises(DeviceError, match="no CUDA device"):
        pool_gpus("cuda", 2)


def test_each_pool_worker_sees_only_its_own_gpu(tmp_path, two_gpus):
    outs = list(LocalExecutor(2, gpus=["0", "1"]).run(_jobs(tmp_path, 6), device_cell))
    assert all(o.ok for o in outs), [o.error for o in outs]
    by_pid: dict[int, set[str]] = {}
    for o in outs:
        by_pid.setdefault(o.row["pid"], set()).add(o.row["cuda_visible"])
    assert all(len(v) == 1 for v in by_pid.values())  # a worker keeps its GPU
    assert set.union(*by_pid.values()) <= {"0", "1"}
    if len(by_pid) == 2:  # both workers took jobs (the usual case): different GPUs
        assert len(set.union(*by_pid.values())) == 2
    assert "CUDA_VISIBLE_DEVICES" not in os.environ  # the parent is untouched


def test_ray_gpu_task_options_are_single_use():
    assert ray_task_options(2, 3) == {"num_cpus": 3, "max_retries": 0, "num_gpus": 1, "max_calls": 1}
    assert "num_gpus" not in ray_task_options(0, 1) and "max_calls" not in ray_task_options(0, 1)


@pytest.mark.slow
@pytest.mark.xdist_group("ray")  # one local Ray instance at a time (--dist loadgroup)
def test_ray_gpu_cells_run_in_fresh_workers_with_one_gpu(tmp_path, monkeypatch):
    ray = pytest.importorskip("ray", reason="Ray is optional: pip install 'jepa-audit[ray]'")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    if ray.is_initialized():
        ray.shutdown()
    import sys

    path = os.pathsep.join(p for p in sys.path if p)
    # one fake GPU: Ray schedules the GPU tasks one after another, so a reused worker would show its pid twice
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path}})
    try:
        outs = list(RayExecutor(workers=2).run(_jobs(tmp_path, 3), device_cell))
    finally:
        ray.shutdown()
    assert all(o.ok for o in outs), [o.error for o in outs]
    pids = [o.row["pid"] for o in outs]
    assert len(set(pids)) == 3  # max_calls=1: every GPU cell gets a fresh process (CUDA not yet initialised)
    assert all(o.row["ray_gpu_ids"] == ["0"] and o.row["cuda_visible"] == "0" for o in outs)
