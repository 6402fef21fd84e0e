"""Fisher-metric (Jacobi) auxiliaries (auxiliaries.md §1.6, §2, §3 F-rows).

The Fisher metric of the LM head at a post-norm state h is F(h) = Wᵀ(diag p − p pᵀ)W, p = softmax(W h),
W the (V, d) head.  F is never materialised (d×d, and W is V×d): with s = Wδ,
    δᵀ F δ = Var_{y∼p}[s_y],     aᵀ F b = Cov_{y∼p}[(Wa)_y, (Wb)_y],
one head-sized matmul per vector.  p is read from the CE logits (``ctx.logits`` = W h[L]) and detached:
F is the metric *at* the current point, not something the model may flatten to lower the loss.
All F-rows work at l = L (post-norm), where p(h) is defined; F at earlier layers would need the Jacobian
of the remaining blocks (a jvp per vector), left out.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from jepa_audit.objectives import _common as C
from jepa_audit.objectives.base import AuxContext, AuxOut, Objective, ObjectiveSpec, register_objective


def head(W: Tensor, x: Tensor) -> Tensor:
    """s = x Wᵀ, (N, d) → (N, V) fp32.  Under a low-precision head the matmul runs in W's dtype (fp32
    accumulation on tensor cores) instead of materialising a V×d fp32 copy of W every step."""
    if W.dtype == torch.float32:
        return x.float() @ W.T
    return (x.to(W.dtype) @ W.T).float()


def centred_head(W: Tensor, p: Tensor, x: Tensor) -> Tensor:
    """c = Wx − E_{y∼p}[(Wx)_y] per row: (N, d) → (N, V) fp32.  p (N, V) may be shared by stacked x."""
    s = head(W, x)
    if p.shape[0] != s.shape[0]:  # x stacks several vector sets that share the same p
        p = p.repeat(s.shape[0] // p.shape[0], 1)
    return s - (p * s).sum(-1, keepdim=True)


def fisher_quadratic(W: Tensor, p: Tensor, delta: Tensor) -> Tensor:
    """δᵀ F(h) δ = Var_{y∼p}[(Wδ)_y] for each row: W (V, d), p (N, V), δ (N, d) → (N,).  Centred two-pass
    form (no E[s²] − E[s]² cancellation)."""
    c = centred_head(W, p, delta)
    return (p * c * c).sum(-1)


def fisher_bilinear(W: Tensor, p: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """aᵀ F(h) b = Cov_{y∼p}[(Wa)_y, (Wb)_y]: (N, d), (N, d) → (N,); one stacked head matmul."""
    c = centred_head(W, p, torch.cat([a, b], 0))
    return (p * c[: a.shape[0]] * c[a.shape[0] :]).sum(-1)


class FisherMetric:
    """The head's Fisher metric at the states behind ``logits`` (B, T, V), as the callbacks of _common."""

    def __init__(self, W: Tensor, logits: Tensor):
        self.W, self.logits = W, logits

    def p_at(self, rows: Tensor, cols: Tensor) -> Tensor:
        return F.softmax(self.logits[rows, cols].detach().float(), -1)

    def sqnorm(self, x: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
        return fisher_quadratic(self.W, self.p_at(rows, cols), x)

    def pair_inner(self, a: Tensor, b: Tensor, rows: Tensor, cols: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(aᵀFb, aᵀFa, bᵀFb) per row from one stacked head matmul."""
        p = self.p_at(rows, cols)
        c = centred_head(self.W, p, torch.cat([a, b], 0))
        ca, cb = c[: a.shape[0]], c[a.shape[0] :]
        return (p * ca * cb).sum(-1), (p * ca * ca).sum(-1), (p * cb * cb).sum(-1)


def noisy_twin(ctx: AuxContext, generator: torch.Generator, sigma_rel: float) -> tuple[Tensor, ...]:
    """Hidden states of an embedding-noise copy x′ of the CE rows (one extra forward, with gradient).

    Noise σ = sigma_rel · RMS(h[0]) over real tokens, drawn from ``generator``; dropout inside the twin runs
    under :func:`_common.isolated_rng`.
    """
    emb = ctx.hidden[0]
    real = ctx.batch.attention_mask.bool()
    rms = emb.detach().float()[real].pow(2).mean().sqrt()
    noise = torch.randn(emb.shape, generator=generator).to(emb.device)
    x = (emb.float() + sigma_rel * rms * noise).to(emb.dtype)
    with C.isolated_rng(generator, emb.device):
        out = ctx.model(inputs_embeds=x, attention_mask=ctx.batch.attention_mask, output_hidden_states=True)
    return tuple(out.hidden_states)


@register_objective
class FisherAcceleration(Objective):
    spec: ClassVar[ObjectiveSpec] = ObjectiveSpec(
        id="F1",
        family="fisher",
        description="Fisher acceleration: mean_t a_tᵀF(h_t)a_t / (mean_t v_tᵀF(h_t)v_t + ε) over 𝒜 at l = L "
        "(T6 in the head's Fisher metric)",
        core=True,
        default_weight=0.1,
        params={"eps": 1e-6},
        source="[P]",
    )

    def forward(self, ctx: AuxContext) -> AuxOut:
        metric = FisherMetric(ctx.lm_head_weight, ctx.logits)
        loss = C.second_difference_ratio(
            ctx.hidden[-1], ctx.batch.answer_mask, "velocity", sqnorm=metric.sqnorm, eps=self.p["eps"]
        )
        return AuxOut(loss=loss)


@register_objective
class TwinJacobi(Objective):
    spec: ClassVar[ObjectiveSpec] = ObjectiveSpec(
        id="F2",
        family="fisher",
        description="twin-trajectory Jacobi residual: J_t = h[L,t](x′) − h[L,t](x) on the shared answer, x′ an "
        "embedding-noise copy (σ = 0.01·RMS(h[0])); mean_t r_tᵀF r_t / (mean_t J_tᵀF J_t + ε), "
        "r_t = J_{t+1} − 2J_t + J_{t−1}",
        core=True,
        extra_forward=1,
        default_weight=0.1,
        params={"sigma_rel": 0.01, "eps": 1e-6},
        source="[P]; the TURK-paraphrase twin is not in Batch, so the noise twin is used",
    )

    def forward(self, ctx: AuxContext) -> AuxOut:
        twin = noisy_twin(ctx, self.generator, float(self.p["sigma_rel"]))
        J = twin[-1].float() - ctx.hidden[-1].float()
        metric = FisherMetric(ctx.lm_head_weight, ctx.logits)
        loss = C.second_difference_ratio(
            J, ctx.batch.answer_mask, "value", sqnorm=metric.sqnorm, eps=self.p["eps"]
        )
        return AuxOut(loss=loss)


@register_objective
class DepthJacobi(Objective):
    spec: ClassVar[ObjectiveSpec] = ObjectiveSpec(
        id="F3",
        family="fisher",
        description="depth Jacobi: J_l = h[l,t](x′) − h[l,t](x) at answer tokens over layers first..L−1, "
        "mean ‖J_{l+1} − 2J_l + J_{l−1}‖² / (mean ‖J_l‖² + ε) (Euclidean), x′ the embedding-noise twin",
        core=False,
        extra_forward=1,
        default_weight=0.1,
        params={"first": "quarter", "sigma_rel": 0.01, "eps": 1e-6},
        source="[P]",
    )

    def __init__(self, params: dict[str, Any], d_model: int, n_layers: int, generator: torch.Generator):
        super().__init__(params, d_model, n_layers, generator)
        self.first = C.resolve_layer(self.p["first"], n_layers) % (n_layers + 1)

    def forward(self, ctx: AuxContext) -> AuxOut:
        mask = ctx.batch.answer_mask
        twin = noisy_twin(ctx, self.generator, float(self.p["sigma_rel"]))
        clean = C.depth_states(ctx.hidden, self.first, self.n_layers)
        noisy = C.depth_states(twin, self.first, self.n_layers)
        # (N answer tokens, L' layers, d): each token is one depth trajectory
        J = torch.stack(
            [C.answer_states(a, mask) - C.answer_states(c, mask) for a, c in zip(noisy, clean, strict=True)],
            1,
        )
        every = torch.ones(J.shape[:2], dtype=torch.bool, device=J.device)
        return AuxOut(loss=C.second_difference_ratio(J, every, "value", eps=self.p["eps"]))


@register_objective
class FisherJepa(Objective):
    spec: ClassVar[ObjectiveSpec] = ObjectiveSpec(
        id="F4",
        family="fisher",
        description="Fisher-norm JEPA: δ = e_u − sg(e_r), loss = mean_b δᵀF(e_r)δ (≈ 2·KL(p(e_r) ‖ p(e_u)))",
        core=True,
        extra_forward=1,
        default_weight=0.1,
        params={},
        source="[P]",
    )

    def forward(self, ctx: AuxContext) -> AuxOut:
        W = ctx.lm_head_weight
        u = C.e_u(ctx)
        r = C.e_r(ctx, self.generator).detach()
        p = F.softmax(head(W, r), -1)
        return AuxOut(loss=fisher_quadratic(W, p, u - r).mean())


@register_objective
class FisherAngle(Objective):
    spec: ClassVar[ObjectiveSpec] = ObjectiveSpec(
        id="F5",
        family="fisher",
        description="Fisher-angle curvature: T2 with cos_F(v_t, v_{t+1}) = v_tᵀF v_{t+1} / (‖v_t‖_F ‖v_{t+1}‖_F), "
        "F at the shared vertex, l = L",
        core=False,
        default_weight=0.1,
        params={},
        source="[P]",
    )

    def forward(self, ctx: AuxContext) -> AuxOut:
        metric = FisherMetric(ctx.lm_head_weight, ctx.logits)
        loss = C.curvature(
            ctx.hidden[-1], ctx.batch.answer_mask, "one_minus_cos", pair_inner=metric.pair_inner
        )
        return AuxOut(loss=loss)
