"""Dose: λ·‖∇aux‖/‖∇CE‖ from the probe's own gradients, and the step-0 anchoring used by the λ calibration."""

from __future__ import annotations

import pytest

from jepa_audit.cell import prepare
from jepa_audit.config import load_config
from jepa_audit.objectives import build_objective
from jepa_audit.train import dose_summary, train

SMALL = [
    "data.n_train=160", "data.n_test=20", "data.val_size=16", "base.pool_size=300", "model.vocab_size=300",
    "base.steps=1", "train.steps=6", "train.batch_size=8", "probe.every=2",
]


def test_dose_summary_formulas():
    d = dose_summary([(0, 2.0, 4.0), (2, 1.0, 1.0), (4, 3.0, 1.0), (6, 1.0, 0.0)], weight=0.5, anchored=None)
    assert d["raw_step0"] == 0.5 and d["step0"] == 0.25  # λ·‖∇aux‖/‖∇CE‖ at step 0
    assert d["raw_median"] == 1.0 and d["median"] == 0.5  # median of 0.5, 1, 3; ‖∇CE‖ = 0 left out
    assert d["n_probes"] == 3 and d["trace"] == [[0, 0.5], [2, 1.0], [4, 3.0]]
    empty = dose_summary([], weight=0.1, anchored=None)
    assert empty["median"] is None and empty["step0"] is None and empty["n_probes"] == 0


def _run(tmp_path, weight, target_dose=None):
    cfg = load_config(None, None, [*SMALL, f"cache_dir={tmp_path}"])
    prep = prepare(cfg)
    mc = prep.model.config
    obj = build_objective("T1", {}, mc.hidden_size, mc.num_hidden_layers, seed=cfg.seed)
    return train(prep.model, prep.train_rows, pad_id=int(prep.tok.pad_token_id), cfg=cfg.train, seed=cfg.seed,
                 objective=obj, weight=weight, probe=cfg.probe, target_dose=target_dose)


@pytest.mark.slow
def test_dose_recorded_at_probe_steps_and_scales_with_lambda(tmp_path):
    r = _run(tmp_path, weight=0.1)
    d = r.dose
    assert d is not None and d["n_probes"] == 3 and [s for s, _ in d["trace"]] == [0, 2, 4]
    assert d["step0"] == pytest.approx(0.1 * d["raw_step0"]) and d["median"] == pytest.approx(0.1 * d["raw_median"])
    assert d["raw_step0"] > 0 and d["anchored"] is None and r.weight == 0.1
    # the probe's own cosine and the dose come from the same two gradients: same number of probes
    assert r.grad_cosine["n_probes"] == d["n_probes"]


@pytest.mark.slow
def test_target_dose_sets_lambda_at_step_zero(tmp_path):
    base = _run(tmp_path, weight=0.1)
    r = _run(tmp_path, weight=0.1, target_dose=1.0)
    assert r.dose["anchored"] is True
    assert r.dose["step0"] == pytest.approx(1.0, rel=1e-6)
    # same seed, same first batch: λ = 1 / (raw ratio at step 0 of the unanchored run)
    assert r.weight == pytest.approx(1.0 / base.dose["raw_step0"], rel=1e-5)
