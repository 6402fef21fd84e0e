"""Geometry metrics as pure functions on fp32 tensors (reference: auxiliaries.md §5).

Conventions
-----------
* ``h``: (B, T, d) hidden states of one layer for B right-padded rows; ``mask``: (B, T) bool, the tokens a
  metric looks at (prompt 𝒫 or answer 𝒜).  Trajectory metrics only use differences whose two ends are both in
  the mask, so nothing ever crosses padding, a gap in the mask, or a sequence boundary.
* ``z``: (N, d) a cloud of states (one per token), ``seq_ids``: (N,) which row each state came from.
* Every function returns a Python float, or ``None`` where the metric is undefined on its input (too few
  points, no valid pair, a degenerate spectrum).  Never NaN: callers write these values straight into JSON.
* Nothing here draws unseeded random numbers; results are deterministic on CPU for a fixed input.

All computations run in fp32 (inputs are cast), except sums that cancel badly (anisotropy, self-similarity,
TwoNN distances, the α-ReQ fit), which run in fp64 because they are cheap and the cancellation is real.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

RANKME_EPS = 1e-7  # RankMe: p_k = σ_k / Σσ + 1e-7 (Garrido et al. 2023)


def _finite(x: float | Tensor | None) -> float | None:
    """A float, or None for None / NaN / ±inf (results go to JSON, which has no NaN)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _kahan_angle(u: Tensor, v: Tensor) -> Tensor:
    """Angle (radians) between rows of u and v, both (..., d) and nonzero.

    2·atan2(‖û − v̂‖, ‖û + v̂‖) (Kahan) instead of arccos(cos): arccos loses about half the digits near 0° and
    180° (fp32 cos = 1 − 6e-8 reads as 0.02°), which would keep "points on a line" away from 0.
    """
    uh = u / u.norm(dim=-1, keepdim=True)
    vh = v / v.norm(dim=-1, keepdim=True)
    return 2.0 * torch.atan2((uh - vh).norm(dim=-1), (uh + vh).norm(dim=-1))


