"""Representation geometry of a trained cell, on a fixed held-out batch (issue 6; auxiliaries.md §5).

Every cell (CE baseline, references, auxiliaries) logs the same flat keys, computed the same way, on the same
batch and layers, so Δgeometry can sit next to ΔEM.  See ``docs/geometry.md`` for formulas and policy.

Public API
----------
* :func:`compute_geometry` (model, batch) → flat ``{key: float | None}`` for ``results.jsonl["geometry"]``.
* :func:`default_layers`, :func:`expected_keys`, :func:`heldout_rows`, :func:`curve_subset`.
* :data:`GEOMETRY_KEYS_DOC`: key pattern → meaning and unit.
* The pure metrics live in :mod:`jepa_audit.geometry.metrics` and are re-exported here.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from jepa_audit.data.batch import Batch
from jepa_audit.geometry.metrics import (
    alpha_req,
    anisotropy,
    effective_rank,
    fisher_turning_angle_deg,
    participation_ratio,
    self_similarity,
    singular_values,
    stable_rank,
    turning_angle_deg,
    twonn_dimension,
    variance_stats,
)

__all__ = [
    "GEOMETRY_KEYS_DOC",
    "alpha_req",
    "anisotropy",
    "compute_geometry",
    "curve_subset",
    "default_layers",
    "effective_rank",
    "expected_keys",
    "fisher_turning_angle_deg",
    "heldout_rows",
    "participation_ratio",
    "self_similarity",
    "singular_values",
    "stable_rank",
    "turning_angle_deg",
    "twonn_dimension",
    "variance_stats",
]

# {l} is the hidden-state index (0 = embeddings, L = after the final norm, what the LM head reads).
# Cloud metrics (anisotropy … twonn) use the answer-token states 𝒜 of all rows (end-of-turn included).
GEOMETRY_KEYS_DOC: dict[str, str] = {
    "curvature_prompt_L{l}": "mean turning angle ∠(v_t, v_{t+1}), v_t = h[l,t+1] − h[l,t], over NL prompt tokens 𝒫; "
    "per sequence then averaged; degrees, 0 = straight, ≈ 90 = random walk",
    "curvature_answer_L{l}": "as curvature_prompt_L{l}, over answer tokens 𝒜 (the target + end-of-turn); degrees",
    "curvature_fisher_answer_Llast": "turning angle on 𝒜 at the last layer in the LM-head Fisher metric "
    "F = Wᵀ(diag p − ppᵀ)W taken at the vertex state; degrees",
    "anisotropy_L{l}": "mean cos(z_i, z_j) over all pairs of answer states from different sequences "
    "(Ethayarajh); unitless, ≈ 0 isotropic, → 1 one shared direction",
    "self_similarity_L{l}": "mean cos between answer states of the same token id in different sequences, "
    "averaged over token types; unitless; None if no token id recurs across sequences",
    "std_mean_L{l}": "mean over dimensions of the per-dimension std of answer states (VICReg std); hidden units",
    "variance_trace_L{l}": "tr(Cov)/d of answer states, the mean per-dimension variance; hidden units²",
    "norm_mean_L{l}": "mean ‖h‖ of answer states (uncentred); hidden units",
    "rank_effective_L{l}": "RankMe: exp entropy of σ/Σσ + 1e-7, σ = singular values of centred answer states; "
    "unitless, 1 … min(N, d)",
    "rank_participation_L{l}": "participation ratio (Σλ)²/Σλ² of the answer-state covariance; unitless",
    "rank_stable_L{l}": "stable rank Σσ²/σ_max² of centred answer states; unitless",
    "rank_alpha_req_L{l}": "α-ReQ: −slope of log λ_i on log i, i ∈ [5, 500] within the numerical rank; "
    "unitless, larger = faster spectral decay; None if < 3 eigenvalues in range",
    "twonn_L{l}": "TwoNN intrinsic dimension (Facco MLE (n−1)/Σ log(r2/r1)) of distinct answer states, "
    "≤ 2,000 points by seeded subsample; dimensions",
    "jepa_cos": "mean over rows of cos(e_u, e_t): e_u = h[L] at the last NL token of the full row (the NL view), "
    "e_t = h[L] at the last target token of the target-only view row; unitless",
    "v1_kl": "mean over rows of KL(p(h[L, a0−1]) ‖ p(e_u)), p = softmax(W h), W the LM head: how well the NL "
    "embedding decodes to the first-answer-token distribution (V1's loss); nats",
    "n_sequences": "rows in the geometry batch (count)",
    "n_answer_states": "answer-token states N behind the cloud metrics (count; spectra need N ≫ d)",
    "n_prompt_states": "NL prompt-token states behind curvature_prompt (count)",
}


def default_layers(n_layers: int) -> list[int]:
    """Four evenly spaced hidden-state indices ending at ``n_layers``: ⌈k·L/4⌉ for k = 1..4, deduplicated.

    L = 16 → [4, 8, 12, 16]; L = 3 → [1, 2, 3]; L = 2 → [1, 2]; L = 1 → [1].  Never 0 (the embeddings carry
    no context), always the last layer.
    """
    if n_layers < 1:
        raise ValueError(f"default_layers: need n_layers ≥ 1, got {n_layers}")
    return sorted({math.ceil(k * n_layers / 4) for k in (1, 2, 3, 4)})


def expected_keys(layers: list[int]) -> list[str]:
    """Every key :func:`compute_geometry` returns for these (normalised, non-negative) layers, in order."""
    per_layer = [p for p in GEOMETRY_KEYS_DOC if p.endswith("_L{l}")]
    keys = [p.format(l=l) for l in layers for p in per_layer]
    return keys + [k for k in GEOMETRY_KEYS_DOC if not k.endswith("_L{l}")]


def heldout_rows(n_available: int, n_sequences: int, seed: int = 0) -> list[int]:
    """The fixed geometry rows of the held-out geometry pool: ``n_sequences`` indices drawn by a seeded generator, sorted.

    Same (n_available, n_sequences, seed) → same rows in every cell, so all cells are measured on one batch.
    """
    if n_available < 1:
        raise ValueError("heldout_rows: the geometry pool is empty (data.geometry_size = 0?)")
    g = torch.Generator().manual_seed(seed)
    k = min(n_sequences, n_available)
    return sorted(torch.randperm(n_available, generator=g)[:k].tolist())


def _normalise_layers(layers: list[int] | None, n_layers: int) -> list[int]:
    if layers is None:
        return default_layers(n_layers)
    out: list[int] = []
    for l in layers:
        ll = l + n_layers + 1 if l < 0 else l  # -1 = last hidden state, as in Python indexing
        if not 0 <= ll <= n_layers:
            raise ValueError(f"geometry layer {l} out of range: hidden-state indices are 0..{n_layers}")
        if ll not in out:
            out.append(ll)
    return sorted(out)


def _cloud_metrics(
    z: Tensor, token_ids: Tensor, seq_ids: Tensor, l: int, seed: int
) -> dict[str, float | None]:
    """Every per-layer metric on the answer-state cloud z: (N, d) fp32; one SVD shared by the rank metrics."""
    var = variance_stats(z)
    sv = singular_values(z) if z.shape[0] >= 2 else torch.zeros(0)
    return {
        f"anisotropy_L{l}": anisotropy(z, seq_ids),
        f"self_similarity_L{l}": self_similarity(z, token_ids, seq_ids),
        f"std_mean_L{l}": var["std_mean"],
        f"variance_trace_L{l}": var["trace_cov_over_d"],
        f"norm_mean_L{l}": var["norm_mean"],
        f"rank_effective_L{l}": effective_rank(sv),
        f"rank_participation_L{l}": participation_ratio(sv) if sv.numel() else None,
        f"rank_stable_L{l}": stable_rank(sv) if sv.numel() else None,
        f"rank_alpha_req_L{l}": alpha_req(sv, n_rows=z.shape[0]),
        f"twonn_L{l}": twonn_dimension(z, seed=seed),
    }


@torch.no_grad()
def _forward_states(
    model: nn.Module, b: Batch, layers: list[int] | None, max_rows: int
) -> tuple[list[int], dict[int, Tensor], Tensor, Tensor | None]:
    """Hidden states of the full rows at the needed layers, the target-view embedding e_t, and (views.nl=
    published only, else None) the NL-view embedding e_u from the NL-view rows.

    Forwards ``max_rows`` rows at a time so that a large held-out batch (real scale: 512–1,700 rows) never holds
    every layer of every row at once; only the requested layers and the last are kept, in the model's dtype.
    Returns (normalised layers, {hidden index: (B, T, d)}, e_t (B, d) fp32, e_u (B, d) fp32 or None).
    """
    from jepa_audit.models.load import last_logits_only

    B = b.input_ids.shape[0]
    kept: dict[int, list[Tensor]] = {}
    e_t: list[Tensor] = []
    e_u_nl: list[Tensor] = []
    lays: list[int] = []
    for s in range(0, B, max_rows):
        sl = slice(s, s + max_rows)
        out = model(
            input_ids=b.input_ids[sl],
            attention_mask=b.attention_mask[sl],
            output_hidden_states=True,
            logits_to_keep=last_logits_only(),
        )
        hs = out.hidden_states
        if s == 0:
            lays = _normalise_layers(layers, len(hs) - 1)
        for l in {*lays, len(hs) - 1}:
            kept.setdefault(l, []).append(hs[l])
        del out, hs
        out_r = model(
            input_ids=b.target_ids[sl],
            attention_mask=b.target_mask[sl],
            output_hidden_states=True,
            logits_to_keep=last_logits_only(),
        )
        hr = out_r.hidden_states[-1]
        e_t.append(hr[torch.arange(hr.shape[0], device=hr.device), b.target_last[sl]].float())
        del out_r
        if b.published:  # views.nl=published: e_u from LLM-JEPA's own NL-view rows
            out_n = model(input_ids=b.nl_ids[sl], attention_mask=b.nl_mask[sl], output_hidden_states=True,
                          logits_to_keep=last_logits_only())
            hn = out_n.hidden_states[-1]
            # the last NL token (before any predictor slot: those hold pad ids here, and causal attention
            # keeps the slots out of this state)
            e_u_nl.append(hn[torch.arange(hn.shape[0], device=hn.device), (b.nl_view_last - b.nl_pred)[sl]].float())
            del out_n
    e_u = torch.cat(e_u_nl) if e_u_nl else None
    return lays, {l: torch.cat(v) for l, v in kept.items()}, torch.cat(e_t), e_u


@torch.no_grad()
def compute_geometry(
    model: nn.Module,
    batch: Batch,
    layers: list[int] | None = None,
    gen_seed: int = 0,
    max_rows_per_forward: int = 64,
) -> dict[str, float | None]:
    """All geometry keys of one trained model on one fixed held-out batch (see :data:`GEOMETRY_KEYS_DOC`).

    model: a causal LM (HF Llama or a PEFT wrapper of one) returning ``hidden_states`` (L+1 tensors (B, T, d));
    batch: the fixed held-out :class:`Batch` (B rows); layers: hidden-state indices (negative allowed; None =
    :func:`default_layers`); gen_seed: seeds the only random choice (the TwoNN subsample above 2,000 points);
    max_rows_per_forward: rows per no-grad forward (bounds memory; keep it fixed across cells, since batched
    matmuls may round differently at another size).

    Cost: one no-grad forward of the full rows (hidden states kept; only the last position's logits are
    computed, since the Fisher and KL terms build their own fp32 logits from W for the few states they need),
    one no-grad forward of the target-view rows, one SVD and one chunked distance matrix per layer.
    Runs in eval mode (no dropout) and restores the model's train/eval mode afterwards.  All metrics in fp32
    whatever the model dtype.  Values are finite floats or None (undefined), never NaN.
    """
    if max_rows_per_forward < 1:
        raise ValueError("compute_geometry: max_rows_per_forward must be ≥ 1")
    device = next(model.parameters()).device
    b = batch.to(device)
    was_training = model.training
    model.eval()
    try:
        lays, hidden, e_t, e_u_view = _forward_states(model, b, layers, max_rows_per_forward)
    finally:
        model.train(was_training)
    L = max(hidden)
    real = b.attention_mask.bool()
    amask = b.answer_mask.bool() & real
    pmask = b.prompt_mask.bool() & real
    B = b.input_ids.shape[0]
    rows = torch.arange(B, device=device)
    seq_ids = rows.unsqueeze(1).expand_as(amask)[amask]  # (N,) row-major order: fixed
    token_ids = b.input_ids[amask]

    res: dict[str, float | None] = {}
    for l in lays:
        h = hidden[l].float()
        res[f"curvature_prompt_L{l}"] = turning_angle_deg(h, pmask)
        res[f"curvature_answer_L{l}"] = turning_angle_deg(h, amask)
        res.update(_cloud_metrics(h[amask], token_ids, seq_ids, l, gen_seed))

    from jepa_audit.models.load import lm_head_weight

    W = lm_head_weight(model).float()
    h_last = hidden[L].float()
    res["curvature_fisher_answer_Llast"] = fisher_turning_angle_deg(h_last, amask, W)

    # JEPA alignment, logged for every run: e_u is a causal prefix of the full row (identical to the NL view),
    # or, under views.nl=published, read from the NL-view rows (the views the two-view objectives trained on).
    e_u = h_last[rows, b.nl_last] if e_u_view is None else e_u_view
    res["jepa_cos"] = _mean_finite(F.cosine_similarity(e_u, e_t, dim=-1))
    # V1: KL(sg(p(h[L, a0−1])) ‖ p(e_u)), in nats; target = the state that predicts the first answer token.
    logp_t = torch.log_softmax(h_last[rows, b.answer_start - 1] @ W.T, dim=-1)
    logq = torch.log_softmax(e_u @ W.T, dim=-1)
    res["v1_kl"] = _mean_finite((logp_t.exp() * (logp_t - logq)).sum(-1))

    res["n_sequences"] = float(B)
    res["n_answer_states"] = float(amask.sum())
    res["n_prompt_states"] = float(pmask.sum())
    return {k: _clean(v) for k, v in res.items()}


def _mean_finite(x: Tensor) -> float | None:
    return _clean(float(x.mean())) if x.numel() else None


def _clean(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


def curve_subset(hidden: tuple[Tensor, ...], batch: Batch) -> dict[str, float]:
    """Cheap training-time curves from the step's own hidden states (no extra forward), last layer only.

    hidden: the training forward's L+1 tensors (B, T, d), possibly with grad (detached here); batch: that step's
    batch.  Returns ``curvature_answer_L{L}`` (degrees) and ``std_mean_L{L}`` (hidden units), the same keys as the
    final geometry; undefined values are left out (curves take floats only).  Training batch, not the held-out
    one: trends only, do not compare across cells.
    """
    L = len(hidden) - 1
    h = hidden[-1].detach().float()
    amask = batch.answer_mask.to(h.device).bool() & batch.attention_mask.to(h.device).bool()
    out = {
        f"curvature_answer_L{L}": turning_angle_deg(h, amask),
        f"std_mean_L{L}": variance_stats(h[amask])["std_mean"],
    }
    return {k: v for k, v in out.items() if v is not None}
