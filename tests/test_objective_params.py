"""Objective hyper-parameters are typed per objective body (objectives/params.py): the built-ins declare a
model, variants are parameter sets of one body, and a bad value is refused when the config loads, naming the
config key, before any compute."""

from __future__ import annotations

import inspect
from typing import ClassVar

import pytest
from pydantic import Field, ValidationError

from jepa_audit.config import ConfigError
from jepa_audit.objectives import (
    AuxContext,
    AuxOut,
    Objective,
    ObjectiveParams,
    ObjectiveSpec,
    ParamsError,
    build_objective,
    get_objective_class,
    register_objective,
    registry,
    spec_rows,
)
from jepa_audit.objectives import base as objectives_base
from jepa_audit.objectives.params import derived_model, describe_type
from jepa_audit.plugins import load_config


def test_every_built_in_declares_a_parameter_model_that_its_defaults_fit():
    for oid, cls in registry().items():
        if objectives_base.origin_of(oid) != "built-in":
            continue
        assert cls.Params is not None, f"{oid} declares no Params model"
        assert issubclass(cls.Params, ObjectiveParams)
        assert set(cls.Params.model_fields) == set(cls.spec.params), oid
        typed = cls.Params.model_validate(cls.spec.params)
        assert typed.as_dict() == cls.spec.params, f"{oid}: validation must not change its defaults"


@pytest.mark.parametrize("ids", [("T1", "T2"), ("T3-Global", "T3-Local"), ("P1", "P6", "P8")])
def test_variants_are_parameter_sets_of_one_body(ids):
    classes = [get_objective_class(i) for i in ids]
    bodies = {c.__mro__[1] for c in classes}
    assert len(bodies) == 1, f"{ids} should share one body, got {bodies}"
    (body,) = bodies
    assert all(c.forward is body.forward and c.Params is body.Params for c in classes)
    assert "spec" not in vars(body)  # the body holds no id: each variant's spec is its parameter set
    assert len({tuple(sorted(c.spec.params.items())) for c in classes}) == len(ids)
    # the variants are module attributes under their class names, so pickle finds them
    module = inspect.getmodule(body)
    assert all(getattr(module, c.__name__) is c for c in classes)


def test_the_objective_reads_typed_values():
    obj = build_objective("T3-Local", {"max_span": 3.0, "times": "2"}, d_model=16, n_layers=2, seed=0)
    assert obj.p.max_span == 3 and isinstance(obj.p.max_span, int) and obj.p.times == 2
    assert obj.p["max_span"] == 3 and obj.p.get("nope", "d") == "d"  # the dict reading plugins may use
    with pytest.raises(KeyError):
        obj.p["nope"]
    obj = build_objective("D1", {"gamma": 2}, d_model=16, n_layers=2, seed=0)
    assert obj.p.gamma == 2.0 and isinstance(obj.p.gamma, float)
    with pytest.raises(ValidationError, match="frozen"):  # parameters do not change under a running objective
        obj.p.gamma = 3.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("method", "params", "expected"),
    [
        ("T3-Local", {"max_span": "two"}, r"params\.max_span: Input should be a valid integer.*'two'"),
        ("T1", {"form": "cosine"}, r"params\.form: Input should be 'angle' or 'one_minus_cos'"),
        ("T1", {"eps": 0}, r"params\.eps: Input should be greater than 0"),
        ("P3", {"tau_base": 1.5}, r"params\.tau_base: Input should be less than or equal to 1"),
        ("P1", {"layer": "top"}, r"params\.layer"),
        ("llm-jepa", {"k": -1}, r"params\.k: Input should be greater than or equal to 0"),
        ("D5", {"slices": 0}, r"params\.slices"),
        ("P1", {"lyer": "mid"}, r"unknown parameter; expected one of direction, layer, stop_grad"),
        ("V3", {"inner": "V9"}, r"params\.inner: unknown objective 'V9'"),
        ("V3", {"inner": "V4"}, r"params\.inner: objective 'V4' has its own grad_mode 'gate'"),
        ("V3", {"inner_params": {"temperature": -1}}, r"params\.inner_params\.temperature: Input should be greater"),
    ],
)
def test_a_bad_parameter_is_one_error_naming_the_objective_and_the_key(method, params, expected):
    with pytest.raises(ParamsError, match=rf"objective {method}: invalid parameter\(s\):\n(.|\n)*{expected}"):
        build_objective(method, params, d_model=16, n_layers=2, seed=0)


