"""Which GPU a cell runs on: one device per local pool worker, one single-use Ray worker per GPU task.

CUDA fixes the set of visible devices when it initialises (the first CUDA call in a process); changing
``CUDA_VISIBLE_DEVICES`` afterwards is ignored.  So a device must be assigned *before* any CUDA call:

* local pool: the parent (which never initialises CUDA for this: ``torch.cuda.device_count`` asks NVML)
  lists the visible GPUs, and each spawned worker is handed its slot's one at start-up (claim_gpu), before the cell
  imports anything that touches CUDA.  ``model.device=cuda`` (or ``auto``) then means that worker's GPU.
* Ray: a GPU task must run in a fresh worker process (``max_calls=1``, given in the ``@ray.remote``
  definition: Ray ignores ``max_calls`` in ``.options``), else a reused worker keeps the GPU it
  initialised on first and ignores the ``CUDA_VISIBLE_DEVICES`` Ray sets for the next task.
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any

from jepa_audit.config import ConfigError


class DeviceError(ConfigError):
    """The requested workers cannot each get their own GPU (a configuration problem: workers vs devices)."""


def visible_gpus() -> list[str]:
    """Physical ids of the GPUs this process may use (``CUDA_VISIBLE_DEVICES`` order), [] without CUDA."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return []
    if not torch.cuda.is_available():
        return []
    n = torch.cuda.device_count()
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None and env.strip():
        ids = [x.strip() for x in env.split(",") if x.strip()]
        return ids[:n]
    return [str(i) for i in range(n)]


def pool_gpus(device: str, workers: int) -> list[str] | None:
    """The GPU each of ``workers`` local pool workers gets, or None when the cells do not use CUDA.

    ``device`` is ``model.device`` (auto | cpu | cuda | cuda:N).  With ``cuda`` (the paper presets) raises
    :class:`DeviceError` when more than one worker would share a GPU: fewer GPUs than workers; an explicit
    ``cuda:N`` pins every worker to one device and is refused too.  With ``auto`` (the CPU-scale presets on a
    machine that has a GPU) extra workers share GPUs round-robin, with a warning.
    """
    if device == "cpu" or workers <= 1:
        return None
    gpus = visible_gpus()
    if not gpus:
        if device.startswith("cuda"):
            raise DeviceError(f"model.device={device} but no CUDA device is visible to this process")
        return None  # auto on a CPU-only machine
    if device.startswith("cuda:"):
        raise DeviceError(
            f"model.device={device} pins all {workers} local workers to one GPU; use model.device=cuda "
            f"(each worker then gets its own GPU) or --workers 1"
        )
    if workers > len(gpus):
        if device == "auto":  # the CPU-scale presets: tiny cells may share a GPU, spread round-robin
            warnings.warn(
                f"--workers {workers} on {len(gpus)} GPU(s): cells share GPUs (fine for tiny models; set "
                f"model.device=cuda to require one GPU per cell)", stacklevel=2,
            )
            return [gpus[i % len(gpus)] for i in range(workers)]
        raise DeviceError(
            f"--workers {workers} but only {len(gpus)} GPU(s) are visible ({','.join(gpus)}): one cell per GPU. "
            f"Use --workers {len(gpus)}, or --executor ray for a cluster"
        )
    return gpus[:workers]


def claim_gpu(gpu: str | None) -> str | None:
    """Pool-worker start-up step: make GPU ``gpu`` (a physical id, its worker slot's) the only visible device.

    Must run before CUDA is initialised in this process; refuses (RuntimeError) when it already is.
    """
    if gpu is None:
        return None
    gpu = str(gpu)
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        raise RuntimeError("claim_gpu: CUDA is already initialised in this worker; its device cannot change")
    os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    return gpu


def ray_task_options(gpus: int, cpus_per_cell: int) -> dict[str, Any]:
    """``@ray.remote`` keywords of the cell task: with GPUs, one GPU and a fresh worker per task."""
    opts: dict[str, Any] = {"num_cpus": cpus_per_cell, "max_retries": 0}
    if gpus:
        opts.update(num_gpus=1, max_calls=1)
    return opts
