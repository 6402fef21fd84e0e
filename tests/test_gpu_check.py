"""scripts/gpu-check.sh's Python entry, end to end at a scaled-down shape on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from jepa_audit.bench import MEMORY_CLASSES
from jepa_audit.gpu_check import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_runs_every_part_on_cpu(tmp_path):
    out = tmp_path / "check.json"
    assert main(["--device", "cpu", "--small", "--out", str(out), "--smoke-steps", "2"]) == 0
    r = json.loads(out.read_text())
    assert r["ok"] and r["errors"] == {}
    for mode in ("lora", "full"):
        assert r[f"step_{mode}"]["paper_step_s"] > 0 and r[f"step_{mode}"]["paper_tokens_per_s"] > 0
        assert set(r[f"peak_memory_{mode}"]) == set(MEMORY_CLASSES)
        assert all(v["peak_gb"] is None and v["step_s"] > 0 for v in r[f"peak_memory_{mode}"].values())
        pk = r[f"packed_vs_padded_{mode}"]
        assert pk["padded_step_s"] > 0 and pk["packed_step_s"] > 0 and pk["attn"] == "sdpa"
        assert 0 < pk["real_tokens"] < pk["padded_slots"]  # a ragged batch: the padded arm computes padding
    p, f = r["smoke_paper"], r["smoke_paper_full_ft"]
    assert (p["method"], p["mode"], f["method"], f["mode"]) == ("llm-jepa", "lora", "V3", "full")
    # the presets' own precision on the CPU too: a bf16 base (fp32 LoRA adapters) and fp32 master weights, bf16 autocast
    assert (p["dtype"], p["autocast"], f["dtype"], f["autocast"]) == ("bfloat16", "bf16", "float32", "bf16")
    assert f["batch_per_update"] == 8 and p["geometry_keys"] > 0 and f["metrics"]["n_test"] == 8


def test_script_refuses_without_cuda_and_names_the_cpu_option(tmp_path):
    """The shell script as a person runs it: on a machine without CUDA it says so (exit 2), writes nothing."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    env.pop("DEVICE", None)
    env.pop("SMALL", None)
    r = subprocess.run([str(ROOT / "scripts" / "gpu-check.sh"), str(tmp_path / "x.json")], env=env,
                       capture_output=True, text=True, timeout=300)
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the script would run the real check")
    assert r.returncode == 2 and "--device cpu --small" in r.stderr
    assert not (tmp_path / "x.json").exists()
