"""The objective interface and its registry (PEFT's tuner registry, lm-eval's task registry).

An auxiliary is one class in one family module, registered with one decorator::

    @register_objective
    class VicregVariance(Objective):
        spec = ObjectiveSpec(id="D1", family="distributional", description="...", core=True,
                             default_weight=0.1, params={"layer": -1, "gamma": 1.0})
        def forward(self, ctx: AuxContext) -> AuxOut: ...

The training loop never checks ids: it reads the spec (``grad_mode``, hence ``extra_backward``) and calls
``forward``.  Objectives may hold trainable parameters (predictors); the loop adds them to the optimizer.
All randomness inside an objective comes from ``self.generator`` (its own ``torch.Generator``), so adding
an auxiliary leaves the CE run's data order, init and dropout untouched.
"""

from __future__ import annotations

import contextlib
import difflib
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from jepa_audit.data.batch import Batch
from jepa_audit.objectives.params import (
    ObjectiveParams,
    derived_model,
    describe_type,
    problems,
    raise_problems,
)
from jepa_audit.results import resolve_key

Family = Literal["trajectory", "distributional", "predictive", "fisher", "decoder-visible", "reference"]
FAMILIES: tuple[str, ...] = ("trajectory", "distributional", "predictive", "fisher", "decoder-visible", "reference")
GradMode = Literal["add", "cone", "gate", "gradvac"]
Direction = Literal["increase", "decrease", "either"]
DIRECTIONS: tuple[str, ...] = ("increase", "decrease", "either")


@dataclass(frozen=True)
class ObjectiveSpec:
    """What the registry, the CLI and the loop know about an objective, without building it."""

    id: str
    family: Family
    description: str
    core: bool = False  # one of the audited 22
    default_weight: float = 0.1  # λ in CE + λ·aux (see docs/objectives.md for the calibration)
    params: dict[str, Any] = field(default_factory=dict)  # default hyper-parameters
    extra_forward: int = 0  # extra forward rows per example (0 = reads the CE forward only)
    grad_mode: GradMode = "add"  # how g_aux joins g_CE: plain sum, cone projection, cosine gate, GradVac
    source: str = ""  # where the formula comes from ([V] paper/code or [P] our proposal)
    # geometry key(s) of a results row this objective acts on: what its manipulation check tests
    # (stats/manipulation.py; reasons per objective in docs/objectives.md).  A "_Llast"/"_Lmid" suffix names
    # the row's last / middle logged layer (:func:`resolve_target_key`), so one spec fits every model depth.
    target_geometry: tuple[str, ...] = ()
    # the intended direction of each target_geometry template: "increase", "decrease" or "either". The
    # manipulation check counts a target as moved only in this direction (stats/manipulation.py; issue #25)
    target_direction: dict[str, Direction] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if set(self.target_direction) != set(self.target_geometry):
            raise ValueError(
                f"objective {self.id}: target_direction must name each target_geometry key exactly once "
                f"(expected {sorted(self.target_geometry)}, got {sorted(self.target_direction)})"
            )
        bad = {k: v for k, v in self.target_direction.items() if v not in DIRECTIONS}
        if bad:
            raise ValueError(f"objective {self.id}: target_direction {bad}; expected one of {list(DIRECTIONS)}")

    @property
    def extra_backward(self) -> int:
        """Extra backward passes per step: gradient surgery (cone, gate, GradVac) needs g_CE and g_aux
        separately, i.e. two ``autograd.grad`` calls instead of one ``backward`` (auxiliaries.md: "+1 backward")."""
        return 0 if self.grad_mode == "add" else 1


@dataclass
class AuxOut:
    loss: Tensor  # scalar, fp32
    logs: dict[str, float] = field(default_factory=dict)


