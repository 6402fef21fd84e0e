"""Record (or check) the NL-RX golden: what the current code produces, cell by cell, bit for bit.

The golden pins the results of NL-RX cells so a refactor (issue #17: tasks as plug-ins) can prove it changed
nothing: per cell the metrics, the sha256 of the per-item predictions, the final training loss, every
geometry value and the cell hash.  Two grids:

* ``smoke``: the whole ``smoke`` preset grid (8 cells, a tiny base);
* ``quick``: a representative subset of ``quick`` (its own train.steps and data, calibration off, λ the
  registry default): 8 methods × both benchmarks × one seed = 16 cells (a few CPU minutes).

The DFA scorer's wall-clock budget (``eval.dfa_time_budget_s``, 0.5 s) is the one thing in a cell that
depends on the machine's load: on a busy machine a comparison it decides at rest comes back undecided.
The golden therefore scores with a budget no comparison reaches (:data:`DFA_TIME_BUDGET_S`; the state budget,
which is deterministic, stays), and records the cell hash of the preset's own config.  It was recorded on
the code before the move (commit fd7531b, through ``PYTHONPATH``), and re-recorded once on purpose (issue
#18): the lean forward (models/lean.py: transformers' Llama maths with LoRA merged, equal in float64,
tests/test_lean.py), CE's log-softmax at the labelled positions only, and the ``smoke`` preset at LoRA dropout
0 (as ``quick`` and ``cpu``) change float rounding and the smoke cells' hashes, so the numbers moved in their
last bits and, through training, in a few predictions.

    python tests/golden/make_nlrx_golden.py smoke quick    # rewrite tests/golden/nlrx_<grid>.json
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

GOLDEN_DIR = Path(__file__).resolve().parent
QUICK_METHODS = ("ce", "llm-jepa", "T1", "T3-Local", "D1", "P3", "F1", "V1")
QUICK_SEED = 82
DFA_TIME_BUDGET_S = 3600.0  # no NL-RX comparison comes near it: the DFA score no longer depends on the load


def grid_config(grid: str):
    """The resolved config of ``grid`` ("smoke" or "quick") and its cells [(benchmark, method, seed, mode)]."""
    from jepa_audit.config import load_config

    if grid == "smoke":
        cfg = load_config("smoke")
        a = cfg.audit
        cells = [(b, m, s, mo) for b in a.benchmarks for m in a.methods for s in a.seeds for mo in a.modes]
        return cfg, cells
    if grid == "quick":
        cfg = load_config("quick", overrides=["calibration.enabled=false"])
        cells = [(b, m, QUICK_SEED, "lora") for b in cfg.audit.benchmarks for m in QUICK_METHODS]
        return cfg, cells
    raise ValueError(f"grid {grid!r}: expected smoke or quick")


def items_sha256(path: Path) -> str:
    """sha256 of the per-item predictions as canonical JSON (key order does not matter, values do)."""
    items = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    blob = json.dumps(items, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()


def cell_record(row: dict[str, Any], cell_dir: Path) -> dict[str, Any]:
    """What the golden pins of one cell's results row."""
    return {
        "cell_hash": row["config_hash"],
        "metrics": row["metrics"],
        "predictions_sha256": items_sha256(cell_dir / "predictions.jsonl"),
        "final_loss": row["train"]["final_loss"],
        "weight": row["weight"],
        "geometry": row["geometry"],
    }


def machine() -> dict[str, str]:
    """What bit-identity depends on besides the code: the torch build and the CPU kernel set it dispatches to
    (another ISA, e.g. AVX-512 instead of AVX2, rounds differently and can flip a greedy token)."""
    import torch

    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def run_grid(grid: str, cache_dir: Path | None = None) -> dict[str, Any]:
    """Run every cell of ``grid`` on the current code; returns {"grid", "cells": {key: record}}."""
    from jepa_audit.cell import run_cell

    cfg, cells = grid_config(grid)
    out: dict[str, Any] = {"grid": grid, "machine": machine(), "cells": {}}
    with tempfile.TemporaryDirectory(prefix=f"golden-{grid}-") as tmp:
        cache = cache_dir or Path(tmp) / "cache"
        for bench, method, seed, mode in cells:
            c = cfg.cell(bench, method, seed, mode)
            c.cache_dir = str(cache)
            cell_hash = c.cell_hash()  # the preset's cell, before the scoring budget is lifted
            c.eval.dfa_time_budget_s = DFA_TIME_BUDGET_S
            cell_dir = Path(tmp) / "cells" / f"{bench}-{method}-{seed}-{mode}"
            row = run_cell(c, cell_dir)
            out["cells"][f"{bench}/{method}/{seed}/{mode}"] = {**cell_record(row, cell_dir), "cell_hash": cell_hash}
    return out


def golden_path(grid: str) -> Path:
    return GOLDEN_DIR / f"nlrx_{grid}.json"


def main(argv: list[str]) -> None:
    for grid in argv or ["smoke", "quick"]:
        data = run_grid(grid)
        golden_path(grid).write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        print(f"wrote {golden_path(grid)} ({len(data['cells'])} cells)")


if __name__ == "__main__":
    main(sys.argv[1:])
