"""The bench's code paths (not its numbers: speed is measured by `jepa-audit bench`, never asserted)."""

from __future__ import annotations

import math

import pytest

from jepa_audit.bench import paper_step_benchmark, write_performance_doc

SCALED = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, vocab_size=300)


def test_paper_step_benchmark_path_runs_on_cpu_for_lora_and_full():
    for mode in ("lora", "full"):
        r = paper_step_benchmark("cpu", shape=SCALED, batch=2, seq=16, steps=1, mode=mode)
        assert math.isfinite(r["paper_tokens_per_s"]) and r["paper_mfu"] is None  # no known peak on a CPU
        assert r["paper_shape"].endswith(mode)


def test_performance_doc_table_is_replaced_between_markers(tmp_path):
    doc = tmp_path / "performance.md"
    doc.write_text("# Performance\n\nintro\n\n<!-- BENCH:BEGIN -->\nold\n<!-- BENCH:END -->\n\nafter\n")
    r = {"device": "cpu: test", "ce_step_s": 0.05, "aux_step_ratio": {"T1": 1.02}, "packed_two_view_ratio": 1.3,
         "llm_jepa_three_row_ratio": 2.0, "probe_overhead": 0.02, "geometry_overhead": 0.01,
         "decode_tokens_per_s": 9000.0, "decode_speedup_vs_hf_generate": 1.3, "dfa_pairs_per_s": 2500.0,
         "cell_wall_s": 20.0}
    write_performance_doc(r, doc)
    text = doc.read_text()
    assert "old" not in text and "intro" in text and "after" in text
    assert "| T1 | 1.02× |" in text and "1.30× HF generate" in text


@pytest.mark.slow  # pre-trains a smoke base and profiles training steps
def test_phase_profile_reads_the_training_loops_labels(tmp_path):
    """The loop's record_function labels reach the profile: every phase of a real step is seen, per method."""
    from jepa_audit.bench import PHASES, _step_fn, phase_profile
    from jepa_audit.cell import prepare
    from jepa_audit.config import load_config

    cfg = load_config("smoke", None, [f"cache_dir={tmp_path}", "base.steps=2", "base.pool_size=200",
                                      "data.n_train=64", "data.n_test=8", "data.val_size=8", "data.geometry_size=16",
                                      "adapter.mode=lora"])
    prep = prepare(cfg)
    rows, pad = prep.train_rows[:4], int(prep.tok.pad_token_id)
    fns = {m: _step_fn(prep.model, rows, pad, cfg, None if m == "ce" else m) for m in ("ce", "V3", "llm-jepa")}
    prof = phase_profile(fns, calls=1)
    assert set(prof) == {"ce", "V3", "llm-jepa"}
    for row in prof.values():
        assert set(row) == {*PHASES, "other", "total"}
        assert all(math.isfinite(v) and v >= 0 for v in row.values())
        assert all(row[ph] > 0 for ph in PHASES)  # each label was entered inside the profiled steps


@pytest.mark.slow  # pre-trains a smoke base and times training steps
def test_step_options_time_each_overhead_choice_against_the_loops_own(tmp_path):
    """Every option arm runs a real CE step and comes back as a finite ratio, or says why it could not run;
    the weights are restored afterwards, so later bench arms see the same model."""
    import torch

    from jepa_audit.bench import step_option_ratios
    from jepa_audit.cell import prepare
    from jepa_audit.config import load_config

    cfg = load_config("smoke", None, [f"cache_dir={tmp_path}", "base.steps=2", "base.pool_size=200",
                                      "data.n_train=64", "data.n_test=8", "data.val_size=8", "data.geometry_size=16",
                                      "adapter.mode=lora"])
    prep = prepare(cfg)
    before = {n: p.detach().clone() for n, p in prep.model.named_parameters()}
    r = step_option_ratios(prep.model, prep.train_rows[:4], int(prep.tok.pad_token_id), repeats=1,
                           compile_model=False)
    assert set(r["ratio"]) | set(r["unavailable"]) == {"transformers_forward", "for_loop", "fused", "threads_2"}
    assert all(math.isfinite(v) and v > 0 for v in r["ratio"].values()) and r["foreach_step_s"] > 0
    assert all(torch.equal(p, before[n]) for n, p in prep.model.named_parameters())
    doc = tmp_path / "performance.md"
    write_performance_doc({"device": "cpu: test", "ce_step_s": 0.05, "aux_step_ratio": {}, "packed_two_view_ratio": 1.3,
                           "llm_jepa_three_row_ratio": 2.0, "probe_overhead": 0.02, "geometry_overhead": 0.01,
                           "decode_tokens_per_s": 9000.0, "decode_speedup_vs_hf_generate": 1.3,
                           "dfa_pairs_per_s": 2500.0, "cell_wall_s": 20.0, "step_options": r}, doc)
    assert "| for_loop |" in doc.read_text()


def test_performance_doc_shows_cost_classes_and_the_profile(tmp_path):
    doc = tmp_path / "performance.md"
    r = {"device": "cpu: test", "ce_step_s": 0.05, "aux_step_ratio": {"T1": 1.02, "V3": 1.3, "P1": 1.2},
         "packed_two_view_ratio": 1.3, "llm_jepa_three_row_ratio": 2.0, "probe_overhead": 0.02,
         "geometry_overhead": 0.01, "decode_tokens_per_s": 9000.0, "decode_speedup_vs_hf_generate": 1.3,
         "dfa_pairs_per_s": 2500.0, "cell_wall_s": 20.0,
         "step_profile_ms": {"ce": {"forward": 10.0, "backward": 20.0, "optimizer": 3.0, "other": 1.0, "total": 34.0}}}
    write_performance_doc(r, doc)
    text = doc.read_text()
    assert "| 1.02× (T1) |" in text  # single-pass class
    assert "| 1.30× (V3) |" in text  # gradient surgery, its own class
    assert "| 1.20× (P1) |" in text  # extra rows
    assert "| ce | 10.0 | 20.0 | 3.0 | 1.0 | 34.0 |" in text


def test_cpu_preset_estimate_is_the_dry_runs_estimate():
    """bench's cpu_preset_estimate_s comes from the runner's estimator (one home): the preset's 240 cells
    on its workers, at the step time the dry run would measure."""
    import io

    from jepa_audit.audit.runner import run_audit
    from jepa_audit.bench import cpu_preset_estimate
    from jepa_audit.config import load_config

    est = cpu_preset_estimate(step_time_fn=lambda cfg: 0.05)
    cfg = load_config("cpu", None, [])
    assert est["cells"] == est["pending"] == 240 and est["workers"] == cfg.audit.workers
    assert est["step_time_source"] == "measured" and est["wall_s"] == est["total_s"] / cfg.audit.workers
    out = io.StringIO()
    run_audit(cfg, "/nonexistent/dry-run", dry_run=True, stream=out, step_time_fn=lambda cfg: 0.05)
    from jepa_audit.audit.progress import fmt_duration

    assert f"≈ {fmt_duration(est['wall_s'])} wall with {cfg.audit.workers} worker(s)" in out.getvalue()
