"""Closed-form and independent-reference checks of the auxiliary maths (no model needed).

Each test asserts a known value, an invariance, or agreement with a slow explicit computation; none
re-computes the formula under test.
"""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.linalg import hadamard
from scipy.special import rel_entr

from jepa_audit.data.batch import Batch
from jepa_audit.objectives import AuxContext, build_objective, curves, losses
from jepa_audit.objectives.calibrate import choose_point, score_se
from jepa_audit.objectives.fisher import fisher_bilinear, fisher_quadratic
from jepa_audit.objectives.gradients import (
    CosineProbe,
    NonFiniteGuard,
    combine,
    flat_dot,
    grad_cosine,
    grad_cosine_stats,
    init_grad_state,
    layer_group,
)

D, N_LAYERS = 6, 3

# ----------------------------------------------------------------------------------------------------------
# Synthetic contexts: hidden states we choose, masks of a well-formed batch
# ----------------------------------------------------------------------------------------------------------


def synthetic_batch(B: int = 3, P: int = 7, A: int = 6, V: int = 11) -> Batch:
    """Rows: 2 header tokens, NL content at 2..P−2, one structural token, answer at P..P+A−1, 1 pad."""
    T = P + A + 1
    att = torch.zeros(B, T, dtype=torch.long)
    att[:, : P + A] = 1
    labels = torch.full((B, T), -100, dtype=torch.long)
    labels[:, P : P + A] = torch.arange(A) % V
    pmask = torch.zeros(B, T, dtype=torch.bool)
    pmask[:, 2 : P - 1] = True
    return Batch(
        input_ids=labels.clamp_min(0), attention_mask=att, labels=labels,  # labels are the row's own tokens
        answer_mask=labels != -100, prompt_mask=pmask, nl_last=torch.full((B,), P - 2),
        answer_start=torch.full((B,), P), target_ids=torch.zeros(B, A + 1, dtype=torch.long),
        target_mask=torch.ones(B, A + 1, dtype=torch.long), target_last=torch.full((B,), A - 1),
        item_ids=torch.arange(B),
    )  # fmt: skip


def ctx_for(h: torch.Tensor, batch: Batch, W: torch.Tensor | None = None, logits: torch.Tensor | None = None):
    """Every layer holds ``h`` (B, T, d) unless a tuple is given."""
    hidden = h if isinstance(h, tuple) else tuple(h for _ in range(N_LAYERS + 1))
    d = hidden[-1].shape[-1]
    W = W if W is not None else torch.randn(11, d, generator=torch.Generator().manual_seed(5))
    logits = logits if logits is not None else hidden[-1] @ W.T
    return AuxContext(batch=batch, hidden=hidden, logits=logits, model=None, lm_head_weight=W)  # type: ignore[arg-type]


def run(name: str, ctx: AuxContext, d: int = D, **params) -> float:
    obj = build_objective(name, params, d_model=d, n_layers=N_LAYERS, seed=0)
    return float(obj(ctx).loss)


def straight(B: int, T: int, d: int = D, seed: int = 0) -> torch.Tensor:
    """h[b, t] = c_b + (t + t²/50)·u_b: collinear, monotone, *non-constant* speed (a = 0 only for T6 if
    speed were constant; this tests that T1/T2/T3/T4/T5/F5 see shape, not speed)."""
    g = torch.Generator().manual_seed(seed)
    u, c = torch.randn(B, 1, d, generator=g), torch.randn(B, 1, d, generator=g)
    t = torch.arange(T, dtype=torch.float32)[None, :, None]
    return c + (t + t * t / 50) * u


def polygon(B: int, T: int, n_sides: int, d: int = D) -> torch.Tensor:
    """Vertices of a regular n-gon (unit sides) traversed in order, in a random 2-plane of R^d: every turn
    is 2π/n, every step has length 1."""
    q, _ = torch.linalg.qr(torch.randn(d, 2, generator=torch.Generator().manual_seed(1)))
    theta = 2 * math.pi / n_sides
    R = 0.5 / math.sin(theta / 2)  # circumradius of a unit-side polygon
    ang = torch.arange(T, dtype=torch.float32) * theta
    pts = R * torch.stack([ang.cos(), ang.sin()], -1) @ q.T  # (T, d)
    return pts.expand(B, T, d).clone()


