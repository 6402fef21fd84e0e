"""The small trainable modules some objectives add (built under
:func:`jepa_audit.objectives.rng.construct_seeded`): the SimSiam/BYOL predictor and the VICReg/Barlow projector.
"""

from __future__ import annotations

from torch import Tensor, nn


class MLPPredictor(nn.Module):
    """SimSiam/BYOL predictor q: d → hidden → d with LayerNorm (BatchNorm replaced: batches are small)."""

    def __init__(self, d: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d, hidden), nn.LayerNorm(hidden), nn.ReLU(), nn.Linear(hidden, d))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.float())


class Projector(nn.Module):
    """VICReg/Barlow expander: d → k → k (Linear, LayerNorm, ReLU, Linear)."""

    def __init__(self, d: int, k: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d, k), nn.LayerNorm(k), nn.ReLU(), nn.Linear(k, k))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.float())
