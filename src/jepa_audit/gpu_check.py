"""The GPU check (``scripts/gpu-check.sh``): what a person with a GPU runs once, as is, writing one JSON file.

1. ``bench``: the Llama-3.2-1B-shaped step (random weights) under LoRA and full fine-tuning: step time,
   tokens/s, MFU, and peak memory per method class (:func:`jepa_audit.bench.peak_memory_by_class`);
   optionally the whole ``jepa-audit bench --device cuda`` table (``--full-bench``).
2. A paper-preset smoke: a random-weight Llama-3.2-1B-shaped directory with the real chat template and
   generation config (:mod:`jepa_audit.models.llama_dir`), then one cell of ``paper`` (LoRA, llm-jepa) and one
   of ``paper-full-ft`` (full, V3, LLM-JEPA's 128-per-update recipe) end to end on the embedded corpus, a few
   steps each (train, decode, geometry on the 512-sequence pool), with wall time and peak memory.

Nothing is downloaded.  ``python -m jepa_audit.gpu_check --out gpu-check.json``; the CPU test runs the same
entry at a scaled-down shape (``--small``).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import torch

# A scaled-down stand-in for CPU tests: every code path of the check, in seconds.
SMALL_SHAPE = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
               "num_key_value_heads": 2, "vocab_size": 600, "max_position_embeddings": 512}


def _environment(device: str) -> dict[str, Any]:
    env = {"python": sys.version.split()[0], "torch": torch.__version__, "platform": platform.platform(),
           "device": device}
    if device == "cuda":
        env.update(gpu=torch.cuda.get_device_name(0), gpu_count=torch.cuda.device_count(),
                   gpu_memory_gb=torch.cuda.get_device_properties(0).total_memory / 2**30,
                   cuda=torch.version.cuda)
    return env


def _texts() -> list[str]:
    from jepa_audit.config import DataCfg
    from jepa_audit.tasks import get_task, load_benchmark

    cfg = DataCfg()
    out = [cfg.system] * 20
    for b in get_task(cfg.task).benchmarks:
        s = load_benchmark(cfg, b)
        out += [t for e in s.train[:1500] for t in (e.prompt, e.target)]
    return out


def smoke_cell(preset: str, method: str, model_dir: Path, out_dir: Path, device: str, steps: int,
               small: bool) -> dict[str, Any]:
    """One cell of ``preset`` on the random-weight directory and the embedded corpus, a few steps."""
    from jepa_audit.cell import run_cell
    from jepa_audit.config import load_config

    sets = [f"model.path={model_dir}", "data.source=embedded", f"model.device={device}", f"train.steps={steps}",
            "data.max_test=64", "eval.max_new_tokens=32", f"train.log_every={steps}"]
    # the preset's own precision on every device (paper: a bf16 base with fp32 LoRA adapters under bf16 autocast;
    # paper-full-ft: fp32 master weights under bf16 autocast): a CPU run of the check takes the same dtype path
    if small:  # a scaled-down run: a short pool, a small micro-batch, a few accumulation steps
        sets += ["data.geometry_size=48", "geometry.n_sequences=48", "train.batch_size=4", "eval.batch_size=16",
                 "data.max_test=8", "eval.max_new_tokens=8"]
        if preset == "paper-full-ft":
            sets += ["train.grad_accum=2"]
    cfg = load_config(preset, overrides=sets)
    cell = cfg.cell(cfg.audit.benchmarks[0], method, 82, cfg.audit.modes[0])
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    row = run_cell(cell, out_dir / "cells" / f"{preset}__{method}")
    res = {
        "preset": preset, "method": method, "mode": cell.adapter.mode, "steps": steps,
        "dtype": cell.model.dtype, "autocast": cell.model.autocast, "forward": row["train"]["forward"],
        "batch_per_update": cell.train.batch_size * cell.train.grad_accum, "wall_s": time.perf_counter() - t,
        "timing": row["timing"], "final_loss": row["train"]["final_loss"], "metrics": row["metrics"],
        "geometry_keys": len(row["geometry"]), "geometry_n_sequences": cell.geometry.n_sequences,
        "deterministic": row["deterministic"],
    }
    if device == "cuda":
        res["peak_gb"] = torch.cuda.max_memory_allocated() / 2**30
    return res


def run_gpu_check(out: Path, device: str = "cuda", small: bool = False, full_bench: bool = False,
                  smoke_steps: int = 4) -> dict[str, Any]:
    """Run every part, each guarded (a failing part records its error and the rest still runs); write
    ``out`` (JSON) and return the same dict."""
    from jepa_audit.bench import (
        packed_vs_padded_step,
        paper_step_benchmark,
        peak_memory_by_class,
    )
    from jepa_audit.models.llama_dir import LLAMA32_1B, write_llama_dir

    shape = SMALL_SHAPE if small else LLAMA32_1B  # the real config (llama3 rope scaling); bench's steps: same sizes
    batch, seq = (4, 32) if small else (16, 128)
    result: dict[str, Any] = {"environment": _environment(device), "shape": shape, "batch": batch, "seq": seq,
                              "errors": {}}

    def part(name: str, fn) -> None:
        print(f"gpu-check: {name}", flush=True)
        t = time.perf_counter()
        try:
            result[name] = fn()
        except Exception as e:  # noqa: BLE001 - one part's failure is a finding, not the end of the check
            result["errors"][name] = f"{type(e).__name__}: {e}\n{traceback.format_exc()}"
        result.setdefault("part_s", {})[name] = time.perf_counter() - t
        out.write_text(json.dumps(result, indent=2, default=str))  # partial results survive a crash

    for mode in ("lora", "full"):
        part(f"step_{mode}", lambda m=mode: paper_step_benchmark(device, shape if small else None, batch=batch,
                                                                  seq=seq, steps=3 if small else 10, mode=m))
        part(f"peak_memory_{mode}", lambda m=mode: peak_memory_by_class(device, shape, batch=batch, seq=seq, mode=m))
        part(f"packed_vs_padded_{mode}", lambda m=mode: packed_vs_padded_step(
            device, shape if small else None, batch=batch, seq=seq, steps=2 if small else 5, mode=m))
    if full_bench:
        from jepa_audit.bench import run_bench

        part("bench", lambda: run_bench(device=device, quiet=True))
    with tempfile.TemporaryDirectory(prefix="jepa-audit-gpu-check-") as tmp:
        model_dir = Path(tmp) / "llama-3.2-1b-shaped"
        part("model_dir", lambda: str(write_llama_dir(model_dir, _texts(), shape, dtype="bfloat16")))
        if model_dir.is_dir():
            part("smoke_paper", lambda: smoke_cell("paper", "llm-jepa", model_dir, Path(tmp), device, smoke_steps,
                                                   small))
            part("smoke_paper_full_ft", lambda: smoke_cell("paper-full-ft", "V3", model_dir, Path(tmp), device,
                                                           smoke_steps, small))
    result["ok"] = not result["errors"]
    out.write_text(json.dumps(result, indent=2, default=str))
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m jepa_audit.gpu_check", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("gpu-check.json"), help="the JSON file to write")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--small", action="store_true", help="scaled-down shape (CPU test of the check itself)")
    ap.add_argument("--full-bench", action="store_true", help="also the whole `jepa-audit bench` table")
    ap.add_argument("--smoke-steps", type=int, default=4)
    a = ap.parse_args(argv)
    if a.device == "cuda" and not torch.cuda.is_available():
        print("gpu-check: no CUDA device visible (use --device cpu --small to test the check itself)",
              file=sys.stderr)
        return 2
    r = run_gpu_check(a.out, a.device, a.small, a.full_bench, a.smoke_steps)
    print(f"gpu-check: wrote {a.out} ({'ok' if r['ok'] else 'errors in: ' + ', '.join(r['errors'])})")
    return 0 if r["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