# ----------------------------------------------------------------------------------------------------------
# Trajectory family
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["T1", "T2", "T3-Global", "T3-Local", "T4", "T5", "T8", "F5"])
def test_straight_trajectory_has_zero_shape_loss(name):
    b = synthetic_batch()
    T = b.input_ids.shape[1]
    W = 0.05 * torch.randn(11, D, generator=torch.Generator().manual_seed(9))  # p not one-hot (F5's metric)
    assert run(name, ctx_for(straight(3, T), b, W=W)) == pytest.approx(0.0, abs=2e-3)


@pytest.mark.parametrize("name", ["T6", "F1"])
def test_constant_velocity_line_has_zero_acceleration(name):
    b = synthetic_batch()
    g = torch.Generator().manual_seed(3)
    h = torch.randn(3, 1, D, generator=g) + torch.arange(b.input_ids.shape[1])[None, :, None] * torch.randn(
        3, 1, D, generator=g
    )
    assert run(name, ctx_for(h, b)) == pytest.approx(0.0, abs=1e-5)


def test_known_turning_angle_on_a_regular_polygon():
    b = synthetic_batch()
    theta = 2 * math.pi / 12  # 30° per turn
    ctx = ctx_for(polygon(3, b.input_ids.shape[1], 12), b)
    assert run("T1", ctx) == pytest.approx(theta, abs=1e-4)
    assert run("T2", ctx) == pytest.approx(1 - math.cos(theta), abs=1e-5)
    # ‖v_{t+1} − v_t‖² = 2(1 − cos θ) for unit steps
    assert run("T6", ctx) == pytest.approx(2 * (1 - math.cos(theta)), rel=1e-4)
    assert run("T8", ctx, context=4) == pytest.approx(theta, abs=1e-4)


def test_right_angle_path_values():
    """Answer path right, right, up, up (unit steps): chord at 45° to every step; tortuosity √2 − 1."""
    b = synthetic_batch(B=1, P=7, A=5)
    T = b.input_ids.shape[1]
    pts = torch.zeros(T, D)
    e1, e2 = torch.eye(D)[0], torch.eye(D)[1]
    path = [0 * e1, e1, 2 * e1, 2 * e1 + e2, 2 * e1 + 2 * e2]
    for i, p in enumerate(path):
        pts[7 + i] = p
    ctx = ctx_for(pts[None], b)
    assert run("T4", ctx) == pytest.approx(1 - 1 / math.sqrt(2), abs=1e-5)
    assert run("T5", ctx) == pytest.approx(4 / math.sqrt(8) - 1, abs=1e-5)


def test_depth_straightening_zero_for_layers_on_a_line():
    b = synthetic_batch()
    g = torch.Generator().manual_seed(2)
    base, step = torch.randn(3, b.input_ids.shape[1], D, generator=g), torch.randn(D, generator=g)
    hidden = tuple(base + (l + 0.1 * l * l) * step for l in range(N_LAYERS + 1))
    assert run("T7", ctx_for(hidden, b)) == pytest.approx(0.0, abs=1e-5)


def test_tube_loss_positive_off_the_line_and_spans_respect_the_cap():
    b = synthetic_batch()
    g = torch.Generator().manual_seed(4)
    zig = torch.randn(3, b.input_ids.shape[1], D, generator=g)
    assert run("T3-Global", ctx_for(zig, b)) > 0.1
    n = torch.tensor([2, 3, 10, 40] * 50)
    for cap in (-1, 1, 2, 4):
        s, e = curves.draw_spans(n, cap, 3, torch.Generator().manual_seed(cap + 10))
        nn_ = n[:, None].float()
        assert bool((s >= 0).all() and (s < e).all() and (e <= nn_).all())
        assert not bool(((s == 0) & (e == nn_)).any()), "the whole path is never the patch"
        if cap > 0:
            assert bool((e - s <= cap).all())
    # unbounded spans reach every start and long patches
    s, e = curves.draw_spans(torch.full((4000,), 10), -1, 1, torch.Generator().manual_seed(0))
    assert set(s.flatten().long().tolist()) == set(range(10))
    assert int((e - s).max()) == 9


