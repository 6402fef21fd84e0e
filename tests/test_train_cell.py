"""The training loop, the cached base, and one cell end to end (tiny model and an HF-format directory)."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import make_hf_llama_dir
from jepa_audit.cell import base_model_path, evaluate_dir, prepare, run_cell
from jepa_audit.config import load_config
from jepa_audit.models.load import ModelError
from jepa_audit.results import ResultsRow
from jepa_audit.tiny_base import ensure_tiny_base
from jepa_audit.train import lr_at, train

SMALL = [
    "data.n_train=240", "data.n_test=40", "data.val_size=24", "base.pool_size=400", "model.vocab_size=320",
    "train.steps=12", "train.batch_size=8", "geometry.n_sequences=16", "data.geometry_size=16", "probe.every=5",
]


@pytest.fixture(scope="module")
def trained_base(tmp_path_factory):
    """One base pre-trained for real (600 steps) and shared by the tests below."""
    cache = tmp_path_factory.mktemp("cache")
    cfg = load_config(None, None, [*SMALL, f"cache_dir={cache}", "base.steps=600", "base.pool_size=1000"])
    return cfg, ensure_tiny_base(cfg)


def test_lr_schedule_warms_up_then_decays():
    cfg = load_config(None, None, ["train.steps=100", "train.warmup_steps=10", "train.lr=1.0"]).train
    assert lr_at(0, cfg) == pytest.approx(0.1) and lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(99, cfg) == pytest.approx(cfg.min_lr_ratio, abs=1e-3)
    assert all(lr_at(s, cfg) >= lr_at(s + 1, cfg) for s in range(10, 99))


@pytest.mark.slow  # uses the base pre-trained for 600 steps
def test_pretraining_loss_falls_and_em_beats_untrained(trained_base, tmp_path):
    cfg, path = trained_base
    meta = json.loads((path / "DONE.json").read_text())
    untrained = load_config(None, None, [*SMALL, f"cache_dir={tmp_path}", "base.steps=1"])
    # a one-step "base" is as good as untrained: its EM is the floor the trained base must beat
    em_untrained = evaluate_dir(untrained, base_model_path(untrained)).metrics["exact_match"]
    em_trained = evaluate_dir(cfg, path).metrics["exact_match"]
    assert meta["pretrain_final_loss"] < 1.0  # from ~6 nats (uniform over 320 tokens)
    assert em_trained > em_untrained


@pytest.mark.slow  # uses the base pre-trained for 600 steps
def test_fine_tuning_loss_falls_and_is_deterministic(trained_base):
    cfg, _ = trained_base
    cfg = cfg.model_copy(deep=True)
    cfg.train.steps, cfg.train.lr = 30, 3e-3
    runs = []
    for _ in range(2):
        prep = prepare(cfg)
        r = train(prep.model, prep.train_rows, pad_id=prep.tok.pad_token_id, cfg=cfg.train, seed=5)
        runs.append(r)
    first, last = runs[0].log[0]["ce"], runs[0].log[-1]["ce"]
    assert last < first
    assert [x["loss"] for x in runs[0].log] == [x["loss"] for x in runs[1].log]  # deterministic on CPU


@pytest.mark.slow  # uses the base pre-trained for 600 steps
def test_base_is_cached_and_reused(trained_base):
    cfg, path = trained_base
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert ensure_tiny_base(cfg) == path
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp  # not rebuilt


def test_corrupt_cached_base_gives_one_clear_error(tmp_path):
    cfg = load_config(None, None, [*SMALL, f"cache_dir={tmp_path}", "base.steps=2"])
    path = ensure_tiny_base(cfg)
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-16])  # truncated
    with pytest.raises(ModelError, match=r"corrupt.*delete"):
        ensure_tiny_base(cfg)


@pytest.mark.slow  # uses the base pre-trained for 600 steps
def test_run_cell_row_matches_the_contract(trained_base, tmp_path):
    cfg, _ = trained_base
    cell = cfg.cell("synth", "T1", 82, "lora")
    row = run_cell(cell, tmp_path / "cells" / "c1", save_model=tmp_path / "model")
    assert {"benchmark", "method", "seed", "mode", "metrics", "geometry", "grad_cosine", "config_hash", "wall_s",
            "deterministic", "status"} <= set(row)
    # the row is a ResultsRow: every declared key is written, in the declared order (extra keys may follow)
    assert list(row)[: len(ResultsRow.model_fields)] == list(ResultsRow.model_fields)
    assert row["status"] == "done" and row["method"] == "T1" and row["mode"] == "lora"
    assert row["deterministic"] is False  # train.deterministic, recorded in every row
    import peft
    import transformers

    assert row["versions"] == {"torch": torch.__version__, "transformers": transformers.__version__,
                               "peft": peft.__version__}  # what ran the cell
    m = row["metrics"]
    assert 0 <= m["exact_match"] <= m["dfa_accuracy"] <= 1 and m["n_test"] == 40
    assert -1 <= row["grad_cosine"]["mean"] <= 1 and row["grad_cosine"]["n_probes"] >= 1
    preds = [json.loads(x) for x in (tmp_path / "cells" / "c1" / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 40 and {"gold", "pred", "exact", "dfa", "parse_error"} <= set(preds[0])
    # the saved model (LoRA merged) evaluates to the same exact match
    again = evaluate_dir(cell, tmp_path / "model")
    assert again.metrics["exact_match"] == pytest.approx(m["exact_match"])


@pytest.mark.slow  # uses the base pre-trained for 600 steps
def test_auxiliary_leaves_data_order_and_dropout_of_ce_untouched(trained_base):
    """Paired seeds stay paired: with λ = 0 an auxiliary run is the CE run, bit for bit."""
    cfg, _ = trained_base
    from jepa_audit.objectives import build_objective

    losses = []
    for method in ("ce", "T3-Global"):
        prep = prepare(cfg)
        obj = build_objective(method, {}, prep.model.config.hidden_size, prep.model.config.num_hidden_layers, 82)
        r = train(prep.model, prep.train_rows, pad_id=prep.tok.pad_token_id, cfg=cfg.train, seed=82,
                  objective=obj, weight=0.0)
        losses.append([x["ce"] for x in r.log])
    assert losses[0] == losses[1]


def test_hf_directory_cell_end_to_end(tmp_path):
    """A Llama in HF format (Llama-3 template, no pad token) goes through the same cell as the tiny model."""
    texts = ["lines containing the word dog", ".*dog.*", "lines with a number", ".*[0-9].*"] * 20
    d = make_hf_llama_dir(tmp_path / "llama", texts)
    cfg = load_config(None, None, [*SMALL, "model.kind=hf", f"model.path={d}", "train.steps=4"])
    row = run_cell(cfg.cell("synth", "V3", 23, "lora"), tmp_path / "cells" / "hf")
    assert row["status"] == "done" and row["metrics"]["n_test"] == 40
    assert row["grad_cosine"] is not None and torch.isfinite(torch.tensor(row["grad_cosine"]["mean"]))
