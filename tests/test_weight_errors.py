"""λ (aux.weight) never reaches the ce baseline, and a λ that overflows is blamed as such (#14 items 8, 9)."""

from __future__ import annotations

import pytest

from jepa_audit.cell import run_cell
from jepa_audit.config import load_config
from jepa_audit.train import TrainError

pytestmark = pytest.mark.slow  # each trains a tiny model for a few steps (~10 s on a shared core)

TINY = [
    "data.n_train=48", "data.n_test=4", "data.val_size=8", "data.geometry_size=8", "base.pool_size=64", "base.steps=2",
    "model.vocab_size=320", "train.steps=3", "train.batch_size=4", "geometry.enabled=false", "probe.every=1",
    "eval.max_new_tokens=4",
]


def test_global_weight_does_not_apply_to_ce(tmp_path):
    cfg = load_config(None, None, [*TINY, f"cache_dir={tmp_path / 'cache'}", "aux.method=ce", "aux.weight=0.5"])
    row = run_cell(cfg, tmp_path / "cell")
    assert row["status"] == "done" and row["weight"] == 0.0  # the baseline still trains, without λ


def test_overflowing_weight_blames_the_weighted_term(tmp_path):
    cfg = load_config(None, None, [*TINY, f"cache_dir={tmp_path / 'cache'}", "aux.method=T1", "aux.weight=1e300"])
    with pytest.raises(TrainError, match="λ") as e:
        run_cell(cfg, tmp_path / "cell")
    assert "λ = 1e+300" in str(e.value), str(e.value)