def test_tube_bridges_the_gap_between_turns():
    """Prompt and answer segments are each straight but point in different directions, joined by a jump
    that STP does not count: the loss sees the segment steps only, and a straight path along both gives 0."""
    b = synthetic_batch(P=9)
    b.prompt_mask[:, 5:] = False  # NL content 2..4; 5..7 structural (end of turn, header); 8 answer anchor
    b.nl_last[:] = 4
    T = b.input_ids.shape[1]
    h = straight(3, T)
    h[:, 5:8] += 100.0  # the structural tokens: off the line, never part of the path
    assert run("T3-Global", ctx_for(h, b)) == pytest.approx(0.0, abs=2e-3)
    h[:, 8] += 100.0  # the answer's anchor (token before the first answer token) *is* on the path
    assert run("T3-Global", ctx_for(h, b)) > 0.01


def test_second_difference_ratio_linear_twin_is_zero():
    """F2/F3 body: a Jacobi field J_t growing linearly in t has zero second difference."""
    J = torch.arange(9, dtype=torch.float32)[None, :, None] * torch.randn(2, 1, 5) + torch.randn(2, 1, 5)
    mask = torch.ones(2, 9, dtype=torch.bool)
    assert float(curves.second_difference_ratio(J, mask, "value")) == pytest.approx(0.0, abs=1e-6)


# ----------------------------------------------------------------------------------------------------------
# Fisher
# ----------------------------------------------------------------------------------------------------------


def test_fisher_forms_equal_explicit_matrix():
    g = torch.Generator().manual_seed(0)
    V, d, n = 13, 5, 4
    W = torch.randn(V, d, generator=g, dtype=torch.float64).float()
    p = torch.softmax(torch.randn(n, V, generator=g), -1)
    a, b = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    for i in range(n):
        F = (
            W.double().T
            @ (torch.diag(p[i].double()) - torch.outer(p[i].double(), p[i].double()))
            @ W.double()
        )
        assert float(fisher_quadratic(W, p, a)[i]) == pytest.approx(
            float(a[i].double() @ F @ a[i].double()), rel=1e-4
        )
        assert float(fisher_bilinear(W, p, a, b)[i]) == pytest.approx(
            float(a[i].double() @ F @ b[i].double()), rel=1e-4, abs=1e-6
        )


def test_fisher_quadratic_is_twice_the_kl_for_small_steps():
    g = torch.Generator().manual_seed(1)
    V, d = 17, 6
    W = torch.randn(V, d, generator=g, dtype=torch.float64)
    h = torch.randn(1, d, generator=g, dtype=torch.float64)
    delta = 1e-3 * torch.randn(1, d, generator=g, dtype=torch.float64)
    p = torch.softmax(h @ W.T, -1)
    q = torch.softmax((h + delta) @ W.T, -1)
    kl = float(rel_entr(p.numpy(), q.numpy()).sum())
    assert 0.5 * float(fisher_quadratic(W, p, delta)) == pytest.approx(kl, rel=1e-2)


