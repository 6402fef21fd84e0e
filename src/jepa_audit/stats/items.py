"""Per-item (secondary) analyses: both models answer the same test items.

Shapes: a seed's correctness vector is a ``(n_items,)`` bool array, aligned by item id between the
method and the baseline. These analyses gain power over the seed-level t-test but answer a
conditional question (this test set, these seeds); the seed-level test stays the headline.
Randomness comes only from an explicit ``numpy.random.Generator``; nothing here reads files.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import scipy.sparse
import scipy.stats
from statsmodels.stats.contingency_tables import mcnemar

__all__ = [
    "McNemarResult",
    "MixedModelResult",
    "BootstrapResult",
    "mcnemar_exact",
    "mixed_model_logit",
    "hierarchical_bootstrap",
    "probability_of_improvement",
]


@dataclass(frozen=True)
class McNemarResult:
    """Exact McNemar test on one seed's paired item outcomes.

    ``n_method_only``: items only the method answers correctly; ``n_baseline_only``: items only the
    baseline answers correctly; ``p``: exact two-sided binomial p-value on the discordant pairs.
    """

    n_items: int
    n_method_only: int
    n_baseline_only: int
    p: float | None
    note: str | None = None

    def as_dict(self) -> dict[str, float | int | str | None]:
        return asdict(self)


@dataclass(frozen=True)
class MixedModelResult:
    """Method effect from ``correct ~ method + (1|item) + (1|seed)`` (logit link, variational Bayes).

    ``coef`` (log-odds of the method vs the baseline), ``sd`` (its posterior SD), ``z = coef/sd`` and
    the normal-approximation two-sided ``p``; ``None`` with a ``note`` when the fit was skipped, failed
    or did not converge.
    """

    n_rows: int
    n_items: int
    n_seeds: int
    coef: float | None
    sd: float | None
    z: float | None
    p: float | None
    odds_ratio: float | None
    converged: bool
    note: str | None = None

    def as_dict(self) -> dict[str, float | int | bool | str | None]:
        return asdict(self)


@dataclass(frozen=True)
class BootstrapResult:
    """Percentile interval of a difference in percentage points from a hierarchical bootstrap."""

    point: float | None
    low: float | None
    high: float | None
    reps: int
    level: float
    note: str | None = None

    def as_dict(self) -> dict[str, float | int | str | None]:
        return asdict(self)


def mcnemar_exact(method_correct: np.ndarray, baseline_correct: np.ndarray) -> McNemarResult:
    """Exact McNemar test (statsmodels) on two aligned ``(n_items,)`` bool arrays."""
    a = np.asarray(method_correct, dtype=bool)
    b = np.asarray(baseline_correct, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"need two aligned (n_items,) arrays, got {a.shape} and {b.shape}")
    method_only = int(np.count_nonzero(a & ~b))
    baseline_only = int(np.count_nonzero(~a & b))
    if a.size == 0:
        return McNemarResult(0, 0, 0, None, note="no shared items")
    table = [[int(np.count_nonzero(a & b)), method_only], [baseline_only, int(np.count_nonzero(~a & ~b))]]
    p = float(mcnemar(table, exact=True).pvalue)
    note = "no discordant items" if method_only + baseline_only == 0 else None
    return McNemarResult(int(a.size), method_only, baseline_only, p, note=note)


class _Deadline(Exception):
    pass


def _skipped(n_rows: int, n_items: int, n_seeds: int, note: str) -> MixedModelResult:
    return MixedModelResult(n_rows, n_items, n_seeds, None, None, None, None, None, False, note=note)


def mixed_model_logit(
    correct: np.ndarray,
    is_method: np.ndarray,
    item: np.ndarray,
    seed: np.ndarray,
    *,
    rng: np.random.Generator,
    max_rows: int = 20_000,
    maxiter: int = 1_000,
    deadline_s: float | None = 120.0,
) -> MixedModelResult:
    """Fit ``correct ~ method + (1|item) + (1|seed)`` with statsmodels' BinomialBayesMixedGLM.

    All inputs are ``(n_rows,)`` arrays in long format: ``correct`` (bool), ``is_method`` (bool: the
    row belongs to the method, not the baseline), ``item`` and ``seed`` (hashable ids; the two random
    intercepts are crossed). The fit is mean-field variational Bayes (``fit_vb``, L-BFGS-B) started
    from ``rng``. It is bounded: more than ``max_rows`` rows is skipped, the optimizer stops after
    ``maxiter`` iterations, and ``deadline_s`` wall-clock seconds abort it. Any skip, failure or
    non-convergence gives ``None`` fields and a note.
    """
    from statsmodels.genmod.bayes_mixed_glm import BinomialBayesMixedGLM

    y = np.asarray(correct, dtype=float)
    x = np.asarray(is_method, dtype=float)
    item_codes = np.unique(np.asarray(item), return_inverse=True)[1].ravel()
    seed_codes = np.unique(np.asarray(seed), return_inverse=True)[1].ravel()
    n_rows = y.size
    n_items = int(item_codes.max(initial=-1)) + 1
    n_seeds = int(seed_codes.max(initial=-1)) + 1
    if not (x.size == item_codes.size == seed_codes.size == n_rows):
        raise ValueError("correct, is_method, item and seed must have the same length")
    if n_rows > max_rows:
        return _skipped(n_rows, n_items, n_seeds, f"skipped: {n_rows} rows exceed the cap of {max_rows}")
    if n_rows == 0 or np.ptp(x) == 0:
        return _skipped(n_rows, n_items, n_seeds, "skipped: needs rows from both the method and the baseline")
    if np.ptp(y) == 0:
        return _skipped(n_rows, n_items, n_seeds, "skipped: every item has the same outcome")
    if n_items < 2 or n_seeds < 2:
        return _skipped(n_rows, n_items, n_seeds, "skipped: needs at least 2 items and 2 seeds")

    rows = np.arange(n_rows)
    ones = np.ones(n_rows)
    z_item = scipy.sparse.csr_matrix((ones, (rows, item_codes)), shape=(n_rows, n_items))
    z_seed = scipy.sparse.csr_matrix((ones, (rows, seed_codes)), shape=(n_rows, n_seeds))
    exog_vc = scipy.sparse.hstack([z_item, z_seed]).tocsr()
    ident = np.concatenate([np.zeros(n_items, dtype=int), np.ones(n_seeds, dtype=int)])
    exog = np.column_stack([ones, x])
    model = BinomialBayesMixedGLM(
        y,
        exog,
        exog_vc,
        ident,
        vcp_p=1.0,
        fe_p=2.0,
        fep_names=["Intercept", "method"],
        vcp_names=["item", "seed"],
    )
    if deadline_s is not None:
        stop_at = time.monotonic() + deadline_s
        elbo = model.vb_elbo

        def bounded_elbo(vb_mean: np.ndarray, vb_sd: np.ndarray) -> float:
            if time.monotonic() > stop_at:
                raise _Deadline
            return elbo(vb_mean, vb_sd)

        model.vb_elbo = bounded_elbo
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = model.fit_vb(fit_method="L-BFGS-B", minim_opts={"maxiter": maxiter}, rng=rng)
    except _Deadline:
        return _skipped(n_rows, n_items, n_seeds, f"did not finish within {deadline_s:g} s")
    except (ValueError, FloatingPointError, np.linalg.LinAlgError) as exc:
        return _skipped(n_rows, n_items, n_seeds, f"fit failed: {exc}")
    coef, sd = float(res.fe_mean[1]), float(res.fe_sd[1])
    if not res.optim_retvals.success:
        return _skipped(n_rows, n_items, n_seeds, f"did not converge: {res.optim_retvals.message}")
    if not (np.isfinite(coef) and np.isfinite(sd) and sd > 0):
        return _skipped(n_rows, n_items, n_seeds, "did not converge: non-finite estimate")
    z = coef / sd
    return MixedModelResult(
        n_rows,
        n_items,
        n_seeds,
        coef,
        sd,
        float(z),
        float(2.0 * scipy.stats.norm.sf(abs(z))),
        float(np.exp(coef)),
        True,
        note="variational Bayes posterior; its SD tends to be too small, so p is optimistic",
    )


def hierarchical_bootstrap(
    diffs: Sequence[np.ndarray],
    rng: np.random.Generator,
    reps: int = 2_000,
    level: float = 0.95,
    scale: float = 100.0,
    chunk: int = 256,
) -> BootstrapResult:
    """Two-level bootstrap of a mean paired difference: resample seeds, then items within each.

    ``diffs``: one ``(n_items_s,)`` array per seed of per-item differences (method − baseline, e.g.
    correct as 0/1); item counts may differ between seeds. The statistic is ``scale`` × the mean over
    seeds of the per-seed mean difference (percentage points for 0/1 data). Each draw picks n_seeds
    seeds with replacement and, for every pick separately, resamples that seed's items with
    replacement. Returns the observed statistic and the percentile interval at ``level``.
    """
    arrays = [np.asarray(d, dtype=float).ravel() for d in diffs]
    if not arrays or any(a.size == 0 for a in arrays):
        return BootstrapResult(None, None, None, reps, level, note="needs at least one seed with items")
    n_seeds = len(arrays)
    point = scale * float(np.mean([a.mean() for a in arrays]))
    picks = rng.integers(0, n_seeds, size=(reps, n_seeds))
    item_means = np.empty((reps, n_seeds))
    for s, a in enumerate(arrays):
        where = np.nonzero(picks == s)
        count = where[0].size
        draws = np.empty(count)
        for start in range(0, count, chunk):
            stop = min(count, start + chunk)
            idx = rng.integers(0, a.size, size=(stop - start, a.size))
            draws[start:stop] = a[idx].mean(axis=1)
        item_means[where] = draws
    stats = scale * item_means.mean(axis=1)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(stats, [tail, 1.0 - tail])
    note = None
    if n_seeds <= 5:
        note = (
            f"only {n_seeds} seeds: the seed level has few distinct resamples, "
            "so the percentile interval is coarse and tends to be too narrow"
        )
    return BootstrapResult(point, float(low), float(high), reps, level, note=note)


def probability_of_improvement(x: np.ndarray, y: np.ndarray) -> float | None:
    """P(X > Y) + ½·P(X = Y) over all pairs of ``x`` (shape ``(n,)``) and ``y`` (shape ``(m,)``).

    The rliable statistic (equal to the Mann–Whitney U of x over n·m). ``None`` if either is empty.
    """
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.size == 0 or y.size == 0:
        return None
    gt = (x[:, None] > y[None, :]).mean()
    eq = (x[:, None] == y[None, :]).mean()
    return float(gt + 0.5 * eq)
