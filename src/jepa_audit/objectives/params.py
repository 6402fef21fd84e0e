"""Typed hyper-parameters of an objective: one small pydantic model per objective body, validated when the
config is loaded (:func:`check_config_params`) and again when the objective is built.

An objective class declares its types once::

    class CurvatureParams(ObjectiveParams):
        layer: LayerRef = Field(description="hidden state read: 'last', 'mid', 'quarter' or an index")
        form: Literal["angle", "one_minus_cos"]
        eps: PositiveFloat

and each registered id gives that model its *values* in ``spec.params`` (T1 and T2 are one body, two
parameter sets; :func:`jepa_audit.objectives.base.register_variants`).  The fields have no defaults of their
own: ``spec.params`` is the one home of an id's defaults, and registration fails when the two disagree (a
default missing, an extra key, a value of the wrong type).  A plugin that declares no model gets one derived
from its defaults' types (:func:`derived_model`), so an unknown key or a string where a number belongs still
fails at config load, naming the key.

Why pydantic: it is what config.py already validates with, so a bad value reads the same wherever it is
written (``aux.params``, ``aux.per_method.<id>.params``, ``aux check --param``).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, create_model

from jepa_audit.config import Config, ConfigError

__all__ = [
    "LayerRef",
    "NoParams",
    "ObjectiveParams",
    "ParamsError",
    "check_config_params",
    "derived_model",
    "describe_type",
    "problems",
    "raise_problems",
]

#: A layer parameter: "last" (post-final-norm), "mid" (n_layers // 2), "quarter" (n_layers // 4) or an index
#: into the hidden-state tuple (0 = embeddings); resolved against the model's depth by objectives.layers.
LayerRef = Annotated[
    StrictInt | Literal["last", "mid", "quarter"],
    Field(description="hidden state read: last (after the final norm), mid, quarter, or an index (0 = embeddings)"),
]


class ParamsError(ValueError):
    """An objective's parameters do not fit its typed model; the message names the id, the key and what was
    expected."""


class ObjectiveParams(BaseModel):
    """Base of every objective's parameter model: unknown keys are refused, values are frozen after
    validation.  ``params["key"]`` reads like ``params.key`` (plugins written against the old dict API)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def __getitem__(self, key: str) -> Any:
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None

    def get(self, key: str, default: Any = None) -> Any:
        """``params.get("key", default)``, as on the dict the parameters were before they were typed."""
        return getattr(self, key, default)

    def as_dict(self) -> dict[str, Any]:
        """The values as a plain dict (the registry's ``params`` shape)."""
        return self.model_dump()


def derived_model(objective_id: str, defaults: Mapping[str, Any]) -> type[ObjectiveParams]:
    """A parameter model for an objective that declares none: each key typed after its default (bool, int,
    float — which also takes an int —, str; anything else as given), every key optional at its default."""

    def annotation(v: Any) -> Any:
        if isinstance(v, bool):
            return bool
        if isinstance(v, float):
            return float
        for t in (int, str):
            if isinstance(v, t):
                return t
        return Any

    fields: dict[str, Any] = {k: (annotation(v), v) for k, v in defaults.items()}
    name = "Params_" + "".join(c if c.isalnum() else "_" for c in objective_id)
    return create_model(name, __base__=ObjectiveParams, **fields)


