"""Batched greedy decoding: exact agreement with ``model.generate`` and with a naive no-cache loop."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

import jepa_audit.decode as dec
from conftest import make_tiny_llama
from jepa_audit.decode import decode_benchmark, greedy_decode, hf_generate_reference

VOCAB = 97
PAD = 0
MAX_NEW = 16


def diverse_llama(vocab: int = VOCAB, d: int = 32, layers: int = 2, seed: int = 0, **cfg_overrides) -> torch.nn.Module:
    """A tiny random Llama whose greedy continuations vary from token to token.

    With the default init (std 0.02) the residual stream is dominated by the (tied) input embedding, so the
    model just echoes its last token forever — useless for testing stops and positions.  Re-drawing every
    matrix with std gain/sqrt(fan_in) makes attention and MLP matter, so outputs depend on the whole prefix.
    """
    model = make_tiny_llama(vocab, d, layers, seed)
    for k, v in cfg_overrides.items():
        setattr(model.config, k, v)
    g = torch.Generator().manual_seed(1000 + seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.copy_(torch.randn(p.shape, generator=g) * 2.0 / p.shape[1] ** 0.5)
    return model.eval()


def make_prompts(n: int = 16, lo: int = 1, hi: int = 24, seed: int = 0) -> list[list[int]]:
    """``n`` prompts of lengths in [lo, hi] (varied, so micro-batches need padding), ids in [3, VOCAB)."""
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(lo, hi + 1, (n,), generator=g).tolist()
    return [torch.randint(3, VOCAB, (k,), generator=g).tolist() for k in lens]


def naive_greedy(model, prompt: list[int], stop_ids: set[int], max_new_tokens: int) -> list[int]:
    """Independent reference: one unpadded prompt, full forward every step, no cache, argmax."""
    seq = list(prompt)
    out: list[int] = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            logits = model(input_ids=torch.tensor([seq]), use_cache=False).logits
            tok = int(logits[0, -1].argmax())
            if tok in stop_ids:
                break
            out.append(tok)
            seq.append(tok)
    return out


@pytest.fixture(scope="module")
def model():
    return diverse_llama()


@pytest.fixture(scope="module")
def prompts() -> list[list[int]]:
    return make_prompts()


@pytest.fixture(scope="module")
def stop_ids(model, prompts) -> list[int]:
    """Two ids the model really emits mid-sequence, so some rows stop early and others run to the cap."""
    free = greedy_decode(model, prompts, pad_id=PAD, stop_ids=[], max_new_tokens=MAX_NEW)
    counts = Counter(t for row in free for t in row[2 : MAX_NEW - 2])
    stops = [t for t, _ in counts.most_common(2)]
    assert stops, "the random model produced no mid-sequence tokens"
    return stops


def test_stop_ids_are_exercised(model, prompts, stop_ids):
    outs = greedy_decode(model, prompts, pad_id=PAD, stop_ids=stop_ids, max_new_tokens=MAX_NEW)
    lens = [len(o) for o in outs]
    assert any(0 < n < MAX_NEW for n in lens), "no row stopped mid-sequence"
    assert any(n == MAX_NEW for n in lens), "every row stopped: the cap path is not exercised"


@pytest.mark.parametrize("batch_size", [1, 3, 64])
@pytest.mark.parametrize("use_stops", [False, True])
def test_matches_hf_generate(model, prompts, stop_ids, batch_size, use_stops):
    stops = stop_ids if use_stops else []
    ps = prompts[:8] if batch_size == 1 else prompts  # batch 1 is the slow case for generate(); 8 rows suffice
    kw = {"pad_id": PAD, "stop_ids": stops, "max_new_tokens": MAX_NEW, "batch_size": batch_size}
    assert greedy_decode(model, ps, **kw) == hf_generate_reference(model, ps, **kw)


@pytest.mark.parametrize(
    ("prealloc", "drop_fraction"),
    [(True, 0.0), (True, 2.0), (False, 0.0), (False, 2.0)],
    ids=["prealloc-drop-eager", "prealloc-never-drop", "dynamic-drop-eager", "dynamic-never-drop"],
)
def test_internal_paths_match_hf_generate(model, prompts, stop_ids, monkeypatch, prealloc, drop_fraction):
    """Both cache layouts, and dropping finished rows at once / never, give generate()'s tokens exactly."""
    monkeypatch.setattr(dec, "_PREALLOC", prealloc)
    monkeypatch.setattr(dec, "_DROP_FRACTION", drop_fraction)
    kw = {"pad_id": PAD, "stop_ids": stop_ids, "max_new_tokens": MAX_NEW, "batch_size": 8}
    assert greedy_decode(model, prompts, **kw) == hf_generate_reference(model, prompts, **kw)


def test_matches_naive_no_cache_loop(model, prompts, stop_ids):
    some = prompts[:6]
    outs = greedy_decode(model, some, pad_id=PAD, stop_ids=stop_ids, max_new_tokens=MAX_NEW, batch_size=64)
    ref = [naive_greedy(model, p, set(stop_ids), MAX_NEW) for p in some]
    assert outs == ref


def test_order_preserved_and_progress(model, prompts, stop_ids):
    kw = {"pad_id": PAD, "stop_ids": stop_ids, "max_new_tokens": MAX_NEW, "batch_size": 6}
    calls: list[int] = []
    outs = greedy_decode(model, prompts, progress=calls.append, **kw)
    assert calls == [6, 12, 16]
    # A permuted input gives the same outputs, permuted the same way (length-sorting is undone).
    perm = torch.randperm(len(prompts), generator=torch.Generator().manual_seed(3)).tolist()
    outs_perm = greedy_decode(model, [prompts[i] for i in perm], **kw)
    assert outs_perm == [outs[i] for i in perm]
    # And each prompt decoded alone (no padding, no batch-mates) agrees.
    assert [greedy_decode(model, [p], **kw)[0] for p in prompts[:5]] == outs[:5]


