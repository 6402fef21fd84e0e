"""A fake λ-calibration run for the stage's tests: fast, deterministic, importable by spawned workers.

Validation EM is a designed function of (method, dose): T1 peaks at dose 0.1, llm-jepa is flat (a tie: the
smallest λ must win), V1's dose-1 run is NaN (non-finite never wins). Every call appends its key to
``DIR/cal_calls.log`` (DIR = the audit directory).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from jepa_audit.config import Config

EM = {
    "T1": {0.001: 0.30, 0.01: 0.35, 0.1: 0.50, 1.0: 0.40},
    "llm-jepa": {0.001: 0.42, 0.01: 0.42, 0.1: 0.42, 1.0: 0.42},
    "V1": {0.001: 0.20, 0.01: 0.25, 0.1: 0.30, 1.0: float("nan")},
}


def fake_calibration(cfg: Config, cell_dir: Path, progress=None) -> dict[str, Any]:
    audit_dir = Path(cell_dir).parents[3]  # DIR/calibration/cells/<key>/<attempt>
    with open(audit_dir / "cal_calls.log", "a") as f:
        f.write(Path(cell_dir).name + "\n")
    dose = float(cfg.aux.dose)
    em = EM.get(cfg.aux.method, {}).get(dose, 0.3) + 0.001 * (cfg.seed % 2)
    return {
        "kind": "calibration", "benchmark": cfg.benchmark, "method": cfg.aux.method, "seed": cfg.seed,
        "mode": cfg.adapter.mode, "target_dose": dose, "weight": 10.0 * dose,
        "dose": {"median": dose, "step0": dose, "anchored": True},
        "metrics": {"exact_match": em, "dfa_accuracy": em, "n_val": 10, "split": "validation"},
        "status": "done",
    }


#: 20 validation items per run, designed for the paired SE: T1's dose-0.1 run answers items 0–9 right, dose 1
#: answers the same items 0–7 right: one-SE paired = SD of the per-item differences / √20 ≈ 0.073, so dose 1
#: (0.40 vs 0.50 best) is *not* within one paired SE, while the unpaired binomial SE (≈ 0.11) would call it so.
ITEMS = {"T1": {0.001: "1" * 6 + "0" * 14, 0.01: "1" * 7 + "0" * 13, 0.1: "1" * 10 + "0" * 10, 1.0: "1" * 8 + "0" * 12}}


def curve_calibration(cfg: Config, cell_dir: Path, progress=None) -> dict[str, Any]:
    """:func:`fake_calibration` plus per-item scores (T1 only, :data:`ITEMS`) and a geometry pass whose T1 target
    (curvature_answer_L2) is 100 × dose + seed % 2, so the curve's target values are known."""
    row = fake_calibration(cfg, cell_dir, progress)
    dose = float(cfg.aux.dose)
    items = ITEMS.get(cfg.aux.method, {}).get(dose)
    if items is not None:
        row["items"] = items
        row["metrics"]["exact_match"] = items.count("1") / len(items)
        row["metrics"]["n_val"] = len(items)
    row["geometry"] = {"curvature_answer_L1": 1.0, "curvature_answer_L2": 100.0 * dose + cfg.seed % 2}
    return row


def slow_calibration(cfg: Config, cell_dir: Path, progress=None) -> dict[str, Any]:
    time.sleep(0.3)
    return fake_calibration(cfg, cell_dir, progress)


def _listed(audit_dir: Path, name: str, key: str) -> bool:
    p = audit_dir / name
    return p.exists() and key in p.read_text().split()


def flaky_calibration(cfg: Config, cell_dir: Path, progress=None) -> dict[str, Any]:
    """fake_calibration, except: a run whose key (``cal__...``) is listed in ``DIR/cal_fail.txt`` raises (a lost
    run), one listed in ``DIR/cal_diverge.txt`` raises TrainError (training diverged at its dose); every call
    appends the pairs already frozen in ``DIR/calibration.json`` to ``DIR/cal_seen.log`` as ``key pair,pair``."""
    import json

    from jepa_audit.train import TrainError

    audit_dir = Path(cell_dir).parents[3]
    key = Path(cell_dir).parent.name
    cal = audit_dir / "calibration.json"
    frozen = sorted(json.loads(cal.read_text())["pairs"]) if cal.exists() else []
    with open(audit_dir / "cal_seen.log", "a") as f:
        f.write(f"{key} {','.join(frozen)}\n")
    if _listed(audit_dir, "cal_fail.txt", key):
        raise RuntimeError(f"injected loss of {key}")
    if _listed(audit_dir, "cal_diverge.txt", key):
        raise TrainError(f"non-finite CE loss at step 3 (injected in {key})")
    return fake_calibration(cfg, cell_dir, progress)


def hang_calibration(cfg: Config, cell_dir: Path, progress=None) -> dict[str, Any]:
    """Write this worker's pid to ``DIR/calpids/<key>``, wait (up to 60 s) for ``DIR/release``, then finish like
    :func:`fake_calibration`: a run that is reliably in flight while a test kills its worker."""
    import os

    audit_dir = Path(cell_dir).parents[3]
    (audit_dir / "calpids").mkdir(exist_ok=True)
    (audit_dir / "calpids" / Path(cell_dir).parent.name).write_text(str(os.getpid()))
    t0 = time.monotonic()
    while not (audit_dir / "release").exists() and time.monotonic() - t0 < 60:
        time.sleep(0.05)
    return fake_calibration(cfg, cell_dir, progress)
