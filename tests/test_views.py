"""Tokenizer round-trip, chat template, loss mask (answer + end-of-turn only), and view indices."""

from __future__ import annotations

import torch

from jepa_audit.data.examples import Example
from jepa_audit.data.tokenizer import train_tiny_tokenizer
from jepa_audit.data.views import collate, encode_example

SYSTEM = "Convert natural language to regular expression."
PAIRS = [
    ("lines containing the word dog", ".*dog.*"),
    ("lines with a vowel at least 3 times", "(([AEIOUaeiou]){3,})"),
    ("lines not having a number", "~(.*[0-9].*)"),
    ("words starting with a capital letter", "\\b([A-Z])(.*)\\b"),
]


def _tok():
    texts = [SYSTEM] * 5 + [t for p in PAIRS for t in p] * 20
    return train_tiny_tokenizer(texts, 300)


def test_round_trip_including_unseen_characters():
    tok = _tok()
    for s in ["(([AEIOUaeiou]){3,})", "lines with ünïcode ☃ and TABS\t", "~((dog)|(truck))&(.*[0-9].*)"]:
        assert tok.decode(tok.encode(s, add_special_tokens=False)) == s


def test_loss_mask_covers_answer_and_end_of_turn_only():
    tok = _tok()
    ex = Example(PAIRS[1][0], PAIRS[1][1], 0)
    e = encode_example(tok, SYSTEM, ex)
    b = collate([e], tok.pad_token_id)
    labelled = b.labels[0][b.labels[0] != -100].tolist()
    eot = tok.convert_tokens_to_ids("<|eot|>")
    assert labelled[-1] == eot  # the end-of-turn is trained on (LLM-JEPA leaves it unlabelled; we do not)
    assert tok.decode(labelled[:-1]) == ex.regex  # and nothing but the regex before it
    assert b.answer_mask[0].sum().item() == len(labelled)
    assert b.answer_start[0].item() == e.prompt_len
    # the prompt is exactly the generation prompt: it ends by opening the assistant turn
    assert tok.convert_ids_to_tokens(e.prompt[-1]) == "<|assistant|>"


def test_view_indices_point_at_the_right_tokens():
    tok = _tok()
    ex = Example(PAIRS[0][0], PAIRS[0][1], 3)
    e = encode_example(tok, SYSTEM, ex)
    assert tok.decode(e.full[e.nl_start : e.nl_last + 1]) == ex.nl
    assert tok.decode(e.regex_view[2:-1]) == ex.regex  # bos, assistant header, regex, eot
    assert tok.convert_ids_to_tokens(e.regex_view[e.regex_last + 1]) == "<|eot|>"
    assert e.regex_view[e.regex_last] == e.full[-2]  # the same last content token as the CE row


def test_collate_pads_and_masks():
    tok = _tok()
    rows = [encode_example(tok, SYSTEM, Example(n, r, i)) for i, (n, r) in enumerate(PAIRS)]
    b = collate(rows, tok.pad_token_id)
    assert b.input_ids.shape[0] == 4
    for i, r in enumerate(rows):
        n = len(r.full)
        assert b.attention_mask[i, :n].all() and not b.attention_mask[i, n:].any()
        assert (b.input_ids[i, n:] == tok.pad_token_id).all()
        assert b.prompt_mask[i].sum() == r.nl_last - r.nl_start + 1
    assert torch.equal(b.item_ids, torch.arange(4))


def test_nl_view_is_a_causal_prefix_of_the_full_row(tiny_llama):
    """Under causal attention the NL view's states equal the full row's: e_u needs no extra forward."""
    tok = _tok()
    e = encode_example(tok, SYSTEM, Example(*PAIRS[2], 0))
    ids = torch.tensor([e.full]) % tiny_llama.config.vocab_size
    nl_view = ids[:, : e.nl_last + 2]  # the user-only chat, ending with the user's end-of-turn
    with torch.no_grad():
        h_full = tiny_llama(input_ids=ids, output_hidden_states=True).hidden_states[-1]
        h_view = tiny_llama(input_ids=nl_view, output_hidden_states=True).hidden_states[-1]
    torch.testing.assert_close(h_full[0, e.nl_last], h_view[0, e.nl_last], rtol=1e-5, atol=1e-5)
