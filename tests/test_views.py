"""Tokenizer round-trip, chat template, loss mask (answer + end-of-turn only), and view indices.

Each test runs on three chat formats: our tiny tokenizer's template, the simplified Llama-3 template, and
Llama-3.2-1B-Instruct's real template (its system block with "Cutting Knowledge Date" and "Today Date").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import torch

from conftest import NLRX_PAIRS, SYSTEM_PROMPT
from jepa_audit.data.examples import Example
from jepa_audit.data.tokenizer import train_tiny_tokenizer
from jepa_audit.data.views import collate, encode_example

SYSTEM, PAIRS = SYSTEM_PROMPT, NLRX_PAIRS[:4]


def _tok():
    texts = [SYSTEM] * 5 + [t for p in PAIRS for t in p] * 20
    return train_tiny_tokenizer(texts, 300)


@dataclass
class Chat:
    """A tokenizer and the text of its end-of-turn token and of the header that opens the assistant turn."""

    tok: Any
    eot: str
    header: str


@pytest.fixture(scope="module", params=["tiny", "llama3", "llama32"])
def chat(request, tmp_path_factory) -> Chat:
    if request.param == "tiny":
        return Chat(_tok(), "<|eot|>", "<|assistant|>")
    from transformers import AutoTokenizer

    from conftest import LLAMA3_TEMPLATE, LLAMA32_TEMPLATE, make_hf_llama_dir
    from jepa_audit.data.tokenizer import ensure_pad

    template = LLAMA32_TEMPLATE if request.param == "llama32" else LLAMA3_TEMPLATE
    texts = [SYSTEM] * 5 + [t for p in PAIRS for t in p] * 20
    d = make_hf_llama_dir(tmp_path_factory.mktemp(request.param), texts, template=template)
    tok = AutoTokenizer.from_pretrained(d, local_files_only=True)
    ensure_pad(tok)
    return Chat(tok, "<|eot_id|>", "<|start_header_id|>assistant<|end_header_id|>\n\n")


def test_round_trip_including_unseen_characters(chat):
    tok = chat.tok
    for s in ["(([AEIOUaeiou]){3,})", "lines with ünïcode ☃ and TABS\t", "~((dog)|(truck))&(.*[0-9].*)"]:
        assert tok.decode(tok.encode(s, add_special_tokens=False)) == s


def test_loss_mask_covers_answer_and_end_of_turn_only(chat):
    tok = chat.tok
    ex = Example(PAIRS[1][0], PAIRS[1][1], 0)
    e = encode_example(tok, SYSTEM, ex)
    b = collate([e], tok.pad_token_id)
    labelled = b.labels[0][b.labels[0] != -100].tolist()
    eot = tok.convert_tokens_to_ids(chat.eot)
    assert labelled[-1] == eot  # the end-of-turn is trained on (LLM-JEPA leaves it unlabelled; we do not)
    assert tok.decode(labelled[:-1]) == ex.target  # and nothing but the regex before it
    assert b.answer_mask[0].sum().item() == len(labelled)
    assert b.answer_start[0].item() == e.prompt_len
    # the prompt is exactly the generation prompt: it ends by opening the assistant turn
    assert tok.decode(e.prompt[e.nl_last + 2 :]) == chat.header  # after the user's end-of-turn


def test_view_indices_point_at_the_right_tokens(chat):
    tok = chat.tok
    ex = Example(PAIRS[0][0], PAIRS[0][1], 3)
    e = encode_example(tok, SYSTEM, ex)
    assert tok.decode(e.full[e.nl_start : e.nl_last + 1]) == ex.prompt
    assert tok.decode(e.target_view[:1]) == tok.bos_token
    view = tok.decode(e.target_view[1:-1])  # bos, assistant header, regex, eot
    assert view == chat.header + ex.target
    assert tok.convert_ids_to_tokens(e.target_view[e.target_last + 1]) == chat.eot
    assert e.target_view[e.target_last] == e.full[-2]  # the same last content token as the CE row


def test_collate_pads_and_masks(chat):
    tok = chat.tok
    rows = [encode_example(tok, SYSTEM, Example(n, r, i)) for i, (n, r) in enumerate(PAIRS)]
    b = collate(rows, tok.pad_token_id)
    assert b.input_ids.shape[0] == 4
    for i, r in enumerate(rows):
        n = len(r.full)
        assert b.attention_mask[i, :n].all() and not b.attention_mask[i, n:].any()
        assert (b.input_ids[i, n:] == tok.pad_token_id).all()
        assert b.prompt_mask[i].sum() == r.nl_last - r.nl_start + 1
    assert torch.equal(b.item_ids, torch.arange(4))


def test_nl_view_is_a_causal_prefix_of_the_full_row(tiny_llama, chat):
    """Under causal attention the NL view's states equal the full row's: e_u needs no extra forward."""
    tok = chat.tok
    e = encode_example(tok, SYSTEM, Example(*PAIRS[2], 0))
    ids = torch.tensor([e.full]) % tiny_llama.config.vocab_size
    nl_view = ids[:, : e.nl_last + 2]  # the user-only chat, ending with the user's end-of-turn
    with torch.no_grad():
        h_full = tiny_llama(input_ids=ids, output_hidden_states=True).hidden_states[-1]
        h_view = tiny_llama(input_ids=nl_view, output_hidden_states=True).hidden_states[-1]
    torch.testing.assert_close(h_full[0, e.nl_last], h_view[0, e.nl_last], rtol=1e-5, atol=1e-5)


def test_collate_equals_a_per_row_reference():
    """collate builds its tensors from lists (one tensor per field, for speed); every field equals the plain
    per-row construction, in both label modes, with ragged rows and an empty NL span."""
    import torch

    from jepa_audit.data.views import Encoded, collate, lm_labels

    g = torch.Generator().manual_seed(3)
    rows = []
    for i in range(7):
        p, a = 5 + i % 3, 2 + (i * 5) % 4
        full = torch.randint(1, 50, (p + a,), generator=g).tolist()
        nl_start, nl_last = (2, p - 2) if i != 3 else (3, 2)  # row 3: an empty NL span
        rows.append(Encoded(full=full, prompt_len=p, nl_start=nl_start, nl_last=nl_last,
                            target_view=[1, *full[p:]], target_last=a - 1, idx=i, lm_pad=full[-1]))
    for labels in ("answer", "llm-jepa"):
        b = collate(rows, pad_id=0, labels=labels)
        B, T = b.input_ids.shape
        for k, r in enumerate(rows):
            n = len(r.full)
            assert b.input_ids[k].tolist() == r.full + [0] * (T - n)
            assert b.attention_mask[k].tolist() == [1] * n + [0] * (T - n)
            want = [-100] * r.prompt_len + r.full[r.prompt_len :] if labels == "answer" else lm_labels(r.full, r.lm_pad)
            assert b.labels[k].tolist() == want + [-100] * (T - n)
            assert b.answer_mask[k].tolist() == [r.prompt_len <= j < n for j in range(T)]
            assert b.prompt_mask[k].tolist() == [r.nl_start <= j <= r.nl_last for j in range(T)]
            m = len(r.target_view)
            assert b.target_ids[k, :m].tolist() == r.target_view and b.target_mask[k].sum() == m
        assert b.prompt_mask[3].sum() == 0
