"""Seeded simulations behind docs/statistics.md (issues #15, #25). Run: ``python docs/null_simulation.py``.

Each null block simulates data with no true effect and reports how often a test rejects; a valid test
rejects at most about α. :func:`verdict_rates` simulates the reward half of the verdict at true gains
0, +1, +2, +3 pp and reports how often each state (and "representation without reward") is reached. Figures quoted in docs/statistics.md come from the default arguments (seed 0). The slow
test ``tests/test_stats_null_simulation.py`` runs the same functions with fewer repetitions.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import scipy.stats

from jepa_audit.stats.items import conditional_logit, seed_level_log_odds
from jepa_audit.stats.multiplicity import benjamini_hochberg


def item_level_null(
    reps: int = 2_000,
    n_items: int = 2_000,
    n_seeds: int = 5,
    model_sd: float = 0.1,
    alphas: tuple[float, ...] = (0.05, 0.05 / 22),
    logit_reps: int = 0,
    seed: int = 0,
) -> dict[str, object]:
    """No method effect; each trained model (seed × arm) shifts every item's logit by N(0, model_sd²).

    Items have fixed difficulties (logit ~ N(0.3, 1.5²)) shared by every model, as the test set is.
    Returns rejection rates of: the seed-level McNemar log-odds t-test (the item-level result), the
    seed-level paired t-test on accuracy, the pooled McNemar Wald z on Σb, Σc (what an item-level model
    without run-to-run variance does, and fast), and, on ``logit_reps`` draws, the conditional logit.
    """
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(0.3, 1.5, size=n_items)
    names = ("seed_log_odds_t", "seed_accuracy_t", "pooled_mcnemar_z", "conditional_logit")
    pvals: dict[str, list[float]] = {k: [] for k in names}
    sd_diff_pp = []
    for r in range(reps):
        shift = rng.normal(0.0, model_sd, size=(2, n_seeds, 1))
        p = scipy.special.expit(difficulty[None, None, :] + shift)
        correct = rng.random((2, n_seeds, n_items)) < p  # [method, baseline] × seed × item
        a, b = correct
        n_b = (a & ~b).sum(axis=1)
        n_c = (~a & b).sum(axis=1)
        pvals["seed_log_odds_t"].append(seed_level_log_odds(n_b.tolist(), n_c.tolist()).p_t)
        d = 100.0 * (a.mean(axis=1) - b.mean(axis=1))
        sd_diff_pp.append(float(d.std(ddof=1)))
        pvals["seed_accuracy_t"].append(float(scipy.stats.ttest_1samp(d, 0.0).pvalue))
        big_b, big_c = float(n_b.sum()), float(n_c.sum())
        z = np.log(big_b / big_c) / np.sqrt(1.0 / big_b + 1.0 / big_c)
        pvals["pooled_mcnemar_z"].append(float(2.0 * scipy.stats.norm.sf(abs(z))))
        if r < logit_reps:
            n_rows = 2 * n_seeds * n_items
            y = np.concatenate([a.ravel(), b.ravel()])
            x = np.r_[np.ones(n_rows // 2, bool), np.zeros(n_rows // 2, bool)]
            item = np.tile(np.arange(n_items), 2 * n_seeds)
            seeds = np.tile(np.repeat(np.arange(n_seeds), n_items), 2)
            pvals["conditional_logit"].append(conditional_logit(y, x, item, seeds).p)
    out: dict[str, object] = {
        "reps": reps,
        "n_items": n_items,
        "n_seeds": n_seeds,
        "model_sd": model_sd,
        "median_sd_diff_pp": float(np.median(sd_diff_pp)),
    }
    for k, ps in pvals.items():
        arr = np.array([1.0 if v is None else v for v in ps])
        out[k] = {f"{a:.4g}": float(np.mean(arr <= a)) if arr.size else None for a in alphas}
        out[k]["draws"] = int(arr.size)
    return out


def coupling_null(
    reps: int = 2_000,
    n_methods: int = 22,
    n_seeds: int = 5,
    method_sd: float = 1.0,
    noise_sd: float = 1.0,
    alpha: float = 0.05,
    n_keys: int = 12,
    seed: int = 0,
) -> dict[str, object]:
    """No coupling: each method has independent effects on a geometry key and on EM (SD ``method_sd``),
    every cell independent noise (SD ``noise_sd``) on both, and ce's noise per seed is subtracted from
    every cell of that seed on both axes. Rejection rates of Spearman over cells and over method means;
    and the rate at which BH across ``n_keys`` independent null keys rejects any key (method means).
    """
    rng = np.random.default_rng(seed)
    cell_hits = method_hits = any_raw = any_bh = 0
    for _ in range(reps):
        p_keys = []
        for k in range(n_keys):
            a = rng.normal(0.0, method_sd, size=(n_methods, 1))
            b = rng.normal(0.0, method_sd, size=(n_methods, 1))
            ce_g, ce_e = rng.normal(0.0, noise_sd, size=(2, 1, n_seeds))
            dg = a + rng.normal(0.0, noise_sd, size=(n_methods, n_seeds)) - ce_g
            de = b + rng.normal(0.0, noise_sd, size=(n_methods, n_seeds)) - ce_e
            p_method = float(scipy.stats.spearmanr(dg.mean(axis=1), de.mean(axis=1)).pvalue)
            p_keys.append(p_method)
            if k == 0:
                cell_hits += scipy.stats.spearmanr(dg.ravel(), de.ravel()).pvalue <= alpha
                method_hits += p_method <= alpha
        p_keys_arr = np.array(p_keys)
        any_raw += bool(np.any(p_keys_arr <= alpha))
        any_bh += bool(np.any(benjamini_hochberg(p_keys_arr) <= alpha))
    return {
        "reps": reps,
        "n_methods": n_methods,
        "n_seeds": n_seeds,
        "alpha": alpha,
        "cell_level_spearman": cell_hits / reps,
        "method_level_spearman": method_hits / reps,
        f"any_of_{n_keys}_keys_uncorrected": any_raw / reps,
        f"any_of_{n_keys}_keys_bh": any_bh / reps,
    }


def sd_estimators(
    reps: int = 20_000, n_methods: int = 22, n_seeds: int = 5, seed: int = 0
) -> dict[str, float]:
    """Mean of the median of per-method SDs and of the pooled SD (root mean variance), true SD = 1."""
    rng = np.random.default_rng(seed)
    sds = rng.normal(size=(reps, n_methods, n_seeds)).std(axis=2, ddof=1)
    return {
        "median_of_sds": float(np.median(sds, axis=1).mean()),
        "pooled_sd": float(np.sqrt((sds**2).mean(axis=1)).mean()),
    }


def _holm_rows(p: np.ndarray) -> np.ndarray:
    """Holm-adjusted p-values along the last axis of ``p`` (reps, m): p_(i)·(m − i + 1), running max, cap 1."""
    m = p.shape[-1]
    order = np.argsort(p, axis=-1, kind="stable")
    stepped = np.maximum.accumulate(np.take_along_axis(p, order, -1) * (m - np.arange(m)), axis=-1)
    out = np.empty_like(p)
    np.put_along_axis(out, order, np.minimum(1.0, stepped), -1)
    return out


def verdict_rates(
    reps: int = 20_000,
    gains: tuple[float, ...] = (0.0, 1.0, 2.0, 3.0),
    sds: tuple[float, ...] = (0.2, 1.5),
    ns: tuple[int, ...] = (3, 5),
    m: int = 23,
    alpha: float = 0.10,
    sesoi: float = 2.0,
    others: float = 0.0,
    seed: int = 0,
) -> list[dict[str, object]]:
    """The reward half of the verdict (stats/decisions.py) on simulated EM differences, one row per (true gain,
    paired SD, n): one focal auxiliary with the true gain (pp) and ``m − 1`` others with true gain ``others``
    in the same Holm family, paired differences ~ N(gain, SD²) over n seeds. The representation half is taken
    as moved (the premise of issue #25's table), so the rate of ``representation_without_reward`` is the rate
    of ``no_gain_shown``. Returns per row the rates of gain, harm, no_gain_shown (= RwR), inconclusive, and
    the old rule's RwR (EM did not pass Holm), for comparison."""
    rng = np.random.default_rng(seed)
    out = []
    for n in ns:
        for sd in sds:
            for g in gains:
                true = np.full(m, float(others))
                true[0] = g
                d = true[None, :, None] + rng.normal(0.0, sd, size=(reps, m, n))
                mean, se = d.mean(axis=2), d.std(axis=2, ddof=1) / np.sqrt(n)
                p_t = 2.0 * scipy.stats.t.sf(np.abs(mean / se), n - 1)
                p_ns = scipy.stats.t.cdf((mean - sesoi) / se, n - 1)
                sup, ns_holm = _holm_rows(p_t)[:, 0], _holm_rows(p_ns)[:, 0]
                gain = (sup <= alpha) & (mean[:, 0] > 0)
                harm = (sup <= alpha) & (mean[:, 0] < 0)
                no_gain = ~(sup <= alpha) & (ns_holm <= alpha)
                out.append(
                    {
                        "true_gain_pp": g, "paired_sd_pp": sd, "n": n, "m": m, "others_gain_pp": others,
                        "gain": float(gain.mean()), "harm": float(harm.mean()),
                        "no_gain_shown": float(no_gain.mean()), "rwr": float(no_gain.mean()),
                        "inconclusive": float((~gain & ~harm & ~no_gain).mean()),
                        "rwr_old_rule": float((sup > alpha).mean()),
                    }
                )  # fmt: skip
    return out


def verdict_table_md(rows: list[dict[str, object]]) -> str:
    """``verdict_rates`` as the Markdown table of docs/statistics.md."""
    lines = ["| n | paired SD (pp) | true gain (pp) | gain | harm | no gain shown = RwR | inconclusive | old rule's RwR |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(
            f"| {r['n']} | {r['paired_sd_pp']:g} | {r['true_gain_pp']:+g} | {100 * r['gain']:.1f} % | "
            f"{100 * r['harm']:.1f} % | {100 * r['rwr']:.1f} % | {100 * r['inconclusive']:.1f} % | "
            f"{100 * r['rwr_old_rule']:.1f} % |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reps", type=int, default=2_000)
    ap.add_argument("--logit-reps", type=int, default=0, help="draws with the conditional logit (~2 s each)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    t0 = time.time()
    result = {
        "item_level": item_level_null(reps=a.reps, logit_reps=a.logit_reps, seed=a.seed),
        "coupling": coupling_null(reps=a.reps, seed=a.seed),
        "sd_estimators": sd_estimators(seed=a.seed),
        "verdict_rates": verdict_rates(reps=10 * a.reps, seed=a.seed),
        "wall_s": round(time.time() - t0, 1),
    }
    print(json.dumps(result, indent=1))
    print(verdict_table_md(result["verdict_rates"]))


if __name__ == "__main__":
    main()
