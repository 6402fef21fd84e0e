"""Tokenizers and chat templates.

Tiny models get a byte-level BPE trained (``tokenizers``) on training text only, wrapped as a
``PreTrainedTokenizerFast`` with a Jinja chat template, so tiny and real models go through one code path:
``tokenizer.apply_chat_template``.  Byte-level BPE is lossless, so any description or regex round-trips,
including characters never seen in training.  Real models keep their own tokenizer and template.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

SPECIAL = {
    "pad": "<|pad|>",
    "bos": "<|bos|>",
    "system": "<|system|>",
    "user": "<|user|>",
    "assistant": "<|assistant|>",
    "eot": "<|eot|>",
}

# system, user, assistant turns each closed by <|eot|>; the generation prompt opens an assistant turn.
TINY_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{{ '<|' + m['role'] + '|>' }}{{ m['content'] }}{{ '<|eot|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


def train_tiny_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE of ``vocab_size`` entries (special tokens included) trained on ``texts``."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=SPECIAL["bos"],
        eos_token=SPECIAL["eot"],
        pad_token=SPECIAL["pad"],
    )
    fast.chat_template = TINY_CHAT_TEMPLATE
    return fast


_CHOSEN_PAD = "jepa_audit_pad_chosen"  # init_kwargs flag: ensure_pad picked the pad (the tokenizer had none)


def pad_was_chosen(tokenizer: PreTrainedTokenizerFast) -> bool:
    """True when :func:`ensure_pad` picked the pad token because the tokenizer had none (real Llama-3)."""
    return bool(tokenizer.init_kwargs.get(_CHOSEN_PAD, False))


def ensure_pad(tokenizer: PreTrainedTokenizerFast) -> int:
    """Real Llama tokenizers have no pad token: use a reserved special token, else eos (never attended).

    Records that it chose (:func:`pad_was_chosen`): LLM-JEPA's collator would have used eos there."""
    if tokenizer.pad_token_id is None:
        tokenizer.init_kwargs[_CHOSEN_PAD] = True
        for cand in ("<|finetune_right_pad_id|>", "<|reserved_special_token_0|>"):
            if cand in tokenizer.get_vocab():
                tokenizer.pad_token = cand
                break
        else:
            tokenizer.pad_token = tokenizer.eos_token
    return int(tokenizer.pad_token_id)
