"""Llama-3.2-1B-Instruct's real chat template and generation config on a small random Llama directory:
a fixed "Today Date", all three end-of-sequence ids read, and decoding that stops where ``generate`` does."""

from __future__ import annotations

import datetime

import pytest
import torch

from conftest import LLAMA32_TEMPLATE, NLRX_PAIRS, SYSTEM_PROMPT, make_hf_llama_dir
from jepa_audit.config import AdapterCfg, ModelCfg
from jepa_audit.data.examples import Example
from jepa_audit.data.views import TEMPLATE_KWARGS, encode_all
from jepa_audit.decode import end_ids, greedy_decode
from jepa_audit.models.load import build_model, load_pretrained

SYSTEM, PAIRS = SYSTEM_PROMPT, NLRX_PAIRS
MAX_NEW = 12


@pytest.fixture(scope="module")
def llama32(tmp_path_factory):
    texts = [SYSTEM] * 5 + [t for p in PAIRS for t in p] * 20
    d = make_hf_llama_dir(tmp_path_factory.mktemp("llama32"), texts, template=LLAMA32_TEMPLATE, generation_eos=True)
    model, tok = load_pretrained(d, ModelCfg(kind="hf", path=str(d), device="cpu"))
    return model.eval(), tok


def _rows(tok):
    return encode_all(tok, SYSTEM, [Example(n, r, i) for i, (n, r) in enumerate(PAIRS)])


def test_rendering_has_a_fixed_today_date(llama32):
    _, tok = llama32
    rows = _rows(tok)
    text = tok.decode(rows[0].full)
    assert "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n" + SYSTEM in text
    assert TEMPLATE_KWARGS == {"date_string": "26 Jul 2024"}
    # without our date_string the template stamps today's date (transformers' strftime_now): rows would change daily
    today = tok.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False)
    assert f"Today Date: {datetime.datetime.now().strftime('%d %b %Y')}" in today
    assert [r.full for r in _rows(tok)] == [r.full for r in rows]


def test_end_ids_are_all_three_generation_config_eos_ids(llama32):
    model, tok = llama32
    three = sorted(tok.convert_tokens_to_ids(t) for t in ("<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"))
    assert sorted(model.generation_config.eos_token_id) == three
    eot = tok.convert_tokens_to_ids("<|eot_id|>")
    assert end_ids(model, tok, {r.full[-1] for r in _rows(tok)}) == three  # the template's end-of-turn is eot
    lora = build_model(load_pretrained(model.name_or_path, ModelCfg(kind="hf", path=model.name_or_path))[0],
                       AdapterCfg(), seed=0)
    assert end_ids(lora, tok, {eot}) == three  # read through the PEFT wrapper


def test_decoding_stops_on_eom_exactly_as_generate(llama32):
    """A row that emits <|eom_id|> stops there, as ``generate`` does with the generation config's eos list.

    The random model is steered by a forward hook: after token X it puts <|eom_id|> on top, so some rows end
    on eom mid-sequence (stopping on <|eot_id|> alone would run them on to the cap)."""
    model, tok = llama32
    eom, eot = tok.convert_tokens_to_ids("<|eom_id|>"), tok.convert_tokens_to_ids("<|eot_id|>")
    prompts = [r.prompt for r in _rows(tok)]
    pad = int(tok.pad_token_id)
    free = greedy_decode(model, prompts, pad_id=pad, stop_ids=[], max_new_tokens=MAX_NEW)
    x = free[0][3]

    def hook(mod, args, kwargs, out):
        ids = kwargs["input_ids"]
        hit = ids[:, -out.logits.shape[1] :] == x
        out.logits[..., eom] += 1e4 * hit
        return out

    handle = model.register_forward_hook(hook, with_kwargs=True)
    try:
        stops = end_ids(model, tok, {eot})
        ours = greedy_decode(model, prompts, pad_id=pad, stop_ids=stops, max_new_tokens=MAX_NEW, batch_size=4)
        only_eot = greedy_decode(model, prompts, pad_id=pad, stop_ids=[eot], max_new_tokens=MAX_NEW)
        ref = []
        for p in prompts:  # generate() with the directory's own generation config (its eos list), greedy
            with torch.no_grad():
                seq = model.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                                     do_sample=False, max_new_tokens=MAX_NEW, pad_token_id=pad)[0, len(p):].tolist()
            cut = next((i for i, t in enumerate(seq) if t in set(stops)), len(seq))
            ref.append(seq[:cut])
            assert cut == len(seq) or seq[cut] in set(stops)
    finally:
        handle.remove()
    assert ours == ref
    assert any(len(a) < len(b) for a, b in zip(ours, only_eot, strict=True))  # eom really ended some rows
