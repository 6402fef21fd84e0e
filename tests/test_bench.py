"""The bench's code paths (not its numbers: speed is measured by `jepa-audit bench`, never asserted)."""

from __future__ import annotations

import math

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
