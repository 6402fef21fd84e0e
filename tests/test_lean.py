"""models/lean.py: the lean Llama forward computes transformers' forward, on the model's own parameters.

Everything is compared in float64, so a difference is the maths, not fp32 summation order: hidden states and
logits (padded, packed, LoRA and full fine-tuning, GQA, a KV cache), gradients of CE and of every core objective,
a few real training steps, and greedy decoding token for token.
"""

from __future__ import annotations

import pytest
import torch

from _objective_helpers import CORE_AND_LLM_JEPA
from conftest import (
    assert_same_loss_and_grads,
    lora64,
    make_tiny_llama,
    make_toy_batch,
    ragged_rows,
    step_loss_and_grads,
    train_four_steps,
)
from jepa_audit.models.lean import LeanCall, lean_forward, lean_reason, read_weights, uses_lean

TIGHT = {"atol": 1e-11, "rtol": 1e-9}


@pytest.mark.parametrize("mode,kv", [("lora", 4), ("full", 4), ("lora", 2)])
def test_lean_forward_equals_transformers_on_padded_rows(mode, kv):
    b = make_toy_batch(B=6, seed=1)
    model = lora64(mode, kv)
    assert lean_reason(model) is None
    out = model(input_ids=b.input_ids, attention_mask=b.attention_mask, output_hidden_states=True)
    hidden, logits = lean_forward(read_weights(model), b.input_ids, b.attention_mask)
    assert len(hidden) == len(out.hidden_states) == model.config.num_hidden_layers + 1
    real = b.attention_mask.bool()  # right padding: every real position, pads are never read
    torch.testing.assert_close(logits[real], out.logits[real], **TIGHT)
    for a, c in zip(hidden, out.hidden_states, strict=True):
        torch.testing.assert_close(a[real], c[real], **TIGHT)


def test_lean_forward_equals_transformers_on_packed_rows():
    from jepa_audit.train import forward_rows, pack_ce_rows

    b = make_toy_batch(B=7, seed=4)
    model = lora64()
    real = b.attention_mask.bool()
    for how in ("flat", "longest"):
        pk = pack_ce_rows(b, how)
        with torch.no_grad():
            h_hf, lg_hf = forward_rows(model, b, pk)
            h_ln, lg_ln = forward_rows(LeanCall(model, read_weights(model)), b, pk)
        torch.testing.assert_close(lg_ln[real], lg_hf[real], **TIGHT)
        for a, c in zip(h_ln, h_hf, strict=True):
            torch.testing.assert_close(a[real], c[real], **TIGHT)


CORE = CORE_AND_LLM_JEPA  # the registry's core flag, plus llm-jepa


@pytest.mark.parametrize("method", [None, *CORE])
def test_lean_and_transformers_give_the_same_loss_and_gradients(method):
    """CE + λ·aux through the lean forward equals transformers' forward, loss and every trainable gradient,
    for CE and each core objective: they read the same hidden states and logits, and their extra rows (target
    views, noisy twins, predictor rows) run through :class:`LeanCall` on the same merged weights."""
    b = make_toy_batch(B=6, seed=5)
    assert_same_loss_and_grads(step_loss_and_grads(b, method, lean=True), step_loss_and_grads(b, method), method)


@pytest.mark.parametrize("method", [None, "llm-jepa", "F2", "V3"])
def test_lean_training_ends_at_the_same_weights(method):
    """Real train.train steps with model.forward lean and hf, float64: same losses, same trained weights (CE, a
    two-view objective, a noisy-twin objective and gradient surgery)."""
    rows = ragged_rows()
    loss_ref, w_ref, _ = train_four_steps(rows, method, forward="hf")
    rel = 1e-9 if method is None else 1e-5  # the objectives' own fp32 maths
    for forward, pack in (("lean", "none"), ("lean", "longest"), ("hf", "longest")):
        loss, w, res = train_four_steps(rows, method, forward=forward, pack=pack)
        assert res.forward == forward
        assert loss == pytest.approx(loss_ref, rel=rel), (forward, pack)
        for a, c in zip(w, w_ref, strict=True):
            torch.testing.assert_close(a, c, atol=rel * 0.1, rtol=rel)


def test_lean_forward_with_a_kv_cache_equals_the_full_forward():
    """Prefill then one token at a time through a cache: the last position's logits equal a full forward's."""
    from transformers.cache_utils import DynamicCache

    model = lora64().eval()
    ids = torch.randint(3, 97, (3, 9), generator=torch.Generator().manual_seed(2))
    w = read_weights(model)
    with torch.no_grad():
        _, full = lean_forward(w, ids, output_hidden_states=False)
        ref = model(input_ids=ids).logits
        cache = DynamicCache(config=model.config)
        _, first = lean_forward(w, ids[:, :5], cache=cache, logits_to_keep=1, output_hidden_states=False)
        steps = [first[:, -1]]
        for t in range(5, 7):
            _, lg = lean_forward(w, ids[:, t : t + 1], cache=cache, output_hidden_states=False)
            steps.append(lg[:, -1])
        _, chunk = lean_forward(w, ids[:, 7:9], cache=cache, output_hidden_states=False)  # 2 new over 7 cached
    torch.testing.assert_close(full, ref, **TIGHT)
    torch.testing.assert_close(torch.stack(steps, 1), ref[:, 4:7], **TIGHT)
    torch.testing.assert_close(chunk, ref[:, 7:9], **TIGHT)


