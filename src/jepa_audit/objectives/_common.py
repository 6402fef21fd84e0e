"""Shared building blocks of the objective families (one home for each idea, no copies).

Conventions (auxiliaries.md §2): ``h`` is one hidden-state tensor (B, T, d); masks are (B, T) bool; a
difference v_t = h[t+1] − h[t] is valid only when t and t+1 are both in the set, and an acceleration
a_t = h[t+1] − 2h[t] + h[t−1] only when t−1, t, t+1 are, so a trajectory never crosses padding, a
sequence boundary, or the gap between two segments.  All geometry runs in fp32.

Randomness: every helper that draws takes the objective's own ``torch.Generator``; extra forward rows run
under :func:`isolated_rng`, so that dropout inside them does not move the global RNG stream that the CE
run's dropout and data order read (a CE-only run and a CE+aux run stay paired step for step).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from jepa_audit.objectives.base import AuxContext, Objective

COS_EPS = 1e-8  # floor of ‖a‖·‖b‖ in a cosine: keeps a zero difference vector finite (cos = 0, grad = 0)
ACOS_EPS = 1e-6  # arccos argument clamp, [−1+ε, 1−ε]: acos' is infinite at ±1 (auxiliaries.md §7)

LayerSpec = int | str

# (a (N,d), b (N,d), rows (N,), cols (N,)) -> (⟨a,b⟩, ⟨a,a⟩, ⟨b,b⟩), each (N,), under a metric at h[rows, cols]
PairInner = Callable[[Tensor, Tensor, Tensor, Tensor], tuple[Tensor, Tensor, Tensor]]
# (x (N,d), rows (N,), cols (N,)) -> ‖x‖² (N,) under a metric at h[rows, cols]
SqNorm = Callable[[Tensor, Tensor, Tensor], Tensor]


# ----------------------------------------------------------------------------------------------------------
# Precision: objective maths in fp32 even under the caller's autocast; model rows under the caller's autocast
# ----------------------------------------------------------------------------------------------------------

_AUTOCAST_DEVICES = ("cuda", "cpu")
_CALLER_AUTOCAST: ContextVar[tuple[tuple[str, bool, torch.dtype], ...] | None] = ContextVar(
    "jepa_audit_caller_autocast", default=None
)


@contextmanager
def fp32_scope() -> Iterator[None]:
    """Turn autocast off for an objective's own maths (Gram matrices, einsums, projections would otherwise
    run in bf16), remembering the caller's autocast state for :func:`caller_precision`.  Nested scopes (an
    inner objective, V3 → V1) keep the outermost caller's state."""
    if _CALLER_AUTOCAST.get() is not None:
        yield
        return
    state = tuple(
        (dev, torch.is_autocast_enabled(dev), torch.get_autocast_dtype(dev)) for dev in _AUTOCAST_DEVICES
    )
    token = _CALLER_AUTOCAST.set(state)
    try:
        with ExitStack() as stack:
            for dev, enabled, _ in state:
                if enabled:
                    stack.enter_context(torch.autocast(dev, enabled=False))
            yield
    finally:
        _CALLER_AUTOCAST.reset(token)


@contextmanager
def caller_precision() -> Iterator[None]:
    """Inside :func:`fp32_scope`: re-enter the caller's autocast for a forward through the model (extra rows
    run exactly as the CE row does)."""
    with ExitStack() as stack:
        for dev, enabled, dtype in _CALLER_AUTOCAST.get() or ():
            if enabled:
                stack.enter_context(torch.autocast(dev, dtype=dtype))
        yield