@dataclass
class AuxContext:
    """What one training step hands an objective.

    ``hidden``: tuple of L+1 tensors (B, T, d); index 0 is the embeddings, index -1 the state after the final
    norm (what the LM head reads).  ``logits``: (B, T, V).  ``lm_head_weight``: (V, d).  ``forward``: what
    runs the objective's extra rows, with the model's keyword signature (:attr:`run`): None = the model
    itself; the training loop passes :class:`models.lean.LeanCall` when the CE rows run lean.
    """

    batch: Batch
    hidden: tuple[Tensor, ...]
    logits: Tensor
    model: nn.Module
    lm_head_weight: Tensor
    step: int = 0
    total_steps: int = 1
    forward: Callable[..., Any] | None = None

    @property
    def run(self) -> Callable[..., Any]:
        """Call this, not ``model``, for extra rows: the CE rows' own forward (lean or transformers')."""
        return self.model if self.forward is None else self.forward

    @cached_property
    def target_hidden(self) -> tuple[Tensor, ...]:
        """Hidden states of the target-only view rows, (B, Tr, d) per layer: one extra forward, run once.

        Run under ``fork_rng``: dropout in this extra row must not advance the global RNG, or the CE run's
        dropout stream would differ from the baseline's (objectives add their own generator on top via
        ``objectives.views.target_states``).
        """
        if self.batch.published:  # the target views share one packed forward with the NL views
            B = self.batch.target_ids.shape[0]
            return tuple(h[:B, : self.batch.target_ids.shape[1]] for h in self.view_hidden)
        dev = self.batch.target_ids.device
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            return target_view_hidden(self.run, self.batch)

    @cached_property
    def view_hidden(self) -> tuple[Tensor, ...]:
        """views.nl=published: hidden states of both view rows, (2B, max(Tr, Tn), d) per layer, target views
        first: one packed forward (run once; objectives with predictor tokens fill this slot themselves)."""
        if int(self.batch.nl_pred.max()) > 0:
            raise ValueError("these NL views carry predictor slots: only llm-jepa (its k > 0) can run them")
        dev = self.batch.target_ids.device
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            return published_view_hidden(self.run, self.batch)

    @property
    def nl_hidden(self) -> tuple[Tensor, ...]:
        """views.nl=published: the NL-view rows' hidden states, (B, Tn, d) per layer."""
        B, Tn = self.batch.nl_ids.shape
        return tuple(h[B:, :Tn] for h in self.view_hidden)

    def e_u(self, layer: int = -1) -> Tensor:
        """NL-view embedding (B, d): views.nl=prefix, the full row's state at the last NL content token (a
        causal prefix); published, the NL-view row's state at its last_token (−2)."""
        b = self.batch
        if b.published:
            h = self.nl_hidden[layer]
            return h[torch.arange(h.shape[0], device=h.device), b.nl_view_last]
        h = self.hidden[layer]
        return h[torch.arange(h.shape[0], device=h.device), b.nl_last]

    def e_t(self, layer: int = -1) -> Tensor:
        """Target-view embedding (B, d): the target-only row's state at its last content token."""
        h = self.target_hidden[layer]
        return h[torch.arange(h.shape[0], device=h.device), self.batch.target_last]


def target_view_hidden(forward: Callable[..., Any], batch: Batch) -> tuple[Tensor, ...]:
    """The target views' hidden states, (B, Tr, d) per layer (L+1 tensors), from one forward of the *packed*
    view rows (``batch.target_packed_*``, data/packing.py): block-diagonal attention through restarting
    position ids, so each view sees only itself, without computing the views' padding.

    ``forward`` is the model or a stand-in with its keyword signature (P3 passes a ``functional_call`` with
    EMA weights).  Pad positions (beyond ``target_mask``) repeat the view's last real state.
    """
    out = forward(
        input_ids=batch.target_packed_ids, position_ids=batch.target_packed_pos, use_cache=False,
        output_hidden_states=True,
    )  # fmt: skip
    return tuple(h.flatten(0, 1)[batch.target_unpack] for h in out.hidden_states)


