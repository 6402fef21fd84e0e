"""Predictor/target asymmetry (auxiliaries.md §1.1, §1.5, §3 P-rows).

Views: e_u is the CE row's state at the last NL token (under causal attention the NL view *is* a prefix of
the CE row, so it is free); e_t is the target-only row's state at its last content token (one short extra
row, run under the objective's own RNG).  P0 is the ``llm-jepa`` reference (references.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

import torch
from pydantic import Field, PositiveFloat, PositiveInt
from torch import Tensor, nn

from jepa_audit.objectives import layers, losses, masks, precision, predictors, rng, views
from jepa_audit.objectives.base import (
    AuxContext,
    AuxOut,
    ObjectiveSpec,
    register_objective,
    register_variants,
    target_view_hidden,
)
from jepa_audit.objectives.params import LayerRef, ObjectiveParams


class ViewCosineParams(ObjectiveParams):
    layer: LayerRef
    direction: Literal["nl_to_regex", "regex_to_nl"] = Field(description="which view predicts the other")
    stop_grad: Literal["none", "target"] = Field(description="detach the predicted view (SimSiam) or not")


class ViewCosine(layers.LayerObjective):
    """1 − cos(pred, target) between the two views at ``layer``.

    ``direction``: "nl_to_regex" (e_u predicts e_t) or "regex_to_nl"; ``stop_grad``: "none" (both views get
    gradient, LLM-JEPA) or "target".  P1, P6 and P8 are this one body with three parameter sets
    (:func:`register_variants`); P0 (llm-jepa, references.py) is its stop_grad="none" reading with k tokens.
    """

    Params = ViewCosineParams

    def forward(self, ctx: AuxContext) -> AuxOut:
        u = views.e_u(ctx, self.layer, self.generator)
        r = views.e_t(ctx, self.generator, self.layer)
        pred, target = (u, r) if self.p.direction == "nl_to_regex" else (r, u)
        loss = losses.view_cosine_loss(pred, target, self.p.stop_grad)
        return AuxOut(loss=loss)


register_variants(
    ViewCosine,
    ObjectiveSpec(
        id="P1",
        target_geometry=("jepa_cos",),
        target_direction={"jepa_cos": "increase"},
        family="predictive",
        description="stop-grad target: 1 − cos(e_u, sg(e_t))",
        core=True,
        extra_forward=1,
        default_weight=0.5,
        params={"layer": "last", "direction": "nl_to_regex", "stop_grad": "target"},
        source="[V] SimSiam stop-gradient idea; λ from the llm-jepa grid {0.5, 2}",
    ),  # P6 and P8, the body's other two parameter sets, register below in listing order
)


class PredictorParams(ObjectiveParams):
    layer: LayerRef
    hidden: PositiveInt = Field(description="the MLP predictor's hidden width")


@register_objective
class SymmetricPredictor(layers.LayerObjective):
    Params = PredictorParams
    spec: ClassVar[ObjectiveSpec] = ObjectiveSpec(
        id="P2",
        target_geometry=("jepa_cos",),
        target_direction={"jepa_cos": "increase"},
        family="predictive",
        description="MLP predictor + stop-grad, symmetrised: ½[D(q(e_u), sg(e_t)) + D(q(e_t), sg(e_u))], D = −cos, "
        "q: d → 512 → d with LayerNorm",
        core=True,
        extra_forward=1,
        default_weight=0.5,
        params={"layer": "last", "hidden": 512},
        source="[V] SimSiam (Chen & He 2021)",
    )

    def __init__(self, params: Mapping[str, Any], d_model: int, n_layers: int, generator: torch.Generator):
        super().__init__(params, d_model, n_layers, generator)
        self.q = rng.construct_seeded(generator, lambda: predictors.MLPPredictor(d_model, self.p.hidden))

    def forward(self, ctx: AuxContext) -> AuxOut:
        u = views.e_u(ctx, self.layer, self.generator)
        r = views.e_t(ctx, self.generator, self.layer)
        loss = -0.5 * (masks.cosine(self.q(u), r.detach()) + masks.cosine(self.q(r), u.detach())).mean()
        return AuxOut(loss=loss)


class EmaParams(PredictorParams):
    tau_base: Annotated[float, Field(ge=0.0, le=1.0)] = Field(description="EMA decay at step 0 (→ 1 by cosine)")


@register_objective
class EmaTarget(layers.LayerObjective):
    Params = EmaParams
    spec: ClassVar[ObjectiveSpec] = ObjectiveSpec(
        id="P3",
        target_geometry=("jepa_cos",),
        target_direction={"jepa_cos": "increase"},
        family="predictive",
        description="EMA target (BYOL): 2 − 2 cos(q(e_u), sg(ē_t)), ē_t from a no-grad target row run with an "
        "EMA copy of the trainable weights (under LoRA: the adapter weights only); τ 0.996 → 1 cosine",
        core=True,
        extra_forward=1,
        default_weight=0.5,
        params={"layer": "last", "hidden": 512, "tau_base": 0.996},
        source="[V] BYOL (Grill et al. 2020) / I-JEPA ema [0.996, 1.0]",
    )

    def __init__(self, params: Mapping[str, Any], d_model: int, n_layers: int, generator: torch.Generator):
        super().__init__(params, d_model, n_layers, generator)
        self.q = rng.construct_seeded(generator, lambda: predictors.MLPPredictor(d_model, self.p.hidden))
        # name → fp32 shadow of one trainable model parameter; filled lazily from the model it first sees,
        # kept out of parameters() (never trained) and saved through get/set_extra_state.
        self.shadow: dict[str, Tensor] = {}

    @staticmethod
    def _trainable(model: nn.Module) -> dict[str, Tensor]:
        return {n: p for n, p in model.named_parameters() if p.requires_grad}

    def _init_shadow(self, model: nn.Module) -> None:
        self.shadow = {n: p.detach().float().clone() for n, p in self._trainable(model).items()}

    def tau(self, step: int, total_steps: int) -> float:
        """BYOL schedule: τ_k = 1 − (1 − τ_base)(cos(πk/K) + 1)/2, from τ_base at k = 0 to 1 at k = K."""
        frac = min(max(step / max(total_steps, 1), 0.0), 1.0)
        return 1.0 - (1.0 - self.p.tau_base) * (math.cos(math.pi * frac) + 1.0) / 2.0

    @torch.no_grad()
    def after_step(self, model: nn.Module, step: int, total_steps: int) -> None:
        if not self.shadow:
            self._init_shadow(model)
            return
        tau = self.tau(step, total_steps)
        for n, p in self._trainable(model).items():
            if self.shadow[n].device != p.device:  # e.g. restored from a CPU checkpoint
                self.shadow[n] = self.shadow[n].to(p.device)
            self.shadow[n].mul_(tau).add_(p.detach().float(), alpha=1.0 - tau)

    def target_embedding(self, ctx: AuxContext) -> Tensor:
        """ē_t (B, d): the target row through the model with the shadow weights swapped in (functional_call)."""
        model = ctx.model
        if not self.shadow:
            self._init_shadow(model)
        params = dict(model.named_parameters())
        swapped = {n: s.to(device=params[n].device, dtype=params[n].dtype) for n, s in self.shadow.items()}
        b = ctx.batch
        with torch.no_grad(), rng.isolated_rng(self.generator, rng.model_device(model)), precision.caller_precision():
            hidden = target_view_hidden(lambda **kw: torch.func.functional_call(model, swapped, (), kw), b)
        return masks.gather_rows(hidden[self.layer], b.target_last).float()

    def forward(self, ctx: AuxContext) -> AuxOut:
        u = self.q(views.e_u(ctx, self.layer, self.generator))
        target = self.target_embedding(ctx)
        return AuxOut(loss=(2.0 - 2.0 * masks.cosine(u, target)).mean())

    def get_extra_state(self) -> dict[str, Any]:
        return {"shadow": {n: s.detach().cpu() for n, s in self.shadow.items()}}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.shadow = {n: s.clone() for n, s in state.get("shadow", {}).items()}


@register_objective
class LinearPredictor(layers.LayerObjective):
    Params = layers.LayerParams
    spec: ClassVar[ObjectiveSpec] = ObjectiveSpec(
        id="P4",
        target_geometry=("jepa_cos",),
        target_direction={"jepa_cos": "increase"},
        family="predictive",
        description="linear predictor: 1 − cos(M e_u, e_t), M ∈ R^{d×d} initialised to I, no bias, gradient "
        "through both views",
        core=True,
        extra_forward=1,
        default_weight=0.5,
        params={"layer": "last"},
        source="[V] STP --linear_predictor",
    )

    def __init__(self, params: Mapping[str, Any], d_model: int, n_layers: int, generator: torch.Generator):
        super().__init__(params, d_model, n_layers, generator)
        self.M = nn.Parameter(torch.eye(d_model))

    def forward(self, ctx: AuxContext) -> AuxOut:
        u = views.e_u(ctx, self.layer, self.generator) @ self.M.T
        return AuxOut(loss=losses.view_cosine_loss(u, views.e_t(ctx, self.generator, self.layer)))


class TransformerPredictor(nn.Module):
    """D_p pre-norm transformer blocks (width w) over the NL-view token states plus one learned query token;
    the query's output, projected back to d, is the prediction of e_t."""

    def __init__(self, d: int, width: int, depth: int, heads: int):
        super().__init__()
        self.inp = nn.Linear(d, width)
        self.query = nn.Parameter(torch.randn(1, 1, width) * 0.02)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(
                width, heads, 2 * width, dropout=0.0, batch_first=True, norm_first=True
            )
            for _ in range(depth)
        )
        self.out = nn.Linear(width, d)

    def forward(self, states: Tensor, keep: Tensor) -> Tensor:
        """states (B, T, d) fp32, keep (B, T) bool (the NL tokens) → (B, d)."""
        x = self.inp(states)
        x = torch.cat([x, self.query.expand(x.shape[0], 1, -1)], 1)
        pad = torch.cat([~keep, keep.new_zeros(keep.shape[0], 1)], 1)  # the query is never padding
        for blk in self.blocks:
            x = blk(x, src_key_padding_mask=pad)
        return self.out(x[:, -1])


