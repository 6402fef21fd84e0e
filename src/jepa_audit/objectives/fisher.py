"""Fisher-metric (Jacobi) auxiliaries (auxiliaries.md §1.6, §2, §3 F-rows).

The Fisher metric of the LM head at a post-norm state h is F(h) = Wᵀ(diag p − p pᵀ)W, p = softmax(W h),
W the (V, d) head.  F is never materialised (d×d, and W is V×d).  Everything runs in *logit space*: with
s = Wδ,
    δᵀ F δ = Var_{y∼p}[s_y],     aᵀ F b = Cov_{y∼p}[(Wa)_y, (Wb)_y].
Since W is linear, the logit-space image of a difference of final states is the same difference of their
logits: W(h_{t+1} − h_t) = z_{t+1} − z_t.  So the trajectory rows (F1, F2, F5) take the logits of the
answer positions (the CE forward's own ``ctx.logits`` when they are fp32: no extra matmul at all, and the
auxiliary's gradient joins CE's at the logits, before the one head backward), or, when the logits are not
fp32 (a bf16 head, or autocast), one fp32 head matmul of the answer states (differences of bf16 logits would be
noise; :func:`head`).
p is read from the CE logits and detached: F is the metric *at* the current point, not something the model
may flatten to lower the loss.  All F-rows work at l = L (post-norm), where p(h) is defined; F at earlier
layers would need the Jacobian of the remaining blocks (a jvp per vector), left out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field, PositiveFloat
from torch import Tensor

from jepa_audit.objectives import curves, layers, masks, precision, rng, views
from jepa_audit.objectives.base import AuxContext, AuxOut, ObjectiveSpec, register_objective
from jepa_audit.objectives.params import LayerRef, NoParams, ObjectiveParams

HEAD_CHUNK = 8192  # rows of a low-precision W cast to fp32 at a time: 8192 × 2048 × 4 B = 64 MiB at Llama-3.2-1B


def head(W: Tensor, x: Tensor) -> Tensor:
    """s = x Wᵀ in fp32: x (…, d), W (V, d) of any dtype → (…, V) fp32.

    Always an fp32 matmul, autocast off: a bf16 matmul (a bf16 head, or autocast around an fp32 one) rounds
    every logit to 8 bits of mantissa, and differences of such logits are noise.  A low-precision W is cast
    to fp32 ``HEAD_CHUNK`` rows at a time, so no V×d fp32 copy of W is materialised (gradients reach x and
    W through the casts as usual).
    """
    with torch.autocast(x.device.type, enabled=False):
        xf = x.float()
        if W.dtype == torch.float32:
            return xf @ W.T
        return torch.cat([xf @ W[i : i + HEAD_CHUNK].float().T for i in range(0, W.shape[0], HEAD_CHUNK)], -1)


def centred(p: Tensor, s: Tensor) -> Tensor:
    """s − E_{y∼p}[s_y] per row, (…, V)."""
    return s - (p * s).sum(-1, keepdim=True)


def logit_cov(p: Tensor, sa: Tensor, sb: Tensor) -> Tensor:
    """Cov_{y∼p}[sa_y, sb_y] per row, (…, V) each → (…,); centred two-pass form (no E[s²] − E[s]²
    cancellation).  With sa = Wa, sb = Wb this is aᵀF b.  A variance (``sb is sa``) centres once: these
    V-wide passes are most of a Fisher objective's cost."""
    ca = centred(p, sa)
    cb = ca if sb is sa else centred(p, sb)
    return (p * ca * cb).sum(-1)


def fisher_quadratic(W: Tensor, p: Tensor, delta: Tensor) -> Tensor:
    """δᵀ F(h) δ = Var_{y∼p}[(Wδ)_y] for each row: W (V, d), p (N, V), δ (N, d) → (N,)."""
    s = head(W, delta)
    return logit_cov(p, s, s)


