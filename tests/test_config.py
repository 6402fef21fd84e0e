"""Config: presets, files, --set overrides, errors that name the key and the file, a stable hash."""

from __future__ import annotations

import re

import pytest

from jepa_audit.config import PRESETS, ConfigError, load_config


def test_defaults_and_override_types():
    cfg = load_config(None, None, ["train.steps=7", "aux.method=T1", "train.lr=1e-3", "audit.seeds=[1, 2]"])
    assert cfg.train.steps == 7 and cfg.aux.method == "T1"
    assert cfg.train.lr == pytest.approx(1e-3)
    assert cfg.audit.seeds == [1, 2]


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_validates(preset):
    cfg = load_config(preset)
    assert cfg.preset == preset
    assert cfg.audit.methods and cfg.audit.seeds


def test_unknown_key_in_file_names_key_and_file(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("train:\n  stepz: 3\n")
    with pytest.raises(ConfigError) as e:
        load_config(None, f)
    assert "train.stepz" in str(e.value) and str(f) in str(e.value)


def test_wrong_type_names_key():
    with pytest.raises(ConfigError, match="train.steps"):
        load_config(None, None, ["train.steps=many"])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(None, tmp_path / "nope.yaml")
    f = tmp_path / "broken.yaml"
    f.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(None, f)


def test_unknown_preset_and_bad_override():
    with pytest.raises(ConfigError, match="unknown preset"):
        load_config("nope")
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, None, ["train.steps"])


def test_cross_field_checks():
    with pytest.raises(ConfigError, match="model.path"):
        load_config(None, None, ["model.kind=hf"])
    with pytest.raises(ConfigError, match="data.path"):
        load_config(None, None, ["data.source=nl-rx"])


def test_cell_hash_is_stable_and_sensitive():
    a = load_config("smoke").cell("synth", "T1", 82, "lora")
    b = load_config("smoke").cell("synth", "T1", 82, "lora")
    assert a.cell_hash() == b.cell_hash()
    assert a.cell_hash() != load_config("smoke").cell("synth", "T1", 23, "lora").cell_hash()
    assert a.cell_hash() != load_config("smoke", None, ["train.lr=0.5"]).cell("synth", "T1", 82, "lora").cell_hash()
    # where caches live and how the grid is executed do not change a cell's result
    c = load_config("smoke", None, ["cache_dir=/tmp/elsewhere", "audit.workers=1"]).cell("synth", "T1", 82, "lora")
    assert a.cell_hash() == c.cell_hash()


# --------------------------------------------------------------------------------- #28.4: inf, nan, bad YAML


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("aux.weight=inf", "aux.weight"), ("train.lr=inf", "train.lr"), ("aux.weight=.inf", "aux.weight"),
        ("train.lr=-.inf", "train.lr"), ("aux.params.k=.nan", "aux.params.k"),
        ("calibration.doses=[0.001,.inf]", "calibration.doses[1]"), ("eval.dfa_time_budget_s=inf", "eval.dfa_time_budget_s"),
    ],
)  # fmt: skip
def test_non_finite_numbers_are_refused_everywhere(override, key):
    with pytest.raises(ConfigError, match=rf"key '{re.escape(key)}'.*finite number"):
        load_config(overrides=[override])


def test_non_finite_assignment_is_refused():
    from pydantic import ValidationError

    cfg = load_config()
    with pytest.raises(ValidationError, match="finite number"):
        cfg.aux.weight = float("inf")


def test_bad_yaml_is_one_line_with_file_line_and_column(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  steps: 3\n  lr: [1, 2\nfoo: bar\n")
    with pytest.raises(ConfigError) as e:
        load_config(file=bad)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"config file {bad} is not valid YAML: line 4, column 4: ")
