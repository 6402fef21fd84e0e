"""Prompts and views: one (prompt, target) example → token ids of the full row, the NL view, the target view.

The full row is the chat ``[system, user: NL, assistant: target]``.  CE is computed on the assistant's
tokens *and* its end-of-turn token (``train.labels=answer``; LLM-JEPA's collator leaves the end-of-turn
unlabelled and trains the prompt: ``train.labels=llm-jepa`` reproduces that, see :func:`collate`).

Two ways to build the two views (``views.nl``):

* ``prefix`` (default): the NL view is the prefix ``[system, user: NL]`` of the CE row, so under causal
  attention its states are those of the full row and ``e_u`` is read there for free; the target view is
  the assistant turn alone (header, target, end-of-turn) after BOS: the only extra row.
* ``published``: both views exactly as galilai-group/llm-jepa ``finetune.py`` builds them.  The user-only
  view is ``messages[1:2]`` (the system turn dropped) with k predictor tokens ``<|predictor_k|>…
  <|predictor_1|>`` appended to the description, the assistant-only view is ``messages[2:3]``; each is
  rendered by the chat template as text and then tokenised with ``tokenizer(text)``, which adds the
  tokenizer's own special tokens again (a second begin-of-text for a Llama-3 tokenizer; a Llama-3.2
  template also writes its default system block into both views).  The embedding is read at
  ``last_token = −2`` (the token before the end-of-turn: the last predictor, or the last content token).
  The predictor tokens are not added to the vocabulary here: their positions hold ``pad`` and the
  objective writes its predictor embeddings there (``objectives/references.py``).

Both modes render with a fixed ``date_string`` (:data:`TEMPLATE_KWARGS`): the Llama-3.2 template would
otherwise stamp the day of the run into the system block (its ``strftime_now``), so rows, and results,
would change from one day to the next; the original's rows carry the date it ran on.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import torch
from transformers import PreTrainedTokenizerBase

from jepa_audit.data.batch import Batch
from jepa_audit.data.examples import Example, chat_messages
from jepa_audit.data.tokenizer import pad_was_chosen

# Llama-3's template stamps today's date into the system turn unless told; a fixed date keeps rows stable
# (this is the template's own fallback when it has no strftime_now).
TEMPLATE_KWARGS = {"date_string": "26 Jul 2024"}

ViewMode = Literal["prefix", "published"]
LabelMode = Literal["answer", "llm-jepa"]
VIEW_MODES: tuple[str, ...] = ("prefix", "published")
LABEL_MODES: tuple[str, ...] = ("answer", "llm-jepa")
PREDICTOR = "<|predictor_{}|>"  # LLM-JEPA's predictor token names, i = 1..10
PUBLISHED_LAST_TOKEN = -2  # finetune.py's --last_token for Llama-style templates (run.sh: lt=-2)


class Rendering(Protocol):
    """How one example is shown as chat: what :class:`jepa_audit.tasks.Task` provides (data sits below tasks
    and only needs this method)."""

    def messages(self, ex: Example, system: str, answer: bool = True) -> list[dict[str, str]]: ...


class PlainRendering:
    """The default rendering, every built-in task's: user turn = ``ex.prompt``, assistant turn = ``ex.target``."""

    def messages(self, ex: Example, system: str, answer: bool = True) -> list[dict[str, str]]:
        return chat_messages(system, ex.prompt, ex.target if answer else None)


class TemplateError(ValueError):
    """The tokenizer's chat template does not behave as a prefix-stable chat template."""


@dataclass(frozen=True)
class Encoded:
    """Token ids of one example.  Indices refer to ``full``."""

    full: list[int]  # [system][user: NL][assistant header][target][eot]
    prompt_len: int  # len of the generation prompt (== index a0 of the first answer token)
    nl_start: int  # first NL content token
    nl_last: int  # last NL content token (e_u)
    target_view: list[int]  # [bos?][assistant header][target][eot]
    target_last: int  # last target content token in target_view (e_t)
    idx: int  # example id within its split
    # views.nl=published only: LLM-JEPA's user-only view; its k predictor slots hold the pad id
    nl_view: list[int] | None = None  # [bos][bos?][default system?][user header][NL][slots][eot]
    nl_view_last: int = -1  # index of the token before the end-of-turn (last slot, or last NL token)
    n_pred: int = 0  # predictor slots in nl_view: positions nl_view_last − n_pred + 1 … nl_view_last
    view_mode: str = "prefix"
    lm_pad: int = -1  # the id LLM-JEPA's collator masks in its labels (its pad token; eos when none); -1: none

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


def _render_then_tokenise(tok: PreTrainedTokenizerBase, messages: list[dict[str, str]]) -> list[int]:
    """finetune.py's route: ``apply_chat_template(tokenize=False)``, then ``tokenizer(text)`` (which adds the
    tokenizer's own special tokens, e.g. a second begin-of-text for Llama-3)."""
    try:
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=False, **TEMPLATE_KWARGS)
    except Exception as e:  # noqa: BLE001 - jinja raises many kinds; name the input instead
        roles = "/".join(m["role"] for m in messages)
        raise TemplateError(f"the chat template cannot render a {roles}-only conversation: {e}") from None
    return [int(i) for i in tok(text)["input_ids"]]


