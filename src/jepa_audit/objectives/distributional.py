"""Distributional constraints (auxiliaries.md §1.4, §3 D-rows, §7).

Single-view rows (D1, D2, D5–D8) act on the answer-token states Z = {h[l,t] : t ∈ 𝒜} of the CE forward,
pooled over the batch (N = number of answer tokens).  Two-view rows (D3, D4) act on the LLM-JEPA pair
(e_u, e_t) through a trainable projector, since a batch of B ≪ d embeddings gives a rank-deficient C.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

import torch
from pydantic import Field, NonNegativeFloat, PositiveFloat, PositiveInt

from jepa_audit.objectives import layers, losses, predictors, rng, views
from jepa_audit.objectives.base import AuxContext, AuxOut, ObjectiveSpec, register_objective
from jepa_audit.objectives.params import LayerRef, ObjectiveParams


class VarianceParams(ObjectiveParams):
    layer: LayerRef
    gamma: Literal["base_median"] | PositiveFloat = Field(
        description="hinge target γ: the base model's median per-dimension std, or a number"
    )
    eps: PositiveFloat = Field(description="added to the variance under the square root")


@register_objective
class VicregVariance(layers.LayerObjective):
    Params = VarianceParams
    spec: ClassVar[ObjectiveSpec] = ObjectiveSpec(
        id="D1",
        target_geometry=("std_mean_Llast",),
        target_direction={"std_mean_Llast": "increase"},
        family="distributional",
        description="VICReg variance: (1/d) Σ_j relu(γ − √(Var_N(Z_j) + 1e-4)) over answer-token states; "
        "γ = the base model's median per-dimension std (measured on the first batch), or a number",
        core=True,
        default_weight=0.1,
        params={"layer": "last", "gamma": "base_median", "eps": 1e-4},
        source="[V] VICReg (Bardes et al. 2022); γ choice from auxiliaries.md D1",
    )

    def __init__(self, params: Mapping[str, Any], d_model: int, n_layers: int, generator: torch.Generator):
        super().__init__(params, d_model, n_layers, generator)
        # Why not standardise with this batch's own std: then every std is 1 by construction and the hinge
        # is identically 0.  The scale is instead fixed once, from the base model (a buffer: checkpointed).
        self.register_buffer("gamma_ref", torch.tensor(float("nan")))

    def forward(self, ctx: AuxContext) -> AuxOut:
        z = self.answer_z(ctx)
        g = self.p.gamma
        if g == "base_median":
            if torch.isnan(self.gamma_ref):
                with torch.no_grad():
                    self.gamma_ref.copy_(torch.sqrt(z.var(0) + self.p.eps).median())
            gamma: float | torch.Tensor = self.gamma_ref.to(z.device)
        else:
            gamma = float(g)
        loss = losses.vicreg_variance(z, gamma, self.p.eps)
        return AuxOut(loss=loss, logs={"gamma": float(gamma)})


class ProjectedParams(ObjectiveParams):
    layer: LayerRef
    proj_dim: int = Field(description="width of the random orthonormal projection; ≤ 0 or ≥ d = none")


@register_objective
class VicregCovariance(layers.LayerObjective):
    Params = ProjectedParams
    spec: ClassVar[ObjectiveSpec] = ObjectiveSpec(
        id="D2",
        target_geometry=("rank_participation_Llast",),
        target_direction={"rank_participation_Llast": "increase"},
        family="distributional",
        description="VICReg covariance: (1/d') Σ_{i≠j} C_ij², C = Z̄ᵀZ̄/(N−1) of standardised answer-token states "
        "(all answer tokens; fixed random orthonormal projection to proj_dim when d > proj_dim)",
        core=True,
        default_weight=0.004,
        params={"layer": "last", "proj_dim": 256},
        source="[V] VICReg; λ = D1's λ × 1/25 (VICReg's 25:1 variance:covariance ratio) [P]",
    )

    def __init__(self, params: Mapping[str, Any], d_model: int, n_layers: int, generator: torch.Generator):
        super().__init__(params, d_model, n_layers, generator)
        k = self.p.proj_dim
        if 0 < k < d_model:
            # Orthonormal columns (QR of a Gaussian): a decorrelated unit-variance Z stays decorrelated.
            q, _ = torch.linalg.qr(torch.randn(d_model, k, generator=generator))
            self.register_buffer("proj", q)
        else:
            self.proj = None

    def forward(self, ctx: AuxContext) -> AuxOut:
        z = losses.standardise(self.answer_z(ctx))
        if self.proj is not None:
            z = z @ self.proj.to(z.device)
        return AuxOut(loss=losses.vicreg_covariance(z))


class _TwoViewProjected(layers.LayerObjective):
    """(e_u, e_t) through one shared projector d → proj_dim → proj_dim, built with seeded init."""

    def __init__(self, params: Mapping[str, Any], d_model: int, n_layers: int, generator: torch.Generator):
        super().__init__(params, d_model, n_layers, generator)
        self.projector = rng.construct_seeded(generator, lambda: predictors.Projector(d_model, self.p.proj_dim))

    def views(self, ctx: AuxContext) -> tuple[torch.Tensor, torch.Tensor]:
        zu = self.projector(views.e_u(ctx, self.layer, self.generator))
        zr = self.projector(views.e_t(ctx, self.generator, self.layer))
        return zu, zr


class CrossViewVicregParams(ProjectedParams):
    proj_dim: PositiveInt = Field(description="the projector's output width")
    sim: NonNegativeFloat = Field(description="weight of the invariance term")
    var: NonNegativeFloat = Field(description="weight of the variance term")
    cov: NonNegativeFloat = Field(description="weight of the covariance term")


@register_objective
class CrossViewVicreg(_TwoViewProjected):
    Params = CrossViewVicregParams
    spec: ClassVar[ObjectiveSpec] = ObjectiveSpec(
        id="D3",
        target_geometry=("jepa_cos",),
        target_direction={"jepa_cos": "increase"},
        family="distributional",
        description="cross-view VICReg on projected (e_u, e_t): 25·MSE + 25·(var_u + var_t)/2 + 1·(cov_u + cov_t)",
        core=False,
        extra_forward=1,
        default_weight=0.004,
        params={"layer": "last", "proj_dim": 256, "sim": 25.0, "var": 25.0, "cov": 1.0},
        source="[V] VICReg coefficients 25/25/1; λ [P] so that the variance term weighs 0.1 like D1",
    )

    def forward(self, ctx: AuxContext) -> AuxOut:
        zu, zr = self.views(ctx)
        inv = losses.vicreg_invariance(zu, zr)
        var = 0.5 * (losses.vicreg_variance(zu, 1.0) + losses.vicreg_variance(zr, 1.0))
        cov = losses.vicreg_covariance(zu) + losses.vicreg_covariance(zr)
        loss = self.p.sim * inv + self.p.var * var + self.p.cov * cov
        return AuxOut(
            loss=loss,
            logs={"inv": float(inv.detach()), "var": float(var.detach()), "cov": float(cov.detach())},
        )


class BarlowParams(ProjectedParams):
    proj_dim: PositiveInt = Field(description="the projector's output width")
    off_weight: NonNegativeFloat = Field(description="weight of the off-diagonal (redundancy) terms")


@register_objective
class BarlowTwins(_TwoViewProjected):
    Params = BarlowParams
    spec: ClassVar[ObjectiveSpec] = ObjectiveSpec(
        id="D4",
        target_geometry=("jepa_cos",),
        target_direction={"jepa_cos": "increase"},
        family="distributional",
        description="Barlow Twins on projected (e_u, e_t): Σ_i (1 − C_ii)² + 5e-3 Σ_{i≠j} C_ij², C the "
        "cross-correlation of batch-standardised projections",
        core=True,
        extra_forward=1,
        default_weight=0.001,
        params={"layer": "last", "proj_dim": 256, "off_weight": 5e-3},
        source="[V] Barlow Twins (Zbontar et al. 2021), λ_off = 5e-3; λ [P]",
    )

    def forward(self, ctx: AuxContext) -> AuxOut:
        zu, zr = self.views(ctx)
        return AuxOut(loss=losses.barlow_twins(zu, zr, self.p.off_weight))


class SigregParams(ObjectiveParams):
    layer: LayerRef
    slices: Literal["auto"] | PositiveInt = Field(description="random 1-D projections; auto = min(256, d)")
    knots: Annotated[int, Field(ge=2)] = Field(description="quadrature knots of the characteristic-function test")
    t_max: PositiveFloat = Field(description="largest frequency of the quadrature")


@register_objective
class SIGReg(layers.LayerObjective):
    Params = SigregParams
    spec: ClassVar[ObjectiveSpec] = ObjectiveSpec(
        id="D5",
        target_geometry=("rank_effective_Llast",),
        target_direction={"rank_effective_Llast": "increase"},
        family="distributional",
        description="SIGReg: mean over M random unit slices of the Epps–Pulley statistic of standardised "
        "answer-token states against N(0,1) (17 knots on [0, 3]); slices redrawn every step; "
        "slices='auto' = min(256, d): the reference's 256 where d ≥ 256, one per dimension below",
        core=True,
        default_weight=0.02,
        params={"layer": "last", "slices": "auto", "knots": 17, "t_max": 3.0},
        source="[V] LeJEPA (re-implemented from the maths; code is CC BY-NC), λ = 0.02 from MINIMAL.md",
    )

    def forward(self, ctx: AuxContext) -> AuxOut:
        z = losses.standardise(self.answer_z(ctx))
        # 'auto': at tiny d, 4× more slices than dimensions quadruple the cost (N·M·17 cos/sin) for little
        # information; at real scale (d ≥ 256) this is the reference's M = 256
        m = min(256, z.shape[1]) if self.p.slices == "auto" else self.p.slices
        a = losses.unit_directions(z.shape[1], m, self.generator).to(z.device)
        return AuxOut(loss=losses.sigreg(z, a, self.p.t_max, self.p.knots))


class UniformityParams(ObjectiveParams):
    layer: LayerRef
    t: PositiveFloat = Field(description="temperature of the Gaussian potential")


@register_objective
class Uniformity(layers.LayerObjective):
    Params = UniformityParams
    spec: ClassVar[ObjectiveSpec] = ObjectiveSpec(
        id="D6",
        target_geometry=("anisotropy_Llast",),
        target_direction={"anisotropy_Llast": "decrease"},
        family="distributional",
        description="uniformity: log mean_{i<j} exp(−t‖ẑ_i − ẑ_j‖²), ẑ = z/‖z‖ over answer-token states, t = 2",
        core=True,
        default_weight=0.1,
        params={"layer": "last", "t": 2.0},
        source="[V] Wang & Isola 2020; λ [P]",
    )

    def forward(self, ctx: AuxContext) -> AuxOut:
        z = self.answer_z(ctx)
        return AuxOut(loss=losses.uniformity(z, self.p.t))


@register_objective
class Anisotropy(layers.LayerObjective):
    Params = layers.LayerParams
    spec: ClassVar[ObjectiveSpec] = ObjectiveSpec(
        id="D7",
        target_geometry=("anisotropy_Llast",),
        target_direction={"anisotropy_Llast": "decrease"},
        family="distributional",
        description="anisotropy penalty: mean cos(z_i, z_j) over answer-token pairs from different sequences",
        core=True,
        default_weight=0.1,
        params={"layer": "last"},
        source="[P] Ethayarajh's anisotropy metric used as a loss",
    )

    def forward(self, ctx: AuxContext) -> AuxOut:
        mask = ctx.batch.answer_mask
        z = self.answer_z(ctx)
        seq = torch.arange(mask.shape[0], device=mask.device)[:, None].expand_as(mask)[mask]
        return AuxOut(loss=losses.cross_sequence_cosine(z, seq))


@register_objective
class EffectiveRank(layers.LayerObjective):
    Params = layers.LayerParams
    spec: ClassVar[ObjectiveSpec] = ObjectiveSpec(
        id="D8",
        target_geometry=("rank_effective_Llast",),
        target_direction={"rank_effective_Llast": "increase"},
        family="distributional",
        description="effective rank: −log RankMe(Z) = Σ_k p_k log p_k, p_k = σ_k/Σσ + 1e-7 (SVD in fp32)",
        core=False,
        default_weight=0.01,
        params={"layer": "last"},
        source="[P] from RankMe (Garrido et al. 2023)",
    )

    def forward(self, ctx: AuxContext) -> AuxOut:
        z = self.answer_z(ctx)
        loss = losses.effective_rank_entropy(z)
        return AuxOut(loss=loss, logs={"rankme": math.exp(-float(loss.detach()))})
