"""The results row's schema: one line of results.jsonl (DESIGN.md) as a typed model, the metric specs it
declares, and how a target-geometry template resolves against its geometry keys.

Torch-free and importing nothing of the package: the statistics and the report (which read rows) and the
objectives, tasks and cell (which write them) all build on it; it is the bottom of the layering
(pyproject.toml, ``[tool.importlinter]``).

A cell returns a plain dict (JSON is the contract); the readers (the runner's row check, progress, tracking,
the summary) parse it with :meth:`ResultsRow.parse` instead of each reading the dict literal its own way.
Keys beyond those declared here are kept as they are (``extra="allow"``): DESIGN.md lets rows grow.
Rows written before ``task`` / ``metric_specs`` existed read as NL-RX's.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

__all__ = [
    "LEGACY_METRICS",
    "DeclaredTargets",
    "MetricSpec",
    "ResultsRow",
    "RowError",
    "TargetLookup",
    "metric_specs_of_row",
    "resolve_key",
]


@dataclass(frozen=True)
class MetricSpec:
    """One metric a task reports: ``name`` in the results row's ``metrics`` (a fraction 0–1), ``field`` the
    per-item key of the predictions file that holds its 0/1 correctness, and its direction."""

    name: str
    field: str
    higher_is_better: bool = True
    description: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


#: The metric specs of rows written before tasks were plug-ins (NL-RX's, primary first).
LEGACY_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("exact_match", "exact", True, "whitespace-stripped string equality with the gold regex"),
    MetricSpec("dfa_accuracy", "dfa", True, "the predicted regex denotes the gold regex's language"),
)


def metric_specs_of_row(row: dict[str, Any]) -> tuple[MetricSpec, ...]:
    """The metric specs a results row declares (``metric_specs``); NL-RX's for rows written before them."""
    specs = row.get("metric_specs")
    if not isinstance(specs, list) or not specs:
        return LEGACY_METRICS
    try:
        return tuple(MetricSpec(**s) for s in specs)
    except TypeError as e:
        raise RowError(f"results row: metric_specs {specs!r} is not a list of metric specs ({e})") from None


_LAYER_KEY = re.compile(r"^(?P<prefix>.+)_L(?P<layer>\d+)$")


def resolve_key(template: str, geometry_keys: Iterable[str]) -> str | None:
    """``template`` as a key of a geometry dict with ``geometry_keys`` (same rule as
    ``objectives.base.resolve_target_key``: as written, else ``_Llast`` = largest logged layer index,
    ``_Lmid`` = the logged index nearest half of it, ties to the lower); None when absent."""
    keys = set(geometry_keys)
    if template in keys:
        return template
    for suffix in ("_Llast", "_Lmid"):
        if template.endswith(suffix):
            prefix = template[: -len(suffix)]
            layers = sorted(int(m["layer"]) for k in keys if (m := _LAYER_KEY.match(k)) and m["prefix"] == prefix)
            if not layers:
                return None
            if suffix == "_Llast":
                return f"{prefix}_L{layers[-1]}"
            half = layers[-1] / 2
            return f"{prefix}_L{min(layers, key=lambda x: (abs(x - half), x))}"
    return None


#: An objective's declared targets: (target_geometry templates, {template: increase | decrease | either}).
DeclaredTargets = tuple[Sequence[str], Mapping[str, str]]
#: method id → its declared targets, or None when unknown. Rows written before cells recorded
#: ``target_geometry``/``target_direction`` get them from such a lookup; the torch side builds it from the
#: objectives registry (``objectives.declared_targets``) and passes it down, so the statistics stay torch-free.
TargetLookup = Callable[[str], DeclaredTargets | None]

class RowError(ValueError):
    """A results row does not have the DESIGN.md shape; the message names the key."""