class AuxObjective(Objective):
    """Base of every registered objective here: ``objective(ctx)`` runs ``forward`` inside
    :func:`fp32_scope` (geometry and loss maths in fp32 whatever the loop's autocast)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with fp32_scope():
            return super().__call__(*args, **kwargs)


# ----------------------------------------------------------------------------------------------------------
# Layers, dtypes, randomness
# ----------------------------------------------------------------------------------------------------------


def resolve_layer(spec: LayerSpec, n_layers: int) -> int:
    """Map a layer parameter to an index into ``ctx.hidden`` (length n_layers + 1; 0 = embeddings).

    "last" → −1 (post-final-norm, what the head reads; the reference's l = 16 on a 16-layer Llama);
    "mid" → n_layers // 2 (the reference's l = 8); "quarter" → n_layers // 4 (l = 4); an int is used as is.
    """
    named = {"last": -1, "mid": n_layers // 2, "quarter": n_layers // 4}
    if isinstance(spec, str):
        if spec not in named:
            raise ValueError(f"layer {spec!r}: expected an int or one of {sorted(named)}")
        return named[spec]
    idx = int(spec)
    if not -(n_layers + 1) <= idx <= n_layers:
        raise ValueError(
            f"layer {idx} out of range for a model with {n_layers} layers (hidden has {n_layers + 1})"
        )
    return idx


def draw_seed(generator: torch.Generator) -> int:
    """One integer from the objective's generator (advances it deterministically)."""
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator))


