"""Masks over consecutive positions and masked reductions.  ``h`` is one hidden-state tensor (B, T, d);
masks are (B, T) bool; a difference v_t = h[t+1] − h[t] is valid only when t and t+1 are both in the set,
so a trajectory never crosses padding, a sequence boundary, or the gap between two segments.
"""

from __future__ import annotations

import torch
from torch import Tensor

COS_EPS = 1e-8  # floor of ‖a‖·‖b‖ in a cosine: keeps a zero difference vector finite (cos = 0, grad = 0)


def consecutive(mask: Tensor, k: int) -> Tensor:
    """(B, T) bool → (B, T−k) bool: position t is valid when t, t+1, …, t+k are all in ``mask``."""
    T = mask.shape[1]
    out = mask[:, : T - k].clone()
    for j in range(1, k + 1):
        out &= mask[:, j : T - k + j]
    return out


def with_anchor(mask: Tensor) -> Tensor:
    """``mask`` plus the position just before each contiguous run (STP's start anchor, start − 1)."""
    anchor = torch.zeros_like(mask)
    anchor[:, :-1] = mask[:, 1:] & ~mask[:, :-1]
    return mask | anchor


def first_last(mask: Tensor) -> tuple[Tensor, Tensor]:
    """Indices (B,) of the first and last True position of each row (0 for an empty row)."""
    T = mask.shape[1]
    pos = torch.arange(T, device=mask.device).expand_as(mask)
    first = torch.where(mask, pos, T).min(1).values.clamp(max=T - 1)
    last = torch.where(mask, pos, -1).max(1).values.clamp(min=0)
    return first, last


def gather_rows(h: Tensor, idx: Tensor) -> Tensor:
    """h (B, T, d), idx (B,) → (B, d)."""
    return h[torch.arange(h.shape[0], device=h.device), idx]


def masked_mean(x: Tensor, m: Tensor) -> Tensor:
    """Mean of x over the True entries of m (same shape); 0 when m is empty.  Never multiplies NaN by 0:
    callers keep x finite everywhere (clamped cosines), so masked-out entries get exactly zero gradient."""
    m = m.to(x.dtype)
    return (x * m).sum() / m.sum().clamp_min(1.0)


def row_mean(x: Tensor, m: Tensor) -> tuple[Tensor, Tensor]:
    """Per-row mean of x (B, T') over m (B, T'): (values (B,), has_any (B,) bool)."""
    mf = m.to(x.dtype)
    n = mf.sum(1)
    return (x * mf).sum(1) / n.clamp_min(1.0), n > 0


def mean_over(values: Tensor, keep: Tensor) -> Tensor:
    """Mean of values (B,) over keep (B,) bool; 0 (with grad) when none is kept."""
    k = keep.to(values.dtype)
    return (values * k).sum() / k.sum().clamp_min(1.0)


def cosine(a: Tensor, b: Tensor, eps: float = COS_EPS) -> Tensor:
    """Cosine along the last dim, finite for zero vectors (0 there)."""
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp_min(eps)


def scatter_rows(values: Tensor, rows: Tensor, cols: Tensor, shape: tuple[int, int]) -> Tensor:
    """Put per-element values (N,) back on a (B, T') grid of zeros (differentiable, out of place)."""
    return torch.zeros(shape, dtype=values.dtype, device=values.device).index_put((rows, cols), values)


def answer_states(h: Tensor, mask: Tensor) -> Tensor:
    """The states at the masked positions, (N, d) fp32, N = mask.sum()."""
    return h[mask].float()