def test_logit_space_route_equals_head_matmul_route():
    """Fisher rows read W h from the forward's fp32 logits; under a low-precision head they recompute it."""
    from jepa_audit.objectives.fisher import answer_window, window_logits

    b = synthetic_batch()
    g = torch.Generator().manual_seed(0)
    h = torch.randn(3, b.input_ids.shape[1], D, generator=g)
    W = torch.randn(11, D, generator=g)
    idx, valid = answer_window(b.answer_mask)
    assert bool(valid.all()) and idx.shape == (3, 6)
    free = window_logits(h, h @ W.T, W, idx)
    recomputed = window_logits(h, (h @ W.T).bfloat16(), W, idx)
    torch.testing.assert_close(free, recomputed, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(free[:, 0], h[:, 7] @ W.T)  # the window starts at the first answer token


def isotropic_head(V: int, d: int) -> torch.Tensor:
    """W (V, d) with orthonormal columns orthogonal to 1: under uniform p, F = I/V (for a tiny multiple
    of it, logits ≈ 0, so p ≈ uniform and F ∝ I up to O(scale))."""
    m = torch.randn(V, d + 1, generator=torch.Generator().manual_seed(7))
    m[:, 0] = 1.0
    q, _ = torch.linalg.qr(m)
    return q[:, 1:].contiguous()


@pytest.mark.parametrize(("fisher", "euclid", "params"), [("F5", "T2", {}), ("F1", "T6", {"eps": 1e-30})])
def test_fisher_rows_reduce_to_euclidean_when_metric_is_isotropic(fisher, euclid, params):
    b = synthetic_batch()
    h = torch.randn(3, b.input_ids.shape[1], D, generator=torch.Generator().manual_seed(8))
    ctx = ctx_for(h, b, W=1e-4 * isotropic_head(11, D))  # logits = W h ≈ 0: the contract lm_head(h) = logits
    assert run(fisher, ctx, **params) == pytest.approx(run(euclid, ctx), rel=1e-3)  # F ~ 1e-8: no absolute ε


# ----------------------------------------------------------------------------------------------------------
# Distributional family
# ----------------------------------------------------------------------------------------------------------


def test_sigreg_standard_gaussian_matches_closed_form_and_misfit_is_large():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4000, 64, generator=g)
    a = losses.unit_directions(64, 512, g)
    expected = math.sqrt(2 * math.pi) * (1 - 1 / math.sqrt(3))  # E[N∫|φ̂−φ|²w] for an iid N(0,1) sample
    val = float(losses.sigreg(z, a))
    assert val == pytest.approx(expected, rel=0.25)
    assert val / z.shape[0] < 1e-3  # "near 0" on the per-sample scale
    assert float(losses.sigreg(2.0 * z, a)) > 100 * expected
    assert float(losses.sigreg(z + 1.0, a)) > 100 * expected


def test_vicreg_variance_zero_when_every_std_reaches_gamma():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(500, 8, generator=g) * torch.linspace(2.0, 5.0, 8)
    assert float(losses.vicreg_variance(z, 1.5)) == 0.0
    const = torch.zeros(50, 4)
    assert float(losses.vicreg_variance(const, 1.0)) == pytest.approx(1.0 - math.sqrt(1e-4), abs=1e-6)


def test_vicreg_covariance_decorrelated_and_duplicated_columns():
    H = torch.tensor(hadamard(8), dtype=torch.float32)[:, 1:5]  # orthogonal, zero-mean ±1 columns
    assert float(losses.vicreg_covariance(H)) == pytest.approx(0.0, abs=1e-7)
    x = torch.randn(100, 1, generator=torch.Generator().manual_seed(0))
    x = (x - x.mean()) / x.std()
    assert float(losses.vicreg_covariance(torch.cat([x, x], 1))) == pytest.approx(1.0, rel=1e-5)  # (1² + 1²)/2


def test_barlow_zero_for_identical_decorrelated_views_and_positive_for_correlated():
    H = torch.tensor(hadamard(8), dtype=torch.float32)[:, 1:6]
    assert float(losses.barlow_twins(H, H)) == pytest.approx(0.0, abs=1e-6)
    x = torch.randn(64, 1, generator=torch.Generator().manual_seed(0))
    z = torch.cat([x, x + 0.01], 1)
    assert float(losses.barlow_twins(z, z)) == pytest.approx(5e-3 * 2, rel=1e-2)  # C = [[1,1],[1,1]]


def test_batch_statistics_of_one_sample_give_zero_not_nan():
    z = torch.randn(1, 5, requires_grad=True)
    for loss in (
        losses.vicreg_variance(z, 1.0), losses.vicreg_covariance(z), losses.barlow_twins(z, z), losses.uniformity(z),
        losses.effective_rank_entropy(z), losses.sigreg(losses.standardise(z), losses.unit_directions(5, 8, torch.Generator())),
    ):  # fmt: skip
        assert bool(torch.isfinite(loss)) and loss.requires_grad


def test_uniformity_known_configurations():
    e = torch.eye(4)
    assert float(losses.uniformity(torch.stack([e[0], -e[0]]))) == pytest.approx(-8.0, abs=1e-5)
    n = 5  # regular simplex: ‖ẑ_i − ẑ_j‖² = 2 + 2/(n − 1)
    simplex = torch.eye(n) - 1.0 / n
    assert float(losses.uniformity(simplex)) == pytest.approx(-2 * (2 + 2 / (n - 1)), abs=1e-4)
    assert float(losses.uniformity(3.0 * simplex)) == pytest.approx(float(losses.uniformity(simplex)), abs=1e-6)