def test_the_config_is_refused_at_load_naming_the_config_key():
    with pytest.raises(ConfigError) as e:
        load_config("smoke", None, ["aux.method=T3-Local", "aux.params.times=0"])
    assert "aux.params.times (objective T3-Local): Input should be greater than 0 (got 0)" in str(e.value)
    with pytest.raises(ConfigError) as e:  # a per-method override names its own key
        load_config("smoke", None, ["audit.methods=[ce, P1, P8]", "aux.per_method.P8.params.layer=middle"])
    assert "aux.per_method.P8.params.layer (objective P8)" in str(e.value) and "P1" not in str(e.value)
    with pytest.raises(ConfigError) as e:  # every method of the grid, not only aux.method
        load_config("smoke", None, ["audit.methods=[ce, T1, D1]", "aux.params.form=angle"])
    assert "aux.params.form (objective D1): unknown parameter" in str(e.value)
    assert "objective T1" not in str(e.value)  # T1 has a form
    with pytest.raises(ConfigError, match=r"aux\.per_method\.V3\.params\.inner_params\.top_k \(objective V3\)"):
        load_config("smoke", None, ["audit.methods=[ce, V3]", "aux.per_method.V3.params.inner_params.top_k=-2"])


def test_valid_parameters_load_as_written_and_leave_the_cell_hash_alone():
    from jepa_audit.config import load_config as load_unchecked

    args = ("smoke", None, ["audit.methods=[ce, T3-Local, T1]", "aux.per_method.T1.params.eps=1e-5"])
    checked, raw = load_config(*args), load_unchecked(*args)
    # the check reads the config and changes nothing in it: the values (YAML's string "1e-5" included, which
    # the objective reads as a float) and so the cells' hashes are those of the unchecked config
    assert checked.aux.per_method["T1"].params == raw.aux.per_method["T1"].params == {"eps": "1e-5"}
    for m in ("ce", "T3-Local", "T1"):
        assert checked.cell("synth", m, 0, "lora").cell_hash() == raw.cell("synth", m, 0, "lora").cell_hash()
    assert build_objective("T1", {"eps": "1e-5"}, 16, 2, 0).p.eps == 1e-5
    cfg = load_config("replicate-llm-jepa")  # per_method llm-jepa k = 1 fits LlmJepaParams
    assert cfg.aux.per_method["llm-jepa"].params == {"k": 1}


def test_a_spec_whose_defaults_do_not_fit_its_model_is_refused_at_registration():
    class Typed(Objective):
        class Params(ObjectiveParams):
            width: int = Field(gt=0)

        spec: ClassVar[ObjectiveSpec] = ObjectiveSpec(
            id="test-typed", family="distributional", description="x", params={"width": 0}
        )

        def forward(self, ctx: AuxContext) -> AuxOut:  # pragma: no cover - never built
            raise NotImplementedError

    with (
        pytest.raises(ValueError, match=r"test-typed: spec.params does not fit Params: width: Input should be"),
        objectives_base.open_for_plugin("test"),
    ):
        register_objective(Typed)
    assert "test-typed" not in registry()


def test_an_objective_without_a_model_gets_one_from_its_defaults():
    model = derived_model("my x", {"layer": -1, "scale": 1.0, "name": "a", "on": True, "grid": [1, 2]})
    assert {n: describe_type(model, n) for n in model.model_fields} == {
        "layer": "int", "scale": "float", "name": "str", "on": "bool", "grid": "any",
    }  # fmt: skip
    assert model.model_validate({"scale": 2}).scale == 2.0  # an int is a float
    with pytest.raises(ValidationError, match="valid integer"):
        model.model_validate({"layer": "last"})
    with pytest.raises(ValidationError, match="Extra inputs"):
        model.model_validate({"layr": 1})


def test_aux_list_json_states_each_parameter_type():
    rows = {r["id"]: r for r in spec_rows()}
    assert rows["T3-Local"]["param_types"] == {
        "layer": 'int | "last" | "mid" | "quarter"', "max_span": "int", "times": "int > 0",
    }  # fmt: skip
    assert rows["V5"]["param_types"]["phi_target"] == "float in (-1, 1)"
    assert rows["ce"]["param_types"] == {}


def test_aux_check_refuses_a_bad_param_once_naming_it():
    from typer.testing import CliRunner

    from jepa_audit.cli import app

    r = CliRunner().invoke(app, ["aux", "check", "T1", "--param", "form=cos"])
    assert r.exit_code == 2 and "PASS" not in r.output and "FAIL" not in r.output
    assert "objective T1: invalid parameter(s):" in r.output and "--param.form: Input should be 'angle'" in r.output