def test_lean_reason_names_what_it_does_not_cover():
    model = lora64(dropout=0.1)
    assert "dropout" in lean_reason(model)  # training with LoRA dropout: PEFT's masks, PEFT's order
    with pytest.raises(ValueError, match="model.forward=lean does not apply.*dropout"):
        uses_lean(model, "lean")
    assert not uses_lean(model, "auto") and not uses_lean(lora64(), "hf")
    model.eval()
    assert lean_reason(model) is None  # dropout is the identity in eval mode: decoding may use it
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert "autocast" in lean_reason(lora64())
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50))
    assert "not LlamaForCausalLM" in lean_reason(gpt2)


@pytest.mark.parametrize("prealloc", [True, False])
def test_lean_decoding_gives_generates_tokens(prealloc, monkeypatch):
    """greedy_decode through the lean forward (LoRA, left padding, stops, dropped rows, both cache layouts) gives
    model.generate's tokens, and it really took the lean path."""
    from peft import LoraConfig, get_peft_model

    import jepa_audit.decode as dec
    import jepa_audit.models.lean as lean_mod
    from test_decode import diverse_llama, make_prompts

    monkeypatch.setattr(dec, "_PREALLOC", prealloc)
    calls = []
    real = lean_mod.lean_forward
    monkeypatch.setattr(lean_mod, "lean_forward", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    model = get_peft_model(diverse_llama(), LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                                                       target_modules=["q_proj", "v_proj", "down_proj"]))
    model.train()  # decoding puts it in eval mode itself
    prompts = make_prompts(n=20, seed=3)
    kw = {"pad_id": 0, "max_new_tokens": 12, "batch_size": 8}
    free = dec.greedy_decode(model, prompts, stop_ids=[], forward="hf", **kw)
    stops = sorted({row[3] for row in free if len(row) > 3})[:2]  # ids the model emits mid-sequence
    ours = dec.greedy_decode(model, prompts, stop_ids=stops, forward="lean", **kw)
    assert calls, "the lean forward was not used"
    assert ours == dec.hf_generate_reference(model, prompts, stop_ids=stops, **kw)
    assert any(0 < len(o) < 12 for o in ours) and any(len(o) == 12 for o in ours)


def test_a_forward_hook_keeps_transformers_forward():
    """A hook on the model (a user's probe, a steering test) must run: the lean forward steps aside. The
    output-capturing hooks transformers installs on the first forward with hidden states do not count."""
    model = lora64()
    model(input_ids=make_toy_batch(B=2).input_ids, output_hidden_states=True)
    assert any(m._forward_hooks for m in model.modules())  # transformers' own, installed for good
    assert lean_reason(model) is None
    handle = model.register_forward_hook(lambda mod, args, out: out)
    assert "hooks" in lean_reason(model)
    handle.remove()
    handle = model.get_base_model().model.layers[0].mlp.register_forward_pre_hook(lambda mod, args: None)
    assert "hooks" in lean_reason(model)
    handle.remove()
    assert lean_reason(model) is None