class DeepPredictorParams(ObjectiveParams):
    layer: LayerRef
    depth: PositiveInt = Field(description="transformer blocks of the predictor")
    width: PositiveInt = Field(description="the predictor's model width (a multiple of heads)")
    heads: PositiveInt = Field(description="attention heads per block")


@register_objective
class DeepPredictor(layers.LayerObjective):
    Params = DeepPredictorParams
    spec: ClassVar[ObjectiveSpec] = ObjectiveSpec(
        id="P5",
        target_geometry=("jepa_cos",),
        target_direction={"jepa_cos": "increase"},
        family="predictive",
        description="predictor depth: a D_p-block transformer predictor (width 256) reads the NL-view token "
        "states and predicts e_t, 1 − cos(q, e_t), gradient through both views (as P0); k predictor tokens "
        "are llm-jepa's `k` parameter",
        core=False,
        extra_forward=1,
        default_weight=0.5,
        params={"layer": "last", "depth": 1, "width": 256, "heads": 4},
        source="[P] (predictor depth ablation; I-JEPA uses a 12-block predictor)",
    )

    def __init__(self, params: Mapping[str, Any], d_model: int, n_layers: int, generator: torch.Generator):
        super().__init__(params, d_model, n_layers, generator)
        self.q = rng.construct_seeded(
            generator,
            lambda: TransformerPredictor(
                d_model, self.p.width, self.p.depth, self.p.heads
            ),
        )

    def forward(self, ctx: AuxContext) -> AuxOut:
        b = ctx.batch
        T = int(b.nl_last.max()) + 1  # the NL view ends at nl_last: read no further
        pred = self.q(ctx.hidden[self.layer][:, :T].float(), b.prompt_mask[:, :T])
        return AuxOut(loss=losses.view_cosine_loss(pred, views.e_t(ctx, self.generator, self.layer)))


