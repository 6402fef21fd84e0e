"""Every objective's declared target geometry resolves to a key that every results row logs."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from jepa_audit.cli import app
from jepa_audit.geometry import expected_keys
from jepa_audit.objectives import registry
from jepa_audit.objectives.base import resolve_target_key


@pytest.mark.parametrize("layers", [[1, 2], [4, 8, 12, 16]])
def test_every_target_resolves_to_a_logged_key(layers):
    keys = expected_keys(layers)
    for oid, cls in registry().items():
        for t in cls.spec.target_geometry:
            assert resolve_target_key(t, keys) in keys, (oid, t, layers)
        if cls.spec.core:
            assert cls.spec.target_geometry, f"core objective {oid} declares no target geometry"


def test_resolve_layer_suffixes():
    keys = ["std_mean_L4", "std_mean_L8", "std_mean_L12", "std_mean_L16", "jepa_cos"]
    assert resolve_target_key("std_mean_Llast", keys) == "std_mean_L16"
    assert resolve_target_key("std_mean_Lmid", keys) == "std_mean_L8"
    assert resolve_target_key("jepa_cos", keys) == "jepa_cos"
    assert resolve_target_key("anisotropy_Llast", keys) is None


def test_aux_list_json_has_target_geometry():
    res = CliRunner().invoke(app, ["aux", "list", "--json"])
    assert res.exit_code == 0
    rows = {r["id"]: r for r in json.loads(res.stdout)}
    assert rows["T1"]["target_geometry"] == ["curvature_answer_Llast"]
    assert rows["V1"]["target_geometry"] == ["v1_kl"] and rows["ce"]["target_geometry"] == []


def test_aux_list_json_has_a_direction_for_every_target():
    """Every registered objective declares increase/decrease/either for each target_geometry template, and
    `aux list --json` shows it as target_direction with the same keys."""
    res = CliRunner().invoke(app, ["aux", "list", "--json"])
    assert res.exit_code == 0
    rows = {r["id"]: r for r in json.loads(res.stdout)}
    for oid, r in rows.items():
        assert set(r["target_direction"]) == set(r["target_geometry"]), oid
        assert set(r["target_direction"].values()) <= {"increase", "decrease", "either"}, oid
    assert rows["P2"]["target_direction"] == {"jepa_cos": "increase"}  # P2/P3 aim to raise jepa_cos
    assert rows["T1"]["target_direction"] == {"curvature_answer_Llast": "decrease"}
    assert rows["D1"]["target_direction"] == {"std_mean_Llast": "increase"}


def test_objective_spec_refuses_a_missing_or_bad_direction():
    from jepa_audit.objectives.base import ObjectiveSpec

    with pytest.raises(ValueError, match="must name each target_geometry key"):
        ObjectiveSpec(id="X", family="trajectory", description="x", target_geometry=("jepa_cos",))
    with pytest.raises(ValueError, match="expected one of"):
        ObjectiveSpec(id="X", family="trajectory", description="x", target_geometry=("jepa_cos",),
                      target_direction={"jepa_cos": "up"})  # type: ignore[dict-item]
