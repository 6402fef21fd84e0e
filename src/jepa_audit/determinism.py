"""``train.deterministic``: bit-for-bit repeatable cells on a GPU, at a cost.

What the seed pairing gives without it: a cell's data order, dropout masks, LoRA init and the objective's
draws are fixed by its seed (train.py), so paired cells see the same data and the same noise.  On a CPU that
makes a retried cell identical.  On a GPU it does not: cuBLAS picks reduction orders per workspace, SDPA's
memory-efficient backward and some scatter/index kernels accumulate with atomics, so two runs of the same
cell differ in the last bits after the first step and drift apart over training (the paired *design* still
holds; bit-identity does not).

With ``train.deterministic=true`` (set before the cell's first CUDA call, in :func:`jepa_audit.cell.prepare`):

* ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` (cuBLAS's documented setting for deterministic GEMMs; 8 × 4 MiB of
  workspace per handle), unless already set;
* ``torch.use_deterministic_algorithms(True, warn_only=True)``: every op with a deterministic kernel uses it;
  an op without one warns (in the cell's log) instead of failing the cell;
* cuDNN deterministic, no cuDNN autotuning;
* SDPA's memory-efficient backend off (its backward uses atomics); flash or math attention remain.

Cost: slower attention backward without the memory-efficient kernel, and the math kernel's memory where
flash does not apply; not measured here (no GPU was available) — ``scripts/gpu-check.sh`` measures it.
"""

from __future__ import annotations

import os

import torch

CUBLAS_SETTING = ":4096:8"


def set_deterministic(on: bool) -> None:
    """Switch deterministic algorithms on or off for this process (a later cell may switch them back)."""
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_SETTING)
    torch.use_deterministic_algorithms(on, warn_only=True)
    torch.backends.cudnn.deterministic = on
    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.enable_mem_efficient_sdp(not on)


def deterministic_state() -> dict[str, object]:
    """The settings in force (for tests and logs)."""
    return {
        "algorithms": torch.are_deterministic_algorithms_enabled(),
        "warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "mem_efficient_sdp": torch.backends.cuda.mem_efficient_sdp_enabled(),
        "cublas_workspace": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    }
