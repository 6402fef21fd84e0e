"""``jsonl``: one's own dataset from one YAML, no code.

``data.path`` holds ``data.train_file`` and ``data.test_file`` (defaults ``train.jsonl``, ``test.jsonl``) and
optionally ``data.validation_file``.  Each line is one JSON object, either

* a pair: ``{"<data.prompt_field>": "...", "<data.target_field>": "..."}`` (defaults ``prompt``, ``target``;
  other fields are ignored), or
* a chat: ``{"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}``: the last
  assistant turn is the target, the user turn before it the prompt; a system turn in the line wins over
  ``data.system_prompt`` (there is none by default).  One user turn per line (multi-turn chats are refused).

The one benchmark is named ``jsonl`` unless ``data.name`` says otherwise.  Validation: the first
``data.val_size`` rows of the validation file, else carved from train (fixed seed); the geometry pool is
carved from the rest of train (tasks.base.carved_splits).  The metric is exact match, by ``data.match``:
``exact`` (the stripped strings are equal: NL-RX's exact match), ``normalised`` (also Unicode NFKC,
case-folded, runs of whitespace as one space) or ``numeric`` (the last number of each, equal by value:
``18`` = ``18.00``; commas as thousands separators).  No pre-training pool: the tiny base starts from its
random init (use ``model.kind: hf`` for a real model).  docs/tasks.md and docs/plugins.md show it in use.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from jepa_audit.data.examples import DataError, Example, Splits
from jepa_audit.data.lines import read_lines
from jepa_audit.tasks.base import DataSettings, MetricSpec, Task, carved_splits, count_lines, register_task


class JsonlSettings(DataSettings, Protocol):
    """The data settings the jsonl task reads beyond every task's (config.DataCfg's jsonl keys)."""

    name: str | None
    train_file: str
    test_file: str
    validation_file: str | None
    prompt_field: str
    target_field: str
    match: Literal["exact", "normalised", "numeric"]

MATCHES = ("exact", "normalised", "numeric")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


@dataclass(frozen=True)
class JsonlExample(Example):
    """An example of a jsonl file: ``system`` is the line's own system turn (None: the config's), ``match``
    how it is scored (``data.match``, stamped at load time so scoring needs no config)."""

    system: str | None = None
    match: str = "exact"


@dataclass
class JsonlSplits(Splits):
    rows_read: dict[str, int] | None = None  # file name → lines read (``data stats``)


def last_number(text: str) -> str | None:
    """The last number in ``text`` as a canonical string (``1,234.50`` → ``1234.5``), or None."""
    from decimal import Decimal, InvalidOperation

    found = _NUMBER.findall(text)
    if not found:
        return None
    try:
        return format(Decimal(found[-1].replace(",", "")).normalize(), "f")
    except InvalidOperation:
        return None


def normalise(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def matches(pred: str, gold: str, match: str) -> bool:
    """Does ``pred`` match ``gold`` under ``match`` (exact | normalised | numeric)?"""
    if match == "exact":
        return pred.strip() == gold.strip()
    if match == "normalised":
        return normalise(pred) == normalise(gold)
    if match == "numeric":
        got = last_number(pred)
        return got is not None and got == last_number(gold)
    raise ValueError(f"data.match={match!r}; expected one of {', '.join(MATCHES)}")


def _chat(msgs: Any, where: str) -> tuple[str, str, str | None]:
    """(prompt, target, system) of one ``messages`` list; DataError naming ``where`` (file and line)."""
    if not isinstance(msgs, list) or not msgs:
        raise DataError(f"{where}: 'messages' must be a non-empty list of {{'role', 'content'}} objects")
    turns = []
    for k, m in enumerate(msgs):
        role = m.get("role") if isinstance(m, dict) else None
        content = m.get("content") if isinstance(m, dict) else None
        if role not in ("system", "user", "assistant") or not isinstance(content, str):
            raise DataError(
                f"{where}: message {k} must be {{'role': 'system'|'user'|'assistant', 'content': <string>}}, "
                f"got {json.dumps(m, ensure_ascii=False)[:80]}"
            )
        turns.append((role, content))
    last = max((k for k, (r, _) in enumerate(turns) if r == "assistant"), default=None)
    if last is None:
        raise DataError(f"{where}: the chat has no assistant turn (the target is the last assistant turn)")
    users = [k for k, (r, _) in enumerate(turns[:last]) if r == "user"]
    if len(users) != 1:
        raise DataError(
            f"{where}: expected one user turn before the last assistant turn, found {len(users)} "
            "(multi-turn chats are not supported: one prompt, one target per line)"
        )
    system = next((c for r, c in turns[: users[0]] if r == "system"), None)
    return turns[users[0]][1], turns[last][1], system


def read_jsonl_task(path: Path, cfg: JsonlSettings) -> list[JsonlExample]:
    """The examples of one file (pair or chat lines, mixed freely), indexed by line; DataError naming the file
    and line of anything malformed."""
    what = (f'one JSON object per line: {{"{cfg.prompt_field}": ..., "{cfg.target_field}": ...}} or '
            '{"messages": [{"role": ..., "content": ...}, ...]}')  # fmt: skip
    out = []
    for i, line in enumerate(read_lines(path, what)):
        where = f"{path} line {i + 1}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: not valid JSON ({e.msg} at column {e.colno}); expected {what}") from None
        if not isinstance(obj, dict):
            raise DataError(f"{where}: expected {what}, got a JSON {type(obj).__name__}")
        if "messages" in obj:
            prompt, target, system = _chat(obj["messages"], where)
        else:
            missing = [f for f in (cfg.prompt_field, cfg.target_field) if not isinstance(obj.get(f), str)]
            if missing:
                raise DataError(
                    f"{where}: no string field {' or '.join(map(repr, missing))} (data.prompt_field / "
                    f"data.target_field) and no 'messages'; expected {what}"
                )
            prompt, target, system = obj[cfg.prompt_field], obj[cfg.target_field], None
        if not target.strip():
            raise DataError(f"{where}: the target is empty")
        if cfg.match == "numeric" and last_number(target) is None:
            raise DataError(f"{where}: data.match=numeric but the target has no number: {target[:60]!r}")
        out.append(JsonlExample(prompt, target, i, system, cfg.match))
    return out


@register_task
class JsonlTask(Task):
    name = "jsonl"
    description = "your own data: jsonl files of prompt/target pairs or chats; exact match (data.match)"
    benchmarks = ("jsonl",)  # data.name renames it
    sources = ("local",)
    system_prompt = ""  # none unless data.system_prompt or the data's own system turns
    metrics = (MetricSpec("exact_match", "exact", True, "prediction equals the target under data.match "
                          "(exact: stripped strings; normalised; numeric)"),)  # fmt: skip

    def benchmark_names(self, cfg: JsonlSettings) -> tuple[str, ...]:
        return (cfg.name or "jsonl",)

    def test_rows(self, cfg: JsonlSettings, benchmark: str) -> int | None:
        return count_lines(Path(cfg.path) / cfg.test_file) if cfg.path else None

    def load(self, cfg: JsonlSettings, benchmark: str) -> Splits:
        name = cfg.name or "jsonl"
        if benchmark != name:
            raise DataError(
                f"unknown benchmark {benchmark!r}; the jsonl task's one benchmark is {name!r} (data.name; "
                "set audit.benchmarks to it)"
            )
        root = self.local_root(cfg)
        train = read_jsonl_task(root / cfg.train_file, cfg)
        test = read_jsonl_task(root / cfg.test_file, cfg)
        read = {cfg.train_file: len(train), cfg.test_file: len(test)}
        what = f"jsonl from {root} ({cfg.train_file} {len(train)} rows, {cfg.test_file} {len(test)} rows"
        if cfg.validation_file:
            val = read_jsonl_task(root / cfg.validation_file, cfg)
            read[cfg.validation_file] = len(val)
            rest = carved_splits(cfg, benchmark, train, test, f"{what}, {cfg.validation_file} {len(val)} rows)",
                                 val_size=0)  # fmt: skip
            rest.val = val[: cfg.val_size]
            rest.source += f"; val: the first {len(rest.val)} rows of {cfg.validation_file}"
            s = rest
        else:
            s = carved_splits(cfg, benchmark, train, test, what + ")")
        return JsonlSplits(s.benchmark, s.source, s.train, s.val, s.test, s.geometry, rows_read=read)

    def stats(self, splits: Splits) -> dict[str, Any]:
        return {"rows_read": getattr(splits, "rows_read", None), **super().stats(splits)}

    def messages(self, ex: Example, system: str, answer: bool = True) -> list[dict[str, str]]:
        own = getattr(ex, "system", None)
        return super().messages(ex, own if own is not None else system, answer)  # the data's system wins

    def score_item(self, ex: Example, pred: str, scorer: Any) -> dict[str, Any]:
        return {"exact": matches(pred, ex.target, getattr(ex, "match", "exact"))}