def problems(model: type[ObjectiveParams], values: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(key, what is wrong) for each problem of ``values`` under ``model``; empty when they validate."""
    out = [(k, "unknown parameter; expected one of " + ", ".join(sorted(model.model_fields)))
           for k in sorted(set(values) - set(model.model_fields))]  # fmt: skip
    if out:
        return out
    try:
        model.model_validate(dict(values))
    except ValidationError as e:
        by_key: dict[str, list[Any]] = {}
        for err in e.errors():  # a union's members each report: one line per key, not per member
            by_key.setdefault(str(err["loc"][0]) if err["loc"] else "(all)", []).append(err)
        for key, errs in by_key.items():
            err = errs[0]
            got = "missing (the spec gives no default)" if err["type"] == "missing" else f"got {err['input']!r}"
            msg = err["msg"] if len(errs) == 1 else f"expected {describe_type(model, key)}"
            out.append((key, f"{msg} ({got})"))
    return out


def raise_problems(objective_id: str, found: list[tuple[str, str]], where: str = "params") -> None:
    """ParamsError listing ``found`` (from :func:`problems`), one line per key: ``params.max_span: Input
    should be a valid integer (got 'two')``; nothing when ``found`` is empty."""
    if found:
        raise ParamsError(
            f"objective {objective_id}: invalid parameter(s):\n"
            + "\n".join(f"  {where}.{key}: {msg}" for key, msg in found)
        )


def _bounds(metadata: Any) -> str:
    """annotated_types bounds as text: `` > 0``, `` ≥ 2``, or an interval `` in (0, 1]``."""
    lo = hi = None
    for m in metadata:
        for attr, side in (("gt", "("), ("ge", "[")):
            if getattr(m, attr, None) is not None:
                lo = (side, getattr(m, attr))
        for attr, side in (("lt", ")"), ("le", "]")):
            if getattr(m, attr, None) is not None:
                hi = (side, getattr(m, attr))
    if lo and hi:
        return f" in {lo[0]}{lo[1]:g}, {hi[1]:g}{hi[0]}"
    if lo:
        return f" {'>' if lo[0] == '(' else '≥'} {lo[1]:g}"
    if hi:
        return f" {'<' if hi[0] == ')' else '≤'} {hi[1]:g}"
    return ""


def describe_type(model: type[ObjectiveParams], name: str) -> str:
    """A field's type as a reader writes it: ``int ≥ 1``, ``"auto" | int > 0``, ``"angle" | "one_minus_cos"``."""
    info = model.model_fields[name]
    return _type_text(info.annotation) + _bounds(info.metadata)


def _type_text(ann: Any) -> str:
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is Literal:
        return " | ".join(f'"{a}"' if isinstance(a, str) else repr(a) for a in args)
    if origin is Annotated:
        return _type_text(args[0]) + _bounds(args[1:])
    if args and origin in (typing.Union, types.UnionType):
        return " | ".join(_type_text(a) for a in args)
    if origin is dict or ann is dict:
        return "mapping"
    if ann is Any:
        return "any"
    return getattr(ann, "__name__", str(ann))


def _methods(cfg: Config) -> list[str]:
    """The objective ids a config runs: ``aux.method`` and every method of its grid, in order, once."""
    return list(dict.fromkeys([cfg.aux.method, *cfg.audit.methods]))


class _Checkable(typing.Protocol):
    """What :func:`check_config_params` needs of a registered objective class (objectives.base.Objective)."""

    spec: Any

    @classmethod
    def param_problems(cls, values: Mapping[str, Any]) -> list[tuple[str, str]]: ...


def check_config_params(cfg: Config, registry: Mapping[str, _Checkable]) -> None:
    """Every method the config runs gets its parameters (``aux.params`` under ``aux.per_method.<id>.params``
    over the spec's defaults) validated against its model before any compute; ConfigError naming the config
    key otherwise.  ``registry``: id → objective class (ids it does not know are left to the registry's own
    did-you-mean error)."""
    lines: list[str] = []
    for method in _methods(cfg):
        if method == "ce" or method not in registry:
            continue
        cls = registry[method]
        _, overrides = cfg.aux.model_copy(update={"method": method}).resolved(0.0)  # the cell's own merge
        per = cfg.aux.per_method.get(method)
        own = per.params if per is not None else {}  # only to say which key of the config a problem came from
        for key, msg in cls.param_problems({**cls.spec.params, **overrides}):
            top = key.split(".")[0]
            where = (f"aux.per_method.{method}.params" if top in own
                     else "aux.params" if top in cfg.aux.params else f"{method}'s spec")  # fmt: skip
            lines.append(f"  {where}.{key} (objective {method}): {msg}")
    if lines:
        raise ConfigError("invalid objective parameters:\n" + "\n".join(lines))


class NoParams(ObjectiveParams):
    """An objective without hyper-parameters (its ``spec.params`` is ``{}``)."""
