"""Trajectory-shape auxiliaries (auxiliaries.md §1.2, §1.3, §3 T-rows, §4).

All read the hidden states of the CE forward (no extra rows).  Token trajectories use the answer tokens 𝒜
(``batch.answer_mask``) unless stated; differences never cross padding or the prompt/answer boundary.
Layer parameters: "last" = post-final-norm (the reference's l = 16), "mid" = n_layers // 2 (l = 8),
"quarter" = n_layers // 4 (l = 4), or an int index into ``ctx.hidden``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, PositiveFloat, PositiveInt

from jepa_audit.objectives import curves, layers, masks, precision
from jepa_audit.objectives.base import (
    AuxContext,
    AuxOut,
    ObjectiveSpec,
    register_objective,
    register_variants,
)
from jepa_audit.objectives.params import LayerRef, ObjectiveParams


class CurvatureParams(ObjectiveParams):
    layer: LayerRef
    form: Literal["angle", "one_minus_cos"] = Field(description="arccos of the turn (radians) or 1 − cos")
    eps: PositiveFloat = Field(description="clip of cos away from ±1 (angle) / norm floor")


class Curvature(layers.LayerObjective):
    """T1 and T2: one body, two parameter sets; ``form`` picks arccos (angle) or 1 − cos."""

    Params = CurvatureParams

    def forward(self, ctx: AuxContext) -> AuxOut:
        h = ctx.hidden[self.layer]
        loss = curves.curvature(h, ctx.batch.answer_mask, self.p.form, eps=self.p.eps)
        return AuxOut(loss=loss)


register_variants(
    Curvature,
    ObjectiveSpec(
        id="T1",
        target_geometry=("curvature_answer_Llast",),
        target_direction={"curvature_answer_Llast": "decrease"},
        family="trajectory",
        description="curvature: mean_{t∈𝒜} arccos(clip(cos(v_t, v_{t+1}), −1+ε, 1−ε)) at layer l (radians)",
        core=True,
        default_weight=0.1,
        params={"layer": "last", "form": "angle", "eps": 1e-6},
        source="[V] Hénaff 2019 / Hosseini & Fedorenko 2023 definition; STP --linear=curvature",
    ),
    ObjectiveSpec(
        id="T2",
        target_geometry=("curvature_answer_Llast",),
        target_direction={"curvature_answer_Llast": "decrease"},
        family="trajectory",
        description="local straightening: mean_{t∈𝒜} (1 − cos(v_t, v_{t+1})) at layer l",
        core=True,
        default_weight=0.1,
        params={"layer": "last", "form": "one_minus_cos", "eps": 1e-6},
        source="[V] Wang et al. 2026 (arXiv 2603.12231) L_curv",
    ),
)


class TubeParams(ObjectiveParams):
    layer: LayerRef
    max_span: int = Field(description="longest span e − s in tokens; ≤ 0 = unbounded (STP's random_span)")
    times: PositiveInt = Field(description="random spans drawn per sequence")


class Tube(layers.LayerObjective):
    """T3-Global and T3-Local: STP over 𝒫∪𝒜 with the user/assistant gap bridged; span cap from params.

    The path is STP's: each turn from the token before its content (``find_start_end``'s start) to its last
    *content* token, so the step into the assistant's end-of-turn is not on it (𝒜 minus end-of-turn)."""

    Params = TubeParams

    def forward(self, ctx: AuxContext) -> AuxOut:
        b = ctx.batch
        segments = (masks.with_anchor(b.prompt_mask), masks.with_anchor(b.answer_content_mask()))
        loss = curves.stp_tube_loss(
            ctx.hidden[self.layer], segments, self.generator, max_span=self.p.max_span, times=self.p.times
        )
        return AuxOut(loss=loss)


register_variants(
    Tube,
    ObjectiveSpec(
        id="T3-Global",
        target_geometry=("curvature_prompt_Llast", "curvature_answer_Llast"),
        target_direction={"curvature_prompt_Llast": "decrease", "curvature_answer_Llast": "decrease"},
        family="trajectory",
        description="STP semantic tube: 1 − cos(before + after, patch), one random span [s,e) over the content "
        "of 𝒫 and 𝒜 (end-of-turn excluded, as STP) per sample (unbounded length), turn structure bridged",
        core=True,
        default_weight=0.02,
        params={"layer": "last", "max_span": -1, "times": 1},
        source="[V] STP code (galilai-group/llm-jepa stp.py, --linear=random_span), λ = 0.02 from run_stp",
    ),
    ObjectiveSpec(
        id="T3-Local",
        target_geometry=("curvature_prompt_Llast", "curvature_answer_Llast"),
        target_direction={"curvature_prompt_Llast": "decrease", "curvature_answer_Llast": "decrease"},
        family="trajectory",
        description="GUESS (auxiliaries.md §4 reading 1): STP tube loss with local spans, e − s ≤ w (w = 2); "
        "reading 2 (local vs global curvature) is covered by T1/T2/T6 and T4/T5",
        core=True,
        default_weight=0.02,
        params={"layer": "last", "max_span": 2, "times": 1},
        source="[P] our reading of the paper's name, built on STP's random_span_max_length",
    ),
)


class LayerEpsParams(ObjectiveParams):
    layer: LayerRef
    eps: PositiveFloat = Field(description="floor added to the denominator")


def _answer_chord(h, mask):
    first, last = masks.first_last(mask)
    return masks.gather_rows(h, last) - masks.gather_rows(h, first)  # (B, d)


