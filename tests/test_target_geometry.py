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