def fisher_bilinear(W: Tensor, p: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """aᵀ F(h) b = Cov_{y∼p}[(Wa)_y, (Wb)_y]: (N, d), (N, d) → (N,); one stacked head matmul."""
    s = head(W, torch.cat([a, b], 0))
    return logit_cov(p, s[: a.shape[0]], s[a.shape[0] :])


class LogitMetric:
    """The Fisher metric for vectors already in logit space (s = Wδ), with p (B, T', V) per position: the
    ``sqnorm`` / ``pair_inner`` callbacks of :mod:`jepa_audit.objectives.curves`."""

    def __init__(self, p: Tensor):
        self.p = p

    def sqnorm(self, s: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
        return logit_cov(self.p[rows, cols], s, s)

    def pair_inner(self, sa: Tensor, sb: Tensor, rows: Tensor, cols: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(aᵀF b, aᵀF a, bᵀF b), each (N,): both vectors centred once and shared by the three products."""
        p = self.p[rows, cols]
        ca, cb = centred(p, sa), centred(p, sb)
        pa = p * ca
        return (pa * cb).sum(-1), (pa * ca).sum(-1), (p * cb * cb).sum(-1)


def answer_window(mask: Tensor) -> tuple[Tensor, Tensor]:
    """Positions (B, A) covering each row's answer span from its first answer token (A = the longest span),
    and their validity (B, A).  Consecutive positions stay consecutive, so trajectory masks carry over."""
    T = mask.shape[1]
    first, last = masks.first_last(mask)
    A = int((last - first).max()) + 1
    pos = first[:, None] + torch.arange(A, device=mask.device)[None, :]
    idx = pos.clamp(max=T - 1)
    return idx, mask.gather(1, idx) & (pos < T)


def window_logits(h: Tensor, logits: Tensor, W: Tensor, idx: Tensor) -> Tensor:
    """Logit-space states W h at the window positions, (B, A, V) fp32: the forward's own logits when they
    are fp32 (exact, and free), else one head matmul of the window's states (fp32 accumulation)."""
    if logits.dtype == torch.float32:
        return logits.gather(1, idx[..., None].expand(-1, -1, logits.shape[-1]))
    return head(W, h.gather(1, idx[..., None].expand(-1, -1, h.shape[-1])))


def window_p(logits: Tensor, idx: Tensor) -> Tensor:
    """Detached softmax of the logits at the window positions, (B, A, V) fp32."""
    z = logits.detach().gather(1, idx[..., None].expand(-1, -1, logits.shape[-1]))
    return F.softmax(z.float(), -1)


def noisy_twin(ctx: AuxContext, generator: torch.Generator, sigma_rel: float, rows: int):
    """Forward output (hidden states and logits) of an embedding-noise copy x′ of the first ``rows`` CE rows
    (one extra forward, with gradient).

    Noise σ = sigma_rel · RMS(h[0]) over real tokens, drawn from ``generator``; dropout inside the twin runs
    under :func:`jepa_audit.objectives.rng.isolated_rng`.
    """
    emb = ctx.hidden[0][:rows]
    att = ctx.batch.attention_mask[:rows]
    rms = emb.detach().float()[att.bool()].pow(2).mean().sqrt()
    noise = torch.randn(emb.shape, generator=generator).to(emb.device)
    x = (emb.float() + sigma_rel * rms * noise).to(emb.dtype)
    with rng.isolated_rng(generator, emb.device), precision.caller_precision():
        return ctx.run(inputs_embeds=x, attention_mask=att, output_hidden_states=True)


def twin_rows(batch_size: int, fraction: float) -> int:
    """How many rows get a twin: ⌈fraction · B⌉, at least 2 (the first rows; data order is already random)."""
    return min(batch_size, max(2, int(-(-fraction * batch_size // 1))))


class _LogitTrajectory(precision.AuxObjective):
    """Answer-span trajectories of the final state, in logit space, with the Fisher metric at each point."""

    def logit_states(self, ctx: AuxContext) -> tuple[Tensor, Tensor, Tensor, LogitMetric]:
        """(idx (B, A) window positions, valid (B, A), S = W h at the window (B, A, V), metric)."""
        idx, valid = answer_window(ctx.batch.answer_mask)
        S = window_logits(ctx.hidden[-1], ctx.logits, ctx.lm_head_weight, idx)
        return idx, valid, S, LogitMetric(window_p(ctx.logits, idx))


class EpsParams(ObjectiveParams):
    eps: PositiveFloat = Field(description="floor added to the denominator")


class TwinParams(EpsParams):
    sigma_rel: PositiveFloat = Field(description="twin noise, relative to the embedding rows' RMS")
    twin_fraction: Annotated[float, Field(gt=0.0, le=1.0)] = Field(
        description="share of the batch that gets a noisy twin (at least 2 rows)"
    )


class DepthTwinParams(TwinParams):
    first: LayerRef = Field(description="first layer of the residual stream read (to L − 1)")


@register_objective
class FisherAcceleration(_LogitTrajectory):
    Params = EpsParams
    spec: ClassVar[ObjectiveSpec] = ObjectiveSpec(
        id="F1",
        target_geometry=("curvature_fisher_answer_Llast",),
        target_direction={"curvature_fisher_answer_Llast": "decrease"},
        family="fisher",
        description="Fisher acceleration: mean_t a_tᵀF(h_t)a_t / (mean_t v_tᵀF(h_t)v_t + ε) over 𝒜 at l = L "
        "(T6 in the head's Fisher metric; computed in logit space)",
        core=True,
        default_weight=0.1,
        params={"eps": 1e-6},
        source="[P]",
    )

    def forward(self, ctx: AuxContext) -> AuxOut:
        _, valid, S, metric = self.logit_states(ctx)
        loss = curves.second_difference_ratio(S, valid, "velocity", sqnorm=metric.sqnorm, eps=self.p.eps)
        return AuxOut(loss=loss)


@register_objective
class TwinJacobi(_LogitTrajectory):
    Params = TwinParams
    spec: ClassVar[ObjectiveSpec] = ObjectiveSpec(
        id="F2",
        target_geometry=("curvature_answer_Llast",),
        target_direction={"curvature_answer_Llast": "decrease"},
        family="fisher",
        description="twin-trajectory Jacobi residual: J_t = h[L,t](x′) − h[L,t](x) on the shared answer, x′ an "
        "embedding-noise copy (σ = 0.01·RMS(h[0])); mean_t r_tᵀF r_t / (mean_t J_tᵀF J_t + ε), "
        "r_t = J_{t+1} − 2J_t + J_{t−1}; twins for the first ⌈twin_fraction·B⌉ rows",
        core=True,
        extra_forward=1,
        default_weight=0.1,
        params={"sigma_rel": 0.01, "eps": 1e-6, "twin_fraction": 0.5},
        source="[P]; the TURK-paraphrase twin is not in Batch, so the noise twin is used",
    )

    def forward(self, ctx: AuxContext) -> AuxOut:
        k = twin_rows(len(ctx.batch), self.p.twin_fraction)
        twin = noisy_twin(ctx, self.generator, self.p.sigma_rel, k)
        idx, valid, S, metric = self.logit_states(ctx)
        idx, valid, S, metric = idx[:k], valid[:k], S[:k], LogitMetric(metric.p[:k])
        S_twin = window_logits(twin.hidden_states[-1], twin.logits, ctx.lm_head_weight, idx)
        loss = curves.second_difference_ratio(S_twin - S, valid, "value", sqnorm=metric.sqnorm, eps=self.p.eps)
        return AuxOut(loss=loss)


@register_objective
class DepthJacobi(precision.AuxObjective):
    Params = DepthTwinParams
    spec: ClassVar[ObjectiveSpec] = ObjectiveSpec(
        id="F3",
        target_geometry=(),
        family="fisher",
        description="depth Jacobi: J_l = h[l,t](x′) − h[l,t](x) at answer tokens over layers first..L−1, "
        "mean ‖J_{l+1} − 2J_l + J_{l−1}‖² / (mean ‖J_l‖² + ε) (Euclidean), x′ the embedding-noise twin of the "
        "first ⌈twin_fraction·B⌉ rows",
        core=False,
        extra_forward=1,
        default_weight=0.1,
        params={"first": "quarter", "sigma_rel": 0.01, "eps": 1e-6, "twin_fraction": 0.5},
        source="[P]",
    )

    def __init__(self, params: Mapping[str, Any], d_model: int, n_layers: int, generator: torch.Generator):
        super().__init__(params, d_model, n_layers, generator)
        self.first = layers.resolve_layer(self.p.first, n_layers) % (n_layers + 1)

    def forward(self, ctx: AuxContext) -> AuxOut:
        k = twin_rows(len(ctx.batch), self.p.twin_fraction)
        mask = ctx.batch.answer_mask[:k]
        twin = noisy_twin(ctx, self.generator, self.p.sigma_rel, k).hidden_states
        clean = layers.depth_states(ctx.hidden, self.first, self.n_layers)
        noisy = layers.depth_states(twin, self.first, self.n_layers)
        # (N answer tokens, L' layers, d): each token is one depth trajectory
        J = torch.stack(
            [
                masks.answer_states(a, mask) - masks.answer_states(c[:k], mask)
                for a, c in zip(noisy, clean, strict=True)
            ],
            1,
        )
        every = torch.ones(J.shape[:2], dtype=torch.bool, device=J.device)
        return AuxOut(loss=curves.second_difference_ratio(J, every, "value", eps=self.p.eps))


@register_objective
class FisherJepa(precision.AuxObjective):
    Params = NoParams
    spec: ClassVar[ObjectiveSpec] = ObjectiveSpec(
        id="F4",
        target_geometry=("jepa_cos",),
        target_direction={"jepa_cos": "increase"},
        family="fisher",
        description="Fisher-norm JEPA: δ = e_u − sg(e_t), loss = mean_b δᵀF(e_t)δ (≈ 2·KL(p(e_t) ‖ p(e_u)))",
        core=True,
        extra_forward=1,
        default_weight=0.1,
        params={},
        source="[P]",
    )

    def forward(self, ctx: AuxContext) -> AuxOut:
        W = ctx.lm_head_weight
        u = views.e_u(ctx, -1, self.generator)
        r = views.e_t(ctx, self.generator).detach()
        p = F.softmax(head(W, r), -1)
        return AuxOut(loss=fisher_quadratic(W, p, u - r).mean())


@register_objective
class FisherAngle(_LogitTrajectory):
    Params = NoParams
    spec: ClassVar[ObjectiveSpec] = ObjectiveSpec(
        id="F5",
        target_geometry=("curvature_fisher_answer_Llast",),
        target_direction={"curvature_fisher_answer_Llast": "decrease"},
        family="fisher",
        description="Fisher-angle curvature: T2 with cos_F(v_t, v_{t+1}) = v_tᵀF v_{t+1} / (‖v_t‖_F ‖v_{t+1}‖_F), "
        "F at the shared vertex, l = L (computed in logit space)",
        core=False,
        default_weight=0.1,
        params={},
        source="[P]",
    )

    def forward(self, ctx: AuxContext) -> AuxOut:
        _, valid, S, metric = self.logit_states(ctx)
        return AuxOut(loss=curves.curvature(S, valid, "one_minus_cos", pair_inner=metric.pair_inner))
