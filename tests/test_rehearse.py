"""`jepa-audit rehearse`: a GPU preset's own path on the CPU at the real Llama-3.2-1B shape (rehearse.py)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from jepa_audit.cli import app
from jepa_audit.config import PRESETS, load_config
from jepa_audit.models.llama_dir import LLAMA32_1B
from jepa_audit.rehearse import CLASSES, _cell_phases, _config, _n_params, estimate_rss_gb, rehearsal_presets


def test_the_gpu_presets_come_from_the_preset_files():
    gpu = rehearsal_presets()
    assert set(gpu) == {p for p in PRESETS if load_config(p).model.kind == "hf"}
    assert {"paper", "paper-full-ft", "replicate-llm-jepa", "gsm8k"} <= set(gpu) and "smoke" not in gpu


def test_a_cpu_preset_is_refused_with_one_clear_error(tmp_path):
    r = CliRunner().invoke(app, ["rehearse", "smoke", "--out", str(tmp_path / "r.json")])
    assert r.exit_code == 2 and "not a GPU preset" in r.output and "paper" in r.output
    assert not (tmp_path / "r.json").exists()


def test_the_parameter_count_is_llama_32_1b():
    """Llama-3.2-1B has 1,235,814,400 parameters (tied embeddings counted once): the shape is the real one."""
    assert _n_params(LLAMA32_1B) == 1_235_814_400
    assert LLAMA32_1B["rope_scaling"]["rope_type"] == "llama3" and LLAMA32_1B["tie_word_embeddings"]


@pytest.mark.parametrize("preset", ["paper", "paper-full-ft", "replicate-llm-jepa", "gsm8k"])
def test_the_reduced_config_keeps_the_presets_precision_and_path(preset, tmp_path):
    full = load_config(preset)
    cfg = _config(preset, tmp_path / "model", tmp_path / "gsm8k")
    same = lambda c: (c.model.dtype, c.model.autocast, c.adapter.mode, c.views.nl, c.train.labels, c.train.lr,  # noqa: E731
                      c.train.schedule, c.calibration.enabled, c.data.task)
    assert same(cfg) == same(full)
    assert cfg.audit.methods == list(CLASSES.values()) and cfg.train.steps == 2 and cfg.model.device == "cpu"
    assert cfg.train.grad_accum == min(full.train.grad_accum, 2)
    if cfg.calibration.enabled:  # only T1 is calibrated: every other auxiliary's λ is pinned
        pinned = {m for m, o in cfg.aux.per_method.items() if o.weight is not None}
        assert pinned >= set(CLASSES.values()) - {"ce", "T1"} and "T1" not in pinned


def test_memory_estimate_grows_with_full_fine_tuning_and_gradient_surgery():
    lora, full = load_config("paper"), load_config("paper-full-ft")
    e_l, e_f = estimate_rss_gb(lora, LLAMA32_1B), estimate_rss_gb(full, LLAMA32_1B)
    assert e_l["weights_gb"] == pytest.approx(1_235_814_400 * 2 / 1e9)  # bf16 base
    assert e_f["weights_gb"] == pytest.approx(1_235_814_400 * 4 / 1e9)  # fp32 master weights
    assert e_f["cell_gb"] > 20 > e_l["cell_gb"]  # full AdamW on 1.24 B does not fit a 24 GB machine
    assert e_f["gradient_surgery_gb"] > e_f["cell_gb"] > e_l["gradient_surgery_gb"] > e_l["cell_gb"]


def _rec(tb: str | None) -> dict:
    rec = {"method": "T1", "step_s": [1.0, 0.5], "tokens": [300, 320], "phase": "eval", "peak_rss_gb": 3.0}
    if tb is not None:
        rec.update(error="RuntimeError: boom", traceback=tb)
    else:
        rec["row"] = {"timing": {"eval_s": 2.0, "geometry_s": 1.0}, "geometry": {"k": 1.0}, "metrics": {},
                      "train": {"forward": "hf", "final_loss": 3.0}}
    return rec


@pytest.mark.parametrize("tb,failed,not_reached", [
    (None, None, []),
    ('File "x", line 1, in train\nRuntimeError: boom', "train", ["decode_score", "geometry"]),
    ('File "x", line 1, in evaluate\nRuntimeError: expected m1 and m2 to have the same dtype', "decode_score", ["geometry"]),
    ('File "x", line 1, in compute_geometry\nRuntimeError: boom', "geometry", []),
])
def test_a_failed_cell_names_the_stage_that_failed(tb, failed, not_reached):
    ph = _cell_phases(_rec(tb), in_preset=True)
    for stage in ("train", "decode_score", "geometry"):
        if stage == failed:
            assert not ph[stage]["ok"] and ph[stage]["error"] == "RuntimeError: boom"
        elif stage in not_reached:
            assert not ph[stage]["ok"] and ph[stage]["error"].startswith("not reached")
        else:
            assert ph[stage]["ok"] and ph[stage]["error"] is None
    assert ph["train"]["tokens_per_step"] == 310.0 and ph["train"]["step_s"] == [1.0, 0.5]


@pytest.mark.slow
def test_rehearse_paper_at_two_layers_passes_every_phase(tmp_path):
    """The whole rehearsal of `paper` (bf16 base, fp32 LoRA, calibration, five method classes, decoding,
    geometry at d = 2,048, the report) at 2 decoder layers: minutes on 2 cores."""
    out = tmp_path / "rehearse-paper.json"
    r = CliRunner().invoke(app, ["rehearse", "paper", "--layers", "2", "--json", "--out", str(out)])
    res = json.loads(out.read_text())
    assert r.exit_code == 0, res["failed"]
    assert res["ok"] and res["layers"] == 2 and res["shape"]["hidden_size"] == 2048
    assert res["config"]["dtype"] == "bfloat16" and res["phases"]["calibration"]["runs"] == 2
    for cls, method in CLASSES.items():
        ph = res["phases"][f"cell:{cls}:{method}"]
        assert all(ph[s]["ok"] for s in ("train", "decode_score", "geometry"))
        assert ph["decode_score"]["metrics"]["n_test"] == (4 if method == "ce" else 2)
        assert len(ph["train"]["step_s"]) == 2 and ph["train"]["tokens_per_step"] > 0
    assert res["phases"]["cell:ce:ce"]["geometry"]["n_keys"] > 0 and res["peak_rss_gb"] > 0 and res["phases"]["report"]["ok"]
