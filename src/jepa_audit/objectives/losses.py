"""Losses on pooled states: VICReg (variance, covariance, invariance), Barlow Twins, SIGReg (Epps–Pulley),
uniformity, effective rank; and the view losses (cosine, InfoNCE, KL through the head).  All fp32.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from jepa_audit.objectives.masks import cosine, masked_mean


def too_few(z: Tensor, n_min: int = 2) -> Tensor | None:
    """A zero loss (still attached to the graph) when z has fewer than ``n_min`` rows: batch statistics of a
    single sample are undefined (NaN), e.g. a last partial batch of one sequence for the two-view rows."""
    return z.sum() * 0.0 if z.shape[0] < n_min else None


def standardise(z: Tensor, eps: float = 1e-5) -> Tensor:
    """Per-dimension standardisation with *detached* batch mean and std (unbiased), (N, d) → (N, d).

    Detached statistics keep the target scale fixed within a step (auxiliaries.md §7: SIGReg/VICReg assume
    unit scale, Llama post-norm states carry the RMSNorm gain).  Fewer than 2 rows: returned centred only."""
    if z.shape[0] < 2:
        return z - z.detach()
    mu = z.mean(0, keepdim=True).detach()
    sd = z.std(0, keepdim=True).detach()
    return (z - mu) / (sd + eps)


def vicreg_variance(z: Tensor, gamma: float | Tensor, eps: float = 1e-4) -> Tensor:
    """VICReg variance: mean_j relu(γ − sqrt(Var_N(z_j) + eps)).  0 when every std ≥ γ."""
    if (zero := too_few(z)) is not None:
        return zero
    std = torch.sqrt(z.var(0) + eps)
    return F.relu(gamma - std).mean()


def vicreg_covariance(z: Tensor) -> Tensor:
    """VICReg covariance: (1/d) Σ_{i≠j} C_ij², C = z̄ᵀz̄ / (N − 1).  0 for decorrelated columns."""
    if (zero := too_few(z)) is not None:
        return zero
    n, d = z.shape
    zc = z - z.mean(0)
    c = zc.T @ zc / max(n - 1, 1)
    off = c - torch.diag(torch.diagonal(c))
    return off.pow(2).sum() / d


def vicreg_invariance(za: Tensor, zb: Tensor) -> Tensor:
    return F.mse_loss(za, zb)


def barlow_twins(za: Tensor, zb: Tensor, off_weight: float = 5e-3, eps: float = 1e-5) -> Tensor:
    """Σ_i (1 − C_ii)² + λ Σ_{i≠j} C_ij², C the cross-correlation of batch-standardised za, zb (N, k)."""
    if (zero := too_few(za)) is not None:
        return zero + zb.sum() * 0.0
    n = za.shape[0]
    a = (za - za.mean(0)) / (za.std(0, correction=0) + eps)
    b = (zb - zb.mean(0)) / (zb.std(0, correction=0) + eps)
    c = a.T @ b / n
    diag = torch.diagonal(c)
    on = (1.0 - diag).pow(2).sum()
    off = c.pow(2).sum() - diag.pow(2).sum()
    return on + off_weight * off


def epps_pulley_knots(
    t_max: float = 3.0, n_knots: int = 17, device: torch.device | None = None
) -> tuple[Tensor, Tensor]:
    """Knots t_k on [0, t_max] and weights: trapezoid × 2 (symmetric integrand) × w(t) = e^{−t²/2}."""
    t = torch.linspace(0.0, t_max, n_knots, device=device)
    dt = t_max / (n_knots - 1)
    trap = torch.full((n_knots,), 2.0 * dt, device=device)
    trap[0] = trap[-1] = dt
    return t, trap * torch.exp(-0.5 * t * t)


def sigreg(z: Tensor, directions: Tensor, t_max: float = 3.0, n_knots: int = 17) -> Tensor:
    """SIGReg (LeJEPA, re-implemented from the maths): mean over slices of the Epps–Pulley statistic
    N ∫ |φ̂(t) − e^{−t²/2}|² e^{−t²/2} dt of the 1-D projections y = z a_m against N(0, 1).

    z: (N, d) fp32; directions: (d, M), unit columns.  Its expectation for an iid N(0, I) sample is
    √(2π)(1 − 1/√3) ≈ 1.06 whatever N; it grows like N for a mis-scaled or shifted sample.
    """
    n = z.shape[0]
    y = z @ directions  # (N, M)
    t, w = epps_pulley_knots(t_max, n_knots, z.device)
    ty = y[..., None] * t  # (N, M, K)
    re = torch.cos(ty).mean(0) - torch.exp(-0.5 * t * t)  # (M, K)
    im = torch.sin(ty).mean(0)
    ep = n * ((re * re + im * im) * w).sum(-1)  # (M,)
    return ep.mean()


def unit_directions(d: int, m: int, generator: torch.Generator) -> Tensor:
    """(d, m) Gaussian directions normalised to unit length, drawn from ``generator`` (CPU)."""
    a = torch.randn(d, m, generator=generator)
    return a / a.norm(dim=0, keepdim=True)


def uniformity(z: Tensor, t: float = 2.0) -> Tensor:
    """Wang & Isola: log mean_{i<j} exp(−t ‖ẑ_i − ẑ_j‖²), ẑ = z/‖z‖ (logsumexp for stability)."""
    if (zero := too_few(z)) is not None:
        return zero
    zn = F.normalize(z, dim=-1)
    sq = (2.0 - 2.0 * zn @ zn.T).clamp_min(0.0)  # ‖ẑ_i − ẑ_j‖² on the unit sphere
    iu = torch.triu_indices(z.shape[0], z.shape[0], offset=1, device=z.device)
    vals = -t * sq[iu[0], iu[1]]
    return torch.logsumexp(vals, 0) - math.log(vals.numel())


def cross_sequence_cosine(z: Tensor, seq: Tensor) -> Tensor:
    """Anisotropy (Ethayarajh): mean cos(z_i, z_j) over pairs from different sequences.  z (N, d), seq (N,)."""
    zn = F.normalize(z, dim=-1)
    g = zn @ zn.T
    other = seq[:, None] != seq[None, :]
    return masked_mean(g, other)


def effective_rank_entropy(z: Tensor, eps: float = 1e-7) -> Tensor:
    """Σ_k p_k log p_k with p_k = σ_k / Σσ + eps (σ the singular values of centred z) = −log RankMe(z)."""
    if (zero := too_few(z)) is not None:
        return zero
    s = torch.linalg.svdvals(z - z.mean(0))
    p = s / s.sum() + eps
    return (p * p.log()).sum()


StopGrad = Literal["none", "target"]


def view_cosine_loss(pred: Tensor, target: Tensor, stop_grad: StopGrad = "none") -> Tensor:
    """mean_b (1 − cos(pred_b, target_b)); ``stop_grad="target"`` detaches the target (SimSiam idea)."""
    if stop_grad == "target":
        target = target.detach()
    return (1.0 - cosine(pred, target)).mean()


def info_nce(a: Tensor, b: Tensor, temperature: float = 0.07) -> Tensor:
    """CE over the in-batch cosine matrix cos(a_i, b_j)/τ with the diagonal as the positive (llm-jepa)."""
    logits = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T / temperature
    return F.cross_entropy(logits, torch.arange(a.shape[0], device=a.device))


def kl_from_logits(
    target_logits: Tensor, pred_logits: Tensor, temperature: float = 1.0, top_k: int = 0
) -> Tensor:
    """mean_rows KL(sg(softmax(target/T)) ‖ softmax(pred/T)); top_k > 0 restricts (and renormalises) both to
    the target's top-K tokens.  (N, V) each; fp32."""
    tgt = target_logits.detach().float() / temperature
    prd = pred_logits.float() / temperature
    if top_k and top_k < tgt.shape[-1]:
        idx = tgt.topk(top_k, dim=-1).indices
        tgt, prd = tgt.gather(-1, idx), prd.gather(-1, idx)
    logp = F.log_softmax(tgt, -1)
    logq = F.log_softmax(prd, -1)
    return F.kl_div(logq, logp, log_target=True, reduction="none").sum(-1).mean()
