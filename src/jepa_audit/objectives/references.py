"""The two references every auxiliary is compared against: plain CE and LLM-JEPA as published.

``ce`` has default weight 0: the loop skips the auxiliary whenever λ == 0 (it never checks ids).
``llm-jepa`` is rbalestr-lab/llm-jepa's loss (auxiliaries.md §1.1): 1 − cos(e_u, e_t) at the last layer,
no stop-gradient (both views are trained), e_u at the last NL token (k = 0) or at the last of k learned
predictor tokens appended to the NL view (k > 0).  Which rows the views are (the CE row's prefix, or
finetune.py's own user-only and assistant-only rows) is ``views.nl`` (data/views.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from pydantic import Field, NonNegativeInt
from torch import nn

from jepa_audit.objectives import layers, losses, precision, views
from jepa_audit.objectives.base import AuxContext, AuxOut, ObjectiveSpec, register_objective
from jepa_audit.objectives.params import LayerRef, NoParams, ObjectiveParams


@register_objective
class CrossEntropyOnly(precision.AuxObjective):
    Params = NoParams
    spec: ClassVar[ObjectiveSpec] = ObjectiveSpec(
        id="ce",
        target_geometry=(),
        family="reference",
        description="baseline: cross-entropy on the answer tokens only (no auxiliary; λ = 0)",
        core=False,
        default_weight=0.0,
        params={},
        source="[V] the audited recipe's CE baseline",
    )

    def forward(self, ctx: AuxContext) -> AuxOut:
        return AuxOut(loss=torch.zeros((), dtype=torch.float32, device=ctx.logits.device))


class LlmJepaParams(ObjectiveParams):
    layer: LayerRef
    k: NonNegativeInt = Field(description="predictor tokens appended to the NL view (finetune.py's --predictors)")


@register_objective
class LlmJepa(layers.LayerObjective):
    Params = LlmJepaParams
    spec: ClassVar[ObjectiveSpec] = ObjectiveSpec(
        id="llm-jepa",
        target_geometry=("jepa_cos",),
        target_direction={"jepa_cos": "increase"},
        family="reference",
        description="LLM-JEPA as published (P0): 1 − cos(e_u, e_t), NL view with k predictor tokens, target view at "
        "its last content token, gradient through both views; k > 0 adds one NL-prefix row (+k tokens)",
        core=False,
        extra_forward=1,
        default_weight=0.5,
        params={"layer": "last", "k": 0},
        source="[V] rbalestr-lab/llm-jepa finetune.py; λ from run.sh grid {0.5, 2.0}, k ∈ {0, 1, 2}",
    )

    def __init__(self, params: Mapping[str, Any], d_model: int, n_layers: int, generator: torch.Generator):
        super().__init__(params, d_model, n_layers, generator)
        k = self.p.k
        # New special tokens <|predictor_i|>: new rows of the input embedding matrix in finetune.py.  Here
        # N(0, 0.02²) from the objective's generator until models.load.init_embedding_rows sets them as
        # resize_token_embeddings does (the mean row) and trains them only when the embeddings train (so
        # frozen under LoRA, as the original); only created when used, so k = 0 has no parameters.
        self.pred = nn.Parameter(torch.randn(k, d_model, generator=generator) * 0.02) if k else None

    embedding_rows: ClassVar[tuple[str, ...]] = ("pred",)  # parameters that are rows of the input embeddings

    def forward(self, ctx: AuxContext) -> AuxOut:
        if self.pred is None:
            u = views.e_u(ctx, self.layer, self.generator)
        elif ctx.batch.published:  # the NL views already hold k slots before the end-of-turn
            views.published_predictor_views(ctx, self.pred, self.generator)
            u = views.e_u(ctx, self.layer, self.generator)
        else:
            u = views.nl_predictor_view(ctx, self.pred, self.generator, self.layer)
        r = views.e_t(ctx, self.generator, self.layer)
        return AuxOut(loss=losses.view_cosine_loss(u, r, "none"))