def published_view_hidden(
    forward: Callable[..., Any], batch: Batch, pred_embeds: Tensor | None = None, embed: nn.Module | None = None
) -> tuple[Tensor, ...]:
    """views.nl=published: both views' hidden states, (2B, max(Tr, Tn), d) per layer (target views first),
    from one forward of ``batch.views_packed_*`` (block-diagonal through restarting position ids).

    ``pred_embeds`` (k, d): LLM-JEPA's predictor-token embeddings; slot i of each NL view (left to right,
    positions nl_view_last − k + 1 … nl_view_last, where finetune.py has ``<|predictor_k|>`` …
    ``<|predictor_1|>``) gets ``pred_embeds[i]``, and the packed rows go in as ``inputs_embeds`` looked up
    through ``embed`` (the model's input embeddings).
    """
    b = batch
    ids, pos = b.views_packed_ids, b.views_packed_pos
    if pred_embeds is None or pred_embeds.shape[0] == 0:
        out = forward(input_ids=ids, position_ids=pos, use_cache=False, output_hidden_states=True)
    else:
        k = pred_embeds.shape[0]
        if embed is None:
            raise ValueError("published_view_hidden: pred_embeds needs the model's input embeddings (embed)")
        if int(b.nl_pred.min()) != k or int(b.nl_pred.max()) != k:
            raise ValueError(
                f"llm-jepa has k={k} predictor tokens but the NL views were built with "
                f"{sorted(set(b.nl_pred.tolist()))} slots (views.nl=published builds them from aux.params.k)"
            )
        B = b.nl_ids.shape[0]
        emb = embed(ids).flatten(0, 1)  # (R′·C′, d)
        j = b.nl_view_last[:, None] - k + 1 + torch.arange(k, device=ids.device)  # (B, k) slot positions
        flat = b.views_unpack[B:].gather(1, j)  # (B, k) packed positions of the slots
        rows = pred_embeds.to(emb.dtype)[None].expand(B, -1, -1)  # (B, k, d): slot i ← pred_embeds[i]
        emb = emb.index_put((flat.flatten(),), rows.flatten(0, 1)).view(*ids.shape, -1)
        out = forward(inputs_embeds=emb, position_ids=pos, use_cache=False, output_hidden_states=True)
    return tuple(h.flatten(0, 1)[b.views_unpack] for h in out.hidden_states)


class Objective(nn.Module):
    """Base class.  Subclasses set ``spec`` and implement ``forward``; ``Params`` (an
    :class:`~jepa_audit.objectives.params.ObjectiveParams` model) types the hyper-parameters whose values
    ``spec.params`` gives (a class without one gets a model derived from those values' types)."""

    spec: ClassVar[ObjectiveSpec]
    Params: ClassVar[type[ObjectiveParams] | None] = None

    def __init__(self, params: Mapping[str, Any], d_model: int, n_layers: int, generator: torch.Generator):
        super().__init__()
        values = {**self.spec.params, **params}
        raise_problems(self.spec.id, self.param_problems(values))
        self.p = self.params_model().model_validate(values)  # typed: self.p.layer, self.p.eps
        self.d_model, self.n_layers, self.generator = d_model, n_layers, generator

    @classmethod
    def params_model(cls) -> type[ObjectiveParams]:
        """The class's parameter model: ``Params`` when it declares one, else derived from ``spec.params``."""
        if cls.Params is not None:
            return cls.Params
        if cls not in _DERIVED:
            _DERIVED[cls] = derived_model(cls.spec.id, cls.spec.params)
        return _DERIVED[cls]

    @classmethod
    def param_problems(cls, values: Mapping[str, Any]) -> list[tuple[str, str]]:
        """(key, what is wrong) for each problem of the full parameter set ``values`` (defaults included);
        empty when it validates.  Objectives that wrap another (V3–V5) add the inner one's problems."""
        return problems(cls.params_model(), values)

    def forward(self, ctx: AuxContext) -> AuxOut:  # pragma: no cover - abstract
        raise NotImplementedError

    def after_step(self, model: nn.Module, step: int, total_steps: int) -> None:
        """Hook after each optimizer step (EMA targets update here)."""


_REGISTRY: dict[str, type[Objective]] = {}
_DERIVED: dict[type, type[ObjectiveParams]] = {}  # class → parameter model derived from its spec (no Params)
_FROZEN = False
_ORIGIN: dict[str, str] = {}  # id → where it was registered from (a plugin file, an entry point); built-ins absent
_LOADING: str | None = None  # the plugin being imported now (set by :func:`open_for_plugin`)
GRAD_MODES: tuple[str, ...] = ("add", "cone", "gate", "gradvac")


