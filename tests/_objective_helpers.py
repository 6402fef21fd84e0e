"""What the objective batteries share: the tiny model's sizes, the CE forward the loop runs, and building
(one home: :mod:`jepa_audit.objectives.check`, which `jepa-audit aux check` runs)."""

from __future__ import annotations

from jepa_audit.objectives import registry
from jepa_audit.objectives.check import N_LAYERS, SEED, D, build
from jepa_audit.objectives.check import ce_forward as forward

RANDOM = ["T3-Global", "T3-Local", "D5", "F2", "F3"]  # objectives that draw every step
# the audited 22 (the registry's ``core`` flag; test_objectives_registry pins the set) and LLM-JEPA's reference
CORE_AND_LLM_JEPA = [n for n, c in registry().items() if c.spec.core] + ["llm-jepa"]

__all__ = ["D", "N_LAYERS", "RANDOM", "SEED", "build", "forward"]
