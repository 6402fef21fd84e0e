"""A lean forward for Llama: the same maths as transformers' ``LlamaForCausalLM`` (plain or PEFT-LoRA-wrapped),
read from the same parameters, in a fraction of the Python.

Why by hand: a tiny CPU model (d = 64, 2 layers) spends most of a step in per-module Python, not arithmetic.
transformers' Llama runs ~10 modules a layer with decorators, output capturing and mask builders, and PEFT
adds three more calls (dropout, A, B) per adapted linear: 7 × 2 = 14 LoRA wrappers a step, twice (forward and
autograd's backward).  Here every weight is read once per call, LoRA merged into it
(``W + s·B·A``: a (d_out × r)·(r × d_in) product, cheap next to the token matmuls), the q/k/v and gate/up
projections are fused into one matmul each, and attention is one SDPA call with a boolean mask built once.
Measured 1.5× on the forward + backward of the ``cpu`` preset's batch (docs/performance.md).  No library offers
this for HF checkpoints with PEFT adapters in place (``torch.compile`` costs minutes per shape, measured).

Nothing is copied: gradients flow to the model's own parameters (the LoRA A/B matrices, or every weight under
full fine-tuning), so the optimizer, checkpoints, PEFT's ``merge_and_unload`` and every objective that calls the
model itself are unchanged.  It covers exactly what :func:`lean_reason` accepts (anything else returns a reason
and the caller uses transformers' forward); ``tests/test_lean.py`` checks hidden states, logits, gradients,
trained weights and greedy decoding against transformers' forward in float64.

Shapes: B rows, T tokens, d = hidden size, H query heads, KV key/value heads, hd = head dim, V vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["LeanCall", "LeanWeights", "lean_forward", "lean_reason", "read_weights", "uses_lean"]

_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _unwrap(model: nn.Module) -> nn.Module:
    """The ``LlamaForCausalLM`` under a PEFT wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def _linear_reason(lin: nn.Module, training: bool) -> str | None:
    """Why ``lin`` (an ``nn.Linear`` or a PEFT ``lora.Linear``) is not a plain ``W`` or ``W + s·B·A``."""
    if type(lin) is nn.Linear:
        return None if lin.bias is None else "a linear with a bias"
    base = getattr(lin, "base_layer", None)
    if type(base) is not nn.Linear or base.bias is not None or not hasattr(lin, "lora_A"):
        return f"an adapted module of type {type(lin).__name__}"
    if getattr(lin, "merged", False) or getattr(lin, "disable_adapters", False):
        return "merged or disabled adapters"
    active = list(getattr(lin, "active_adapters", []))
    if len(active) != 1 or active[0] not in lin.lora_A:
        return "more or fewer than one active LoRA adapter"
    name = active[0]
    if getattr(lin, "use_dora", {}).get(name, False):
        return "DoRA"
    if lin.lora_A[name].bias is not None or lin.lora_B[name].bias is not None:
        return "LoRA with a bias"
    drop = lin.lora_dropout[name]
    if training and isinstance(drop, nn.Dropout) and drop.p > 0:
        return "LoRA dropout > 0 while training (its masks come from the global RNG in PEFT's order)"
    return None


def _foreign_hooks(mod: nn.Module) -> bool:
    """Whether ``mod`` carries forward (pre-)hooks other than transformers' own output-capturing ones, which it
    installs for good on the first forward with ``output_hidden_states`` and which only record outputs (the
    lean forward returns those itself)."""
    hooks = (*mod._forward_hooks.values(), *mod._forward_pre_hooks.values())
    return any(getattr(h, "__module__", "") != "transformers.utils.output_capturing" for h in hooks)


