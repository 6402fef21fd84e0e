"""Training-time auxiliaries: one registry, one module per family, frozen once every family is imported.

``jepa-audit aux list`` prints :func:`spec_rows` (in the order below: references, then the five families);
the loop calls :func:`build_objective` once per cell and combines gradients through
:mod:`jepa_audit.objectives.gradients`.  See docs/objectives.md.
"""

import importlib

from jepa_audit.objectives.base import (
    AuxContext,
    AuxOut,
    Objective,
    ObjectiveSpec,
    build_objective,
    declared_targets,
    freeze,
    get_objective_class,
    origin_of,
    register_objective,
    registry,
    spec_rows,
)

# Import order is registration order is listing order.  Adding a family = adding a module name here.
FAMILY_MODULES = ("references", "trajectory", "distributional", "predictive", "fisher", "decoder_visible")
for _name in FAMILY_MODULES:
    importlib.import_module(f"{__name__}.{_name}")
freeze()

__all__ = [
    "FAMILY_MODULES",
    "AuxContext",
    "AuxOut",
    "Objective",
    "ObjectiveSpec",
    "build_objective",
    "declared_targets",
    "get_objective_class",
    "origin_of",
    "register_objective",
    "registry",
    "spec_rows",
]