def check_spec(cls: type) -> ObjectiveSpec:
    """``cls.spec`` when it is a valid :class:`ObjectiveSpec`, else ValueError/TypeError naming what is wrong."""
    spec = getattr(cls, "spec", None)
    if not isinstance(spec, ObjectiveSpec):
        raise TypeError(f"objective class {cls.__name__} has no `spec = ObjectiveSpec(...)` class attribute")
    if not isinstance(cls, type) or not issubclass(cls, Objective):
        raise TypeError(f"objective {spec.id!r}: {cls.__name__} must subclass jepa_audit.objectives.Objective")
    if not isinstance(spec.id, str) or not spec.id.strip() or spec.id != spec.id.strip():
        raise ValueError(f"objective spec id {spec.id!r}: expected a non-empty string without outer spaces")
    if spec.family not in FAMILIES:
        raise ValueError(f"objective {spec.id}: unknown family {spec.family!r}; expected one of {FAMILIES}")
    if spec.grad_mode not in GRAD_MODES:
        raise ValueError(f"objective {spec.id}: unknown grad_mode {spec.grad_mode!r}; expected one of {GRAD_MODES}")
    if not isinstance(spec.params, dict):
        raise ValueError(f"objective {spec.id}: params must be a dict of default hyper-parameters")
    declared = cls.Params
    if declared is not None and not (isinstance(declared, type) and issubclass(declared, ObjectiveParams)):
        raise TypeError(f"objective {spec.id}: Params must subclass jepa_audit.objectives.ObjectiveParams")
    found = cls.param_problems(spec.params)
    if found:  # the spec's defaults are the id's whole parameter set: each must fit the declared types
        raise ValueError(
            f"objective {spec.id}: spec.params does not fit {cls.params_model().__name__}: "
            + "; ".join(f"{k}: {m}" for k, m in found)
        )
    w = spec.default_weight
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not w >= 0:
        raise ValueError(f"objective {spec.id}: default_weight must be a number ≥ 0, got {w!r}")
    if isinstance(spec.extra_forward, bool) or not isinstance(spec.extra_forward, int) or spec.extra_forward < 0:
        raise ValueError(f"objective {spec.id}: extra_forward must be an integer ≥ 0, got {spec.extra_forward!r}")
    tg = spec.target_geometry
    if not isinstance(tg, tuple) or not all(isinstance(t, str) and t for t in tg):
        raise ValueError(f"objective {spec.id}: target_geometry must be a tuple of geometry keys, got {tg!r}")
    return spec


def register_objective(cls: type[Objective]) -> type[Objective]:
    """Class decorator: add ``cls`` under ``cls.spec.id``.  Duplicate ids and invalid specs raise.

    Outside the package, objectives register while :func:`jepa_audit.plugins.load_plugins` imports their file
    (``--include``, ``plugins:``, entry points): the registry is frozen otherwise."""
    spec = check_spec(cls)
    if _FROZEN:
        raise RuntimeError(
            f"registry is frozen; cannot register {spec.id} (load a plugin with --include or `plugins:` instead)"
        )
    if spec.id in _REGISTRY:
        where = _ORIGIN.get(spec.id, "the built-in registry")
        raise KeyError(f"objective id {spec.id!r} registered twice (it is already in {where})")
    _REGISTRY[spec.id] = cls
    if _LOADING is not None:
        _ORIGIN[spec.id] = _LOADING
    return cls


def register_variants(body: type[Objective], *specs: ObjectiveSpec) -> tuple[type[Objective], ...]:
    """Register one objective body under several ids, one per spec: the variants share ``forward`` and the
    ``Params`` types and differ in their parameter set (``spec.params``), description and targets — P1, P6
    and P8 are one view-cosine body with three parameter sets.  Returns the registered classes (subclasses
    of ``body`` named ``<body>_<id>``, set on ``body``'s module so pickle finds them)."""
    out = []
    for spec in specs:
        name = body.__name__.lstrip("_") + "_" + "".join(c if c.isalnum() else "_" for c in spec.id)
        cls = type(name, (body,), {"spec": spec, "__module__": body.__module__, "__qualname__": name,
                                   "__doc__": body.__doc__})  # fmt: skip
        setattr(sys.modules[body.__module__], name, cls)
        out.append(register_objective(cls))
    return tuple(out)


