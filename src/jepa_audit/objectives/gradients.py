"""How g_aux joins g_CE, and the gradient-cosine probe: pure functions on per-parameter gradient lists.

The loop gets the two gradients from one graph with two ``autograd.grad`` calls (:func:`split_grads`,
the first with ``retain_graph``), then sets ``p.grad`` to ``combine(g_ce, g_aux, λ, spec.grad_mode, state)``:
no third backward.  On steps with neither a probe nor a non-additive ``grad_mode`` it may instead call
``(ce + λ·aux).backward()`` once, which gives the same update as mode "add".

Gradient lists are aligned with one parameter list; ``None`` (a parameter that a loss does not reach, e.g.
a predictor under CE) counts as zeros.  Dot products and norms accumulate in fp32 over *all* parameters
jointly (auxiliaries.md §1.7 formulas are on the flattened vector); nothing here calls ``.item()`` except
the probe, so the combine path never synchronises a GPU.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from jepa_audit.objectives.base import GradMode
from jepa_audit.objectives.params import ObjectiveParams

Grads = Sequence[Tensor | None]
_TINY = 1e-30  # floor of squared norms: a zero gradient gives coefficient 0, never NaN


# ----------------------------------------------------------------------------------------------------------
# Parameter groups
# ----------------------------------------------------------------------------------------------------------

_LAYER_RE = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def layer_group(param_name: str) -> str:
    """Group of an HF/PEFT parameter name: "layer_<i>", "embed", "head", "final_norm" or "other".

    ``base_model.model.model.layers.3.self_attn.q_proj.lora_A.default.weight`` → "layer_3";
    ``model.embed_tokens.weight`` → "embed"; ``lm_head.weight`` → "head"; ``model.norm.weight`` → "final_norm".
    """
    m = _LAYER_RE.search(param_name)
    if m:
        return f"layer_{int(m.group(1))}"
    if "embed_tokens" in param_name or "wte" in param_name:
        return "embed"
    if "lm_head" in param_name:
        return "head"
    if re.search(r"(?:^|\.)norm\.", param_name):
        return "final_norm"
    return "other"


# ----------------------------------------------------------------------------------------------------------
# Dots, norms, cosines
# ----------------------------------------------------------------------------------------------------------


def _pair_dots(a: Grads, b: Grads) -> Tensor:
    """(3, P) fp32: per parameter ⟨a_i, b_i⟩, ‖a_i‖², ‖b_i‖² (zeros where either side is None)."""
    if len(a) != len(b):
        raise ValueError(f"gradient lists differ in length: {len(a)} vs {len(b)}")
    dev = next((t.device for t in (*a, *b) if t is not None), torch.device("cpu"))
    rows = []
    zero = torch.zeros((), device=dev)
    for x, y in zip(a, b, strict=True):
        xf = x.float() if x is not None else None
        yf = y.float() if y is not None else None
        ab = (xf * yf).sum() if xf is not None and yf is not None else zero
        aa = (xf * xf).sum() if xf is not None else zero
        bb = (yf * yf).sum() if yf is not None else zero
        rows.append(torch.stack([ab, aa, bb]))
    if not rows:
        return torch.zeros(3, 0, device=dev)
    return torch.stack(rows, 1)


def flat_dot(a: Grads, b: Grads) -> Tensor:
    """⟨a, b⟩ over the concatenation of all parameters, fp32 0-dim tensor; None counts as zeros."""
    return _pair_dots(a, b)[0].sum()


def _cos(ab: float, aa: float, bb: float) -> tuple[float, bool]:
    if aa <= 0.0 or bb <= 0.0:
        return 0.0, True
    return ab / math.sqrt(aa * bb), False


@dataclass
class CosineStats:
    """One probe: cos(g_aux, g_CE) over all parameters and per group, with both norms."""

    cos: float
    per_group: dict[str, float]
    norm_aux: float
    norm_ce: float
    zero_norm: bool  # a side had zero norm: cos is reported as 0.0 and flagged, not NaN


def grad_cosine_stats(g_aux: Grads, g_ce: Grads, groups: Sequence[str]) -> CosineStats:
    """Overall and per-group cosine; ``groups[i]`` names the group of parameter i (see :func:`layer_group`)."""
    if len(groups) != len(g_aux):
        raise ValueError(f"{len(groups)} group names for {len(g_aux)} gradients")
    d = _pair_dots(g_aux, g_ce).double().cpu()  # one device→host transfer
    ab, aa, bb = (float(v) for v in d.sum(1)) if d.shape[1] else (0.0, 0.0, 0.0)
    cos, zero = _cos(ab, aa, bb)
    acc: dict[str, list[float]] = {}
    for i, g in enumerate(groups):
        s = acc.setdefault(g, [0.0, 0.0, 0.0])
        for j in range(3):
            s[j] += float(d[j, i])
    per = {g: _cos(*s)[0] for g, s in sorted(acc.items(), key=lambda kv: _group_key(kv[0]))}
    return CosineStats(cos=cos, per_group=per, norm_aux=math.sqrt(aa), norm_ce=math.sqrt(bb), zero_norm=zero)


def grad_cosine(g_aux: Grads, g_ce: Grads, groups: Sequence[str]) -> tuple[float, dict[str, float]]:
    """(cos over all parameters, {group: cos}); a zero-norm side gives 0.0 (see :func:`grad_cosine_stats`
    for the flag and the norms)."""
    s = grad_cosine_stats(g_aux, g_ce, groups)
    return s.cos, s.per_group


def _group_key(g: str) -> tuple[int, int, str]:
    order = {"embed": 0, "head": 2, "final_norm": 3, "other": 4}
    if g.startswith("layer_"):
        return (1, int(g[6:]), g)
    return (order.get(g, 5), 0, g)


# ----------------------------------------------------------------------------------------------------------
# Combining g_aux with g_CE
# ----------------------------------------------------------------------------------------------------------


def init_grad_state(params: Mapping[str, Any] | ObjectiveParams) -> dict[str, Any]:
    """The mutable state :func:`combine` keeps across steps, seeded from an objective's params
    (GradVac: ``phi_target``, ``ema_beta``).  Create once per run: ``init_grad_state(objective.p)``."""
    return {
        "phi_target": float(params.get("phi_target", 0.1)),
        "ema_beta": float(params.get("ema_beta", 0.0)),
    }


def _coefficients(g_ce: Grads, g_aux: Grads, mode: GradMode, state: dict[str, Any]) -> tuple[Tensor, Tensor]:
    """(c_ce, c_aux), 0-dim fp32 on the gradients' device, such that g_a′ = c_ce·g_CE + c_aux·g_a."""
    d = _pair_dots(g_aux, g_ce).sum(1)
    ab, aa, bb = d[0], d[1].clamp_min(_TINY), d[2].clamp_min(_TINY)
    cos = (ab / (aa * bb).sqrt()).clamp(-1.0, 1.0)
    state["cos_raw"] = cos.detach()
    zero, one = torch.zeros_like(cos), torch.ones_like(cos)
    if mode == "cone":  # remove only the component that opposes g_CE
        return -ab.clamp(max=0.0) / bb, one
    if mode == "gate":
        return zero, cos.clamp_min(0.0)
    if mode == "gradvac":
        phi_t = torch.as_tensor(state.get("phi_target", 0.1), dtype=torch.float32, device=cos.device)
        s_t = (1.0 - phi_t * phi_t).clamp_min(1e-12).sqrt()
        s = (1.0 - cos * cos).clamp_min(0.0).sqrt()
        coef = aa.sqrt() * (phi_t * s - cos * s_t) / (bb.sqrt() * s_t)
        beta = float(state.get("ema_beta", 0.0))
        if beta > 0.0:
            state["phi_target"] = ((1.0 - beta) * phi_t + beta * cos).detach()
        return torch.where(cos < phi_t, coef, zero), one
    raise ValueError(f"unknown grad_mode {mode!r}; expected add, cone, gate or gradvac")