def test_anisotropy_counts_only_cross_sequence_pairs():
    e = torch.eye(3)
    z = torch.stack([e[0], 2 * e[0], e[1], 3 * e[1]])  # within each sequence: identical directions
    assert float(losses.cross_sequence_cosine(z, torch.tensor([0, 0, 1, 1]))) == pytest.approx(0.0, abs=1e-7)
    assert float(losses.cross_sequence_cosine(z, torch.tensor([0, 1, 0, 1]))) == pytest.approx(0.5, abs=1e-6)


def test_effective_rank_of_k_equal_singular_values():
    # centred, orthogonal columns of equal norm: four equal singular values
    H = torch.tensor(hadamard(16), dtype=torch.float32)[:, 1:5]
    z = torch.cat([H, torch.zeros(16, 3)], 1)
    assert float(losses.effective_rank_entropy(z)) == pytest.approx(-math.log(4), abs=1e-4)


def test_d1_base_median_gamma_is_fixed_at_the_first_batch():
    b = synthetic_batch(B=4)
    g = torch.Generator().manual_seed(0)
    h = torch.randn(4, b.input_ids.shape[1], D, generator=g) * torch.linspace(0.5, 2.0, D)
    obj = build_objective("D1", {}, D, N_LAYERS, seed=0)
    first = float(obj(ctx_for(h, b)).loss)
    assert first > 0.0  # dimensions below the median std are pushed up
    assert float(obj(ctx_for(10 * h, b)).loss) == 0.0  # every std now above the frozen γ


@pytest.mark.parametrize("name", ["D2", "D5", "D6", "D7", "T3-Global", "F5"])
def test_objective_maths_stay_fp32_under_the_callers_autocast(name):
    """Gram matrices, einsums and projections would drop to bf16 under autocast; objectives turn it off."""
    b = synthetic_batch(B=4)
    h = torch.randn(4, b.input_ids.shape[1], D, generator=torch.Generator().manual_seed(0))
    ctx = ctx_for(h, b, W=0.1 * torch.randn(11, D, generator=torch.Generator().manual_seed(1)))
    plain = run(name, ctx)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert run(name, ctx) == plain


# ----------------------------------------------------------------------------------------------------------
# Predictive / decoder-visible pieces
# ----------------------------------------------------------------------------------------------------------


def test_info_nce_identical_views_rank_diagonal_first():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(8, 16, generator=g)
    logits = torch.nn.functional.normalize(z, dim=-1) @ torch.nn.functional.normalize(z, dim=-1).T
    assert torch.equal(logits.argmax(1), torch.arange(8))
    shuffled = z[torch.roll(torch.arange(8), 1)]
    assert float(losses.info_nce(z, z)) < float(losses.info_nce(z, shuffled))
    assert float(losses.info_nce(z, z)) < math.log(8)


def test_view_cosine_loss_stop_grad_blocks_the_target():
    a = torch.randn(4, 5, requires_grad=True)
    b = torch.randn(4, 5, requires_grad=True)
    losses.view_cosine_loss(a, b, "target").backward()
    assert b.grad is None and a.grad is not None
    assert float(losses.view_cosine_loss(a, 3 * a).detach()) == pytest.approx(0.0, abs=1e-6)


def test_v1_kl_zero_when_prediction_equals_target_and_matches_scipy_otherwise():
    b = synthetic_batch(B=2, V=11)
    g = torch.Generator().manual_seed(0)
    T = b.input_ids.shape[1]
    logits = torch.randn(2, T, 11, generator=g)
    logits[:, 5] = logits[:, 6]  # nl_last = 5, answer_start − 1 = 6
    ctx = ctx_for(torch.randn(2, T, D, generator=g), b, logits=logits)
    assert run("V1", ctx) == pytest.approx(0.0, abs=1e-7)
    logits[:, 5] = torch.randn(2, 11, generator=g)
    p = torch.softmax(logits[:, 6].double(), -1).numpy()
    q = torch.softmax(logits[:, 5].double(), -1).numpy()
    assert run("V1", ctx) == pytest.approx(float(rel_entr(p, q).sum(1).mean()), rel=1e-5)