def predictor_tokenizer(tok: PreTrainedTokenizerBase, k: int) -> PreTrainedTokenizerBase:
    """A copy of ``tok`` that knows ``<|predictor_1|>`` … ``<|predictor_k|>`` as special tokens (finetune.py
    adds them to the vocabulary; here they only mark the slots, so the model's vocabulary is untouched)."""
    if k < 0 or k > 10:
        raise ValueError(f"predictor tokens: k must be in 0..10 (LLM-JEPA defines <|predictor_1..10|>), got {k}")
    if k == 0:
        return tok
    out = copy.deepcopy(tok)
    out.add_tokens([PREDICTOR.format(i) for i in range(1, k + 1)], special_tokens=True)
    return out


def published_views(
    tok: PreTrainedTokenizerBase, ptok: PreTrainedTokenizerBase, ex: Example, eot: int, k: int,
    task: Rendering | None = None,
) -> tuple[list[int], int, list[int], int]:
    """LLM-JEPA's two views of one pair: (user view, its last_token index, assistant view, its index).

    ``ptok`` is :func:`predictor_tokenizer` (tok, k); the k predictor slots of the user view are replaced by
    the pad id.  Raises :class:`TemplateError` when a view does not end with ``eot`` (last_token = −2 would
    then not point at the content) or the predictor tokens do not sit right before it.
    """
    preds = "".join(PREDICTOR.format(i) for i in range(k, 0, -1))  # finetune.py appends k, k−1, …, 1
    *_, u, a = _task(task).messages(ex, "")  # the task's prompt and target views
    user = _render_then_tokenise(ptok, [{"role": "user", "content": u["content"] + preds}])
    assistant = _render_then_tokenise(tok, [a])
    for name, ids in (("user", user), ("assistant", assistant)):
        if len(ids) < 3 or ids[-1] != eot:
            raise TemplateError(
                f"views.nl=published: the {name}-only view does not end with the end-of-turn token (id {eot}), "
                "so LLM-JEPA's last_token = -2 would not point at its content; use views.nl=prefix"
            )
    u_last, a_last = len(user) + PUBLISHED_LAST_TOKEN, len(assistant) + PUBLISHED_LAST_TOKEN
    if k:
        want = [ptok.convert_tokens_to_ids(PREDICTOR.format(i)) for i in range(k, 0, -1)]
        if user[u_last - k + 1 : u_last + 1] != want:
            raise TemplateError("views.nl=published: the predictor tokens are not right before the end-of-turn")
        pad = int(tok.pad_token_id)
        user = [*user[: u_last - k + 1], *([pad] * k), *user[u_last + 1 :]]
    return user, u_last, assistant, a_last


def collator_pad_id(tok: PreTrainedTokenizerBase) -> int:
    """The id LLM-JEPA's ``DataCollatorForLanguageModeling(mlm=False)`` masks: its pad token, which
    finetune.py sets to eos when the tokenizer has none (Llama-3.2-Instruct: ``<|eot_id|>``).
    :func:`jepa_audit.data.tokenizer.ensure_pad` records whether the pad was ours."""
    return int(tok.eos_token_id) if pad_was_chosen(tok) else int(tok.pad_token_id)


def _task(task: Rendering | None) -> Rendering:
    return task if task is not None else PlainRendering()  # the default rendering (every built-in task's)


def encode_example(
    tok: PreTrainedTokenizerBase,
    system: str,
    ex: Example,
    views: ViewMode = "prefix",
    n_pred: int = 0,
    ptok: PreTrainedTokenizerBase | None = None,
    task: Rendering | None = None,
) -> Encoded:
    """Tokenise one pair through the chat template and locate the NL, answer and view indices.

    ``views="published"`` also builds LLM-JEPA's user-only view with ``n_pred`` predictor slots and uses
    its assistant-only view as the target view (``ptok``: :func:`predictor_tokenizer`, made once by
    :func:`encode_all`).  ``task`` renders the example (:meth:`jepa_audit.tasks.Task.messages`; default: the
    plain [system, user = prompt, assistant = target])."""
    task = _task(task)
    chat = task.messages(ex, system)
    user = chat[:-1]
    empty_user = [*chat[:-2], {"role": "user", "content": ""}]
    full = _ids(tok, chat, gen=False)
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
    lm_pad = collator_pad_id(tok)
    if views == "prefix":
        if n_pred:
            raise ValueError("views.nl=prefix builds no predictor slots (the objective appends them itself)")
        bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
        target_view = bos + full[len(user_turn) :]
        return Encoded(full, len(prompt), nl_start, nl_last, target_view, len(target_view) - 2, ex.idx, lm_pad=lm_pad)
    if views != "published":
        raise ValueError(f"views.nl={views!r}; expected one of {', '.join(VIEW_MODES)}")
    nl_view, nl_view_last, target_view, target_last = published_views(
        tok, ptok if ptok is not None else predictor_tokenizer(tok, n_pred), ex, eot, n_pred, task
    )
    return Encoded(
        full, len(prompt), nl_start, nl_last, target_view, target_last, ex.idx,
        nl_view=nl_view, nl_view_last=nl_view_last, n_pred=n_pred, view_mode="published", lm_pad=lm_pad,
    )  # fmt: skip