@contextmanager
def isolated_rng(generator: torch.Generator, device: torch.device | str | None = None) -> Iterator[None]:
    """Run a block with the global RNG seeded from ``generator`` and restored afterwards.

    Used around extra forward rows (dropout draws) and around module construction (weight init), so the
    global CPU/CUDA streams after the block are exactly what they were before it.
    """
    seed = draw_seed(generator)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    cuda_idx = (
        [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else []
    )
    with torch.random.fork_rng(devices=cuda_idx, device_type="cuda"):
        torch.default_generator.manual_seed(seed)
        for i in cuda_idx:
            with torch.cuda.device(i):
                torch.cuda.manual_seed(seed)
        yield


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def target_states(ctx: AuxContext, generator: torch.Generator) -> tuple[Tensor, ...]:
    """``ctx.target_hidden`` (one extra forward of the short target-only row), run under :func:`isolated_rng`.

    The forward is cached on ``ctx`` (the same slot ``AuxContext.target_hidden`` uses), so ``ctx.e_t`` reads it.
    """
    if "target_hidden" not in ctx.__dict__:
        with isolated_rng(generator, model_device(ctx.model)), caller_precision():
            _ = ctx.target_hidden  # cached_property: computes and stores in ctx.__dict__
    return ctx.target_hidden


def e_t(ctx: AuxContext, generator: torch.Generator, layer: int = -1) -> Tensor:
    """Target-view embedding (B, d) in fp32 at the last target content token."""
    target_states(ctx, generator)
    return ctx.e_t(layer).float()


def view_states(ctx: AuxContext, generator: torch.Generator) -> None:
    """views.nl=published: run both views' packed forward once (cached on ``ctx``), under :func:`isolated_rng`."""
    if ctx.batch.published and "view_hidden" not in ctx.__dict__:
        with isolated_rng(generator, model_device(ctx.model)), caller_precision():
            _ = ctx.view_hidden


def e_u(ctx: AuxContext, layer: int = -1, generator: torch.Generator | None = None) -> Tensor:
    """NL-view embedding (B, d) in fp32.  views.nl=prefix: the CE row's state at the last NL content token
    (a causal prefix, free); published: the NL-view row's state at last_token = −2, from the views' packed
    forward (shared with e_t), whose dropout draws come from ``generator``."""
    if ctx.batch.published:
        if generator is None:
            raise ValueError("e_u under views.nl=published runs the view rows: pass the objective's generator")
        view_states(ctx, generator)
    return ctx.e_u(layer).float()


def nl_logits(ctx: AuxContext, generator: torch.Generator) -> Tensor:
    """The head's logits at the NL-view embedding, (B, V) fp32: the CE row's logits at the last NL token
    (prefix), or W·e_u at the NL view's last_token (published; W = the LM head, e_u post-final-norm)."""
    if not ctx.batch.published:
        return gather_rows(ctx.logits, ctx.batch.nl_last).float()
    return e_u(ctx, -1, generator) @ ctx.lm_head_weight.float().T


def published_predictor_views(ctx: AuxContext, pred_embeds: Tensor, generator: torch.Generator) -> None:
    """views.nl=published with k > 0: run both views once with ``pred_embeds`` (k, d) in the NL views'
    predictor slots and cache the states on ``ctx`` (``ctx.e_u``/``ctx.e_t`` then read them)."""
    from jepa_audit.objectives.base import published_view_hidden

    if "view_hidden" in ctx.__dict__:
        return
    with isolated_rng(generator, model_device(ctx.model)), caller_precision():
        ctx.__dict__["view_hidden"] = published_view_hidden(
            ctx.run, ctx.batch, pred_embeds, ctx.model.get_input_embeddings()
        )


def nl_predictor_view(
    ctx: AuxContext, pred_embeds: Tensor, generator: torch.Generator, layer: int = -1
) -> Tensor:
    """e_u with k predictor tokens (LLM-JEPA ``<|predictor_i|>``): (B, d) fp32.

    One extra forward of the NL prefix rows (≤ max(nl_last) + 1 + k tokens) with the k learned embeddings
    ``pred_embeds`` (k, d) written right after each row's last NL token; the state at the last predictor
    token is returned.  Cost: one prefix-length row per example, on top of the target row.
    """
    b = ctx.batch
    k = pred_embeds.shape[0]
    emb_layer = ctx.model.get_input_embeddings()
    length = int(b.nl_last.max()) + 1 + k
    ids = b.input_ids[:, : min(length, b.input_ids.shape[1])]
    if ids.shape[1] < length:  # prefix + predictors can run past a short CE row: pad (masked out below)
        ids = F.pad(ids, (0, length - ids.shape[1]))
    emb = emb_layer(ids)  # (B, L, d)
    pos = torch.arange(length, device=ids.device)[None, :]  # (1, L)
    offset = pos - (b.nl_last[:, None] + 1)  # (B, L): 0..k−1 on the predictor slots
    is_pred = (offset >= 0) & (offset < k)
    pred = pred_embeds.to(emb.dtype)[offset.clamp(0, k - 1)]  # (B, L, d)
    emb = torch.where(is_pred[..., None], pred, emb)
    mask = (offset < k).long()  # NL prefix and predictors are real; everything after is padding
    with isolated_rng(generator, ids.device), caller_precision():
        out = ctx.run(inputs_embeds=emb, attention_mask=mask, output_hidden_states=True)
    h = out.hidden_states[layer]
    last = b.nl_last + k
    return h[torch.arange(h.shape[0], device=h.device), last].float()


def construct_seeded(generator: torch.Generator, factory: Callable[[], nn.Module]) -> nn.Module:
    """Build a trainable sub-module (predictor, projector) with init drawn from ``generator`` only."""
    with isolated_rng(generator):
        return factory()


def final_norm(model: nn.Module) -> nn.Module:
    """The decoder's final norm (what the LM head reads after), for HF causal LMs with or without PEFT."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder().norm


class LayerObjective(AuxObjective):
    """Resolves ``params["layer"]`` once, at build time, against the model's depth."""

    def __init__(self, params: dict[str, Any], d_model: int, n_layers: int, generator: torch.Generator):
        super().__init__(params, d_model, n_layers, generator)
        self.layer = resolve_layer(self.p["layer"], n_layers)

    def answer_z(self, ctx: AuxContext) -> Tensor:
        """Z: the answer-token states at this objective's layer, pooled over the batch, (N, d)."""
        return answer_states(ctx.hidden[self.layer], ctx.batch.answer_mask)


def depth_states(hidden: tuple[Tensor, ...], first: int, n_layers: int) -> tuple[Tensor, ...]:
    """Residual-stream states h[first..L−1] (pre-final-norm, so one scale); the post-norm state joins only
    when fewer than 3 would remain (a very shallow model)."""
    states = hidden[first:n_layers]
    return states if len(states) >= 3 else hidden[max(0, n_layers + 1 - 3) :]


# ----------------------------------------------------------------------------------------------------------
# Masks over consecutive positions, reductions
# ----------------------------------------------------------------------------------------------------------


def consecutive(mask: Tensor, k: int) -> Tensor:
    """(B, T) bool → (B, T−k) bool: position t is valid when t, t+1, …, t+k are all in ``mask``."""
    T = mask.shape[1]
    out = mask[:, : T - k].clone()
    for j in range(1, k + 1):
        out &= mask[:, j : T - k + j]
    return out


def with_anchor(mask: Tensor) -> Tensor:
    """``mask`` plus the position just before each contiguous run (STP's start anchor, start − 1)."""
    anchor = torch.zeros_like(mask)
    anchor[:, :-1] = mask[:, 1:] & ~mask[:, :-1]
    return mask | anchor


def first_last(mask: Tensor) -> tuple[Tensor, Tensor]:
    """Indices (B,) of the first and last True position of each row (0 for an empty row)."""
    T = mask.shape[1]
    pos = torch.arange(T, device=mask.device).expand_as(mask)
    first = torch.where(mask, pos, T).min(1).values.clamp(max=T - 1)
    last = torch.where(mask, pos, -1).max(1).values.clamp(min=0)
    return first, last


def gather_rows(h: Tensor, idx: Tensor) -> Tensor:
    """h (B, T, d), idx (B,) → (B, d)."""
    return h[torch.arange(h.shape[0], device=h.device), idx]


def masked_mean(x: Tensor, m: Tensor) -> Tensor:
    """Mean of x over the True entries of m (same shape); 0 when m is empty.  Never multiplies NaN by 0:
    callers keep x finite everywhere (clamped cosines), so masked-out entries get exactly zero gradient."""
    m = m.to(x.dtype)
    return (x * m).sum() / m.sum().clamp_min(1.0)


def row_mean(x: Tensor, m: Tensor) -> tuple[Tensor, Tensor]:
    """Per-row mean of x (B, T') over m (B, T'): (values (B,), has_any (B,) bool)."""
    mf = m.to(x.dtype)
    n = mf.sum(1)
    return (x * mf).sum(1) / n.clamp_min(1.0), n > 0


def mean_over(values: Tensor, keep: Tensor) -> Tensor:
    """Mean of values (B,) over keep (B,) bool; 0 (with grad) when none is kept."""
    k = keep.to(values.dtype)
    return (values * k).sum() / k.sum().clamp_min(1.0)


def cosine(a: Tensor, b: Tensor, eps: float = COS_EPS) -> Tensor:
    """Cosine along the last dim, finite for zero vectors (0 there)."""
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp_min(eps)


def scatter_rows(values: Tensor, rows: Tensor, cols: Tensor, shape: tuple[int, int]) -> Tensor:
    """Put per-element values (N,) back on a (B, T') grid of zeros (differentiable, out of place)."""
    return torch.zeros(shape, dtype=values.dtype, device=values.device).index_put((rows, cols), values)


# ----------------------------------------------------------------------------------------------------------
# Trajectory shape (T1/T2/F5, T6/F1/F2, T8)
# ----------------------------------------------------------------------------------------------------------


def turning_cos(h: Tensor, mask: Tensor, pair_inner: PairInner | None = None) -> tuple[Tensor, Tensor]:
    """cos(v_t, v_{t+1}) for every consecutive triple in ``mask``: ((B, T−2) fp32, valid (B, T−2)).

    Entry j is the turn at vertex j+1 (v_j = h[j+1] − h[j], v_{j+1} = h[j+2] − h[j+1]).  With
    ``pair_inner`` the cosine is taken in that metric at the vertex (F5's Fisher angle); invalid entries are 0.
    """
    h = h.float()
    v = h[:, 1:] - h[:, :-1]  # (B, T−1, d)
    valid = consecutive(mask, 2)
    if pair_inner is None:
        return cosine(v[:, :-1], v[:, 1:]) * valid, valid
    rows, cols = valid.nonzero(as_tuple=True)
    ab, aa, bb = pair_inner(v[rows, cols], v[rows, cols + 1], rows, cols + 1)
    # Metric norms can be tiny where p is peaked: floor each norm (not the product, which underflows in
    # fp32), and clamp to [−1, 1] (Cauchy–Schwarz holds for a PSD metric up to rounding).
    cos = (ab / (aa.clamp_min(1e-30).sqrt() * bb.clamp_min(1e-30).sqrt())).clamp(-1.0, 1.0)
    return scatter_rows(cos, rows, cols, tuple(valid.shape)), valid


def turning_angle(cos: Tensor, eps: float = ACOS_EPS) -> Tensor:
    """arccos with the argument clamped to [−1+ε, 1−ε] (finite gradient on collinear steps)."""
    return torch.acos(cos.clamp(-1.0 + eps, 1.0 - eps))


CurvatureForm = Literal["angle", "one_minus_cos"]


def curvature(
    h: Tensor, mask: Tensor, form: CurvatureForm, pair_inner: PairInner | None = None, eps: float = ACOS_EPS
) -> Tensor:
    """Mean turning of the trajectory over valid triples: T1 (form="angle", radians), T2 ("one_minus_cos"),
    F5 (T2 with a Fisher ``pair_inner``).  Scalar fp32; 0 for a straight, monotone trajectory."""
    cos, valid = turning_cos(h, mask, pair_inner)
    per = turning_angle(cos, eps) if form == "angle" else 1.0 - cos
    return masked_mean(per, valid)


def second_difference_ratio(
    x: Tensor,
    mask: Tensor,
    denominator: Literal["velocity", "value"],
    sqnorm: SqNorm | None = None,
    eps: float = 1e-6,
) -> Tensor:
    """Per sequence, mean_t ‖x_{t+1} − 2x_t + x_{t−1}‖² / (mean_t ‖D_t‖² + ε), then the mean over sequences.

    ``denominator="velocity"``: D_t = x_{t+1} − x_t (T6 Euclidean acceleration; F1 with the Fisher norm).
    ``denominator="value"``: D_t = x_t (F2's twin-trajectory Jacobi residual, x = J).  The norm is Euclidean
    or ``sqnorm`` at the vertex x_t.  Scale-invariant in x; 0 for a constant-velocity (or linear-in-t) x.
    """
    x = x.float()
    v = x[:, 1:] - x[:, :-1]  # (B, T−1, d), based at t
    acc = v[:, 1:] - v[:, :-1]  # (B, T−2, d), vertex at t+1
    valid3 = consecutive(mask, 2)
    if denominator == "velocity":
        den_vec, den_valid, den_shift = v, consecutive(mask, 1), 0
    else:
        den_vec, den_valid, den_shift = x, mask, 0

    def q(vec: Tensor, valid: Tensor, shift: int) -> Tensor:
        if sqnorm is None:
            return (vec * vec).sum(-1)
        rows, cols = valid.nonzero(as_tuple=True)
        return scatter_rows(sqnorm(vec[rows, cols], rows, cols + shift), rows, cols, tuple(valid.shape))

    num, has_num = row_mean(q(acc, valid3, 1), valid3)
    den, _ = row_mean(q(den_vec, den_valid, den_shift), den_valid)
    return mean_over(num / (den + eps), has_num)


def window_curvature(h: Tensor, real: Tensor, targets: Tensor, context: int) -> Tensor:
    """T8: for each target position t, the mean turning angle of the trajectory over the ``context`` tokens
    before t (positions t−c … t−1, real tokens only); then the mean over targets with ≥ 1 triple.

    Vectorised with prefix sums over the per-vertex angles (no loop over t).
    """
    cos, valid = turning_cos(h, real)
    ang = turning_angle(cos) * valid  # (B, T−2), entry j = triple (j, j+1, j+2)
    B, Tm2 = ang.shape
    zero = ang.new_zeros(B, 1)
    csum = torch.cat([zero, ang.cumsum(1)], 1)  # (B, T−1): csum[:, j] = Σ_{i<j} ang_i
    ccnt = torch.cat([zero, valid.to(ang.dtype).cumsum(1)], 1)
    t = torch.arange(h.shape[1], device=h.device)
    lo = (t - context).clamp(min=0, max=Tm2)  # first triple start in the window
    hi = (t - 2).clamp(min=0, max=Tm2)  # one past the last: triple j needs j+2 ≤ t−1
    s = csum[:, hi] - csum[:, lo]  # (B, T)
    n = ccnt[:, hi] - ccnt[:, lo]
    keep = targets & (n > 0)
    return masked_mean(s / n.clamp_min(1.0), keep)


# ----------------------------------------------------------------------------------------------------------
# Semantic Tube Prediction (T3-Global, T3-Local)
# ----------------------------------------------------------------------------------------------------------


def draw_spans(n: Tensor, max_span: int, times: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """STP's default span sampler, vectorised: for n (B,) steps per row, (s, e) each (B, times) float with
    s ~ U{0..n−1}, e ~ U{s+1..min(n, s+max_span)} and (s, e) ≠ (0, n) (the whole path is never a patch;
    STP redraws e, which is the same as drawing e uniformly from the allowed set).  ``max_span ≤ 0``: no cap.
    Draws come from ``generator`` on CPU (identical on any device) and are moved to n's device.  Rows with
    n < 2 get a dummy span (callers skip them)."""
    B = n.shape[0]
    u = torch.rand(2, B, times, generator=generator).to(n.device)
    nf = n.to(torch.float32)[:, None].clamp_min(2.0)
    s = (u[0] * nf).floor().clamp(max=nf - 1)
    hi = nf.expand_as(s) if max_span <= 0 else torch.minimum(nf, s + max_span)
    hi = torch.where(s == 0, torch.minimum(hi, nf - 1), hi)
    e = s + 1 + (u[1] * (hi - s)).floor().clamp(max=hi - s - 1)
    return s, e


def stp_tube_loss(
    h: Tensor,
    segments: tuple[Tensor, ...],
    generator: torch.Generator,
    max_span: int = -1,
    times: int = 1,
) -> Tensor:
    """STP (galilai-group/llm-jepa ``--linear=random_span``): 1 − cos(before + after, patch).

    The path is the concatenation of the ``segments`` (each a (B, T) mask of one contiguous run, anchor
    included); a step is valid inside one segment only, so the jump between segments (the chat structure
    between user and assistant turns) is bridged, as in STP.  With n valid steps per row, a span of steps
    [s, e) is drawn from ``generator`` exactly as STP's default sampler: s ~ U{0..n−1},
    e ~ U{s+1..min(n, s+max_span)}, excluding the whole path (s = 0, e = n).  ``max_span ≤ 0``: unbounded
    (T3-Global); ``max_span = w``: local spans (T3-Local).  Rows with < 2 steps are skipped.
    """
    h = h.float()
    B, T, _ = h.shape
    steps = h[:, 1:] - h[:, :-1]  # (B, T−1, d)
    valid = torch.zeros(B, T - 1, dtype=torch.bool, device=h.device)
    for seg in segments:
        valid |= consecutive(seg, 1)
    n = valid.sum(1)  # (B,)
    ok = n >= 2
    s, e = draw_spans(n, max_span, times, generator)
    rank = (valid.cumsum(1) - valid.long()).to(torch.float32)  # exclusive rank of each valid step
    r = rank[:, None, :]  # (B, 1, T−1)
    vk = valid[:, None, :]
    w_before = (vk & (r < s[..., None])).to(h.dtype)
    w_patch = (vk & (r >= s[..., None]) & (r < e[..., None])).to(h.dtype)
    w_after = (vk & (r >= e[..., None])).to(h.dtype)
    before = torch.einsum("bkt,btd->bkd", w_before, steps)
    patch = torch.einsum("bkt,btd->bkd", w_patch, steps)
    after = torch.einsum("bkt,btd->bkd", w_after, steps)
    loss = 1.0 - cosine(before + after, patch)  # (B, times)
    return mean_over(loss.mean(1), ok)


# ----------------------------------------------------------------------------------------------------------
# Distributional helpers
# ----------------------------------------------------------------------------------------------------------


def answer_states(h: Tensor, mask: Tensor) -> Tensor:
    """The states at the masked positions, (N, d) fp32, N = mask.sum()."""
    return h[mask].float()


def too_few(z: Tensor, n_min: int = 2) -> Tensor | None:
    """A zero loss (still attached to the graph) when z has fewer than ``n_min`` rows: batch statistics of a
    single sample are undefined (NaN), e.g. a last partial batch of one sequence for the two-view rows."""
    return z.sum() * 0.0 if z.shape[0] < n_min else None


def standardise(z: Tensor, eps: float = 1e-5) -> Tensor:
    """Per-dimension standardisation with *detached* batch mean and std (unbiased), (N, d) → (N, d).

    Detached statistics keep the target scale fixed within a step (auxiliaries.md §7: SIGReg/VICReg assume
    unit scale, Llama post-norm states carry the RMSNorm gain).  Fewer than 2 rows: returned centred only."""
    if z.shape[0] < 2:
        return z - z.detach()
    mu = z.mean(0, keepdim=True).detach()
    sd = z.std(0, keepdim=True).detach()
    return (z - mu) / (sd + eps)


def vicreg_variance(z: Tensor, gamma: float | Tensor, eps: float = 1e-4) -> Tensor:
    """VICReg variance: mean_j relu(γ − sqrt(Var_N(z_j) + eps)).  0 when every std ≥ γ."""
    if (zero := too_few(z)) is not None:
        return zero
    std = torch.sqrt(z.var(0) + eps)
    return F.relu(gamma - std).mean()


def vicreg_covariance(z: Tensor) -> Tensor:
    """VICReg covariance: (1/d) Σ_{i≠j} C_ij², C = z̄ᵀz̄ / (N − 1).  0 for decorrelated columns."""
    if (zero := too_few(z)) is not None:
        return zero
    n, d = z.shape
    zc = z - z.mean(0)
    c = zc.T @ zc / max(n - 1, 1)
    off = c - torch.diag(torch.diagonal(c))
    return off.pow(2).sum() / d


def vicreg_invariance(za: Tensor, zb: Tensor) -> Tensor:
    return F.mse_loss(za, zb)


def barlow_twins(za: Tensor, zb: Tensor, off_weight: float = 5e-3, eps: float = 1e-5) -> Tensor:
    """Σ_i (1 − C_ii)² + λ Σ_{i≠j} C_ij², C the cross-correlation of batch-standardised za, zb (N, k)."""
    if (zero := too_few(za)) is not None:
        return zero + zb.sum() * 0.0
    n = za.shape[0]
    a = (za - za.mean(0)) / (za.std(0, correction=0) + eps)
    b = (zb - zb.mean(0)) / (zb.std(0, correction=0) + eps)
    c = a.T @ b / n
    diag = torch.diagonal(c)
    on = (1.0 - diag).pow(2).sum()
    off = c.pow(2).sum() - diag.pow(2).sum()
    return on + off_weight * off


def epps_pulley_knots(
    t_max: float = 3.0, n_knots: int = 17, device: torch.device | None = None
) -> tuple[Tensor, Tensor]:
    """Knots t_k on [0, t_max] and weights: trapezoid × 2 (symmetric integrand) × w(t) = e^{−t²/2}."""
    t = torch.linspace(0.0, t_max, n_knots, device=device)
    dt = t_max / (n_knots - 1)
    trap = torch.full((n_knots,), 2.0 * dt, device=device)
    trap[0] = trap[-1] = dt
    return t, trap * torch.exp(-0.5 * t * t)


def sigreg(z: Tensor, directions: Tensor, t_max: float = 3.0, n_knots: int = 17) -> Tensor:
    """SIGReg (LeJEPA, re-implemented from the maths): mean over slices of the Epps–Pulley statistic
    N ∫ |φ̂(t) − e^{−t²/2}|² e^{−t²/2} dt of the 1-D projections y = z a_m against N(0, 1).

    z: (N, d) fp32; directions: (d, M), unit columns.  Its expectation for an iid N(0, I) sample is
    √(2π)(1 − 1/√3) ≈ 1.06 whatever N; it grows like N for a mis-scaled or shifted sample.
    """
    n = z.shape[0]
    y = z @ directions  # (N, M)
    t, w = epps_pulley_knots(t_max, n_knots, z.device)
    ty = y[..., None] * t  # (N, M, K)
    re = torch.cos(ty).mean(0) - torch.exp(-0.5 * t * t)  # (M, K)
    im = torch.sin(ty).mean(0)
    ep = n * ((re * re + im * im) * w).sum(-1)  # (M,)
    return ep.mean()


def unit_directions(d: int, m: int, generator: torch.Generator) -> Tensor:
    """(d, m) Gaussian directions normalised to unit length, drawn from ``generator`` (CPU)."""
    a = torch.randn(d, m, generator=generator)
    return a / a.norm(dim=0, keepdim=True)


def uniformity(z: Tensor, t: float = 2.0) -> Tensor:
    """Wang & Isola: log mean_{i<j} exp(−t ‖ẑ_i − ẑ_j‖²), ẑ = z/‖z‖ (logsumexp for stability)."""
    if (zero := too_few(z)) is not None:
        return zero
    zn = F.normalize(z, dim=-1)
    sq = (2.0 - 2.0 * zn @ zn.T).clamp_min(0.0)  # ‖ẑ_i − ẑ_j‖² on the unit sphere
    iu = torch.triu_indices(z.shape[0], z.shape[0], offset=1, device=z.device)
    vals = -t * sq[iu[0], iu[1]]
    return torch.logsumexp(vals, 0) - math.log(vals.numel())


def cross_sequence_cosine(z: Tensor, seq: Tensor) -> Tensor:
    """Anisotropy (Ethayarajh): mean cos(z_i, z_j) over pairs from different sequences.  z (N, d), seq (N,)."""
    zn = F.normalize(z, dim=-1)
    g = zn @ zn.T
    other = seq[:, None] != seq[None, :]
    return masked_mean(g, other)


def effective_rank_entropy(z: Tensor, eps: float = 1e-7) -> Tensor:
    """Σ_k p_k log p_k with p_k = σ_k / Σσ + eps (σ the singular values of centred z) = −log RankMe(z)."""
    if (zero := too_few(z)) is not None:
        return zero
    s = torch.linalg.svdvals(z - z.mean(0))
    p = s / s.sum() + eps
    return (p * p.log()).sum()


# ----------------------------------------------------------------------------------------------------------
# View losses, predictors, KL through the head
# ----------------------------------------------------------------------------------------------------------


StopGrad = Literal["none", "target"]


def view_cosine_loss(pred: Tensor, target: Tensor, stop_grad: StopGrad = "none") -> Tensor:
    """mean_b (1 − cos(pred_b, target_b)); ``stop_grad="target"`` detaches the target (SimSiam idea)."""
    if stop_grad == "target":
        target = target.detach()
    return (1.0 - cosine(pred, target)).mean()


def info_nce(a: Tensor, b: Tensor, temperature: float = 0.07) -> Tensor:
    """CE over the in-batch cosine matrix cos(a_i, b_j)/τ with the diagonal as the positive (llm-jepa)."""
    logits = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T / temperature
    return F.cross_entropy(logits, torch.arange(a.shape[0], device=a.device))


def kl_from_logits(
    target_logits: Tensor, pred_logits: Tensor, temperature: float = 1.0, top_k: int = 0
) -> Tensor:
    """mean_rows KL(sg(softmax(target/T)) ‖ softmax(pred/T)); top_k > 0 restricts (and renormalises) both to
    the target's top-K tokens.  (N, V) each; fp32."""
    tgt = target_logits.detach().float() / temperature
    prd = pred_logits.float() / temperature
    if top_k and top_k < tgt.shape[-1]:
        idx = tgt.topk(top_k, dim=-1).indices
        tgt, prd = tgt.gather(-1, idx), prd.gather(-1, idx)
    logp = F.log_softmax(tgt, -1)
    logq = F.log_softmax(prd, -1)
    return F.kl_div(logq, logp, log_target=True, reduction="none").sum(-1).mean()


class MLPPredictor(nn.Module):
    """SimSiam/BYOL predictor q: d → hidden → d with LayerNorm (BatchNorm replaced: batches are small)."""

    def __init__(self, d: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d, hidden), nn.LayerNorm(hidden), nn.ReLU(), nn.Linear(hidden, d))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.float())


class Projector(nn.Module):
    """VICReg/Barlow expander: d → k → k (Linear, LayerNorm, ReLU, Linear)."""

    def __init__(self, d: int, k: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d, k), nn.LayerNorm(k), nn.ReLU(), nn.Linear(k, k))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.float())