def test_stop_excluded_and_cap_respected(model, prompts, stop_ids):
    for cap in (1, 5, MAX_NEW):
        outs = greedy_decode(model, prompts, pad_id=PAD, stop_ids=stop_ids, max_new_tokens=cap)
        assert len(outs) == len(prompts)
        for o in outs:
            assert len(o) <= cap
            assert not set(o) & set(stop_ids)
    # A row shorter than the cap stopped because the *next* token is a stop id.
    outs = greedy_decode(model, prompts, pad_id=PAD, stop_ids=stop_ids, max_new_tokens=MAX_NEW)
    free = greedy_decode(model, prompts, pad_id=PAD, stop_ids=[], max_new_tokens=MAX_NEW)
    for o, f in zip(outs, free, strict=True):
        assert f[: len(o)] == o
        if len(o) < MAX_NEW:
            assert f[len(o)] in stop_ids


def test_edge_cases(model, prompts):
    assert greedy_decode(model, [], pad_id=PAD, stop_ids=[1], max_new_tokens=4) == []
    assert greedy_decode(model, prompts[:3], pad_id=PAD, stop_ids=[1], max_new_tokens=0) == [[], [], []]
    with pytest.raises(ValueError):
        greedy_decode(model, [[5, 6], []], pad_id=PAD, stop_ids=[1], max_new_tokens=4)
    # Equal-length prompts: no padding at all, so the mask-free path is taken.
    same = [p[:4] for p in prompts if len(p) >= 4][:5]
    kw = {"pad_id": PAD, "stop_ids": [], "max_new_tokens": 6, "batch_size": 5}
    assert greedy_decode(model, same, **kw) == hf_generate_reference(model, same, **kw)


def test_gqa_model_matches_hf_generate(prompts):
    """Grouped-query attention (fewer KV heads) exercises the cache buffers with a different head count."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(5)
    cfg = LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=False, attn_implementation="sdpa",
    )
    model = LlamaForCausalLM(cfg).eval()
    kw = {"pad_id": PAD, "stop_ids": [], "max_new_tokens": 8, "batch_size": 7}
    assert greedy_decode(model, prompts, **kw) == hf_generate_reference(model, prompts, **kw)


def test_bfloat16_model(prompts):
    model = diverse_llama(seed=1).to(torch.bfloat16)
    kw = {"pad_id": PAD, "stop_ids": [], "max_new_tokens": 8, "batch_size": 8}
    ours = greedy_decode(model, prompts, device="cpu", **kw)
    assert ours == hf_generate_reference(model, prompts, **kw)


def test_peft_lora_model(prompts, stop_ids):
    from peft import LoraConfig, get_peft_model

    base = diverse_llama()
    lora = get_peft_model(
        base,
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False, task_type="CAUSAL_LM"),
    )
    lora.eval()
    ids = torch.tensor([prompts[0]])
    with torch.no_grad(), lora.disable_adapter():
        logits_base = lora(input_ids=ids).logits
    with torch.no_grad():
        logits_lora = lora(input_ids=ids).logits
    assert not torch.allclose(logits_base, logits_lora), "the adapter should change the model"
    kw = {"pad_id": PAD, "stop_ids": stop_ids, "max_new_tokens": MAX_NEW, "batch_size": 8}
    ours = greedy_decode(lora, prompts, **kw)
    assert ours == hf_generate_reference(lora, prompts, **kw)
    assert ours[:4] == [naive_greedy(lora, p, set(stop_ids), MAX_NEW) for p in prompts[:4]]


def test_training_mode_restored(prompts):
    model = diverse_llama()
    kw = {"pad_id": PAD, "stop_ids": [], "max_new_tokens": 3}
    model.train()
    greedy_decode(model, prompts[:4], **kw)
    assert model.training and all(m.training for m in model.modules())
    # Per-module flags survive too (a frozen, eval-mode submodule inside a training model stays eval).
    model.model.layers[0].eval()
    before = {name: m.training for name, m in model.named_modules()}
    greedy_decode(model, prompts[:4], **kw)
    hf_generate_reference(model, prompts[:4], batch_size=4, **kw)
    assert {name: m.training for name, m in model.named_modules()} == before
    model.eval()
    greedy_decode(model, prompts[:4], **kw)
    assert not any(m.training for m in model.modules())


def test_dropout_is_off_during_decoding(prompts):
    """Decoding a model left in train mode with dropout still gives the deterministic eval-mode tokens."""
    model = diverse_llama(attention_dropout=0.5)
    kw = {"pad_id": PAD, "stop_ids": [], "max_new_tokens": 8}
    ref = greedy_decode(model.eval(), prompts, **kw)
    model.train()
    assert greedy_decode(model, prompts, **kw) == ref


def test_decode_benchmark_smoke(model, prompts, stop_ids):
    res = decode_benchmark(
        model, prompts, pad_id=PAD, stop_ids=stop_ids, max_new_tokens=MAX_NEW, batch_size=8, repeats=1
    )
    assert set(res) == {"decode_tokens_per_s", "hf_tokens_per_s", "decode_speedup_vs_hf_generate", "identical"}
    assert res["identical"] is True
    assert res["decode_tokens_per_s"] > 0 and res["hf_tokens_per_s"] > 0
