"""Trajectory maths (T1/T2/F5, T6/F1/F2, T8; Semantic Tube Prediction T3): turning angles, curvature,
second-difference ratios over consecutive positions (an acceleration a_t = h[t+1] − 2h[t] + h[t−1] only where
t−1, t, t+1 are all in the set), in fp32.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from jepa_audit.objectives.masks import consecutive, cosine, masked_mean, mean_over, row_mean, scatter_rows

ACOS_EPS = 1e-6  # arccos argument clamp, [−1+ε, 1−ε]: acos' is infinite at ±1 (auxiliaries.md §7)


# (a (N,d), b (N,d), rows (N,), cols (N,)) -> (⟨a,b⟩, ⟨a,a⟩, ⟨b,b⟩), each (N,), under a metric at h[rows, cols]
PairInner = Callable[[Tensor, Tensor, Tensor, Tensor], tuple[Tensor, Tensor, Tensor]]


# (x (N,d), rows (N,), cols (N,)) -> ‖x‖² (N,) under a metric at h[rows, cols]
SqNorm = Callable[[Tensor, Tensor, Tensor], Tensor]


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