def lean_reason(model: nn.Module) -> str | None:
    """None when :func:`lean_forward` computes exactly ``model``'s forward; else why not, in words."""
    base = _unwrap(model)
    try:
        from transformers import LlamaForCausalLM
    except ImportError:  # pragma: no cover - transformers is a dependency
        return "transformers is not importable"
    if type(base) is not LlamaForCausalLM:
        return f"{type(base).__name__} is not LlamaForCausalLM"
    cfg = base.config
    if getattr(cfg, "attention_bias", False) or getattr(cfg, "mlp_bias", False):
        return "attention or MLP biases"
    if getattr(cfg, "hidden_act", "silu") != "silu":
        return f"hidden_act {cfg.hidden_act!r}"
    if getattr(cfg, "_attn_implementation", "sdpa") not in ("sdpa", "eager"):
        return f"attention implementation {cfg._attn_implementation!r}"
    if getattr(getattr(model, "active_peft_config", None), "is_prompt_learning", False):
        return "PEFT prompt learning"
    m = base.model
    if type(m.embed_tokens) is not nn.Embedding or type(base.lm_head) is not nn.Linear or base.lm_head.bias is not None:
        return "wrapped embeddings or LM head (adapter.train_embeddings)"
    if any(_foreign_hooks(mod) for mod in model.modules()):
        return "forward hooks on the model (the lean forward would not run them)"
    if torch.is_autocast_enabled(m.embed_tokens.weight.device.type):
        return "autocast (transformers' forward keeps its own precision rules)"
    dtype = m.embed_tokens.weight.dtype
    for layer in m.layers:
        for lin in (*(getattr(layer.self_attn, n) for n in _LINEARS[:4]), *(getattr(layer.mlp, n) for n in _LINEARS[4:])):
            why = _linear_reason(lin, model.training) or _dtype_reason(lin, dtype)
            if why is not None:
                return why
    others = (base.lm_head.weight, m.norm.weight, *(p for layer in m.layers for p in
                                                     (layer.input_layernorm.weight, layer.post_attention_layernorm.weight)))
    if any(p.dtype != dtype for p in others):
        return f"weights in more than one dtype (embeddings in {_dt(dtype)}; transformers casts between them)"
    return None