def combine(
    g_ce: Grads, g_aux: Grads, weight: float, mode: GradMode, state: dict[str, Any], consume: bool = False
) -> list[Tensor | None]:
    """Update direction per parameter (None only where both gradients are None).

    - ``add``:     g_CE + λ g_a
    - ``cone``:    g_CE + λ[g_a − min(0, ⟨g_a, g_CE⟩)/‖g_CE‖² g_CE]  ⇒ ⟨λ g_a′, g_CE⟩ ≥ 0
    - ``gate``:    g_CE + λ max(0, cos(g_a, g_CE)) g_a               (Du et al. 2018)
    - ``gradvac``: if φ = cos(g_a, g_CE) < φ_T,
                   g_a′ = g_a + ‖g_a‖(φ_T√(1−φ²) − φ√(1−φ_T²)) / (‖g_CE‖√(1−φ_T²)) · g_CE, so cos(g_a′, g_CE) = φ_T;
                   with ``state["ema_beta"]`` > 0 the target then moves, φ_T ← (1−β)φ_T + βφ (Wang et al. 2021)

    The non-additive modes write ``state["cos_raw"]`` (cos(g_a, g_CE) before any change, 0-dim tensor).
    λ = 0 returns g_CE exactly in every mode (finite gradients).

    ``consume=True`` (``g_ce``, ``g_aux`` mutable lists the caller holds no other reference to): each entry
    is set to None once its update is built, so the peak is about two gradient sets, not three (≈ 5 GB
    each for a fully fine-tuned 1B model in fp32).
    """
    if len(g_ce) != len(g_aux):
        raise ValueError(f"gradient lists differ in length: {len(g_ce)} vs {len(g_aux)}")
    if mode != "add":
        c_ce, c_aux = _coefficients(g_ce, g_aux, mode, state)
        a_ce, a_aux = 1.0 + weight * c_ce, weight * c_aux  # update = a_ce·g_CE + a_aux·g_a
    out: list[Tensor | None] = []
    for i, (gc, ga) in enumerate(zip(g_ce, g_aux, strict=True)):
        if consume:
            g_ce[i] = g_aux[i] = None  # type: ignore[index]
        if mode == "add":
            out.append(gc if ga is None else ga * weight if gc is None else gc + weight * ga)
        elif ga is None:
            out.append(gc)
        elif gc is None:
            out.append((a_aux.to(ga.device) * ga.float()).to(ga.dtype))
        else:
            out.append((a_ce.to(gc.device) * gc.float() + a_aux.to(gc.device) * ga.float()).to(gc.dtype))
    return out


