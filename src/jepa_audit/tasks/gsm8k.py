"""GSM8K (Cobbe et al. 2021): a grade-school math word problem → a worked solution ending ``#### <answer>``.

One benchmark, ``gsm8k`` (``data.path`` = a directory with ``train.jsonl`` and ``test.jsonl`` of
``{"question", "answer"}`` objects, e.g. ``../shared/data/gsm8k``).  The prompt view is the question, the
target view the whole worked solution, calculator annotations included (as LLM-JEPA trains on it).  The
metric is final-answer exact match: the number after ``####`` (commas removed) against the prediction's
number after ``####``, or its last number when it has none.  Numbers compare by value (``18`` = ``18.00``).
No pre-training pool: a tiny model scores near 0 (GSM8K is a GPU task: ``presets/gsm8k.yaml``).
"""

from __future__ import annotations

import json
import random
import re
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from jepa_audit.data.examples import DataError, Example, Splits
from jepa_audit.data.lines import read_lines
from jepa_audit.tasks.base import DataSettings, MetricSpec, Task, carved_splits, count_lines, register_task

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def _number(text: str) -> str | None:
    """``text`` as a canonical number string (commas removed, ``18.00`` → ``18``), or None."""
    try:
        d = Decimal(text.replace(",", "").rstrip("."))
    except InvalidOperation:
        return None
    return format(d.normalize(), "f")


def final_answer(text: str) -> str | None:
    """The final answer of a solution: the first number after the last ``####``; without ``####``, the last
    number in the text; None when there is no number."""
    if "####" in text:
        found = _NUMBER.findall(text.rsplit("####", 1)[1])
        return _number(found[0]) if found else None
    found = _NUMBER.findall(text)
    return _number(found[-1]) if found else None


def read_gsm8k(path: Path) -> list[Example]:
    """The ``{"question", "answer"}`` lines of one GSM8K file as examples (idx = line number)."""
    out = []
    for i, line in enumerate(read_lines(path, 'one {"question", "answer"} JSON object per line')):
        try:
            obj = json.loads(line)
            q, a = obj["question"], obj["answer"]
        except (ValueError, KeyError, TypeError):
            raise DataError(f"{path} line {i + 1}: expected a JSON object with 'question' and 'answer'") from None
        if not isinstance(q, str) or not isinstance(a, str) or "####" not in a or final_answer(a) is None:
            raise DataError(f"{path} line {i + 1}: the answer has no '#### <number>' final line")
        out.append(Example(prompt=q, target=a, idx=i))
    return out


def write_stand_in(path: Path, n_train: int = 900, n_test: int = 24, seed: int = 0) -> Path:
    """A GSM8K-format directory (train.jsonl, test.jsonl of {"question", "answer"}) of generated sums: the
    format, lengths and final-answer lines of the real files, none of their content."""
    rng = random.Random(seed)
    path.mkdir(parents=True, exist_ok=True)
    names = ["Ann", "Ben", "Cleo", "Dev", "Eli", "Fay"]
    things = ["apples", "books", "coins", "marbles", "stamps"]

    def item() -> dict[str, str]:
        a, b, c = rng.randint(2, 90), rng.randint(2, 90), rng.randint(2, 9)
        who, what = rng.choice(names), rng.choice(things)
        q = (f"{who} has {a} {what}. {who} buys {b} more, then gives away a {c}th of nothing and doubles the "
             f"total. How many {what} does {who} have now?")
        s = a + b
        ans = f"{who} has {a} + {b} = <<{a}+{b}={s}>>{s} {what}.\nDoubled: {s} * 2 = <<{s}*2={2 * s}>>{2 * s}.\n#### {2 * s}"
        return {"question": q, "answer": ans}

    for name, n in (("train.jsonl", n_train), ("test.jsonl", n_test)):
        with open(path / name, "w", encoding="utf-8") as f:
            for _ in range(n):
                f.write(json.dumps(item()) + "\n")
    return path



@register_task
class Gsm8kTask(Task):
    name = "gsm8k"
    description = "GSM8K: math word problem → worked solution; exact match of the final answer after ####"
    benchmarks = ("gsm8k",)
    sources = ("local",)
    system_prompt = "Solve the math problem. End with '#### <answer>'."
    metrics = (MetricSpec("exact_match", "exact", True, "the final number equals the gold one after ####"),)

    def load(self, cfg: DataSettings, benchmark: str) -> Splits:
        self.check_benchmark(benchmark)
        root = self.local_root(cfg)
        train, test = read_gsm8k(root / "train.jsonl"), read_gsm8k(root / "test.jsonl")
        return carved_splits(cfg, benchmark, train, test, f"GSM8K from {root}")

    def test_rows(self, cfg: DataSettings, benchmark: str) -> int | None:
        return count_lines(Path(cfg.path) / "test.jsonl") if cfg.path else None

    def stand_in_data(self, path: Path) -> Path:
        return write_stand_in(path)

    def item_record(self, ex: Example, pred: str) -> dict[str, Any]:
        return {**super().item_record(ex, pred), "gold_answer": final_answer(ex.target)}

    def score_item(self, ex: Example, pred: str, scorer: Any) -> dict[str, Any]:
        """``exact``: the prediction's final answer equals the gold one; ``pred_answer``: what was read."""
        got = final_answer(pred)
        return {"exact": got is not None and got == final_answer(ex.target), "pred_answer": got}
