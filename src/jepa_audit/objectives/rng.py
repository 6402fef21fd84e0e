"""Randomness of the objectives: every draw comes from the objective's own ``torch.Generator``; extra forward
rows and module construction run under :func:`isolated_rng`, so the global RNG stream that the CE run's
dropout and data order read is untouched (a CE-only run and a CE+aux run stay paired step for step).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn


def draw_seed(generator: torch.Generator) -> int:
    """One integer from the objective's generator (advances it deterministically)."""
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator))


@contextmanager
def isolated_rng(generator: torch.Generator, device: torch.device | str | None = None) -> Iterator[None]:
    """Run a block with the global RNG seeded from ``generator`` and restored afterwards.

    Used around extra forward rows (dropout draws) and around module construction (weight init), so the
    global CPU/CUDA streams after the block are exactly what they were before it.
    """
    seed = draw_seed(generator)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    cuda_idx = (
        [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else []
    )
    with torch.random.fork_rng(devices=cuda_idx, device_type="cuda"):
        torch.default_generator.manual_seed(seed)
        for i in cuda_idx:
            with torch.cuda.device(i):
                torch.cuda.manual_seed(seed)
        yield


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def construct_seeded(generator: torch.Generator, factory: Callable[[], nn.Module]) -> nn.Module:
    """Build a trainable sub-module (predictor, projector) with init drawn from ``generator`` only."""
    with isolated_rng(generator):
        return factory()