def encode_all(
    tok: PreTrainedTokenizerBase,
    system: str,
    examples: Sequence[Example],
    views: ViewMode = "prefix",
    n_pred: int = 0,
    task: Rendering | None = None,
) -> list[Encoded]:
    """:func:`encode_example` of every example (``task``: whose rendering; default NL-RX's, the plain one)."""
    ptok = predictor_tokenizer(tok, n_pred) if views == "published" else None
    return [encode_example(tok, system, ex, views, n_pred, ptok, task) for ex in examples]


def lm_labels(ids: list[int], lm_pad: int) -> list[int]:
    """``DataCollatorForLanguageModeling(mlm=False)``'s labels for one unpadded row: every token except
    those equal to the collator's pad id (-100 there), so the prompt is trained and, where pad = eos =
    end-of-turn, every end-of-turn is not."""
    return [-100 if i == lm_pad else i for i in ids]


def collate(rows: Sequence[Encoded], pad_id: int, labels: LabelMode = "answer") -> Batch:
    """Right-pad the full rows and both views of ``rows`` into one Batch (see data/batch.py for shapes).

    ``labels="answer"``: CE on the answer and its end-of-turn; ``"llm-jepa"``: :func:`lm_labels` (the
    published collator's).  ``answer_mask`` is the answer + end-of-turn either way (what the objectives
    read); the NL-view fields are filled only when the rows carry published views (all or none)."""
    if labels not in LABEL_MODES:
        raise ValueError(f"train.labels={labels!r}; expected one of {', '.join(LABEL_MODES)}")
    published = [r.nl_view is not None for r in rows]
    if any(published) and not all(published):
        raise ValueError("collate: rows mix views.nl=prefix and views.nl=published encodings")
    B = len(rows)
    T = max(len(r.full) for r in rows)
    Tr = max(len(r.target_view) for r in rows)
    # built as Python lists and turned into tensors once per field: a step of a tiny model is ~30 ms, and
    # per-row tensor writes (6 a row) cost ~2 ms of it
    ids, att, lab, pmask, amask, rids, ratt = [], [], [], [], [], [], []
    for r in rows:
        n, pad, p0 = len(r.full), T - len(r.full), r.prompt_len
        ids.append(r.full + [pad_id] * pad)
        att.append([1] * n + [0] * pad)
        amask.append([False] * p0 + [True] * (n - p0) + [False] * pad)
        row_lab = [-100] * p0 + r.full[p0:] if labels == "answer" else lm_labels(r.full, r.lm_pad)
        lab.append(row_lab + [-100] * pad)
        prompt = [False] * T
        span = range(T)[r.nl_start : r.nl_last + 1]  # slice semantics, as a tensor slice would clip it
        prompt[span.start : span.stop] = [True] * len(span)
        pmask.append(prompt)
        m = len(r.target_view)
        rids.append(r.target_view + [pad_id] * (Tr - m))
        ratt.append([1] * m + [0] * (Tr - m))
    nl: dict[str, torch.Tensor] = {}
    if published[0]:
        Tn = max(len(r.nl_view or ()) for r in rows)
        nids = torch.full((B, Tn), pad_id, dtype=torch.long)
        natt = torch.zeros((B, Tn), dtype=torch.long)
        for b, r in enumerate(rows):
            m = len(r.nl_view or ())
            nids[b, :m] = torch.tensor(r.nl_view)
            natt[b, :m] = 1
        nl = {
            "nl_ids": nids, "nl_mask": natt, "nl_view_last": torch.tensor([r.nl_view_last for r in rows]),
            "nl_pred": torch.tensor([r.n_pred for r in rows]),
        }  # fmt: skip
    return Batch(
        input_ids=torch.tensor(ids, dtype=torch.long),
        attention_mask=torch.tensor(att, dtype=torch.long),
        labels=torch.tensor(lab, dtype=torch.long),
        answer_mask=torch.tensor(amask, dtype=torch.bool),
        prompt_mask=torch.tensor(pmask, dtype=torch.bool),
        nl_last=torch.tensor([r.nl_last for r in rows]),
        answer_start=torch.tensor([r.prompt_len for r in rows]),
        target_ids=torch.tensor(rids, dtype=torch.long),
        target_mask=torch.tensor(ratt, dtype=torch.long),
        target_last=torch.tensor([r.target_last for r in rows]),
        item_ids=torch.tensor([r.idx for r in rows]),
        **nl,
    )