@contextlib.contextmanager
def open_for_plugin(origin: str) -> Iterator[None]:
    """Open the frozen registry while one plugin (``origin``: its file or entry point) is imported, so its
    ``@register_objective`` classes register and remember where they came from; frozen again after."""
    global _FROZEN, _LOADING
    was, _FROZEN, _LOADING = _FROZEN, False, origin
    try:
        yield
    finally:
        _FROZEN, _LOADING = was, None


def unregister(ids: Iterable[str]) -> None:
    """Drop plugin objectives (a plugin file re-imported after an edit registers its classes anew)."""
    for i in ids:
        if i in _ORIGIN:
            _REGISTRY.pop(i, None)
            _ORIGIN.pop(i, None)


def origin_of(name: str) -> str:
    """Where objective ``name`` was registered from: ``built-in``, a plugin file or an entry point."""
    return _ORIGIN.get(name, "built-in")


def freeze() -> None:
    global _FROZEN
    _FROZEN = True


def registry() -> dict[str, type[Objective]]:
    return dict(_REGISTRY)


def get_objective_class(name: str) -> type[Objective]:
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown objective {name!r}.{hint} See `jepa-audit aux list`.") from None


def declared_targets(name: str) -> tuple[tuple[str, ...], dict[str, str]] | None:
    """(``target_geometry``, ``target_direction``) of a registered objective, None when ``name`` is not one.
    The statistics' :data:`jepa_audit.results.TargetLookup` for rows written before cells recorded them:
    the torch side passes this function down (``build_summary(target_lookup=...)``), so stats never imports
    the registry."""
    cls = _REGISTRY.get(name)
    if cls is None:
        return None
    return tuple(cls.spec.target_geometry), dict(cls.spec.target_direction)


def build_objective(
    name: str, params: dict[str, Any], d_model: int, n_layers: int, seed: int
) -> Objective:
    """Instantiate an objective with its own generator seeded from the cell seed (keeps runs paired)."""
    cls = get_objective_class(name)
    gen = torch.Generator().manual_seed(10_007 * seed + 17)
    return cls(params, d_model=d_model, n_layers=n_layers, generator=gen)


def spec_rows() -> list[dict[str, Any]]:
    """`jepa-audit aux list --json` rows."""
    return [_spec_row(cls) for cls in _REGISTRY.values()]


def _spec_row(cls: type[Objective]) -> dict[str, Any]:
    s, model = cls.spec, cls.params_model()
    return {
        "id": s.id,
        "family": s.family,
        "description": s.description,
        "core": s.core,
        "extra_forward": s.extra_forward,
        "extra_backward": s.extra_backward,
        "params": s.params,
        "param_types": {k: describe_type(model, k) for k in model.model_fields},
        "default_weight": s.default_weight,
        "grad_mode": s.grad_mode,
        "source": s.source,
        "target_geometry": list(s.target_geometry),
        "origin": origin_of(s.id),
        "target_direction": {k: s.target_direction[k] for k in s.target_geometry},
    }


def resolve_target_key(template: str, geometry_keys: Iterable[str]) -> str | None:
    """The geometry key a ``target_geometry`` entry names among ``geometry_keys``: as written, else
    ``<prefix>_Llast`` → the largest logged layer index, ``<prefix>_Lmid`` → the logged index nearest half of
    it (e.g. ``curvature_answer_Llast`` → ``curvature_answer_L2`` on the 2-layer tiny model); None when absent.
    One home: :func:`jepa_audit.results.resolve_key` (the torch-free row schema; the statistics use it too)."""
    return resolve_key(template, geometry_keys)


SpecFilter = Callable[[ObjectiveSpec], bool]
