"""Which hidden state an objective reads: layer parameters (``"last"``, ``"mid"``, an index) resolved
against the model's depth, the final norm, the residual-stream states over depth, and
:class:`LayerObjective` (an objective at one resolved layer).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from jepa_audit.objectives.base import AuxContext
from jepa_audit.objectives.masks import answer_states
from jepa_audit.objectives.params import LayerRef, ObjectiveParams
from jepa_audit.objectives.precision import AuxObjective

LayerSpec = int | str


def resolve_layer(spec: LayerSpec, n_layers: int) -> int:
    """Map a layer parameter to an index into ``ctx.hidden`` (length n_layers + 1; 0 = embeddings).

    "last" → −1 (post-final-norm, what the head reads; the reference's l = 16 on a 16-layer Llama);
    "mid" → n_layers // 2 (the reference's l = 8); "quarter" → n_layers // 4 (l = 4); an int is used as is.
    """
    named = {"last": -1, "mid": n_layers // 2, "quarter": n_layers // 4}
    if isinstance(spec, str):
        if spec not in named:
            raise ValueError(f"layer {spec!r}: expected an int or one of {sorted(named)}")
        return named[spec]
    idx = int(spec)
    if not -(n_layers + 1) <= idx <= n_layers:
        raise ValueError(
            f"layer {idx} out of range for a model with {n_layers} layers (hidden has {n_layers + 1})"
        )
    return idx


def final_norm(model: nn.Module) -> nn.Module:
    """The decoder's final norm (what the LM head reads after), for HF causal LMs with or without PEFT."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder().norm


class LayerParams(ObjectiveParams):
    """The parameters of an objective that reads one layer and nothing else."""

    layer: LayerRef


class LayerObjective(AuxObjective):
    """Resolves ``params.layer`` once, at build time, against the model's depth."""

    def __init__(self, params: Mapping[str, Any], d_model: int, n_layers: int, generator: torch.Generator):
        super().__init__(params, d_model, n_layers, generator)
        self.layer = resolve_layer(self.p.layer, n_layers)

    def answer_z(self, ctx: AuxContext) -> Tensor:
        """Z: the answer-token states at this objective's layer, pooled over the batch, (N, d)."""
        return answer_states(ctx.hidden[self.layer], ctx.batch.answer_mask)


def depth_states(hidden: tuple[Tensor, ...], first: int, n_layers: int) -> tuple[Tensor, ...]:
    """Residual-stream states h[first..L−1] (pre-final-norm, so one scale); the post-norm state joins only
    when fewer than 3 would remain (a very shallow model)."""
    states = hidden[first:n_layers]
    return states if len(states) >= 3 else hidden[max(0, n_layers + 1 - 3) :]