def split_grads(
    ce: Tensor, aux: Tensor, params: Sequence[Tensor]
) -> tuple[list[Tensor | None], list[Tensor | None]]:
    """(∇CE, ∇aux) over ``params`` from one forward graph: two ``autograd.grad`` calls, the first keeping
    the graph.  Parameters a loss does not reach get None."""
    g_ce = torch.autograd.grad(ce, params, retain_graph=True, allow_unused=True)
    g_aux = torch.autograd.grad(aux, params, allow_unused=True) if aux.requires_grad else [None] * len(params)
    return list(g_ce), list(g_aux)


def assign_grads(params: Sequence[Tensor], update: Grads, accumulate: bool = True) -> None:
    """Write an update direction into ``p.grad`` (adding to what is there when ``accumulate``: grad-accum)."""
    for p, g in zip(params, update, strict=True):
        if g is None:
            continue
        if accumulate and p.grad is not None:
            p.grad.add_(g)
        else:
            p.grad = g.detach().clone()


# ----------------------------------------------------------------------------------------------------------
# Probe accumulation and non-finite guard (what ends up in results.jsonl)
# ----------------------------------------------------------------------------------------------------------


@dataclass
class CosineProbe:
    """Accumulates probes over a run; :meth:`summary` is results.jsonl's ``grad_cosine`` object."""

    trace: list[tuple[int, float]] = field(default_factory=list)
    per_group: dict[str, list[float]] = field(default_factory=dict)
    n_zero_norm: int = 0

    def record(self, step: int, stats: CosineStats) -> None:
        self.trace.append((int(step), float(stats.cos)))
        self.n_zero_norm += int(stats.zero_norm)
        for g, c in stats.per_group.items():
            self.per_group.setdefault(g, []).append(float(c))

    def summary(self) -> dict[str, Any]:
        """{mean, frac_positive, per_layer: {group: mean cos}, trace: [[step, cos], …], n_probes, n_zero_norm};
        mean and frac_positive are None (JSON null) when nothing was probed."""
        cs = [c for _, c in self.trace]
        n = len(cs)
        return {
            "mean": sum(cs) / n if n else None,
            "frac_positive": sum(c > 0.0 for c in cs) / n if n else None,
            "per_layer": {
                g: sum(v) / len(v)
                for g, v in sorted(self.per_group.items(), key=lambda kv: _group_key(kv[0]))
            },
            "trace": [[s, c] for s, c in self.trace],
            "n_probes": n,
            "n_zero_norm": self.n_zero_norm,
        }


@dataclass
class NonFiniteGuard:
    """Counts non-finite auxiliary values.  ``check`` says whether this step's aux may be used; a run whose
    aux is non-finite on ``patience`` consecutive steps is ``failed`` with a ``reason``, never averaged."""

    patience: int = 20
    skipped: int = 0
    consecutive: int = 0
    last_step: int | None = None

    def check(self, value: Tensor, step: int | None = None) -> bool:
        finite = bool(torch.isfinite(value).all())
        if finite:
            self.consecutive = 0
            return True
        self.skipped += 1
        self.consecutive += 1
        self.last_step = step
        return False

    @property
    def failed(self) -> bool:
        return self.consecutive >= self.patience

    @property
    def reason(self) -> str | None:
        if not self.failed:
            return None
        return (
            f"auxiliary loss non-finite on {self.consecutive} consecutive steps (last at step {self.last_step}; "
            f"{self.skipped} skipped in all)"
        )
