"""train.deterministic: the switches it sets (and unsets), a repeatable CPU run under it; model.compile is gone."""

from __future__ import annotations

import pytest
import torch

from conftest import make_tiny_llama
from jepa_audit.config import ConfigError, TrainCfg, load_config
from jepa_audit.data.views import Encoded
from jepa_audit.determinism import deterministic_state, set_deterministic


@pytest.fixture
def restore(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    yield
    set_deterministic(False)


def test_switches_on_and_off(restore):
    set_deterministic(True)
    s = deterministic_state()
    assert s == {"algorithms": True, "warn_only": True, "cudnn_deterministic": True, "cudnn_benchmark": False,
                 "mem_efficient_sdp": False, "cublas_workspace": ":4096:8"}
    set_deterministic(False)
    s = deterministic_state()
    assert not s["algorithms"] and not s["cudnn_deterministic"] and s["mem_efficient_sdp"]


def test_training_under_deterministic_mode_repeats_bit_for_bit(restore):
    from jepa_audit.train import train

    set_deterministic(True)
    rows = [Encoded([1, 5 + i, 6, 7, 2, 9 + i, 3], 5, 1, 3, [1, 9 + i, 3], 1, i) for i in range(8)]
    cfg = TrainCfg(steps=3, batch_size=4, lr=1e-3, warmup_steps=0, deterministic=True)
    out = []
    for _ in range(2):
        model = make_tiny_llama()
        train(model, rows, pad_id=0, cfg=cfg, seed=5)
        out.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(out[0], out[1])


def test_config_key_and_compile_removed():
    assert load_config("smoke", overrides=["train.deterministic=true"]).train.deterministic is True
    with pytest.raises(ConfigError, match="unknown key 'model.compile'"):
        load_config("smoke", overrides=["model.compile=true"])
