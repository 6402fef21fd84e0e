"""What the objective batteries share: the tiny model's sizes, the CE forward the loop runs, and building."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from jepa_audit.objectives import AuxContext, build_objective, registry

D, N_LAYERS, SEED = 32, 3, 82
RANDOM = ["T3-Global", "T3-Local", "D5", "F2", "F3"]  # objectives that draw every step
# the audited 22 (the registry's ``core`` flag; test_objectives_registry pins the set) and LLM-JEPA's reference
CORE_AND_LLM_JEPA = [n for n, c in registry().items() if c.spec.core] + ["llm-jepa"]


def forward(model, batch) -> tuple[torch.Tensor, AuxContext]:
    """The CE forward the loop runs: (CE on answer tokens, the context objectives read)."""
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True)
    logits = out.logits
    ce = F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
        batch.labels[:, 1:].reshape(-1),
        ignore_index=-100,
    )
    ctx = AuxContext(
        batch=batch, hidden=tuple(out.hidden_states), logits=logits, model=model,
        lm_head_weight=model.get_output_embeddings().weight,
    )  # fmt: skip
    return ce, ctx


def build(name: str, seed: int = SEED, **params):
    return build_objective(name, params, d_model=D, n_layers=N_LAYERS, seed=seed)
