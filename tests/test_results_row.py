"""The typed results row (jepa_audit.results): DESIGN.md keys checked, extra keys kept, old rows read as NL-RX."""

from __future__ import annotations

import math

import pytest

from jepa_audit.audit.runner import check_row
from jepa_audit.audit.tracking import flat_metrics
from jepa_audit.results import ResultsRow, RowError

ROW = {"benchmark": "synth", "method": "T1", "seed": 82, "mode": "lora", "status": "done", "config_hash": "ab",
       "metrics": {"exact_match": 0.5, "dfa_accuracy": 0.6, "n_test": 10}, "geometry": {"rank_L1": 3.0},
       "grad_cosine": {"mean": 0.1, "per_layer": {"L0": 0.2}}, "wall_s": 1.5, "views": "prefix"}


def test_a_row_without_specs_reads_as_nlrx_and_keeps_its_extra_keys():
    r = ResultsRow.parse(ROW)
    assert r.task == "nlrx" and [s.name for s in r.specs()] == ["exact_match", "dfa_accuracy"]
    assert r.scores() == {"exact_match": 0.5, "dfa_accuracy": 0.6} and r.model_dump()["views"] == "prefix"


def test_declared_specs_decide_which_metrics_must_be_finite():
    row = {**ROW, "task": "scan", "metric_specs": [{"name": "exact_match", "field": "exact"}],
           "metrics": {"exact_match": 0.25, "n_test": 4}}
    assert check_row(row) is None  # no dfa_accuracy needed: SCAN does not declare it
    assert "metrics.dfa_accuracy is None, expected a finite number" in check_row({**ROW, "metrics": {"exact_match": 1}})
    assert "metrics.exact_match is nan" in check_row({**row, "metrics": {"exact_match": math.nan}})


def test_a_malformed_row_names_the_key():
    with pytest.raises(RowError, match=r"key 'benchmark'"):
        ResultsRow.parse({k: v for k, v in ROW.items() if k != "benchmark"})
    assert check_row({**ROW, "seed": [1]}).startswith("results row: key 'seed")


def test_flat_metrics_are_the_finite_numbers_by_flat_name():
    flat = flat_metrics({**ROW, "geometry": {"rank_L1": 3.0, "bad": math.inf}})
    assert flat == {"metrics.exact_match": 0.5, "metrics.dfa_accuracy": 0.6, "metrics.n_test": 10.0,
                    "geometry.rank_L1": 3.0, "grad_cosine.mean": 0.1, "grad_cosine.per_layer.L0": 0.2, "wall_s": 1.5}


def test_as_row_keeps_the_declared_order_then_extra_keys_and_the_values_as_given():
    given = {**ROW, "plugins": {"/p/x.py": "ab12"}, "weight": 0.1, "calibration_smallest": None}
    row = ResultsRow.parse(given).as_row()
    declared = list(ResultsRow.model_fields)
    assert list(row)[: len(declared)] == declared  # results.jsonl lines keep the cell's key order
    assert list(row)[len(declared):] == ["plugins"]  # keys added elsewhere ride along
    assert {k: row[k] for k in given} == given and row["family"] is None  # nothing coerced, absent keys None


def test_a_declared_key_of_the_wrong_type_is_named():
    with pytest.raises(RowError, match=r"key 'target_geometry'"):
        ResultsRow.parse({**ROW, "target_geometry": "curvature"})