@register_objective
class ChordAlignment(layers.LayerObjective):
    Params = layers.LayerParams
    spec: ClassVar[ObjectiveSpec] = ObjectiveSpec(
        id="T4",
        target_geometry=("curvature_answer_Llast",),
        target_direction={"curvature_answer_Llast": "decrease"},
        family="trajectory",
        description="chord alignment: mean_{t∈𝒜} (1 − cos(v_t, h[l,end] − h[l,start])) over the answer span",
        core=True,
        default_weight=0.02,
        params={"layer": "last"},
        source="[P] global-tube analogue of STP",
    )

    def forward(self, ctx: AuxContext) -> AuxOut:
        h = ctx.hidden[self.layer].float()
        mask = ctx.batch.answer_mask
        chord = _answer_chord(h, mask)
        v = h[:, 1:] - h[:, :-1]
        valid = masks.consecutive(mask, 1)
        loss = masks.masked_mean(1.0 - masks.cosine(v, chord[:, None, :]), valid)
        return AuxOut(loss=loss)


@register_objective
class Tortuosity(layers.LayerObjective):
    Params = LayerEpsParams
    spec: ClassVar[ObjectiveSpec] = ObjectiveSpec(
        id="T5",
        target_geometry=("curvature_answer_Llast",),
        target_direction={"curvature_answer_Llast": "decrease"},
        family="trajectory",
        description="tortuosity: Σ_t ‖v_t‖ / ‖h[l,end] − h[l,start]‖ − 1 over the answer span, mean over sequences",
        core=False,
        default_weight=0.01,
        params={"layer": "last", "eps": 1e-6},
        source="[P]",
    )

    def forward(self, ctx: AuxContext) -> AuxOut:
        h = ctx.hidden[self.layer].float()
        mask = ctx.batch.answer_mask
        valid = masks.consecutive(mask, 1)
        v = h[:, 1:] - h[:, :-1]
        # sqrt(‖v‖² + tiny): finite gradient even for a repeated state
        path = ((v * v).sum(-1) + 1e-12).sqrt().mul(valid).sum(1)
        chord = _answer_chord(h, mask).norm(dim=-1)
        per = path / (chord + self.p.eps) - 1.0
        return AuxOut(loss=masks.mean_over(per, valid.any(1)))


@register_objective
class EuclideanAcceleration(layers.LayerObjective):
    Params = LayerEpsParams
    spec: ClassVar[ObjectiveSpec] = ObjectiveSpec(
        id="T6",
        target_geometry=("curvature_answer_Llast",),
        target_direction={"curvature_answer_Llast": "decrease"},
        family="trajectory",
        description="Euclidean acceleration: mean_t ‖a_t‖² / (mean_t ‖v_t‖² + ε) over 𝒜, per sequence then "
        "averaged (flat-space geodesic residual)",
        core=True,
        default_weight=0.1,
        params={"layer": "last", "eps": 1e-6},
        source="[P] flat-space Jacobi/geodesic residual",
    )

    def forward(self, ctx: AuxContext) -> AuxOut:
        loss = curves.second_difference_ratio(
            ctx.hidden[self.layer], ctx.batch.answer_mask, "velocity", eps=self.p.eps
        )
        return AuxOut(loss=loss)


class DepthParams(ObjectiveParams):
    first: LayerRef = Field(description="first layer of the residual stream read (to L − 1)")


@register_objective
class DepthStraightening(precision.AuxObjective):
    Params = DepthParams
    spec: ClassVar[ObjectiveSpec] = ObjectiveSpec(
        id="T7",
        target_geometry=(),
        family="trajectory",
        description="depth straightening: u_l = h[l+1,t] − h[l,t], mean_{t∈𝒜, l} (1 − cos(u_l, u_{l+1})) over "
        "layers first..L−1 of the residual stream",
        core=False,
        default_weight=0.1,
        params={"first": "quarter"},
        source="[P]",
    )

    def __init__(self, params: Mapping[str, Any], d_model: int, n_layers: int, generator: torch.Generator):
        super().__init__(params, d_model, n_layers, generator)
        self.first = layers.resolve_layer(self.p.first, n_layers) % (n_layers + 1)

    def forward(self, ctx: AuxContext) -> AuxOut:
        mask = ctx.batch.answer_mask
        z = torch.stack(
            [masks.answer_states(h, mask) for h in layers.depth_states(ctx.hidden, self.first, self.n_layers)]
        )
        u = z[1:] - z[:-1]  # (L', N, d)
        loss = (1.0 - masks.cosine(u[:-1], u[1:])).mean()
        return AuxOut(loss=loss)


class ContextParams(ObjectiveParams):
    layer: LayerRef
    context: PositiveInt = Field(description="tokens before each answer token in the window")


@register_objective
class ContextualCurvature(layers.LayerObjective):
    Params = ContextParams
    spec: ClassVar[ObjectiveSpec] = ObjectiveSpec(
        id="T8",
        target_geometry=("curvature_prompt_Lmid",),
        target_direction={"curvature_prompt_Lmid": "decrease"},
        family="trajectory",
        description="contextual curvature: T1 over the last c tokens before each answer token, at a middle layer",
        core=False,
        default_weight=0.1,
        params={"layer": "mid", "context": 8},
        source="[V] concept from King, Fedorenko & Hosseini 2026; exact formula [P]",
    )

    def forward(self, ctx: AuxContext) -> AuxOut:
        b = ctx.batch
        loss = curves.window_curvature(
            ctx.hidden[self.layer], b.attention_mask.bool(), b.answer_mask, self.p.context
        )
        return AuxOut(loss=loss)