def _dt(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _dtype_reason(lin: nn.Module, dtype: torch.dtype) -> str | None:
    """Why ``lin``'s weights are not all in the model's ``dtype``.

    The usual case: a bf16 (or fp16) base whose LoRA adapters PEFT keeps in fp32 (``autocast_adapter_dtype``, the
    ``paper`` preset). PEFT computes ``bf16(W·x) + s·B·A·fp32(x)`` and rounds the sum back to bf16; a merged
    ``W + s·B·A`` would be one fp32 weight meeting bf16 activations (a dtype error in ``F.linear``), and
    rounding it to bf16 would drop most of the adapters' update. Neither is transformers' forward: step aside.
    """
    base = lin if type(lin) is nn.Linear else lin.base_layer
    if base.weight.dtype != dtype:
        return f"a linear in {_dt(base.weight.dtype)} beside embeddings in {_dt(dtype)}"
    if type(lin) is nn.Linear:
        return None
    name = lin.active_adapters[0]
    a_dtype = lin.lora_A[name].weight.dtype
    if a_dtype != dtype or lin.lora_B[name].weight.dtype != dtype:
        return (f"a {_dt(dtype)} base with {_dt(a_dtype)} LoRA adapters (PEFT adds the adapter path in "
                f"{_dt(a_dtype)} to the base output; a merged weight would not be that sum)")
    return None


def uses_lean(model: nn.Module, choice: str) -> bool:
    """``model.forward``: ``hf`` never, ``auto`` when :func:`lean_reason` finds nothing, ``lean`` always (a
    ValueError naming the reason when it does not apply)."""
    if choice == "hf":
        return False
    why = lean_reason(model)
    if choice == "lean" and why is not None:
        raise ValueError(f"model.forward=lean does not apply to this model: {why}; use model.forward=auto or hf")
    if choice not in ("auto", "lean"):
        raise ValueError(f"model.forward={choice!r}; expected auto, hf or lean")
    return why is None


def _weight(lin: nn.Module) -> Tensor:
    """(d_out, d_in) effective weight: ``W``, or ``W + s·B·A`` for a LoRA-adapted linear (differentiable)."""
    if type(lin) is nn.Linear:
        return lin.weight
    name = lin.active_adapters[0]
    delta = lin.lora_B[name].weight @ lin.lora_A[name].weight  # (d_out, r) @ (r, d_in)
    return lin.base_layer.weight + lin.scaling[name] * delta


@dataclass
class LayerWeights:
    ln1: Tensor  # (d,) input RMSNorm
    qkv: Tensor  # ((H + 2·KV)·hd, d) fused q/k/v projection
    o: Tensor  # (d, H·hd)
    ln2: Tensor  # (d,) post-attention RMSNorm
    gate_up: Tensor  # (2·I, d) fused gate/up projection
    down: Tensor  # (d, I)


@dataclass
class LeanWeights:
    """Every weight one forward reads, LoRA merged; built per training step (it carries the autograd graph to
    the adapters) or once per decoding call (inference: the weights do not change)."""

    embed: Tensor  # (V, d)
    layers: list[LayerWeights]
    norm: Tensor  # (d,)
    head: Tensor  # (V, d)
    eps: float
    n_heads: int
    n_kv: int
    head_dim: int
    rotary: nn.Module  # the model's own rotary embedding (every rope type and scaling it supports)


def read_weights(model: nn.Module) -> LeanWeights:
    base = _unwrap(model)
    m, cfg = base.model, base.config
    layers = []
    for layer in m.layers:
        a, mlp = layer.self_attn, layer.mlp
        layers.append(LayerWeights(
            ln1=layer.input_layernorm.weight,
            qkv=torch.cat([_weight(a.q_proj), _weight(a.k_proj), _weight(a.v_proj)], 0),
            o=_weight(a.o_proj),
            ln2=layer.post_attention_layernorm.weight,
            gate_up=torch.cat([_weight(mlp.gate_proj), _weight(mlp.up_proj)], 0),
            down=_weight(mlp.down_proj),
        ))
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return LeanWeights(
        embed=m.embed_tokens.weight, layers=layers, norm=m.norm.weight, head=base.lm_head.weight,
        eps=float(m.norm.variance_epsilon), n_heads=cfg.num_attention_heads, n_kv=cfg.num_key_value_heads,
        head_dim=head_dim, rotary=m.rotary_emb,
    )


def _rms(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """LlamaRMSNorm: normalise in fp32, scale in the input dtype."""
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


def _rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """RoPE as transformers' ``apply_rotary_pos_emb``: x (B, h, T, hd), cos/sin (B, 1, T, hd)."""
    x1, x2 = x.chunk(2, -1)
    return x * cos + torch.cat((-x2, x1), -1) * sin


def _mask(
    B: int, T: int, past: int, attention_mask: Tensor | None, position_ids: Tensor | None, packed: bool, dev: torch.device
) -> Tensor | None:
    """(B, 1, T, past + T) bool: query i (absolute past + i) may read key j.

    Causal, and a key must be real (``attention_mask``, 2-D over all past + T keys, or already 4-D bool) and, for
    packed rows (position ids restarting at 0), in the query's own sequence.  Each query may always read itself:
    a left-padded row's leading pads would otherwise read nothing and SDPA would return NaN there, which would
    reach real tokens through the next layer's keys (times an attention weight of 0, NaN stays NaN); real tokens
    always read themselves anyway, so their outputs are unchanged.
    """
    K = past + T
    if attention_mask is not None and attention_mask.dim() == 4:
        allowed = attention_mask.bool()[..., -K:]
        if allowed.shape[-2] == 1 and T > 1:
            allowed = allowed.expand(B, 1, T, K)
    else:
        allowed = None
        if attention_mask is not None:
            allowed = attention_mask.bool()[:, None, None, :K]  # (B, 1, 1, K)
    qi = torch.arange(past, K, device=dev)[:, None]  # (T, 1) absolute query index
    kj = torch.arange(K, device=dev)[None, :]  # (1, K)
    causal = kj <= qi
    if T == 1 and allowed is not None:
        return allowed  # one new query reads every real key: causality holds by construction
    out = causal[None, None] if allowed is None else causal[None, None] & allowed
    if packed:
        seq = (position_ids == 0).cumsum(-1)  # (B, T): which packed sequence each token belongs to
        out = out & (seq[:, None, :, None] == seq[:, None, None, :])
    if attention_mask is None and not packed and past == 0:
        return None  # plain causal from position 0: SDPA's is_causal path (its diagonal is top-left aligned)
    return out | (qi == kj)[None, None]


def lean_forward(
    w: LeanWeights,
    input_ids: Tensor | None,
    attention_mask: Tensor | None = None,
    position_ids: Tensor | None = None,
    cache: Any = None,
    logits_to_keep: int | Tensor = 0,
    output_hidden_states: bool = True,
    packed: bool = False,
    inputs_embeds: Tensor | None = None,
) -> tuple[tuple[Tensor, ...], Tensor]:
    """(hidden states, logits) of ``input_ids`` (B, T), exactly as ``LlamaForCausalLM(..., output_hidden_states=True)``.

    hidden states: L + 1 tensors (B, T, d): the embeddings, then each layer's output, the last after the final
    norm (transformers' convention); empty when ``output_hidden_states`` is False.  logits: (B, T, V), or the last
    ``logits_to_keep`` positions (an int), or the positions it indexes (a 1-D tensor, as transformers).  ``attention_mask``: (B, K) over the past + T keys, or a 4-D bool mask;
    ``position_ids`` (B, T), default past … past + T − 1; ``packed``: the rows hold several sequences, each
    starting at position id 0 and attending only to itself (no cache).  ``inputs_embeds`` (B, T, d) replaces
    ``input_ids`` (pass None for them), as in transformers.  ``cache``: a transformers ``Cache`` (``update(k, v, layer)``,
    ``get_seq_length()``), appended to in place.
    """
    h = F.embedding(input_ids, w.embed) if inputs_embeds is None else inputs_embeds  # (B, T, d)
    B, T = h.shape[:2]
    dev = h.device
    past = cache.get_seq_length() if cache is not None else 0
    if position_ids is None:
        position_ids = torch.arange(past, past + T, device=dev).expand(B, T)
    if packed and cache is not None:
        raise ValueError("packed rows cannot extend a cache")
    mask = _mask(B, T, past, attention_mask, position_ids, packed, dev)
    H, KV, hd = w.n_heads, w.n_kv, w.head_dim
    cos, sin = w.rotary(h, position_ids)  # (B, T, hd) each
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    hidden = [h] if output_hidden_states else []
    for i, lw in enumerate(w.layers):
        x = _rms(h, lw.ln1, w.eps)
        q, k, v = F.linear(x, lw.qkv).view(B, T, H + 2 * KV, hd).transpose(1, 2).split([H, KV, KV], 1)
        q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        if cache is not None:
            k, v = cache.update(k, v, i)
        o = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=mask is None and T > 1, enable_gqa=H != KV
        )  # (B, H, T, hd)
        h = h + F.linear(o.transpose(1, 2).reshape(B, T, H * hd), lw.o)
        gate, up = F.linear(_rms(h, lw.ln2, w.eps), lw.gate_up).chunk(2, -1)
        h = h + F.linear(F.silu(gate) * up, lw.down)
        if output_hidden_states:
            hidden.append(h)
    h = _rms(h, w.norm, w.eps)
    if output_hidden_states:
        hidden[-1] = h
    if isinstance(logits_to_keep, Tensor):
        h = h[:, logits_to_keep.to(h.device)]
    elif logits_to_keep:
        h = h[:, -logits_to_keep:].contiguous()  # a strided bf16 input is a slow F.linear on the CPU (load.last_logits_only)
    return tuple(hidden), F.linear(h, w.head)


class LeanCall:
    """``model(...)``'s keyword interface (input_ids or inputs_embeds, attention_mask, position_ids, cache,
    logits_to_keep, output_hidden_states) over :func:`lean_forward`, returning an object with ``hidden_states``,
    ``logits`` and ``cache`` as transformers' output has.

    ``weights``: read once by the caller and shared (a training step: the CE rows and an objective's extra rows
    use one LoRA merge, so both carry gradient to the adapters through it); None reads them on the first call
    and keeps them (decoding: the weights do not change).  Rows given position ids without an attention mask
    and without a cache, where an id restarts at 0 inside a row, are packed sequences (transformers' rule).
    """

    def __init__(self, model: nn.Module, weights: LeanWeights | None = None) -> None:
        self.model = model
        self.weights = weights

    def __call__(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        cache: Any = None,
        inputs_embeds: Tensor | None = None,
        output_hidden_states: bool = False,
        logits_to_keep: int | Tensor = 0,
        use_cache: bool | None = None,
        **unused: Any,
    ) -> SimpleNamespace:
        if unused:
            raise TypeError(f"LeanCall does not take {sorted(unused)}")
        if self.weights is None:
            self.weights = read_weights(self.model)
        if cache is None and use_cache:
            from transformers.cache_utils import DynamicCache

            cache = DynamicCache(config=_unwrap(self.model).config)
        packed = (
            position_ids is not None and attention_mask is None and cache is None and position_ids.shape[-1] > 1
            and bool((position_ids[:, 1:] == 0).any())
        )
        hidden, logits = lean_forward(
            self.weights, input_ids, attention_mask, position_ids, cache=cache, logits_to_keep=logits_to_keep,
            output_hidden_states=output_hidden_states, packed=packed, inputs_embeds=inputs_embeds,
        )
        return SimpleNamespace(hidden_states=hidden if output_hidden_states else None, logits=logits, cache=cache)
