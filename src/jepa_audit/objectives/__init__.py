"""Training-time auxiliaries: one registry, one module per family, frozen once every family is imported.

``jepa-audit aux list`` prints :func:`spec_rows` (in the order below: references, then the five families);
the loop calls :func:`build_objective` once per cell and combines gradients through
:mod:`jepa_audit.objectives.gradients`.  See docs/objectives.md.
"""

import importlib

from jepa_audit.config import Config
from jepa_audit.objectives import params
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
    register_variants,
    registry,
    spec_rows,
)
from jepa_audit.objectives.params import LayerRef, ObjectiveParams, ParamsError

# Import order is registration order is listing order.  Adding a family = adding a module name here.
FAMILY_MODULES = ("references", "trajectory", "distributional", "predictive", "fisher", "decoder_visible")
for _name in FAMILY_MODULES:
    importlib.import_module(f"{__name__}.{_name}")
freeze()


def check_config_params(cfg: Config) -> None:
    """Validate the parameters of every method ``cfg`` runs against the registry's typed models
    (ConfigError naming the config key); what :func:`jepa_audit.plugins.load_config` calls after loading."""
    params.check_config_params(cfg, registry())

__all__ = [
    "FAMILY_MODULES",
    "AuxContext",
    "AuxOut",
    "LayerRef",
    "Objective",
    "ObjectiveParams",
    "ObjectiveSpec",
    "ParamsError",
    "build_objective",
    "check_config_params",
    "declared_targets",
    "get_objective_class",
    "origin_of",
    "register_objective",
    "register_variants",
    "registry",
    "spec_rows",
]