def _triples(h: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Successive differences and which consecutive pairs of them are valid.

    Returns v1 = h[t+1] − h[t] and v2 = h[t+2] − h[t+1], both (B, T−2, d), and valid (B, T−2) bool: the three
    points t, t+1, t+2 are all in the mask and neither difference is the zero vector (an angle with a zero step
    is undefined; repeated identical states happen at the embedding layer for repeated tokens).
    """
    if h.dim() != 3 or mask.shape != h.shape[:2]:
        raise ValueError(
            f"expected h (B, T, d) and mask (B, T); got {tuple(h.shape)} and {tuple(mask.shape)}"
        )
    h = h.float()
    m = mask.bool()
    v = h[:, 1:] - h[:, :-1]
    v1, v2 = v[:, :-1], v[:, 1:]
    valid = m[:, :-2] & m[:, 1:-1] & m[:, 2:]
    valid &= (v1.norm(dim=-1) > 0) & (v2.norm(dim=-1) > 0)
    return v1, v2, valid


def _per_sequence_mean(values: Tensor, valid: Tensor) -> float | None:
    """Mean of ``values`` (B, K) over valid entries within each row, then over rows that have any."""
    vals = torch.where(valid, values, torch.zeros_like(values))
    counts = valid.sum(dim=1)
    keep = counts > 0
    if not bool(keep.any()):
        return None
    per_seq = vals.sum(dim=1)[keep] / counts[keep]
    return _finite(per_seq.mean())


def turning_angle_deg(h: Tensor, mask: Tensor) -> float | None:
    """Mean turning angle of the token trajectory, in degrees (Hénaff et al. 2019; Hosseini & Fedorenko 2023).

    h: (B, T, d) states of one layer; mask: (B, T) bool.  With v_t = h[t+1] − h[t], the angle at t is
    ∠(v_t, v_{t+1}) ∈ [0°, 180°]; it counts only when h[t], h[t+1], h[t+2] are all in the mask.  Averaged within
    each sequence, then over sequences (so long rows do not dominate).  0° = straight line; ≈ 90° = random walk
    in high dimension.  None when no sequence has three consecutive masked tokens.
    """
    v1, v2, valid = _triples(h, mask)
    if not bool(valid.any()):
        return None
    ang = torch.zeros(valid.shape, dtype=torch.float32, device=h.device)
    ang[valid] = torch.rad2deg(_kahan_angle(v1[valid], v2[valid]))
    return _per_sequence_mean(ang, valid)


def fisher_turning_angle_deg(h: Tensor, mask: Tensor, W: Tensor, chunk: int = 256) -> float | None:
    """Turning angle in the Fisher metric of the LM head, in degrees (auxiliaries.md F5 as a metric).

    h: (B, T, d) last-layer (post-norm) states, the ones the head reads; mask: (B, T) bool; W: (V, d) head weight
    (logits = W h, no bias, as in Llama).  At each valid triple the metric is F = Wᵀ(diag p − p pᵀ)W evaluated at
    the vertex h[t+1] (the state both steps share), p = softmax(W h[t+1]).  F is never materialised:
    with s = W u, ⟨u, v⟩_F = Cov_{y∼p}[s_u,y, s_v,y] = Σ_y p_y (s_u − E_p s_u)_y (s_v − E_p s_v)_y.
    Costs three (M, V) head matmuls for M triples, done ``chunk`` triples at a time to bound memory at real
    vocabulary sizes.  Steps with zero Fisher norm (W u constant over y) are dropped.  Same averaging as
    :func:`turning_angle_deg`.
    """
    v1, v2, valid = _triples(h, mask)
    if not bool(valid.any()):
        return None
    W = W.float()
    hm = h.float()[:, 1:-1]  # vertex of each triple, (B, T−2, d)
    idx = valid.nonzero(as_tuple=False)  # (M, 2) in row-major order: deterministic
    a, b, c = v1[valid], v2[valid], hm[valid]
    angles, ok = [], []
    for s in range(0, a.shape[0], chunk):
        p = torch.softmax(c[s : s + chunk] @ W.T, dim=-1)  # (m, V)
        su, sv = a[s : s + chunk] @ W.T, b[s : s + chunk] @ W.T
        su = su - (p * su).sum(-1, keepdim=True)  # centre under p: Cov needs E_p-centred scores
        sv = sv - (p * sv).sum(-1, keepdim=True)
        nu = (p * su * su).sum(-1).sqrt()  # ‖u‖_F
        nv = (p * sv * sv).sum(-1).sqrt()
        good = (nu > 0) & (nv > 0)
        su = su / nu.clamp_min(1e-30).unsqueeze(-1)
        sv = sv / nv.clamp_min(1e-30).unsqueeze(-1)
        # Kahan's form in the F-norm: ‖û − v̂‖_F and ‖û + v̂‖_F, computed directly (no 1 − cos cancellation).
        dm = (p * (su - sv) ** 2).sum(-1).sqrt()
        dp = (p * (su + sv) ** 2).sum(-1).sqrt()
        angles.append(torch.rad2deg(2.0 * torch.atan2(dm, dp)))
        ok.append(good)
    ang_flat, ok_flat = torch.cat(angles), torch.cat(ok)
    ang = torch.zeros(valid.shape, dtype=torch.float32, device=h.device)
    fvalid = torch.zeros_like(valid)
    ang[idx[:, 0], idx[:, 1]] = ang_flat
    fvalid[idx[:, 0], idx[:, 1]] = ok_flat
    return _per_sequence_mean(ang, fvalid)


def _unit_rows(z: Tensor, *others: Tensor) -> tuple[Tensor, ...]:
    """Rows of z scaled to unit norm (fp64), dropping zero rows (and the matching entries of ``others``)."""
    z = z.double()
    n = z.norm(dim=1)
    keep = n > 0
    return (z[keep] / n[keep].unsqueeze(1), *(o[keep] for o in others))


def _cross_group_mean_cos(zh: Tensor, group: Tensor) -> tuple[Tensor, Tensor]:
    """Sum and count of ẑ_i·ẑ_j over ordered pairs i ≠ j in *different* groups, computed in O(N d).

    Σ_{i,j} ẑ_i·ẑ_j = ‖Σ ẑ‖²; removing same-group pairs (incl. i = j) leaves ‖Σẑ‖² − Σ_g ‖Σ_{i∈g} ẑ_i‖²,
    over N² − Σ_g n_g² pairs.  Exact, so no sampling noise and no random numbers.
    """
    _, inv = torch.unique(group, return_inverse=True)
    G = int(inv.max()) + 1 if inv.numel() else 0
    S_g = torch.zeros(G, zh.shape[1], dtype=zh.dtype, device=zh.device).index_add_(0, inv, zh)
    n_g = torch.bincount(inv, minlength=G).to(zh.dtype)
    total = zh.sum(0)
    s = total @ total - (S_g * S_g).sum()
    cnt = zh.shape[0] ** 2 - (n_g * n_g).sum()
    return s, cnt


def anisotropy(
    z: Tensor, seq_ids: Tensor, gen: torch.Generator | None = None, n_pairs: int | None = None
) -> float | None:
    """Mean cosine between states of different sequences (Ethayarajh 2019), unitless in [−1, 1].

    z: (N, d); seq_ids: (N,).  Ethayarajh averages over random pairs of tokens from different contexts.  By
    default (``n_pairs=None``) we return the exact mean over *all* such pairs, which is the expectation of that
    estimator, costs O(N d) and needs no random numbers.  With ``n_pairs`` set, ``n_pairs`` ordered pairs are
    drawn from ``gen`` (required) and same-sequence pairs are discarded.  ≈ 0 for an isotropic cloud, → 1 when
    all states share one dominant direction.  None with fewer than two sequences.
    """
    zh, sid = _unit_rows(z, seq_ids)
    if zh.shape[0] < 2 or torch.unique(sid).numel() < 2:
        return None
    if n_pairs is None:
        s, cnt = _cross_group_mean_cos(zh, sid)
        return _finite(s / cnt) if cnt > 0 else None
    if gen is None:
        raise ValueError("anisotropy: sampling n_pairs needs a torch.Generator (gen)")
    i = torch.randint(0, zh.shape[0], (n_pairs,), generator=gen).to(zh.device)
    j = torch.randint(0, zh.shape[0], (n_pairs,), generator=gen).to(zh.device)
    keep = sid[i] != sid[j]
    if not bool(keep.any()):
        return None
    return _finite((zh[i[keep]] * zh[j[keep]]).sum(1).mean())


def self_similarity(z: Tensor, token_ids: Tensor, seq_ids: Tensor) -> float | None:
    """Mean cosine between states of the same token type in different sequences (Ethayarajh 2019).

    z: (N, d); token_ids, seq_ids: (N,).  For each token type w with occurrences in ≥ 2 sequences, the mean of
    cos(z_i, z_j) over ordered pairs of its occurrences in different sequences; then the unweighted mean over
    such types (as Ethayarajh averages over words).  Exact and vectorised (same identity as anisotropy, per type).
    None when no type occurs in two sequences.
    """
    zh, tid, sid = _unit_rows(z, token_ids, seq_ids)
    if zh.shape[0] < 2:
        return None
    _, t_inv = torch.unique(tid, return_inverse=True)
    _, s_inv = torch.unique(sid, return_inverse=True)
    n_types, n_seq = int(t_inv.max()) + 1, int(s_inv.max()) + 1
    d = zh.shape[1]
    S_t = torch.zeros(n_types, d, dtype=zh.dtype, device=zh.device).index_add_(0, t_inv, zh)
    n_t = torch.bincount(t_inv, minlength=n_types).to(zh.dtype)
    ts_key, ts_inv = torch.unique(t_inv * n_seq + s_inv, return_inverse=True)
    S_ts = torch.zeros(ts_key.numel(), d, dtype=zh.dtype, device=zh.device).index_add_(0, ts_inv, zh)
    n_ts = torch.bincount(ts_inv, minlength=ts_key.numel()).to(zh.dtype)
    ts_type = ts_key // n_seq
    same = torch.zeros(n_types, dtype=zh.dtype, device=zh.device).index_add_(0, ts_type, (S_ts * S_ts).sum(1))
    same_n = torch.zeros(n_types, dtype=zh.dtype, device=zh.device).index_add_(0, ts_type, n_ts * n_ts)
    cross = (S_t * S_t).sum(1) - same
    cnt = n_t * n_t - same_n
    keep = cnt > 0
    if not bool(keep.any()):
        return None
    return _finite((cross[keep] / cnt[keep]).mean())


def variance_stats(z: Tensor) -> dict[str, float | None]:
    """Spread of a cloud z: (N, d), in the units of the hidden state.

    ``std_mean``: mean over dimensions of the per-dimension std (the VICReg std; unbiased, N − 1);
    ``trace_cov_over_d``: tr(C)/d, the mean per-dimension variance; ``norm_mean``: mean ‖z_i‖ (uncentred).
    None entries when N < 2 (norm_mean needs N ≥ 1).
    """
    z = z.float()
    if z.shape[0] < 2:
        nm = _finite(z.norm(dim=1).mean()) if z.shape[0] else None
        return {"std_mean": None, "trace_cov_over_d": None, "norm_mean": nm}
    var = z.var(dim=0, correction=1)
    return {
        "std_mean": _finite(var.sqrt().mean()),
        "trace_cov_over_d": _finite(var.mean()),
        "norm_mean": _finite(z.norm(dim=1).mean()),
    }


def singular_values(z: Tensor) -> Tensor:
    """Singular values σ_1 ≥ … of the column-centred cloud z: (N, d), fp32, length min(N, d).

    Eigenvalues of the covariance are λ_k = σ_k² / (N − 1); every rank metric below is scale-free, so the
    functions work on σ directly.  Share one call across the rank metrics (one SVD per layer).
    """
    z = z.float()
    return torch.linalg.svdvals(z - z.mean(dim=0, keepdim=True))


def _sv(z_or_sv: Tensor) -> Tensor:
    return z_or_sv if z_or_sv.dim() == 1 else singular_values(z_or_sv)


def effective_rank(z: Tensor) -> float | None:
    """RankMe (Garrido et al. 2023): exp(−Σ p_k log p_k), p_k = σ_k/Σσ + 1e-7, σ of centred z (N, d).

    Unitless, in [1, min(N, d)].  Also accepts a precomputed 1-D vector of singular values.
    """
    sv = _sv(z)
    tot = sv.sum()
    if sv.numel() == 0 or not bool(tot > 0):
        return None
    p = sv / tot + RANKME_EPS
    return _finite(torch.exp(-(p * torch.log(p)).sum()))


def participation_ratio(z: Tensor) -> float | None:
    """(Σλ)² / Σλ² over covariance eigenvalues λ of z (N, d) (or a 1-D σ vector).  Unitless, in [1, rank]."""
    lam = _sv(z).double() ** 2
    den = (lam * lam).sum()
    return _finite(lam.sum() ** 2 / den) if bool(den > 0) else None


def stable_rank(z: Tensor) -> float | None:
    """‖Z‖_F² / ‖Z‖₂² = Σσ² / σ_max² of the centred cloud z (N, d) (or a 1-D σ vector).  Unitless, ≥ 1.

    Centred, like the other spectra: hidden states carry a large common mean, and uncentred stable rank would
    read ≈ 1 for every run.
    """
    lam = _sv(z).double() ** 2
    return _finite(lam.sum() / lam.max()) if lam.numel() and bool(lam.max() > 0) else None


def alpha_req(z: Tensor, lo: int = 5, hi: int = 500, n_rows: int | None = None) -> float | None:
    """α-ReQ (Agrawal et al. 2022): α in the least-squares fit log λ_i = c − α log i over i ∈ [lo, hi].

    z: (N, d), or a 1-D σ vector (then pass ``n_rows`` = N for the numerical-zero threshold; optional).
    Indices are 1-based ranks of the eigenvalues in decreasing order.  Eigenvalues that are numerically zero
    (σ ≤ σ_max · max(N, d) · eps_fp32, the usual matrix-rank tolerance) are excluded first: for rank-deficient
    clouds (N < d, or low-rank data) they are rounding noise and would dominate the log-log fit.  The fit uses
    the available eigenvalues up to ``hi``; None when fewer than 3 remain in range.  Larger α = faster decay.
    """
    sv = _sv(z).double()
    if sv.numel() == 0 or not bool(sv[0] > 0):
        return None
    n = n_rows if n_rows is not None else (z.shape[0] if z.dim() == 2 else sv.numel())
    tol = float(sv[0]) * max(n, sv.numel()) * torch.finfo(torch.float32).eps
    k = int((sv > tol).sum())
    i = torch.arange(1, k + 1, dtype=torch.float64, device=sv.device)
    sel = (i >= lo) & (i <= hi)
    if int(sel.sum()) < 3:
        return None
    x, y = torch.log(i[sel]), torch.log(sv[:k][sel] ** 2)
    x = x - x.mean()
    slope = (x * (y - y.mean())).sum() / (x * x).sum()
    return _finite(-slope)


def twonn_dimension(z: Tensor, max_points: int = 2000, seed: int = 0, chunk: int = 1024) -> float | None:
    """Intrinsic dimension by TwoNN (Facco et al. 2017), maximum-likelihood form.

    z: (N, d).  For each point, μ_i = r₂(i)/r₁(i), the ratio of its second to first nearest-neighbour
    distance; on a d-dimensional manifold μ is Pareto(d), whose unbiased MLE is d̂ = (n − 1)/Σ_i log μ_i.
    (The alternative linear fit of −log(1 − F̂(μ)) on log μ after dropping the top 10 % is not used: the MLE is
    exact-form, has no tuning, and its standard error d̂/√n is easy to state.)
    Exact duplicate points (r₁ = 0, common at the embedding layer and for repeated prefixes) are removed
    first, since μ is undefined for them.  Above ``max_points`` distinct points a subsample is drawn with a
    fixed-seed generator (deterministic), which bounds the O(n²) distance cost.  Distances run in fp64 in row
    chunks.  None with fewer than 3 distinct points.
    """
    z = torch.unique(z.double(), dim=0)  # sorted, so the order is deterministic
    if z.shape[0] > max_points:
        g = torch.Generator().manual_seed(seed)
        pick = torch.randperm(z.shape[0], generator=g)[:max_points].sort().values.to(z.device)
        z = z[pick]
    n = z.shape[0]
    if n < 3:
        return None
    z = z - z.mean(dim=0, keepdim=True)  # centring keeps the ‖x‖²+‖y‖²−2x·y distance path accurate
    r1s, r2s = [], []
    for s in range(0, n, chunk):
        d = torch.cdist(z[s : s + chunk], z)
        rows = torch.arange(d.shape[0], device=z.device)
        d[rows, rows + s] = float("inf")  # exclude self
        two = d.topk(2, dim=1, largest=False).values
        r1s.append(two[:, 0])
        r2s.append(two[:, 1])
    r1, r2 = torch.cat(r1s), torch.cat(r2s)
    keep = r1 > 0
    logmu = torch.log(r2[keep] / r1[keep])
    tot = logmu.sum()
    m = int(keep.sum())
    if m < 3 or not bool(tot > 0):
        return None
    return _finite((m - 1) / tot)