register_variants(
    ViewCosine,  # P6: another parameter set of P1's body
    ObjectiveSpec(
        id="P6",
        target_geometry=("jepa_cos",),
        target_direction={"jepa_cos": "increase"},
        family="predictive",
        description="reverse direction: the target view predicts the NL view, 1 − cos(e_t, sg(e_u))",
        core=False,
        extra_forward=1,
        default_weight=0.5,
        params={"layer": "last", "direction": "regex_to_nl", "stop_grad": "target"},
        source="[V] llm-jepa --reverse_pred (with a stop-grad so the direction matters at k = 0) [P]",
    )
)


class InfoNceParams(ObjectiveParams):
    layer: LayerRef
    temperature: PositiveFloat = Field(description="τ of the in-batch softmax")


@register_objective
class InfoNCE(layers.LayerObjective):
    Params = InfoNceParams
    spec: ClassVar[ObjectiveSpec] = ObjectiveSpec(
        id="P7",
        target_geometry=("jepa_cos",),
        target_direction={"jepa_cos": "increase"},
        family="predictive",
        description="InfoNCE: cross-entropy over in-batch cos(e_u, e_t)/τ, positives on the diagonal, τ = 0.07",
        core=True,
        extra_forward=1,
        default_weight=0.5,
        params={"layer": "last", "temperature": 0.07},
        source="[V] llm-jepa --infonce",
    )

    def forward(self, ctx: AuxContext) -> AuxOut:
        u = views.e_u(ctx, self.layer, self.generator)
        r = views.e_t(ctx, self.generator, self.layer)
        return AuxOut(loss=losses.info_nce(u, r, self.p.temperature))


register_variants(
    ViewCosine,  # P8: another parameter set of P1's body
    ObjectiveSpec(
        id="P8",
        target_geometry=("jepa_cos",),
        target_direction={"jepa_cos": "increase"},
        family="predictive",
        description="P1 at a middle layer: 1 − cos(e_u, sg(e_t)) with e_u, e_t from h[mid, ·]",
        core=False,
        extra_forward=1,
        default_weight=0.5,
        params={"layer": "mid", "direction": "nl_to_regex", "stop_grad": "target"},
        source="[P]",
    )
)
