"""Decoder-visible JEPA (auxiliaries.md §1.7, §3 V-rows and the note on why V1).

V1 asks the NL-view predictor state e_u (the CE row's state at the last NL token, a causal prefix, so no
extra row) to *decode*, through the model's own head, to the distribution the full model puts on the first
answer token.  Its target is what CE itself trains at position a₀ − 1, so its gradient should lean toward
CE's.  V3/V4/V5 make that property explicit on the gradient: the loop combines g_CE and g_aux with the
spec's ``grad_mode`` (``objectives.gradients.combine``); their loss is the ``inner`` objective's (V1 by
default), built by composition.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar

import torch
from pydantic import Field, NonNegativeInt, PositiveFloat
from torch import nn

from jepa_audit.objectives import layers, losses, masks, precision, views
from jepa_audit.objectives.base import (
    AuxContext,
    AuxOut,
    ObjectiveSpec,
    get_objective_class,
    register_objective,
    registry,
)
from jepa_audit.objectives.fisher import head
from jepa_audit.objectives.params import NoParams, ObjectiveParams


class DecodeParams(ObjectiveParams):
    temperature: PositiveFloat = Field(description="softmax temperature of both distributions")
    top_k: NonNegativeInt = Field(description="KL over the target's top-k tokens only; 0 = the whole vocabulary")


@register_objective
class DecodeFirstToken(precision.AuxObjective):
    Params = DecodeParams
    spec: ClassVar[ObjectiveSpec] = ObjectiveSpec(
        id="V1",
        target_geometry=("v1_kl",),
        target_direction={"v1_kl": "decrease"},
        family="decoder-visible",
        description="decoder-visible JEPA: KL(sg(p(h[L, a₀−1])) ‖ p(e_u)); the NL-view state must decode to the "
        "full model's first-answer-token distribution (NL view = CE-row prefix: no extra row)",
        core=True,
        default_weight=0.1,
        params={"temperature": 1.0, "top_k": 0},
        source="[P] (tuned-lens style KL through the unembedding, Belrose et al. 2023)",
    )

    def forward(self, ctx: AuxContext) -> AuxOut:
        b = ctx.batch
        # (B, V) each: the logits that predict the first answer token, and W e_u
        target = masks.gather_rows(ctx.logits, b.answer_start - 1)
        pred = views.nl_logits(ctx, self.generator)
        loss = losses.kl_from_logits(target, pred, self.p.temperature, self.p.top_k)
        return AuxOut(loss=loss)


@register_objective
class BagOfRegex(precision.AuxObjective):
    Params = NoParams
    spec: ClassVar[ObjectiveSpec] = ObjectiveSpec(
        id="V2",
        target_geometry=("v1_kl",),
        target_direction={"v1_kl": "decrease"},
        family="decoder-visible",
        description="bag-of-regex: −(1/|𝒜|) Σ_{t∈𝒜} log p(e_u)[y_t], per sequence then averaged",
        core=False,
        default_weight=0.1,
        params={},
        source="[P]",
    )

    def forward(self, ctx: AuxContext) -> AuxOut:
        b = ctx.batch
        logp = torch.log_softmax(views.nl_logits(ctx, self.generator), -1)  # (B, V)
        y = b.input_ids  # the answer tokens under answer_mask (labels may be llm-jepa's, with gaps)
        nll = -logp.gather(1, y)  # (B, T)
        per, has = masks.row_mean(nll, b.answer_mask)
        return AuxOut(loss=masks.mean_over(per, has))


class GradControlledParams(ObjectiveParams):
    inner: str = Field(description="the objective whose loss this one trains (an id with grad_mode add)")
    inner_params: dict[str, Any] = Field(description="that objective's parameters (over its defaults)")


class GradVacParams(GradControlledParams):
    phi_target: Annotated[float, Field(gt=-1.0, lt=1.0)] = Field(description="target cosine φ_T")
    ema_beta: Annotated[float, Field(ge=0.0, lt=1.0)] = Field(
        description="EMA of past cosines as φ_T when > 0; 0 = φ_T fixed"
    )


class _GradControlled(precision.AuxObjective):
    """Loss of the ``inner`` objective (built here, sharing this objective's generator); what differs is
    the spec's ``grad_mode``, which the loop applies when it combines g_aux with g_CE."""

    Params = GradControlledParams

    def __init__(self, params: Mapping[str, Any], d_model: int, n_layers: int, generator: torch.Generator):
        super().__init__(params, d_model, n_layers, generator)
        self.inner = get_objective_class(self.p.inner)(dict(self.p.inner_params), d_model, n_layers, generator)

    @classmethod
    def param_problems(cls, values: Mapping[str, Any]) -> list[tuple[str, str]]:
        """Its own parameters' problems, then the inner objective's (its id known, its grad_mode add, its
        ``inner_params`` fitting its model), keyed ``inner`` / ``inner_params.<key>``."""
        found = super().param_problems(values)
        if found:
            return found
        inner = values["inner"]
        if inner not in registry():
            return [("inner", f"unknown objective {inner!r}; expected an id from `jepa-audit aux list`")]
        inner_cls = get_objective_class(inner)
        if inner_cls.spec.grad_mode != "add":
            return [("inner", f"objective {inner!r} has its own grad_mode {inner_cls.spec.grad_mode!r}")]
        merged = {**inner_cls.spec.params, **values["inner_params"]}
        return [(f"inner_params.{k}", m) for k, m in inner_cls.param_problems(merged)]

    def forward(self, ctx: AuxContext) -> AuxOut:
        return self.inner(ctx)

    def after_step(self, model: nn.Module, step: int, total_steps: int) -> None:
        self.inner.after_step(model, step, total_steps)


@register_objective
class ConeProjected(_GradControlled):
    spec: ClassVar[ObjectiveSpec] = ObjectiveSpec(
        id="V3",
        target_geometry=("v1_kl",),
        target_direction={"v1_kl": "decrease"},
        family="decoder-visible",
        description="cone projection: g = g_CE + λ[g_a − min(0, ⟨g_a, g_CE⟩)/‖g_CE‖² g_CE] over all trainable "
        "parameters jointly, so ⟨λ g_a′, g_CE⟩ ≥ 0 by construction; aux = V1",
        core=True,
        default_weight=0.1,
        grad_mode="cone",
        params={"inner": "V1", "inner_params": {}},
        source="[V] one-sided PCGrad (Yu et al. 2020) / dual cone (Hwang & Lim 2024)",
    )


@register_objective
class CosineGated(_GradControlled):
    spec: ClassVar[ObjectiveSpec] = ObjectiveSpec(
        id="V4",
        target_geometry=("v1_kl",),
        target_direction={"v1_kl": "decrease"},
        family="decoder-visible",
        description="Du et al. gating: g = g_CE + λ·max(0, cos(g_a, g_CE))·g_a; aux = V1",
        core=False,
        default_weight=0.1,
        grad_mode="gate",
        params={"inner": "V1", "inner_params": {}},
        source="[V] Du et al. 2018 (arXiv 1812.02224), cosine-weighted variant",
    )


@register_objective
class GradVac(_GradControlled):
    Params = GradVacParams
    spec: ClassVar[ObjectiveSpec] = ObjectiveSpec(
        id="V5",
        target_geometry=("v1_kl",),
        target_direction={"v1_kl": "decrease"},
        family="decoder-visible",
        description="GradVac: if φ = cos(g_a, g_CE) < φ_T, g_a += ‖g_a‖(φ_T√(1−φ²) − φ√(1−φ_T²))/(‖g_CE‖√(1−φ_T²))"
        "·g_CE (cos becomes φ_T); φ_T = 0.1 fixed, or an EMA of past cosines when ema_beta > 0; aux = V1",
        core=False,
        default_weight=0.1,
        grad_mode="gradvac",
        params={"inner": "V1", "inner_params": {}, "phi_target": 0.1, "ema_beta": 0.0},
        source="[V] GradVac (Wang et al. 2021)",
    )


@register_objective
class TunedLensCoupling(precision.AuxObjective):
    Params = layers.LayerParams
    spec: ClassVar[ObjectiveSpec] = ObjectiveSpec(
        id="V6",
        target_geometry=(),
        family="decoder-visible",
        description="tuned-lens coupling: KL(sg(p(h[L,t])) ‖ softmax(W·norm(A h[l,t] + b))) over 𝒜 at a middle "
        "layer, A initialised to I, b to 0, norm = the model's final norm",
        core=False,
        default_weight=0.1,
        params={"layer": "mid"},
        source="[P] after the tuned lens (Belrose et al. 2023)",
    )

    def __init__(self, params: Mapping[str, Any], d_model: int, n_layers: int, generator: torch.Generator):
        super().__init__(params, d_model, n_layers, generator)
        self.layer = layers.resolve_layer(self.p.layer, n_layers)
        self.A = nn.Parameter(torch.eye(d_model))
        self.b = nn.Parameter(torch.zeros(d_model))

    def forward(self, ctx: AuxContext) -> AuxOut:
        mask = ctx.batch.answer_mask
        z = masks.answer_states(ctx.hidden[self.layer], mask) @ self.A.T + self.b  # (N, d)
        norm = layers.final_norm(ctx.model)
        zn = norm(z.to(ctx.hidden[-1].dtype))
        pred = head(ctx.lm_head_weight, zn)  # (N, V)
        target = ctx.logits[mask]  # (N, V) = W h[L, t]
        return AuxOut(loss=losses.kl_from_logits(target, pred))
