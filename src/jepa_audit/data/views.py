"""Prompts and views: one (description, regex) pair → token ids of the full row, the NL view, the regex view.

The full row is the chat ``[system, user: NL, assistant: regex]``.  CE is computed on the assistant's
tokens *and* its end-of-turn token (LLM-JEPA's collator leaves the end-of-turn unlabelled; we do not: a
model must learn to stop).  The NL view (LLM-JEPA's user-only view) is the prefix ``[system, user: NL]``
of that row, so under causal attention its states are those of the full row: we read ``e_u`` there.  The
regex view is the assistant turn alone (its header, the regex, end-of-turn), preceded by BOS when the
tokenizer has one; it is the only extra row a two-view objective needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from jepa_audit.data.batch import Batch
from jepa_audit.data.examples import Example

# Llama-3's template stamps today's date into the system turn unless told; a fixed date keeps rows stable.
TEMPLATE_KWARGS = {"date_string": "26 Jul 2024"}


class TemplateError(ValueError):
    """The tokenizer's chat template does not behave as a prefix-stable chat template."""


@dataclass(frozen=True)
class Encoded:
    """Token ids of one example.  Indices refer to ``full``."""

    full: list[int]  # [system][user: NL][assistant header][regex][eot]
    prompt_len: int  # len of the generation prompt (== index a0 of the first answer token)
    nl_start: int  # first NL content token
    nl_last: int  # last NL content token (e_u)
    regex_view: list[int]  # [bos?][assistant header][regex][eot]
    regex_last: int  # last regex content token in regex_view (e_r)
    idx: int  # example id within its split

    @property
    def prompt(self) -> list[int]:
        return self.full[: self.prompt_len]


def _ids(tok: PreTrainedTokenizerBase, messages: list[dict[str, str]], gen: bool) -> list[int]:
    out = tok.apply_chat_template(
        messages, tokenize=True, add_generation_prompt=gen, return_dict=False, **TEMPLATE_KWARGS
    )
    if isinstance(out, dict) or hasattr(out, "keys"):
        out = out["input_ids"]
    return [int(i) for i in out]


def encode_example(tok: PreTrainedTokenizerBase, system: str, ex: Example) -> Encoded:
    """Tokenise one pair through the chat template and locate the NL, answer and view indices."""
    sys_msg = [{"role": "system", "content": system}] if system else []
    user = [*sys_msg, {"role": "user", "content": ex.nl}]
    empty_user = [*sys_msg, {"role": "user", "content": ""}]
    full = _ids(tok, [*user, {"role": "assistant", "content": ex.regex}], gen=False)
    prompt = _ids(tok, user, gen=True)
    user_turn = _ids(tok, user, gen=False)  # ends with the user's end-of-turn token
    empty_turn = _ids(tok, empty_user, gen=False)
    if full[: len(prompt)] != prompt or full[: len(user_turn)] != user_turn:
        raise TemplateError("chat template is not prefix-stable: the prompt is not a prefix of the full chat")
    eot = user_turn[-1]
    try:
        end = full.index(eot, len(prompt))  # the assistant's end-of-turn, labelled
    except ValueError:
        raise TemplateError(f"no end-of-turn token (id {eot}) after the answer in the chat template") from None
    full = full[: end + 1]  # templates that append text after the last turn: not trained on
    nl_start = len(empty_turn) - 1
    nl_last = len(user_turn) - 2
    if not (0 < nl_start <= nl_last < len(prompt)):
        raise TemplateError(f"cannot locate the description in the chat row (start {nl_start}, last {nl_last})")
    bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
    regex_view = bos + full[len(user_turn) :]
    return Encoded(full, len(prompt), nl_start, nl_last, regex_view, len(regex_view) - 2, ex.idx)


def encode_all(tok: PreTrainedTokenizerBase, system: str, examples: Sequence[Example]) -> list[Encoded]:
    return [encode_example(tok, system, ex) for ex in examples]


def collate(rows: Sequence[Encoded], pad_id: int) -> Batch:
    """Right-pad the full rows and regex views of ``rows`` into one Batch (see data/batch.py for shapes)."""
    B = len(rows)
    T = max(len(r.full) for r in rows)
    Tr = max(len(r.regex_view) for r in rows)
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    att = torch.zeros((B, T), dtype=torch.long)
    labels = torch.full((B, T), -100, dtype=torch.long)
    pmask = torch.zeros((B, T), dtype=torch.bool)
    rids = torch.full((B, Tr), pad_id, dtype=torch.long)
    ratt = torch.zeros((B, Tr), dtype=torch.long)
    for b, r in enumerate(rows):
        n = len(r.full)
        ids[b, :n] = torch.tensor(r.full)
        att[b, :n] = 1
        labels[b, r.prompt_len : n] = ids[b, r.prompt_len : n]
        pmask[b, r.nl_start : r.nl_last + 1] = True
        m = len(r.regex_view)
        rids[b, :m] = torch.tensor(r.regex_view)
        ratt[b, :m] = 1
    return Batch(
        input_ids=ids,
        attention_mask=att,
        labels=labels,
        answer_mask=labels != -100,
        prompt_mask=pmask,
        nl_last=torch.tensor([r.nl_last for r in rows]),
        answer_start=torch.tensor([r.prompt_len for r in rows]),
        regex_ids=rids,
        regex_mask=ratt,
        regex_last=torch.tensor([r.regex_last for r in rows]),
        item_ids=torch.tensor([r.idx for r in rows]),
    )
