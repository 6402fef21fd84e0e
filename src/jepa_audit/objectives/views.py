"""The two views' embeddings an objective reads: e_u (the NL view) and e_t (the target view), the extra
forward rows behind them (target-only row, published views' packed forward, predictor-token rows), each run
under :func:`jepa_audit.objectives.rng.isolated_rng` and the caller's precision.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from jepa_audit.objectives.base import AuxContext, published_view_hidden
from jepa_audit.objectives.masks import gather_rows
from jepa_audit.objectives.precision import caller_precision
from jepa_audit.objectives.rng import isolated_rng, model_device


def target_states(ctx: AuxContext, generator: torch.Generator) -> tuple[Tensor, ...]:
    """``ctx.target_hidden`` (one extra forward of the short target-only row), run under :func:`isolated_rng`.

    The forward is cached on ``ctx`` (the same slot ``AuxContext.target_hidden`` uses), so ``ctx.e_t`` reads it.
    """
    if "target_hidden" not in ctx.__dict__:
        with isolated_rng(generator, model_device(ctx.model)), caller_precision():
            _ = ctx.target_hidden  # cached_property: computes and stores in ctx.__dict__
    return ctx.target_hidden


def e_t(ctx: AuxContext, generator: torch.Generator, layer: int = -1) -> Tensor:
    """Target-view embedding (B, d) in fp32 at the last target content token."""
    target_states(ctx, generator)
    return ctx.e_t(layer).float()


def view_states(ctx: AuxContext, generator: torch.Generator) -> None:
    """views.nl=published: run both views' packed forward once (cached on ``ctx``), under :func:`isolated_rng`."""
    if ctx.batch.published and "view_hidden" not in ctx.__dict__:
        with isolated_rng(generator, model_device(ctx.model)), caller_precision():
            _ = ctx.view_hidden


def e_u(ctx: AuxContext, layer: int = -1, generator: torch.Generator | None = None) -> Tensor:
    """NL-view embedding (B, d) in fp32.  views.nl=prefix: the CE row's state at the last NL content token
    (a causal prefix, free); published: the NL-view row's state at last_token = −2, from the views' packed
    forward (shared with e_t), whose dropout draws come from ``generator``."""
    if ctx.batch.published:
        if generator is None:
            raise ValueError("e_u under views.nl=published runs the view rows: pass the objective's generator")
        view_states(ctx, generator)
    return ctx.e_u(layer).float()


def nl_logits(ctx: AuxContext, generator: torch.Generator) -> Tensor:
    """The head's logits at the NL-view embedding, (B, V) fp32: the CE row's logits at the last NL token
    (prefix), or W·e_u at the NL view's last_token (published; W = the LM head, e_u post-final-norm)."""
    if not ctx.batch.published:
        return gather_rows(ctx.logits, ctx.batch.nl_last).float()
    return e_u(ctx, -1, generator) @ ctx.lm_head_weight.float().T


def published_predictor_views(ctx: AuxContext, pred_embeds: Tensor, generator: torch.Generator) -> None:
    """views.nl=published with k > 0: run both views once with ``pred_embeds`` (k, d) in the NL views'
    predictor slots and cache the states on ``ctx`` (``ctx.e_u``/``ctx.e_t`` then read them)."""
    if "view_hidden" in ctx.__dict__:
        return
    with isolated_rng(generator, model_device(ctx.model)), caller_precision():
        ctx.__dict__["view_hidden"] = published_view_hidden(
            ctx.run, ctx.batch, pred_embeds, ctx.model.get_input_embeddings()
        )


def nl_predictor_view(
    ctx: AuxContext, pred_embeds: Tensor, generator: torch.Generator, layer: int = -1
) -> Tensor:
    """e_u with k predictor tokens (LLM-JEPA ``<|predictor_i|>``): (B, d) fp32.

    One extra forward of the NL prefix rows (≤ max(nl_last) + 1 + k tokens) with the k learned embeddings
    ``pred_embeds`` (k, d) written right after each row's last NL token; the state at the last predictor
    token is returned.  Cost: one prefix-length row per example, on top of the target row.
    """
    b = ctx.batch
    k = pred_embeds.shape[0]
    emb_layer = ctx.model.get_input_embeddings()
    length = int(b.nl_last.max()) + 1 + k
    ids = b.input_ids[:, : min(length, b.input_ids.shape[1])]
    if ids.shape[1] < length:  # prefix + predictors can run past a short CE row: pad (masked out below)
        ids = F.pad(ids, (0, length - ids.shape[1]))
    emb = emb_layer(ids)  # (B, L, d)
    pos = torch.arange(length, device=ids.device)[None, :]  # (1, L)
    offset = pos - (b.nl_last[:, None] + 1)  # (B, L): 0..k−1 on the predictor slots
    is_pred = (offset >= 0) & (offset < k)
    pred = pred_embeds.to(emb.dtype)[offset.clamp(0, k - 1)]  # (B, L, d)
    emb = torch.where(is_pred[..., None], pred, emb)
    mask = (offset < k).long()  # NL prefix and predictors are real; everything after is padding
    with isolated_rng(generator, ids.device), caller_precision():
        out = ctx.run(inputs_embeds=emb, attention_mask=mask, output_hidden_states=True)
    h = out.hidden_states[layer]
    last = b.nl_last + k
    return h[torch.arange(h.shape[0], device=h.device), last].float()