def test_v2_bag_of_regex_matches_explicit_average():
    b = synthetic_batch(B=2, V=11)
    T = b.input_ids.shape[1]
    logits = torch.randn(2, T, 11, generator=torch.Generator().manual_seed(3))
    ctx = ctx_for(torch.zeros(2, T, D), b, logits=logits)
    expect = []
    for i in range(2):
        logp = torch.log_softmax(logits[i, 5].double(), -1)
        ys = [int(y) for y in b.labels[i] if y != -100]
        expect.append(-sum(float(logp[y]) for y in ys) / len(ys))
    assert run("V2", ctx) == pytest.approx(float(np.mean(expect)), rel=1e-5)


def test_ema_tau_schedule_endpoints():
    obj = build_objective("P3", {}, D, N_LAYERS, seed=0)
    assert obj.tau(0, 100) == pytest.approx(0.996)
    assert obj.tau(50, 100) == pytest.approx(0.998)
    assert obj.tau(100, 100) == pytest.approx(1.0)


# ----------------------------------------------------------------------------------------------------------
# Gradient combination and the probe
# ----------------------------------------------------------------------------------------------------------


def split(v: torch.Tensor, sizes=(3, 5, 4)) -> list[torch.Tensor]:
    return list(torch.split(v, list(sizes)))


vec = st.lists(st.floats(-10, 10, allow_nan=False, width=32), min_size=12, max_size=12)


@settings(max_examples=60, deadline=None)
@given(vec, vec, st.floats(0.01, 5.0), st.booleans())
def test_cone_update_never_opposes_ce(ga, gc, lam, oppose):
    g_ce = torch.tensor(gc)
    g_a = -g_ce * 2.0 + 0.1 * torch.tensor(ga) if oppose else torch.tensor(ga)
    upd = combine(split(g_ce), split(g_a), lam, "cone", {})
    aux_part = torch.cat(upd) - g_ce
    assert float(aux_part @ g_ce) >= -1e-4 * (1 + float(g_ce.norm()) ** 2 * lam)


def test_cone_is_plain_sum_when_aligned_and_projects_exactly_when_opposed():
    gc = torch.tensor([1.0, 0.0, 0.0] + [0.0] * 9)
    ga = torch.tensor([2.0, 1.0, 0.0] + [0.0] * 9)
    assert torch.allclose(torch.cat(combine(split(gc), split(ga), 0.5, "cone", {})), gc + 0.5 * ga)
    ga = torch.tensor([-2.0, 1.0, 0.0] + [0.0] * 9)  # opposed component removed, orthogonal part kept
    assert torch.allclose(
        torch.cat(combine(split(gc), split(ga), 0.5, "cone", {})),
        gc + 0.5 * torch.tensor([0.0, 1.0] + [0.0] * 10),
    )


def test_gate_zeroes_opposed_and_scales_aligned():
    gc = torch.tensor([1.0, 0.0] + [0.0] * 10)
    ga = torch.tensor([-1.0, 1.0] + [0.0] * 10)
    assert torch.equal(torch.cat(combine(split(gc), split(ga), 1.0, "gate", {})), gc)
    ga = torch.tensor([1.0, 1.0] + [0.0] * 10)  # cos = 1/√2
    out = torch.cat(combine(split(gc), split(ga), 1.0, "gate", {}))
    assert torch.allclose(out, gc + ga / math.sqrt(2))


@pytest.mark.parametrize("phi0", [-0.9, -0.2, 0.0, 0.05])
def test_gradvac_raises_cosine_to_target(phi0):
    gc = torch.tensor([1.0, 0.0] + [0.0] * 10)
    ga = 3.0 * torch.tensor([phi0, math.sqrt(1 - phi0**2)] + [0.0] * 10)
    state = init_grad_state({"phi_target": 0.1, "ema_beta": 0.0})
    upd = torch.cat(combine(split(gc), split(ga), 1.0, "gradvac", state))
    ga_new = upd - gc
    cos = float(ga_new @ gc / (ga_new.norm() * gc.norm()))
    assert cos == pytest.approx(0.1, abs=1e-5)
    assert float(state["cos_raw"]) == pytest.approx(phi0, abs=1e-6)
    ga = torch.tensor([0.5, 0.5] + [0.0] * 10)  # already above target: unchanged
    assert torch.allclose(torch.cat(combine(split(gc), split(ga), 1.0, "gradvac", state)), gc + ga)


