"""The thin CLI: contracts of `aux list --json` and `regex equiv`, and one clear error for bad input."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from jepa_audit.cli import app

runner = CliRunner()


def test_aux_list_json_contract():
    r = runner.invoke(app, ["aux", "list", "--json"])
    assert r.exit_code == 0
    rows = json.loads(r.stdout)
    ids = {x["id"] for x in rows}
    assert {"ce", "llm-jepa", "T3-Local", "V3"} <= ids
    for x in rows:
        assert {"id", "family", "description", "core", "extra_forward", "params"} <= set(x)
    assert sum(x["core"] for x in rows) == 22


def test_aux_list_table_is_one_line_per_objective_at_any_width():
    """80 columns used to wrap the description one word per line; now each objective is one line that fits,
    the description cut with an ellipsis and the least wanted columns dropped (and named) when narrow."""
    from rich.cells import cell_len

    ids = [x["id"] for x in json.loads(runner.invoke(app, ["aux", "list", "--json"]).stdout)]
    for width in (80, 200):
        r = runner.invoke(app, ["aux", "list"], env={"COLUMNS": str(width)})
        assert r.exit_code == 0
        lines = r.stdout.splitlines()
        assert all(cell_len(line) <= width for line in lines)
        body = [line.split() for line in lines if line.split() and line.split()[0] in ids]
        assert [b[0] for b in body] == ids  # each objective exactly once, on its own line, in registry order
        assert len(lines) <= len(ids) + 4  # header, rule and at most a caption: nothing wrapped
        t1 = next(b for b in body if b[0] == "T1")
        assert "curvature:" in t1 and "trajectory" in t1  # description and family on the objective's line
        if width == 80:
            assert "…" in r.stdout and "hidden at this width" in r.stdout
        else:
            assert "grad" in lines[0] and "hidden" not in r.stdout


def test_regex_equiv_json_and_pairs(tmp_path):
    r = runner.invoke(app, ["regex", "equiv", "(dog)|(cat)", "(cat)|(dog)", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["equivalent"] is True
    f = tmp_path / "pairs.tsv"
    f.write_text("a*\ta+\n(a\tb\n", encoding="utf-8")
    r = runner.invoke(app, ["regex", "equiv", "--pairs", str(f), "--json"])
    assert r.exit_code == 0
    out = [json.loads(x) for x in r.stdout.splitlines() if x.strip()]
    assert out[0]["line"] == 0 and out[0]["equivalent"] is False and out[0]["witness"] == ""
    assert out[1]["equivalent"] is None and out[1]["error"]
    r = runner.invoke(app, ["regex", "equiv", "--pairs", str(tmp_path / "missing.tsv")])
    assert r.exit_code != 0


def test_bad_config_is_one_clear_error(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("trian:\n  steps: 3\n")
    r = runner.invoke(app, ["audit", "--config", str(f), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2
    assert "unknown key 'trian'" in r.output and str(f) in r.output
    assert "Traceback" not in r.output


def test_missing_data_path_is_one_clear_error(tmp_path):
    r = runner.invoke(app, ["audit", "--preset", "smoke", "--out", str(tmp_path / "o"), "--set", "data.source=nl-rx",
                            "--set", f"data.path={tmp_path / 'nowhere'}"])
    assert r.exit_code == 2 and "nowhere" in r.output and "Traceback" not in r.output


def test_data_fetch_refuses_and_points_to_local_path():
    r = runner.invoke(app, ["data", "fetch"])
    assert r.exit_code == 2 and "data.path" in r.output


@pytest.mark.slow
def test_aux_calibrate_runs_the_audit_stage_on_validation(tmp_path):
    sets = ["data.n_train=120", "data.n_test=10", "data.val_size=16", "base.steps=2", "base.pool_size=200",
            "model.vocab_size=300", "train.steps=2", "train.batch_size=8", f"cache_dir={tmp_path}",
            "audit.benchmarks=[synth]", "calibration.doses=[0.001, 1.0]", "calibration.val_rows=8",
            "eval.max_new_tokens=16"]
    args = ["aux", "calibrate", "T2", "--out", str(tmp_path / "cal")] + [x for s in sets for x in ("--set", s)]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout[r.stdout.index("{"):])
    entry = out["synth/T2/lora"]
    assert [g["dose_target"] for g in entry["grid"]] == [0.001, 1.0]
    assert entry["pick"]["weight"] in [g["weight"] for g in entry["grid"]]
    assert json.loads((tmp_path / "cal" / "calibration.json").read_text())["pairs"]["synth/T2/lora"] == entry
