"""GSM8K: final-answer scoring, the loader's errors, and the whole path (data → tiny base → train → eval)
at smoke scale on the CPU (accuracy near 0 is expected: the plumbing is what is tested)."""

from __future__ import annotations

import json

import pytest

from jepa_audit.config import DataCfg, load_config
from jepa_audit.data import DataError, Example
from jepa_audit.tasks import get_task, load_benchmark
from jepa_audit.tasks.gsm8k import final_answer


@pytest.mark.parametrize(("text", "want"), [
    ("She makes 9 * 2 = $<<9*2=18>>18 every day.\n#### 18", "18"),
    ("#### 1,800", "1800"),   # commas removed
    ("#### 18.00", "18"),     # compared by value
    ("#### -5", "-5"),
    ("so 16-3-4=9 eggs, 9*2 = 18 dollars", "18"),  # no ####: the last number
    ("The answer is 7. #### 3", "3"),   # the number after ####, not the last one before it
    ("no number at all", None),
])  # fmt: skip
def test_final_answer(text, want):
    assert final_answer(text) == want


def test_scoring_reads_final_answers_and_records_them():
    ex = [Example("q1", "2 + 2 = 4\n#### 4", 0), Example("q2", "#### 1,000", 1), Example("q3", "#### 7", 2)]
    res = get_task("gsm8k").score(ex, ["#### 4.0", "it is 1000", "#### 8"], cfg=None)
    assert res.metrics == {"exact_match": 2 / 3, "n_test": 3}
    assert [p["pred_answer"] for p in res.predictions] == ["4", "1000", "8"]
    assert [p["gold_answer"] for p in res.predictions] == ["4", "1000", "7"]


def _cfg(path, **kw) -> DataCfg:
    return DataCfg(task="gsm8k", source="local", path=str(path), **kw)


def test_loader_names_the_file_and_what_was_expected(tmp_path):
    with pytest.raises(DataError, match=r"train\.jsonl: file not found; expected a UTF-8 text file with one"):
        load_benchmark(_cfg(tmp_path), "gsm8k")
    (tmp_path / "train.jsonl").write_text(json.dumps({"question": "q", "answer": "no final line"}) + "\n")
    (tmp_path / "test.jsonl").write_text(json.dumps({"question": "q", "answer": "#### 1"}))
    with pytest.raises(DataError, match=r"train\.jsonl line 1: the answer has no '#### <number>'"):
        load_benchmark(_cfg(tmp_path), "gsm8k")
    with pytest.raises(DataError, match=r"unknown benchmark 'main'; expected one of: gsm8k"):
        load_benchmark(_cfg(tmp_path), "main")
    with pytest.raises(Exception, match=r"data\.source=local needs data\.path"):
        load_config(None, None, ["data.task=gsm8k", "data.source=local"])


def test_real_gsm8k_splits(shared_data):
    s = load_benchmark(_cfg(shared_data / "gsm8k", val_size=200, geometry_size=64), "gsm8k")
    assert s.sizes() == {"train": 7473 - 264, "val": 200, "geometry": 64, "test": 1319}
    assert s.test[0].prompt.startswith("Janet") and final_answer(s.test[0].target) == "18"
    train = {e.prompt for e in s.train}
    assert not train & {e.prompt for e in s.val} and not train & {e.prompt for e in s.geometry}


def test_gsm8k_preset_resolves():
    cfg = load_config("gsm8k")
    assert cfg.data.task == "gsm8k" and cfg.model.kind == "hf" and cfg.audit.benchmarks == ["gsm8k"]
    assert cfg.data.system == get_task("gsm8k").system_prompt


@pytest.mark.slow
def test_whole_gsm8k_path_at_smoke_scale_on_the_cpu(shared_data, tmp_path):
    from jepa_audit.cell import run_cell

    cfg = load_config("smoke", None, [
        "data.task=gsm8k", "data.source=local", f"data.path={shared_data / 'gsm8k'}", "benchmark=gsm8k",
        "aux.method=llm-jepa", "data.max_train=64", "data.max_test=6", "data.val_size=8", "data.geometry_size=16",
        "geometry.n_sequences=8", "train.steps=3", "train.batch_size=4", "eval.max_new_tokens=12",
        "model.max_positions=1024", f"cache_dir={tmp_path / 'cache'}",
    ])  # fmt: skip
    row = run_cell(cfg, tmp_path / "cell")
    assert row["status"] == "done" and row["task"] == "gsm8k" and row["metrics"]["n_test"] == 6
    assert 0.0 <= row["metrics"]["exact_match"] <= 1.0 and [m["name"] for m in row["metric_specs"]] == ["exact_match"]
    items = [json.loads(x) for x in (tmp_path / "cell" / "predictions.jsonl").read_text().splitlines()]
    assert len(items) == 6 and all(i["gold_answer"] is not None and isinstance(i["exact"], bool) for i in items)
    assert row["geometry"] and row["grad_cosine"] is not None  # the two-view auxiliary ran on GSM8K's views