def test_gradvac_ema_target_moves_toward_observed_cosine():
    state = init_grad_state({"phi_target": 0.0, "ema_beta": 0.5})
    gc, ga = torch.tensor([1.0, 0.0] + [0.0] * 10), torch.tensor([1.0, 1.0] + [0.0] * 10)
    combine(split(gc), split(ga), 1.0, "gradvac", state)
    assert float(state["phi_target"]) == pytest.approx(0.5 / math.sqrt(2), abs=1e-6)


@pytest.mark.parametrize("mode", ["add", "cone", "gate", "gradvac"])
def test_zero_weight_returns_ce_gradient_exactly_and_none_is_zero(mode):
    g = torch.Generator().manual_seed(0)
    gc = [torch.randn(3, generator=g), None, torch.randn(2, generator=g)]
    ga = [-torch.randn(3, generator=g), torch.randn(4, generator=g), None]
    out = combine(gc, ga, 0.0, mode, init_grad_state({}))
    assert torch.equal(out[0], gc[0]) and torch.equal(out[2], gc[2])
    assert torch.equal(out[1], torch.zeros(4))  # an aux-only parameter (predictor) gets λ·g_a = 0


def test_flat_dot_and_grad_cosine_with_groups_and_none():
    a = [torch.tensor([1.0, 0.0]), None, torch.tensor([0.0, 2.0])]
    b = [torch.tensor([1.0, 0.0]), torch.tensor([5.0]), torch.tensor([0.0, -1.0])]
    assert float(flat_dot(a, b)) == pytest.approx(1.0 - 2.0)
    cos, per = grad_cosine(a, b, ["layer_0", "layer_0", "layer_1"])
    assert cos == pytest.approx(-1.0 / (math.sqrt(5) * math.sqrt(27)))
    assert per == pytest.approx({"layer_0": 1.0 / math.sqrt(26), "layer_1": -1.0})
    stats = grad_cosine_stats([None, None, None], b, ["x", "x", "y"])
    assert stats.cos == 0.0 and stats.zero_norm


def test_probe_summary_and_guard():
    probe = CosineProbe()
    b = [torch.tensor([1.0, 0.0])]
    for step, a in [(0, [1.0, 0.0]), (25, [-1.0, 0.0]), (50, [1.0, 1.0])]:
        probe.record(step, grad_cosine_stats([torch.tensor(a)], b, ["layer_0"]))
    s = probe.summary()
    assert s["mean"] == pytest.approx((1 - 1 + 1 / math.sqrt(2)) / 3)
    assert s["frac_positive"] == pytest.approx(2 / 3)
    assert s["trace"][1] == [25, -1.0] and set(s["per_layer"]) == {"layer_0"}
    assert CosineProbe().summary()["mean"] is None
    guard = NonFiniteGuard(patience=2)
    assert guard.check(torch.tensor(1.0))
    assert not guard.check(torch.tensor(float("nan")), step=3) and not guard.failed
    assert not guard.check(torch.tensor(float("inf")), step=4) and guard.failed
    assert "2 consecutive" in guard.reason and guard.skipped == 2


@pytest.mark.parametrize(
    ("name", "group"),
    [
        ("base_model.model.model.layers.3.self_attn.q_proj.lora_A.default.weight", "layer_3"),
        ("model.layers.12.mlp.down_proj.weight", "layer_12"),
        ("model.embed_tokens.weight", "embed"),
        ("base_model.model.model.embed_tokens.modules_to_save.default.weight", "embed"),
        ("lm_head.weight", "head"),
        ("model.norm.weight", "final_norm"),
        ("model.layers.0.input_layernorm.weight", "layer_0"),
        ("something_else", "other"),
    ],
)
def test_layer_group(name, group):
    assert layer_group(name) == group


# ----------------------------------------------------------------------------------------------------------
# λ calibration
# ----------------------------------------------------------------------------------------------------------


