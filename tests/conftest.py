"""Shared fixtures: a tiny random Llama and a synthetic, well-formed Batch (no tokenizer needed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from jepa_audit.data.batch import Batch

torch.set_num_threads(1)
SHARED_DATA = Path(os.environ.get("JEPA_AUDIT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def make_tiny_llama(vocab: int = 97, d: int = 32, layers: int = 3, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab, hidden_size=d, intermediate_size=2 * d, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128,
        tie_word_embeddings=True, attn_implementation="sdpa",
    )
    return LlamaForCausalLM(cfg).eval()


def make_toy_batch(B: int = 6, vocab: int = 97, seed: int = 0) -> Batch:
    """Rows: [prompt (P tokens, NL content = positions 2..P-2)] [answer (A tokens incl. eot)] [pad].

    Lengths vary per row so padding and per-row indices are exercised.
    """
    g = torch.Generator().manual_seed(seed)
    P = [8 + int(torch.randint(0, 4, (1,), generator=g)) for _ in range(B)]
    A = [4 + int(torch.randint(0, 4, (1,), generator=g)) for _ in range(B)]
    T = max(p + a for p, a in zip(P, A, strict=True))
    Tr = max(A) + 2
    ids = torch.zeros(B, T, dtype=torch.long)
    att = torch.zeros(B, T, dtype=torch.long)
    labels = torch.full((B, T), -100, dtype=torch.long)
    pmask = torch.zeros(B, T, dtype=torch.bool)
    rids = torch.zeros(B, Tr, dtype=torch.long)
    rmask = torch.zeros(B, Tr, dtype=torch.long)
    nl_last, a0, rlast = [], [], []
    for b in range(B):
        p, a = P[b], A[b]
        row = torch.randint(3, vocab, (p + a,), generator=g)
        ids[b, : p + a] = row
        att[b, : p + a] = 1
        labels[b, p : p + a] = row[p:]
        pmask[b, 2 : p - 1] = True
        nl_last.append(p - 2)
        a0.append(p)
        rids[b, 0] = 1
        rids[b, 1 : 1 + a] = row[p:]
        rmask[b, : 1 + a] = 1
        rlast.append(a - 1)  # last regex content token (the eot is at index a)
    return Batch(
        input_ids=ids, attention_mask=att, labels=labels, answer_mask=labels != -100, prompt_mask=pmask,
        nl_last=torch.tensor(nl_last), answer_start=torch.tensor(a0), target_ids=rids, target_mask=rmask,
        target_last=torch.tensor(rlast), item_ids=torch.arange(B),
    )


@pytest.fixture
def tiny_llama():
    return make_tiny_llama()


@pytest.fixture
def toy_batch():
    return make_toy_batch()


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real NL-RX data not found at {SHARED_DATA} (expected ../shared/data beside the repo)")
    return SHARED_DATA


# A few NL-RX-style (description, regex) pairs and the system prompt, shared by the view, fidelity and
# Llama-3.2 tests (the first four are the views tests' fixed rows).
SYSTEM_PROMPT = "Convert natural language to regular expression."
NLRX_PAIRS = [
    ("lines containing the word dog", ".*dog.*"),
    ("lines with a vowel at least 3 times", "(([AEIOUaeiou]){3,})"),
    ("lines not having a number", "~(.*[0-9].*)"),
    ("words starting with a capital letter", "\\b([A-Z])(.*)\\b"),
    ("lines that end with truck", ".*truck"),
    ("lines with the letter a before a number", ".*a.*[0-9].*"),
]

LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n' + m['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


from jepa_audit.models.llama_dir import LLAMA32_TEMPLATE  # noqa: E402, F401 - re-exported for the tests (one home)


def make_hf_llama_dir(path: Path, texts: list[str], d: int = 32, layers: int = 2,
                      template: str = LLAMA3_TEMPLATE, generation_eos: bool = False) -> Path:
    """A small Llama in Hugging Face format, shaped like Llama-3.2-1B-Instruct's directory.

    config.json + model.safetensors + tokenizer.json/tokenizer_config.json with Llama-3 special tokens
    (``<|begin_of_text|>``, ``<|start_header_id|>``, ``<|end_header_id|>``, ``<|eot_id|>``), a Llama-3
    style chat template (``template``: the simplified ``LLAMA3_TEMPLATE`` by default, ``LLAMA32_TEMPLATE`` for
    the real Llama-3.2 one), and *no pad token* (as the real one), so every loading step is exercised.
    ``generation_eos``: write Llama-3.2-Instruct's generation_config.json (sampling defaults, and three eos ids:
    ``<|end_of_text|>``, ``<|eom_id|>``, ``<|eot_id|>``, there 128001, 128008, 128009).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    special = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
               "<|finetune_right_pad_id|>", "<|eom_id|>"]
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(texts + ["system", "user", "assistant"] * 5, trainers.BpeTrainer(
        vocab_size=400, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>")
    tok.chat_template = template
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=d, intermediate_size=2 * d, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    LlamaForCausalLM(cfg).save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    if generation_eos:
        import json

        eos = [tok.convert_tokens_to_ids(t) for t in ("<|end_of_text|>", "<|eom_id|>", "<|eot_id|>")]
        (Path(path) / "generation_config.json").write_text(json.dumps(
            {"bos_token_id": tok.bos_token_id, "eos_token_id": eos, "do_sample": True, "temperature": 0.6,
             "top_p": 0.9}))
    return path
