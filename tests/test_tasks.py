"""The task registry: NL-RX behind it, `tasks list`, the data.task selector and what it leaves alone."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from jepa_audit.cli import app
from jepa_audit.config import ConfigError, DataCfg, EvalCfg, load_config
from jepa_audit.data import Example
from jepa_audit.tasks import MetricSpec, get_task, list_tasks, metric_specs_of_row


def test_nlrx_is_registered_with_its_metrics_primary_first():
    t = get_task("nlrx")
    assert "nlrx" in list_tasks() and t.benchmarks == ("synth", "turk")
    assert [m.name for m in t.metrics] == ["exact_match", "dfa_accuracy"]
    assert [m.field for m in t.metrics] == ["exact", "dfa"] and all(m.higher_is_better for m in t.metrics)
    assert DataCfg().system == t.system_prompt == "Convert natural language to regular expression."


def test_unknown_task_is_one_config_error_naming_the_key_and_the_known_tasks():
    with pytest.raises(ConfigError, match=r"data\.task.*unknown task 'nlx'.*did you mean 'nlrx'.*expected one of"):
        load_config("smoke", None, ["data.task=nlx"])


def test_a_source_the_task_does_not_offer_is_a_config_error():
    with pytest.raises(ConfigError, match=r"data\.source='scan' is not a source of task nlrx; expected one of: "
                                          r"embedded, nl-rx"):
        load_config("smoke", None, ["data.source=scan"])


def test_the_task_selector_and_system_prompt_leave_nlrx_hashes_alone():
    a = load_config("smoke").cell("synth", "T1", 82, "lora")
    explicit = load_config("smoke", None, ["data.task=nlrx", f"data.system_prompt={a.data.system}"])
    assert explicit.cell("synth", "T1", 82, "lora").cell_hash() == a.cell_hash()
    other = load_config("smoke", None, ["data.system_prompt=Write a regex."]).cell("synth", "T1", 82, "lora")
    assert other.cell_hash() != a.cell_hash()


def test_nlrx_scoring_counts_parse_errors_and_keeps_its_item_fields():
    ex = [Example("lines with dog", ".*dog.*", 0), Example("a digit", "[0-9]", 1), Example("x", "x", 2)]
    res = get_task("nlrx").score(ex, [" .*dog.* ", "([0-9])", "(("], EvalCfg())
    assert res.metrics == {"exact_match": 1 / 3, "dfa_accuracy": 2 / 3, "n_test": 3, "n_parse_errors": 1,
                           "n_undecided": 0}
    assert list(res.predictions[0]) == ["item", "nl", "gold", "pred", "exact", "dfa", "parse_error"]
    assert res.predictions[2]["parse_error"].startswith("parse error")


def test_rows_without_metric_specs_read_as_nlrx():
    assert [m.name for m in metric_specs_of_row({})] == ["exact_match", "dfa_accuracy"]
    row = {"metric_specs": [MetricSpec("accuracy", "correct").as_dict()]}
    assert metric_specs_of_row(row) == (MetricSpec("accuracy", "correct"),)


def test_tasks_list_json_describes_every_task():
    res = CliRunner().invoke(app, ["tasks", "list", "--json"])
    assert res.exit_code == 0, res.output
    rows = {r["name"]: r for r in json.loads(res.output)}
    assert rows["nlrx"]["benchmarks"] == ["synth", "turk"] and rows["nlrx"]["pretraining_pool"] is True
    assert rows["nlrx"]["metrics"][0] == {"name": "exact_match", "field": "exact", "higher_is_better": True,
                                          "description": rows["nlrx"]["metrics"][0]["description"]}
    plain = CliRunner().invoke(app, ["tasks", "list"])
    assert plain.exit_code == 0 and "nlrx:" in plain.output and "exact_match, dfa_accuracy" in plain.output


def test_a_task_renders_its_own_prompt_and_target_views():
    from jepa_audit.data.tokenizer import train_tiny_tokenizer
    from jepa_audit.data.views import encode_example

    class Framed(type(get_task("nlrx"))):  # NL-RX with framed views (not registered)
        def prompt_view(self, ex):
            return f"Q: {ex.prompt}"

        def target_view(self, ex):
            return f"A: {ex.target}"

    tok = train_tiny_tokenizer(["Q: lines with dog", "A: .*dog.*", "sys"] * 20, 300)
    ex = Example("lines with dog", ".*dog.*", 0)
    e = encode_example(tok, "sys", ex, task=Framed())
    assert tok.decode(e.full[e.nl_start : e.nl_last + 1]) == "Q: lines with dog"  # the prompt view's span
    assert tok.decode(e.target_view[: e.target_last + 1]).endswith("A: .*dog.*")
    plain = encode_example(tok, "sys", ex)
    assert tok.decode(plain.full[plain.nl_start : plain.nl_last + 1]) == "lines with dog"
    assert Framed().messages(ex, "sys", answer=False)[-1] == {"role": "user", "content": "Q: lines with dog"}


def test_the_dry_run_reads_test_rows_from_the_task_not_from_nlrx_names(tmp_path):
    """The time estimate asks the task how many test rows each benchmark has (Task.test_rows) instead of branching
    on NL-RX's split names: NL-RX knows its sizes (embedded: data.n_test; nl-rx: 2,000 / 2,500 per split policy);
    SCAN, GSM8K and jsonl count the lines of their test file; a task that cannot say (no data yet) answers None
    and the estimate assumes UNKNOWN_TEST_ROWS. The cell's eval time is the mean over the grid's benchmarks."""
    from jepa_audit.audit.runner import UNKNOWN_TEST_ROWS, estimate_cell_s

    nlrx = get_task("nlrx")
    assert nlrx.test_rows(DataCfg(n_test=37), "synth") == 37
    assert nlrx.test_rows(DataCfg(source="nl-rx", path=str(tmp_path)), "turk") == 2000
    assert nlrx.test_rows(DataCfg(source="nl-rx", path=str(tmp_path), split="deep-regex"), "synth") == 2500
    scan = DataCfg(task="scan", source="local", path=str(tmp_path))
    assert get_task("scan").test_rows(scan, "length") is None  # not there yet
    (tmp_path / "length_split").mkdir()
    (tmp_path / "length_split" / "tasks_test_length.txt").write_text("IN: a OUT: b\n\nIN: c OUT: d\n" * 5)
    assert get_task("scan").test_rows(scan, "length") == 10 and get_task("scan").test_rows(scan, "simple") is None
    (tmp_path / "test.jsonl").write_text('{"question": "q", "answer": "#### 1"}\n' * 7)
    assert get_task("gsm8k").test_rows(DataCfg(task="gsm8k", source="local", path=str(tmp_path)), "gsm8k") == 7
    assert get_task("jsonl").test_rows(DataCfg(task="jsonl", source="local", path=str(tmp_path)), "jsonl") == 7

    def eval_s(*sets: str) -> float:
        return estimate_cell_s(load_config("smoke", None, ["eval.batch_size=1", *sets]), 1.0)[1]

    per_row = eval_s("data.n_test=1")
    assert eval_s("data.n_test=37") == pytest.approx(37 * per_row)
    assert eval_s("data.n_test=37", "data.max_test=5") == pytest.approx(5 * per_row)
    on_scan = ("data.task=scan", "data.source=local", f"data.path={tmp_path}")
    assert eval_s(*on_scan, "audit.benchmarks=[length]") == pytest.approx(10 * per_row)
    assert eval_s(*on_scan, "audit.benchmarks=[simple]") == pytest.approx(UNKNOWN_TEST_ROWS * per_row)
    assert eval_s(*on_scan, "audit.benchmarks=[length, simple]") == pytest.approx(
        (10 + UNKNOWN_TEST_ROWS) / 2 * per_row)


def test_a_task_may_write_a_stand_in_of_its_data(tmp_path):
    """`rehearse` runs a task without generated data on a stand-in in its own format (Task.stand_in_data): GSM8K's
    loads through its own loader; a task without one answers None."""
    from jepa_audit.tasks import load_benchmark

    root = get_task("gsm8k").stand_in_data(tmp_path / "gsm8k")
    splits = load_benchmark(DataCfg(task="gsm8k", source="local", path=str(root), val_size=10, geometry_size=5), "gsm8k")
    assert (len(splits.train), len(splits.val), len(splits.geometry), len(splits.test)) == (885, 10, 5, 24)
    assert all(e.target.rsplit("#### ", 1)[1].isdigit() for e in splits.test)
    assert get_task("scan").stand_in_data(tmp_path / "scan") is None and not (tmp_path / "scan").exists()