def test_calibration_choice_rule():
    nan = float("nan")
    grid = [{"weight": 0.001, "val_em": 0.50}, {"weight": 0.01, "val_em": 0.55}, {"weight": 0.1, "val_em": 0.60},
            {"weight": 1.0, "val_em": nan}]
    assert choose_point(grid) == 2  # best validation EM; the non-finite point never wins
    tie = [{"weight": 0.001, "val_em": 0.4}, {"weight": 0.01, "val_em": 0.4}]
    assert choose_point(tie) == 0  # ties to the smaller λ
    assert choose_point([{"weight": 0.1, "val_em": None}, {"weight": nan, "val_em": 0.9}]) is None


def test_calibration_paired_se_and_one_se_rule_reads_it():
    """paired_se: SD over items of the seed-averaged per-item differences / √items, at least the seeds' SD of
    the score differences / √k; one_se with se_paired per point uses it instead of the unpaired SE."""
    from jepa_audit.objectives.calibrate import item_string, paired_se

    a, b = item_string([True] * 8 + [False] * 12), item_string([True] * 10 + [None] * 10)
    assert a == "1" * 8 + "0" * 12
    d = np.array([int(x) - int(y) for x, y in zip(a, b, strict=True)], dtype=float)
    assert paired_se([a], [b]) == pytest.approx(d.std(ddof=1) / np.sqrt(20))
    a2, b2 = "1" * 2 + "0" * 18, "1" * 10 + "0" * 10  # a second seed whose gap is much larger
    d2 = (d + np.array([int(x) - int(y) for x, y in zip(a2, b2, strict=True)])) / 2
    per_seed = [(8 - 10) / 20, (2 - 10) / 20]
    expect = max(d2.std(ddof=1) / np.sqrt(20), statistics.stdev(per_seed) / np.sqrt(2))
    assert paired_se([a, a2], [b, b2]) == pytest.approx(expect)
    assert paired_se([a, None], [b, b2]) is None and paired_se(["10"], ["1"]) is None
    grid = [{"weight": 0.1, "val_em": 0.50, "se_paired": 0.0}, {"weight": 1.0, "val_em": 0.40, "se_paired": 0.073}]
    assert choose_point(grid, "one_se") == 0  # 0.40 < 0.50 − 0.073: outside one paired SE
    grid[1]["se_paired"] = 0.11
    assert choose_point(grid, "one_se") == 1


def test_calibration_one_se_rule():
    """one_se: the largest λ whose score is ≥ best − SE(best); SE = √(p(1−p)/(n·k)), at least SD/√k over k seeds."""
    nan = float("nan")
    # best 0.655 at dose index 1; SE = √(.655·.345/200) = 0.0336 → floor 0.6214: 0.625 qualifies, the NaN never wins
    grid = [{"weight": 0.001, "val_em": 0.645}, {"weight": 0.01, "val_em": 0.655}, {"weight": 0.4, "val_em": 0.625},
            {"weight": 4.0, "val_em": nan}]
    assert choose_point(grid, "best") == 1
    assert choose_point(grid, "one_se", n_items=200) == 2
    grid[2]["val_em"] = 0.62  # just outside one SE
    assert choose_point(grid, "one_se", n_items=200) == 1
    assert choose_point([{"weight": 0.1, "val_em": 0.4}, {"weight": 1.0, "val_em": 0.4}], "one_se", n_items=50) == 1
    assert choose_point([{"weight": 0.1, "val_em": 0.0}, {"weight": 1.0, "val_em": 0.0}], "one_se", n_items=50) == 1
    # two seeds that disagree widen the SE beyond the binomial one
    point = {"weight": 1.0, "val_em": 0.5, "val_em_per_seed": [0.3, 0.7]}
    assert score_se(point, 1000) == pytest.approx(statistics.stdev([0.3, 0.7]) / math.sqrt(2))
    assert score_se({"weight": 1.0, "val_em": 0.5, "val_em_per_seed": [0.5, 0.5]}, 10) == pytest.approx(
        math.sqrt(0.25 / 20))
    with pytest.raises(ValueError, match="n_items"):
        choose_point(grid, "one_se")
    with pytest.raises(ValueError, match="calibration.rule"):
        choose_point(grid, "median")  # type: ignore[arg-type]
    assert choose_point([{"weight": 0.1, "val_em": None}], "one_se", n_items=10) is None