def _finite(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    return float(x) if math.isfinite(x) else None


class ResultsRow(BaseModel):
    """Every key a cell writes (:func:`jepa_audit.cell.run_cell` builds one), in the order it writes them:
    ``benchmark, method, seed, mode, metrics, geometry, grad_cosine, config_hash, wall_s, status`` (DESIGN.md)
    plus what the cell records about itself.  Only the DESIGN.md identity and ``metrics`` are required, so rows
    written before a key existed (and fake cells) still read; keys beyond these are kept as they are."""

    model_config = ConfigDict(extra="allow")

    benchmark: str
    method: str
    seed: int | str
    mode: str = "lora"
    family: str | None = None  # the objective's family (objectives registry)
    weight: float | None = None  # λ as used (the calibrated or anchored one where it applies)
    dose: dict[str, Any] | None = None  # λ·‖∇aux‖/‖∇CE‖ at the probes (train.dose_summary); None for ce
    weight_source: str | None = None  # calibrated | preset | registry
    calibration_smallest: bool | None = None  # the validation grid picked its smallest λ
    target_geometry: list[str] | None = None  # the geometry keys the objective acts on (stats/manipulation.py)
    target_direction: dict[str, str] | None = None  # template → increase | decrease | either (the intended way)
    views: str | None = None  # views.nl: how the two views were built (data/views.py)
    labels: str | None = None  # train.labels: the CE targets
    task: str = "nlrx"
    metric_specs: list[dict[str, Any]] | None = None
    metrics: dict[str, Any]
    geometry: dict[str, Any] | None = None
    grad_cosine: dict[str, Any] | None = None
    train: dict[str, Any] | None = None  # steps, final_loss, aux_skipped, forward (lean | hf)
    timing: dict[str, Any] | None = None  # prepare_s, train_s, eval_s, geometry_s
    data_source: str | None = None
    predictions_file: str | None = None  # relative to the audit directory's cells/
    config_hash: str | None = None
    deterministic: bool | None = None  # deterministic GPU kernels on (determinism.py)
    versions: dict[str, str | None] | None = None  # torch, transformers, peft: the installed versions that ran it
    wall_s: float | None = None
    status: str = "done"

    def as_row(self) -> dict[str, Any]:
        """The row as results.jsonl holds it: the declared keys in order, then any extra keys."""
        return self.model_dump()

    @classmethod
    def parse(cls, row: Mapping[str, Any]) -> ResultsRow:
        """Validate ``row``; :class:`RowError` naming the first bad key otherwise."""
        try:
            return cls.model_validate(dict(row))
        except ValidationError as e:
            err = e.errors()[0]
            key = ".".join(str(x) for x in err["loc"]) or "(row)"
            raise RowError(f"results row: key {key!r}: {err['msg']}") from None

    def specs(self) -> tuple[MetricSpec, ...]:
        """The metric specs the row declares (NL-RX's when it declares none; :func:`metric_specs_of_row`)."""
        return metric_specs_of_row({"metric_specs": self.metric_specs})

    def metric(self, name: str) -> float | None:
        """``metrics[name]`` as a finite float, else None."""
        return _finite(self.metrics.get(name))

    def scores(self) -> dict[str, float | None]:
        """Every declared metric's value (None where missing or not finite), primary first."""
        return {s.name: self.metric(s.name) for s in self.specs()}

    def numeric(self) -> dict[str, float]:
        """The row's finite numbers as flat names (``metrics.exact_match``, ``grad_cosine.mean``, ``wall_s``)."""
        out: dict[str, float] = {}

        def walk(prefix: str, obj: Any, depth: int) -> None:
            if (v := _finite(obj)) is not None:
                out[prefix] = v
            elif isinstance(obj, Mapping) and depth < 3:
                for k, x in obj.items():
                    walk(f"{prefix}.{k}", x, depth + 1)

        for section in ("metrics", "geometry", "grad_cosine"):
            walk(section, getattr(self, section), 0)
        if (w := _finite(self.wall_s)) is not None:
            out["wall_s"] = w
        return out
