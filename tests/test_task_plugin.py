"""Adding a task is one module plus one preset: a toy task (string reversal) defined and registered in this
file alone runs a smoke audit end to end (grid → results.jsonl → summary.json → report), and everything
downstream reads its metric names (``reversal_accuracy``, ``first_char``) from its specs.

The audit runs in-process (``workers=1``): a task defined in a test file is not importable by spawned
workers; a task module in ``jepa_audit/tasks/`` is (docs/tasks.md).
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from jepa_audit.config import load_config
from jepa_audit.data import Example
from jepa_audit.tasks import MetricSpec, Task, carved_splits, get_task, register_task

LETTERS = "abcdefgh"


def _strings(n: int, seed: int, exclude: set[str] = frozenset()) -> list[str]:
    rng, out, seen = random.Random(seed), [], set(exclude)
    while len(out) < n:
        s = "".join(rng.choice(LETTERS) for _ in range(rng.randint(3, 7)))
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


@register_task
class Reverse(Task):
    name = "toy-reverse"
    description = "toy: write a string backwards"
    benchmarks = ("short",)
    sources = ("embedded",)
    system_prompt = "Reverse the string."
    metrics = (MetricSpec("reversal_accuracy", "correct"), MetricSpec("first_char", "first"))

    def load(self, cfg, benchmark):
        self.check_benchmark(benchmark)
        words = _strings(cfg.n_train + cfg.n_test, cfg.corpus_seed)
        rows = [Example(" ".join(w), " ".join(reversed(w)), i) for i, w in enumerate(words)]
        return carved_splits(cfg, benchmark, rows[: cfg.n_train], rows[cfg.n_train :], "toy strings")

    def pretraining_pool(self, cfg, n, seed):
        taken = set(_strings(cfg.n_train + cfg.n_test, cfg.corpus_seed))
        return [Example(" ".join(w), " ".join(reversed(w)), i) for i, w in enumerate(_strings(n, seed, taken))]

    def score_item(self, ex: Example, pred: str, scorer: Any) -> dict[str, Any]:
        p = pred.strip()
        return {"correct": p == ex.target, "first": p[:1] == ex.target[:1]}


@pytest.mark.slow
def test_a_task_defined_here_runs_a_smoke_audit_end_to_end(tmp_path):
    from jepa_audit.audit import run_audit

    cfg = load_config("smoke", None, [
        "data.task=toy-reverse", "audit.benchmarks=[short]", "audit.methods=[ce, llm-jepa]", "audit.seeds=[82, 23]",
        "data.n_train=300", "data.n_test=40", "data.val_size=20", "data.geometry_size=32", "base.steps=40",
        "base.pool_size=200", "train.steps=15", "eval.max_new_tokens=12", "model.vocab_size=64",
        f"cache_dir={tmp_path / 'cache'}",
    ])  # fmt: skip
    assert cfg.data.system == "Reverse the string."
    out = tmp_path / "audit"
    assert run_audit(cfg, out, workers=1, live=False) == 0

    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines() if x.strip()]
    assert len(rows) == 4 and {r["task"] for r in rows} == {"toy-reverse"}
    for r in rows:
        assert set(r["metrics"]) >= {"reversal_accuracy", "first_char", "n_test"} and r["metrics"]["n_test"] == 40
        assert "exact_match" not in r["metrics"] and [m["name"] for m in r["metric_specs"]] == [
            "reversal_accuracy", "first_char"]
        items = [json.loads(x) for x in (out / r["predictions_file"]).read_text().splitlines()]
        assert len(items) == 40 and set(items[0]) == {"item", "prompt", "gold", "pred", "correct", "first"}

    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "toy-reverse"
    assert {(c["metric"], c["method"], c["benchmark"]) for c in summary["comparisons"]} == {
        ("reversal_accuracy", "llm-jepa", "short"), ("first_char", "llm-jepa", "short")}
    assert {f["metric"] for f in summary["families"]} == {"reversal_accuracy", "first_char"}
    assert all(f["task"] == "toy-reverse" for f in summary["families"])
    assert {e["metric"] for e in summary["items"]} == {"reversal_accuracy", "first_char"}  # per-item fields read
    assert {c["versus"] for c in summary["coupling"]} == {"delta_reversal_accuracy_pp"}
    assert summary["settings"]["conditional_logit_metrics"] == ["reversal_accuracy"]
    assert [v["method"] for v in summary["verdicts"]] == ["llm-jepa"]
    report = (out / "report.md").read_text()
    assert "`toy-reverse`" in report and "reversal_accuracy, first_char" in report


def test_the_toy_task_is_listed_and_scored_by_its_own_specs():
    t = get_task("toy-reverse")
    res = t.score([Example("a b c", "c b a", 0), Example("a b", "b a", 1)], ["c b a", "b x"], cfg=None)
    assert res.metrics == {"reversal_accuracy": 0.5, "first_char": 1.0, "n_test": 2}
    assert load_config("smoke", None, ["data.task=toy-reverse"]).data.system == "Reverse the string."
