"""The ``jsonl`` task: one's own data from one YAML (pair or chat lines), its match modes, its errors, and
LLM-JEPA's chat-form NL-RX files read and scored exactly as the built-in nlrx task does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import SHARED_DATA
from jepa_audit.cli import app
from jepa_audit.config import ConfigError, EvalCfg, load_config
from jepa_audit.data import DataError
from jepa_audit.tasks import get_task, load_benchmark
from jepa_audit.tasks.jsonl import matches

NLRX_JSONL = SHARED_DATA / "llm-jepa-nlrx"
EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "jsonl-nlrx.yaml"
runner = CliRunner()


def _lines(path: Path, rows: list) -> None:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")


def _cfg(path: Path, *sets: str):
    return load_config(None, None, ["data.task=jsonl", "data.source=local", f"data.path={path}", "data.val_size=1",
                                    "data.geometry_size=1", *sets])  # fmt: skip


def _chat(u: str, a: str, system: str | None = None) -> dict:
    msgs = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": u}, {"role": "assistant", "content": a}]  # fmt: skip
    return {"messages": msgs}


def test_pair_and_chat_lines_with_the_datas_system_turn_winning(tmp_path):
    _lines(tmp_path / "train.jsonl", [{"prompt": f"p{i}", "target": f"t{i}", "id": i} for i in range(4)]
           + [_chat("chat user", "chat answer", system="data system")])  # fmt: skip
    _lines(tmp_path / "test.jsonl", [_chat("q", "a"), {"prompt": "x", "target": "y"}])
    cfg = _cfg(tmp_path, "data.system_prompt=config system")
    s = load_benchmark(cfg.data, "jsonl")
    assert (len(s.train), len(s.val), len(s.geometry), len(s.test)) == (3, 1, 1, 2)
    assert [(e.prompt, e.target) for e in s.test] == [("q", "a"), ("x", "y")] and [e.idx for e in s.test] == [0, 1]
    task = get_task("jsonl")
    every = s.train + s.val + s.geometry
    chat = next(e for e in every if e.prompt == "chat user")
    assert task.messages(chat, cfg.data.system) == [
        {"role": "system", "content": "data system"}, {"role": "user", "content": "chat user"},
        {"role": "assistant", "content": "chat answer"}]  # fmt: skip
    pair = next(e for e in every if e.prompt == "p0")
    assert task.messages(pair, cfg.data.system, answer=False) == [
        {"role": "system", "content": "config system"}, {"role": "user", "content": "p0"}]  # fmt: skip
    assert task.messages(pair, "", answer=False) == [{"role": "user", "content": "p0"}]  # no system by default
    assert task.stats(s)["rows_read"] == {"train.jsonl": 5, "test.jsonl": 2}


def test_named_benchmark_own_fields_and_validation_file(tmp_path):
    _lines(tmp_path / "tr.jsonl", [{"q": f"p{i}", "a": f"t{i}"} for i in range(6)])
    _lines(tmp_path / "te.jsonl", [{"q": "x", "a": "y"}])
    _lines(tmp_path / "va.jsonl", [{"q": "v0", "a": "w0"}, {"q": "v1", "a": "w1"}])
    sets = ["data.train_file=tr.jsonl", "data.test_file=te.jsonl", "data.validation_file=va.jsonl",
            "data.prompt_field=q", "data.target_field=a", "data.name=mine", "audit.benchmarks=[mine]"]  # fmt: skip
    cfg = _cfg(tmp_path, *sets)
    assert get_task("jsonl").benchmark_names(cfg.data) == ("mine",)
    s = load_benchmark(cfg.data, "mine")
    assert [e.prompt for e in s.val] == ["v0"]  # the first data.val_size rows of the validation file
    assert len(s.train) == 5 and len(s.geometry) == 1  # nothing carved for val: all train but the geometry row
    with pytest.raises(DataError, match=r"unknown benchmark 'jsonl'; the jsonl task's one benchmark is 'mine'"):
        load_benchmark(cfg.data, "jsonl")

    r = runner.invoke(app, ["data", "stats", *[x for s in sets for x in ("--set", s)], "--set", "data.task=jsonl",
                            "--set", "data.source=local", "--set", f"data.path={tmp_path}",
                            "--set", "data.val_size=1", "--set", "data.geometry_size=1"])  # fmt: skip
    assert r.exit_code == 0, r.output
    stats = json.loads(r.stdout)["mine"]
    assert stats["rows_read"] == {"tr.jsonl": 6, "te.jsonl": 1, "va.jsonl": 2} and stats["n_test"] == 1


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("{not json", r"test.jsonl line 2: not valid JSON"),
        ('["a", "b"]', r"test.jsonl line 2: expected one JSON object per line.*got a JSON list"),
        ('{"prompt": "x"}', r"test.jsonl line 2: no string field 'target'"),
        ('{"prompt": "x", "target": "  "}', r"test.jsonl line 2: the target is empty"),
        (json.dumps({"messages": [{"role": "user", "content": "x"}]}), r"line 2: the chat has no assistant turn"),
        (json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                                  {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]}),
         r"line 2: expected one user turn before the last assistant turn, found 2 \(multi-turn"),
        (json.dumps({"messages": [{"role": "bot", "content": "x"}]}), r"line 2: message 0 must be"),
    ],
)  # fmt: skip
def test_a_malformed_line_is_named_by_file_and_line(tmp_path, line, expected):
    _lines(tmp_path / "train.jsonl", [{"prompt": f"p{i}", "target": f"t{i}"} for i in range(4)])
    _lines(tmp_path / "test.jsonl", [{"prompt": "ok", "target": "ok"}, line])
    with pytest.raises(DataError, match=expected) as e:
        load_benchmark(_cfg(tmp_path).data, "jsonl")
    assert str(tmp_path / "test.jsonl") in str(e.value)


def test_missing_files_and_settings_are_named(tmp_path):
    with pytest.raises(DataError, match=r"train.jsonl: file not found"):
        load_benchmark(_cfg(tmp_path).data, "jsonl")
    with pytest.raises(ConfigError, match=r"data.match"):
        _cfg(tmp_path, "data.match=fuzzy")
    with pytest.raises(ConfigError, match=r"data.source='embedded' is not a source of task jsonl"):
        load_config(None, None, ["data.task=jsonl"])
    _lines(tmp_path / "train.jsonl", [{"prompt": f"p{i}", "target": f"{i} apples"} for i in range(4)])
    _lines(tmp_path / "test.jsonl", [{"prompt": "x", "target": "none"}])
    with pytest.raises(DataError, match=r"test.jsonl line 1: data.match=numeric but the target has no number"):
        load_benchmark(_cfg(tmp_path, "data.match=numeric").data, "jsonl")


def test_match_modes():
    assert matches(" a*b ", "a*b", "exact") and not matches("A*B", "a*b", "exact") and not matches("a * b", "a*b", "exact")
    assert matches("  Hello   World ", "hello world", "normalised") and matches("ｈｅｌｌｏ", "hello", "normalised")
    assert not matches("hello world!", "hello world", "normalised")
    assert matches("so the answer is 1,234.50", "#### 1234.5", "numeric") and matches("18.00", "18", "numeric")
    assert not matches("no number", "18", "numeric") and not matches("17", "18", "numeric")


def test_scoring_follows_data_match(tmp_path):
    _lines(tmp_path / "train.jsonl", [{"prompt": f"p{i}", "target": f"{i} apples"} for i in range(4)])
    _lines(tmp_path / "test.jsonl", [{"prompt": "x", "target": "Total: 12 apples"}, {"prompt": "y", "target": "3"}])
    preds = ["12", "Total:  12 APPLES"]
    for match, want in (("exact", 0.0), ("normalised", 0.0), ("numeric", 0.5)):
        s = load_benchmark(_cfg(tmp_path, f"data.match={match}").data, "jsonl")
        res = get_task("jsonl").score(s.test, preds, EvalCfg())
        assert res.metrics["exact_match"] == want, match
        assert set(res.predictions[0]) == {"item", "prompt", "gold", "pred", "exact"}
    s = load_benchmark(_cfg(tmp_path, "data.match=normalised").data, "jsonl")
    assert get_task("jsonl").score(s.test, ["total: 12 apples", "3"], EvalCfg()).metrics["exact_match"] == 1.0


# ----------------------------------------------------------------------------------------------------------
# LLM-JEPA's NL-RX files (../shared/data/llm-jepa-nlrx)
# ----------------------------------------------------------------------------------------------------------

needs_nlrx = pytest.mark.skipif(
    not (NLRX_JSONL / "synth_test.jsonl").is_file(), reason=f"needs LLM-JEPA's NL-RX jsonl files in {NLRX_JSONL}"
)


@needs_nlrx
def test_the_example_yaml_reads_llm_jepa_nlrx_as_the_nlrx_task_does(monkeypatch):
    """Same rows in the same order (train, val, geometry, test) as nlrx's own reader of these files, and a
    set of predictions scores the same item by item under exact match."""
    monkeypatch.chdir(EXAMPLE.parents[2])  # data.path in the example is relative to the repository root
    cfg = load_config(None, EXAMPLE, ["data.max_train=1000", "data.max_test=400"])
    mine = load_benchmark(cfg.data, "nlrx-synth")
    ref_cfg = load_config(None, None, ["data.source=nl-rx", f"data.path={NLRX_JSONL}", "data.max_train=1000",
                                       "data.max_test=400", "data.val_size=64", "data.geometry_size=64"])  # fmt: skip
    ref = load_benchmark(ref_cfg.data, "synth")
    for part in ("train", "val", "geometry", "test"):
        a, b = getattr(mine, part), getattr(ref, part)
        assert [(e.prompt, e.target, e.idx) for e in a] == [(e.prompt, e.target, e.idx) for e in b], part
    assert mine.test[0].system == "Convert natural language to regular expression."  # the data's own turn

    # predictions: gold, gold padded with whitespace, inner space, case change, another row's regex, empty
    test = mine.test
    preds = []
    for i, e in enumerate(test):
        preds.append([e.target, f"  {e.target}\n", e.target.replace("(", "( ", 1), e.target.upper(),
                      test[(i + 1) % len(test)].target, ""][i % 6])  # fmt: skip
    got = get_task("jsonl").score(test, preds, cfg.eval)
    want = get_task("nlrx").score(ref.test, preds, ref_cfg.eval)
    assert [it["exact"] for it in got.predictions] == [it["exact"] for it in want.predictions]
    assert got.metrics["exact_match"] == want.metrics["exact_match"]
    assert 0.0 < got.metrics["exact_match"] < 1.0


@needs_nlrx
@pytest.mark.slow
def test_the_example_yaml_audits_llm_jepa_nlrx(tmp_path, monkeypatch):
    from jepa_audit.audit import run_audit

    monkeypatch.chdir(EXAMPLE.parents[2])
    cfg = load_config(None, EXAMPLE, ["audit.methods=[ce, T1]", "audit.seeds=[82]", "train.steps=10",
                                      "data.max_train=200", "data.max_test=30", "eval.max_new_tokens=24",
                                      "model.vocab_size=128", f"cache_dir={tmp_path / 'cache'}"])  # fmt: skip
    out = tmp_path / "audit"
    assert run_audit(cfg, out, workers=1, live=False) == 0
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines() if x.strip()]
    assert sorted(r["method"] for r in rows) == ["T1", "ce"]
    assert all(r["task"] == "jsonl" and r["benchmark"] == "nlrx-synth" and r["metrics"]["n_test"] == 30 for r in rows)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "jsonl" and {c["benchmark"] for c in summary["comparisons"]} == {"nlrx-synth"}