def test_lean_forward_in_float32_matches_transformers_to_fp32_rounding():
    """The audit's own precision: float32 agrees with transformers to fp32 rounding."""
    b = make_toy_batch(B=6, seed=2)
    model = lora64().float()
    out = model(input_ids=b.input_ids, attention_mask=b.attention_mask, output_hidden_states=True)
    hidden, logits = lean_forward(read_weights(model), b.input_ids, b.attention_mask)
    real = b.attention_mask.bool()
    torch.testing.assert_close(logits[real], out.logits[real], atol=2e-5, rtol=1e-4)
    for a, c in zip(hidden, out.hidden_states, strict=True):
        torch.testing.assert_close(a[real], c[real], atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("targets,rank_pattern", [
    (["q_proj", "v_proj", "up_proj"], {}),  # mixed groups: adapted and plain linears side by side
    (["q_proj", "k_proj", "v_proj", "gate_proj", "up_proj"], {"k_proj": 2}),  # per-linear ranks: own scales
])
def test_lean_forward_merges_partial_and_uneven_adapters(targets, rank_pattern):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(make_tiny_llama(), LoraConfig(r=4, lora_alpha=8, target_modules=targets, lora_dropout=0.0,
                                                         rank_pattern=rank_pattern, init_lora_weights=False)).double()
    model.train()
    assert lean_reason(model) is None
    b = make_toy_batch(B=5, seed=3)
    out = model(input_ids=b.input_ids, attention_mask=b.attention_mask, output_hidden_states=True)
    hidden, logits = lean_forward(read_weights(model), b.input_ids, b.attention_mask)
    real = b.attention_mask.bool()
    torch.testing.assert_close(logits[real], out.logits[real], **TIGHT)
    g_hf = torch.autograd.grad(out.logits[real].pow(2).mean(), [p for p in model.parameters() if p.requires_grad])
    g_ln = torch.autograd.grad(logits[real].pow(2).mean(), [p for p in model.parameters() if p.requires_grad])
    for a, c in zip(g_ln, g_hf, strict=True):
        torch.testing.assert_close(a, c, **TIGHT)


def _bf16_base_fp32_lora():
    """The ``paper`` preset's precision: a bf16 base under PEFT LoRA, whose adapters PEFT keeps in fp32."""
    from jepa_audit.config import AdapterCfg
    from jepa_audit.models.load import build_model
    from test_decode import diverse_llama

    model = build_model(diverse_llama(seed=2).to(torch.bfloat16), AdapterCfg(mode="lora", rank=4, dropout=0.0), seed=0)
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:  # LoRA B starts at 0: make the adapters change the model
                p.add_(0.05 * torch.randn(p.shape, generator=g).to(p.dtype))
    return model


def test_bf16_base_with_fp32_adapters_decodes_as_transformers():
    """The ``paper`` preset's evaluation: a bf16 base with fp32 LoRA adapters (PEFT adds the adapter path in fp32
    to the bf16 base output) once crashed the lean forward (``_weight`` promoted the merged weight to fp32 and
    F.linear met bf16 activations). The lean forward now steps aside there, saying why, and decoding under
    ``forward=auto`` gives exactly transformers' tokens."""
    import jepa_audit.decode as dec
    from test_decode import make_prompts

    model = _bf16_base_fp32_lora()
    dtypes = {p.dtype for n, p in model.named_parameters() if "lora_" in n}
    assert dtypes == {torch.float32}, dtypes  # PEFT's own choice (autocast_adapter_dtype): the setting under test
    model.eval()
    why = lean_reason(model)
    assert why is not None and "bfloat16" in why and "float32" in why
    with pytest.raises(ValueError, match="does not apply.*float32"):
        uses_lean(model, "lean")
    prompts = make_prompts(n=12, seed=4)
    kw = {"pad_id": 0, "max_new_tokens": 8, "batch_size": 6, "stop_ids": []}
    ours = dec.greedy_decode(model, prompts, forward="auto", **kw)
    assert ours == dec.hf_generate_reference(model, prompts, **kw)


def test_bf16_base_with_fp32_adapters_trains_through_transformers():
    """Training in that precision without autocast (``--set model.autocast=none``): the lean forward steps aside
    (no dtype crash) and real steps run and move the adapters."""
    from conftest import ragged_rows
    from jepa_audit.config import TrainCfg
    from jepa_audit.train import train

    model = _bf16_base_fp32_lora()
    before = [p.detach().clone() for p in model.parameters() if p.requires_grad]
    cfg = TrainCfg(steps=2, batch_size=4, lr=1e-2, warmup_steps=0, log_every=1)
    res = train(model, ragged_rows(), pad_id=0, cfg=cfg, seed=5, forward="auto")
    assert res.forward == "hf"
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in res.log)
    after = [p.detach() for p in model.parameters() if p.requires_grad]
    assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True))


@pytest.mark.parametrize("base_dtype", [torch.bfloat16, torch.float32])
def test_one_dtype_model_still_takes_the_lean_path(base_dtype):
    """Adapters in the base's own dtype (a model cast as a whole) keep the lean forward."""
    model = _bf16_base_fp32_lora().to(base_dtype).eval()
    assert lean_reason(model) is None


def test_last_logits_index_gives_the_last_positions_logits():
    """``logits_to_keep`` as an index tensor (models.load.last_logits_only: a contiguous gather, where the int's
    strided slice is a slow bf16 F.linear on the CPU) gives the int's logits, lean and transformers alike."""
    from jepa_audit.models.load import last_logits_only

    b = make_toy_batch(B=4, seed=6)
    model = lora64().eval()
    w = read_weights(model)
    ids = b.input_ids  # unpadded rows: the last position is real in every row
    _, by_int = lean_forward(w, ids, logits_to_keep=1, output_hidden_states=False)
    _, by_idx = lean_forward(w, ids, logits_to_keep=last_logits_only(), output_hidden_states=False)
    assert by_idx.shape == by_int.shape == (4, 1, model.config.vocab_size)
    torch.testing.assert_close(by_idx, by_int, rtol=0, atol=0)
    with torch.no_grad():
        hf = model(input_ids=ids, logits_to_keep=last_logits_only()).logits
    torch.testing.assert_close(hf, by_int, **TIGHT)
