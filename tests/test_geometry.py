"""Geometry metrics on data with known answers, and the model-facing compute_geometry (issue 6)."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import make_tiny_llama, make_toy_batch
from jepa_audit.geometry import (
    GEOMETRY_KEYS_DOC,
    alpha_req,
    anisotropy,
    compute_geometry,
    curve_subset,
    default_layers,
    effective_rank,
    expected_keys,
    fisher_turning_angle_deg,
    heldout_rows,
    participation_ratio,
    self_similarity,
    stable_rank,
    turning_angle_deg,
    twonn_dimension,
    variance_stats,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _rotation(d: int, seed: int = 0) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=_gen(seed), dtype=torch.float64))
    return q.float()


def _full(B: int, T: int) -> torch.Tensor:
    return torch.ones(B, T, dtype=torch.bool)


# ---------------------------------------------------------------- curvature


def test_points_on_a_line_have_zero_curvature():
    g = _gen(1)
    B, T, d = 3, 20, 16
    direction = torch.randn(d, generator=g)
    steps = torch.rand(B, T, generator=g) + 0.1  # uneven, strictly positive steps along one direction
    h = torch.randn(B, 1, d, generator=g) + steps.cumsum(1).unsqueeze(-1) * direction
    assert turning_angle_deg(h, _full(B, T)) == pytest.approx(0.0, abs=0.05)


def test_random_walk_in_high_dimension_turns_about_90_degrees():
    h = torch.randn(4, 200, 512, generator=_gen(2)).cumsum(dim=1)
    assert turning_angle_deg(h, _full(4, 200)) == pytest.approx(90.0, abs=2.0)


def test_iid_points_turn_120_degrees():
    # v_t, v_{t+1} share −x_{t+1}: cos = −1/2 in high dimension.
    h = torch.randn(4, 200, 512, generator=_gen(3))
    assert turning_angle_deg(h, _full(4, 200)) == pytest.approx(120.0, abs=2.0)


@pytest.mark.parametrize("theta", [10.0, 45.0, 135.0, 179.0])
def test_planar_turn_of_theta_reads_theta(theta):
    T, d = 12, 9
    ang = torch.deg2rad(torch.tensor(theta, dtype=torch.float64)) * torch.arange(T - 1)
    steps = torch.stack([ang.cos(), ang.sin()], dim=1) * (1 + torch.arange(T - 1).unsqueeze(1))  # any lengths
    pts = torch.cat([torch.zeros(1, 2, dtype=torch.float64), steps.cumsum(0)])
    h = torch.zeros(1, T, d)
    h[0, :, :2] = pts.float()
    h = h @ _rotation(d, 4).T + 3.0  # rotated and shifted: the angle is invariant
    assert turning_angle_deg(h, _full(1, T)) == pytest.approx(theta, abs=0.05)


def test_mask_never_crosses_padding_gaps_or_rows():
    d = 6
    line = torch.arange(8, dtype=torch.float32).unsqueeze(1) * torch.eye(d)[0]  # straight along e0
    h = torch.zeros(2, 10, d)
    h[0, :8] = line
    h[0, 8:] = torch.randn(2, d, generator=_gen(5)) * 100  # padding garbage that would bend the path
    h[1, :8] = line @ _rotation(d, 6).T  # another straight row in another direction
    h[1, 8:] = torch.randn(2, d, generator=_gen(7)) * 100
    mask = torch.zeros(2, 10, dtype=torch.bool)
    mask[:, :8] = True
    assert turning_angle_deg(h, mask) == pytest.approx(0.0, abs=0.05)
    # A gap: a kink at position 4 is invisible when position 4 is masked out (no difference spans the gap).
    h2 = line.clone().unsqueeze(0)
    h2[0, 4] += 50 * torch.eye(d)[1]
    gap = torch.ones(1, 8, dtype=torch.bool)
    gap[0, 4] = False
    assert turning_angle_deg(h2, gap) == pytest.approx(0.0, abs=0.05)
    assert turning_angle_deg(h2, torch.ones(1, 8, dtype=torch.bool)) > 30.0
    # Too short everywhere → None, never NaN.
    assert turning_angle_deg(h, torch.zeros(2, 10, dtype=torch.bool)) is None


def test_curvature_averages_per_sequence_then_over_sequences():
    d = 4
    h = torch.zeros(2, 12, d)
    h[0] = torch.arange(12, dtype=torch.float32).unsqueeze(1) * torch.eye(d)[0]  # 10 angles of 0°
    h[1, 1] = torch.eye(d)[0]
    h[1, 2] = torch.eye(d)[0] + torch.eye(d)[1]  # one 90° turn
    mask = torch.zeros(2, 12, dtype=torch.bool)
    mask[0] = True
    mask[1, :3] = True
    assert turning_angle_deg(h, mask) == pytest.approx(45.0, abs=1e-3)  # not 90/11 (token-weighted)


def _dense_fisher_angles(h, mask, W):
    """Explicit F = Wᵀ(diag p − ppᵀ)W at each vertex, fp64, straight from the definition."""
    h, W = h.double(), W.double()
    per_seq = []
    for b in range(h.shape[0]):
        angs = []
        for t in range(h.shape[1] - 2):
            if not bool(mask[b, t] and mask[b, t + 1] and mask[b, t + 2]):
                continue
            u, v = h[b, t + 1] - h[b, t], h[b, t + 2] - h[b, t + 1]
            p = torch.softmax(W @ h[b, t + 1], dim=0)
            Fm = W.T @ (torch.diag(p) - torch.outer(p, p)) @ W
            cos = (u @ Fm @ v) / torch.sqrt((u @ Fm @ u) * (v @ Fm @ v))
            angs.append(math.degrees(math.acos(max(-1.0, min(1.0, float(cos))))))
        if angs:
            per_seq.append(sum(angs) / len(angs))
    return sum(per_seq) / len(per_seq)


def test_fisher_angle_matches_dense_fisher_matrix():
    g = _gen(8)
    V, d = 7, 5
    W = torch.randn(V, d, generator=g)
    h = torch.randn(3, 9, d, generator=g)
    mask = _full(3, 9)
    mask[1, 6:] = False
    mask[2, :3] = False
    got = fisher_turning_angle_deg(h, mask, W, chunk=4)  # small chunk exercises the chunk loop
    assert got == pytest.approx(_dense_fisher_angles(h, mask, W), abs=0.05)
    # The Fisher angle really is a different metric from the Euclidean one here.
    assert abs(got - turning_angle_deg(h, mask)) > 1.0
    assert fisher_turning_angle_deg(h, torch.zeros(3, 9, dtype=torch.bool), W) is None


# ---------------------------------------------------------------- anisotropy, self-similarity


def test_isotropic_gaussian_has_near_zero_anisotropy_and_full_rank():
    N, d = 4000, 32
    z = torch.randn(N, d, generator=_gen(9))
    seq = torch.arange(N) // 50
    assert abs(anisotropy(z, seq, _gen(0))) < 0.01
    assert effective_rank(z) > 0.95 * d
    assert participation_ratio(z) > 0.9 * d
    assert stable_rank(z) > 0.75 * d


def test_anisotropy_exact_matches_brute_force_and_sampling():
    g = _gen(10)
    z = torch.randn(60, 8, generator=g) + 2.0 * torch.ones(8)  # a shared direction: clearly anisotropic
    seq = torch.arange(60) % 7
    zh = torch.nn.functional.normalize(z.double(), dim=1)
    C = zh @ zh.T
    diff = seq.unsqueeze(0) != seq.unsqueeze(1)
    brute = float(C[diff].mean())
    assert anisotropy(z, seq) == pytest.approx(brute, abs=1e-9)
    assert anisotropy(z, seq, _gen(0), n_pairs=200_000) == pytest.approx(brute, abs=0.01)
    assert brute > 0.5
    assert anisotropy(z, torch.zeros(60, dtype=torch.long)) is None  # one sequence: no cross pairs


def test_self_similarity_matches_brute_force():
    g = _gen(11)
    N = 80
    z = torch.randn(N, 6, generator=g)
    tok = torch.randint(0, 5, (N,), generator=g)
    seq = torch.randint(0, 9, (N,), generator=g)
    zh = torch.nn.functional.normalize(z.double(), dim=1)
    per_type = []
    for w in tok.unique():
        idx = (tok == w).nonzero().flatten()
        vals = [float(zh[i] @ zh[j]) for i in idx for j in idx if seq[i] != seq[j]]
        if vals:
            per_type.append(sum(vals) / len(vals))
    assert self_similarity(z, tok, seq) == pytest.approx(sum(per_type) / len(per_type), abs=1e-9)
    # Identical states of one token in every sequence → 1; all token ids distinct → None.
    same = torch.randn(1, 6, generator=g).repeat(5, 1)
    assert self_similarity(same, torch.zeros(5, dtype=torch.long), torch.arange(5)) == pytest.approx(1.0)
    assert self_similarity(z, torch.arange(N), seq) is None


# ---------------------------------------------------------------- variance, rank


def test_variance_stats_of_a_scaled_gaussian():
    N, d, s = 20000, 16, 3.0
    z = s * torch.randn(N, d, generator=_gen(12)) + 7.0  # the mean shifts norm_mean, not std
    v = variance_stats(z)
    assert v["std_mean"] == pytest.approx(s, rel=0.02)
    assert v["trace_cov_over_d"] == pytest.approx(s * s, rel=0.03)
    assert v["norm_mean"] == pytest.approx(math.sqrt(d * (s * s + 49.0)), rel=0.02)
    assert variance_stats(z[:1])["std_mean"] is None


def _exact_spectrum(N: int, sv: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """N × d data whose centred singular values are exactly ``sv`` (columns orthogonal to the ones vector)."""
    d = sv.numel()
    a = torch.randn(N, d, generator=_gen(seed), dtype=torch.float64)
    q, _ = torch.linalg.qr(a - a.mean(0))
    return (q * sv.double() @ _rotation(d, seed + 1).double().T).float()


def test_rank_k_data():
    N, d, k = 3000, 64, 5
    flat = torch.zeros(d)
    flat[:k] = 1.0
    z = _exact_spectrum(N, flat) + 10.0  # k equal singular values: every rank reads exactly k
    for f in (effective_rank, participation_ratio, stable_rank):
        assert f(z) == pytest.approx(k, rel=0.01)
    # Gaussian rank-k data: sample spectrum is a little uneven; ranks stay near k and never above it.
    zg = torch.randn(N, k, generator=_gen(13)) @ torch.randn(k, d, generator=_gen(14))
    assert 0.7 * k < effective_rank(zg) <= k + 0.05
    assert 0.5 * k < participation_ratio(zg) <= k + 1e-3
    assert 1.0 <= stable_rank(zg) <= k + 1e-3


@pytest.mark.parametrize("alpha", [0.7, 1.0, 1.8])
def test_alpha_req_recovers_power_law_exponent(alpha):
    d = 200
    lam = torch.arange(1, d + 1, dtype=torch.float64) ** (-alpha)
    z = _exact_spectrum(1000, lam.sqrt())
    assert alpha_req(z) == pytest.approx(alpha, abs=0.02)


def test_alpha_req_ignores_numerical_zeros_and_needs_enough_eigenvalues():
    lam = torch.arange(1, 41, dtype=torch.float64) ** -1.0
    sv = torch.cat([lam.sqrt(), torch.zeros(24)])  # rank 40 embedded in d = 64
    z = _exact_spectrum(500, sv)
    assert alpha_req(z) == pytest.approx(1.0, abs=0.02)
    assert alpha_req(torch.randn(100, 6, generator=_gen(15))) is None  # ranks 5..6 only: too few


# ---------------------------------------------------------------- TwoNN


def test_twonn_on_a_plane_in_10d():
    z2 = torch.rand(2000, 2, generator=_gen(16))
    z = torch.cat([z2, torch.zeros(2000, 8)], dim=1) @ _rotation(10, 17).T
    assert twonn_dimension(z) == pytest.approx(2.0, abs=0.3)


def test_twonn_on_a_curve_and_with_duplicates():
    t = torch.rand(1500, generator=_gen(18)) * 6.0
    curve = torch.stack([t.cos(), t.sin(), 0.3 * t, (2 * t).sin()], dim=1)
    z = torch.cat([curve, torch.zeros(1500, 6)], dim=1) @ _rotation(10, 19).T
    est = twonn_dimension(z)
    assert est == pytest.approx(1.0, abs=0.15)
    dup = torch.cat([z, z[:300]])  # exact duplicates (r1 = 0) are dropped, not turned into inf/NaN
    assert twonn_dimension(dup) == pytest.approx(est, abs=1e-6)
    assert twonn_dimension(z[:2]) is None


def test_twonn_subsample_is_deterministic_and_sane():
    z = torch.cat([torch.rand(3000, 3, generator=_gen(20)), torch.zeros(3000, 5)], dim=1)
    a, b = twonn_dimension(z, max_points=800), twonn_dimension(z, max_points=800)
    assert a == b
    assert a == pytest.approx(3.0, abs=0.5)


# ---------------------------------------------------------------- layers, rows, docs


def test_default_layers():
    assert default_layers(16) == [4, 8, 12, 16]
    assert default_layers(22)[-1] == 22 and len(default_layers(22)) == 4
    assert default_layers(3) == [1, 2, 3]
    assert default_layers(2) == [1, 2]
    assert default_layers(1) == [1]
    with pytest.raises(ValueError):
        default_layers(0)


def test_heldout_rows_fixed_by_seed():
    assert heldout_rows(500, 64, seed=0) == heldout_rows(500, 64, seed=0)
    assert heldout_rows(500, 64, seed=0) != heldout_rows(500, 64, seed=1)
    assert heldout_rows(10, 64) == list(range(10))


def test_keys_doc_covers_required_families():
    keys = " ".join(GEOMETRY_KEYS_DOC)
    for word in ("curvature", "anisotropy", "rank", "std", "twonn", "jepa_cos", "v1_kl"):
        assert word in keys


# ---------------------------------------------------------------- the model-facing function


def _batch_with_shared_eot(B: int = 6, seed: int = 0):
    """toy_batch whose last answer token is one shared id in every row (like <|eot_id|>)."""
    b = make_toy_batch(B=B, seed=seed)
    last = b.answer_mask.long().cumsum(1).argmax(1)
    b.input_ids[torch.arange(B), last] = 2
    b.labels[torch.arange(B), last] = 2
    b.target_ids[torch.arange(B), b.target_last + 1] = 2
    return b


def test_llama_last_hidden_state_is_post_norm(tiny_llama, toy_batch):
    out = tiny_llama(
        input_ids=toy_batch.input_ids, attention_mask=toy_batch.attention_mask, output_hidden_states=True
    )
    torch.testing.assert_close(tiny_llama.lm_head(out.hidden_states[-1]), out.logits)


def test_compute_geometry_every_key_finite_and_deterministic(tiny_llama):
    batch = _batch_with_shared_eot()
    r1 = compute_geometry(tiny_llama, batch, layers=None)
    r2 = compute_geometry(tiny_llama, batch, layers=None)
    assert r1 == r2
    assert list(r1) == expected_keys(default_layers(3))
    for k, v in r1.items():
        assert v is not None and math.isfinite(v), k
    for word in ("curvature", "anisotropy", "rank", "std"):
        assert any(word in k for k in r1)
    assert r1["n_sequences"] == 6 and r1["n_answer_states"] == float(batch.answer_mask.sum())
    assert -1.0 <= r1["jepa_cos"] <= 1.0 and r1["v1_kl"] >= 0.0


@torch.no_grad()
def test_compute_geometry_alignment_terms_by_hand(tiny_llama, toy_batch):
    b = toy_batch
    out = tiny_llama(input_ids=b.input_ids, attention_mask=b.attention_mask, output_hidden_states=True)
    out_r = tiny_llama(input_ids=b.target_ids, attention_mask=b.target_mask, output_hidden_states=True)
    rows = torch.arange(len(b))
    h = out.hidden_states[-1]
    e_u, e_t = h[rows, b.nl_last], out_r.hidden_states[-1][rows, b.target_last]
    logp = torch.log_softmax(out.logits[rows, b.answer_start - 1], -1)
    logq = torch.log_softmax(tiny_llama.lm_head(e_u), -1)
    kl = (logp.exp() * (logp - logq)).sum(-1).mean()
    r = compute_geometry(tiny_llama, b, layers=[-1])
    assert r["jepa_cos"] == pytest.approx(float(torch.cosine_similarity(e_u, e_t, dim=-1).mean()), abs=1e-5)
    assert r["v1_kl"] == pytest.approx(float(kl), abs=1e-5)
    assert "curvature_answer_L3" in r and "curvature_answer_L1" not in r


def test_compute_geometry_restores_mode_and_handles_layers(tiny_llama):
    batch = _batch_with_shared_eot()
    tiny_llama.train()
    r_train = compute_geometry(tiny_llama, batch, layers=[0, -1])
    assert tiny_llama.training
    tiny_llama.eval()
    assert compute_geometry(tiny_llama, batch, layers=[0, 3]) == r_train  # -1 ≡ 3; eval either way
    assert not tiny_llama.training
    with pytest.raises(ValueError, match="out of range"):
        compute_geometry(tiny_llama, batch, layers=[4])


def test_compute_geometry_row_chunks_agree(tiny_llama):
    batch = _batch_with_shared_eot(B=7)
    whole = compute_geometry(tiny_llama, batch)
    chunked = compute_geometry(tiny_llama, batch, max_rows_per_forward=3)  # 3 + 3 + 1 rows
    assert chunked == pytest.approx(whole, rel=1e-4, abs=1e-5)


def test_compute_geometry_values_never_nan_on_degenerate_batch(tiny_llama, toy_batch):
    b = toy_batch
    short = b.answer_mask & (torch.arange(b.input_ids.shape[1]) < (b.answer_start + 2).unsqueeze(1))
    b.answer_mask = short  # two answer tokens per row: no turning angle exists
    r = compute_geometry(tiny_llama, b, layers=[3])
    assert r["curvature_answer_L3"] is None and r["curvature_fisher_answer_Llast"] is None
    assert all(v is None or math.isfinite(v) for v in r.values())


def test_compute_geometry_under_peft(toy_batch):
    peft = pytest.importorskip("peft")
    base = make_tiny_llama()
    plain = compute_geometry(base, toy_batch, layers=[3])
    cfg = peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=True)
    wrapped = peft.get_peft_model(base, cfg)  # zero-init B: the function of the model is unchanged
    assert compute_geometry(wrapped, toy_batch, layers=[3]) == pytest.approx(plain, abs=1e-5)


def test_curve_subset_matches_final_keys(tiny_llama):
    batch = _batch_with_shared_eot()
    out = tiny_llama(
        input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True
    )
    curves = curve_subset(out.hidden_states, batch)
    full = compute_geometry(tiny_llama, batch, layers=[3])
    assert set(curves) == {"curvature_answer_L3", "std_mean_L3"}
    for k, v in curves.items():
        assert v == pytest.approx(full[k], abs=1e-5)


def test_compute_geometry_on_a_64_row_batch_uses_every_answer_state():
    # speed is measured by `jepa-audit bench` (geometry_overhead), never asserted in tests
    model = make_tiny_llama(vocab=512, d=64, layers=2)
    batch = make_toy_batch(B=64, vocab=512)
    r = compute_geometry(model, batch)
    assert r["n_answer_states"] == int(batch.answer_mask.sum())
    assert r["n_answer_states"] > 300
