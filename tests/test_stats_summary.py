"""build_summary: the summary.json contract of DESIGN.md, checked against scipy and statsmodels."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import scipy.stats
from statsmodels.stats.multitest import multipletests

from jepa_audit.stats.summary import build_summary

CONTRACT_KEYS = {
    "benchmark", "method", "metric", "n", "mean_diff", "sd_diff", "ci95_low", "ci95_high", "t", "p_t",
    "p_wilcoxon", "p_signflip", "hedges_gz", "p_bonferroni", "p_holm", "p_bh", "reject_single",
    "reject_bonferroni", "reject_holm", "reject_bh",
}  # fmt: skip

CE_EM = {1: 0.50, 2: 0.52, 3: 0.48, 4: 0.55, 5: 0.51}
# method -> {seed: difference from ce in percentage points}; exact match
DIFFS_SYNTH = {
    "up": {1: 2.0, 2: 4.0, 3: 1.0, 4: 3.0, 5: 5.0},
    "ties": {1: 1.0, 2: 1.0, 3: -1.0, 4: 2.0, 5: 0.0},  # tied |d| and a zero difference
    "short": {1: 3.0, 2: -2.0, 4: 6.0, 6: 9.0},  # seed 6 has no ce: pairs on 1, 2, 4
    "same": {1: 0.0, 2: 0.0, 3: 0.0, 4: 0.0, 5: 0.0},  # zero variance: degenerate
    "flat": {1: 2.0, 2: 2.0, 3: 2.0},  # constant non-zero difference: degenerate
    "one": {1: 5.0},  # n = 1: degenerate
    "noisy": {1: -4.0, 2: 3.0, 3: -1.0, 4: 2.0, 5: -3.0},
}
DIFFS_TURK = {
    "up": {1: 3.0, 2: 1.0, 3: 2.0, 4: 2.5, 5: 4.0},
    "ties": {1: -1.0, 2: -2.0, 3: -1.0, 4: 0.5, 5: -0.5},
    "noisy": {1: 6.0, 2: -3.0, 3: 0.0, 4: 1.0, 5: 2.0},
}
FAMILY_OF = {"up": "trajectory", "ties": "distributional", "short": "predictive", "same": "fisher",
             "flat": "fisher", "one": "decoder-visible", "noisy": "trajectory"}  # fmt: skip


def _row(bench, method, seed, em, dfa, mode="lora", **extra):
    row = {
        "benchmark": bench, "method": method, "seed": seed, "mode": mode,
        "family": "reference" if method == "ce" else FAMILY_OF[method],
        "metrics": {"exact_match": em, "dfa_accuracy": dfa, "n_test": 200},
        "geometry": {"curvature_answer_L2": 30.0 + seed + (em * 10), "rank_L4": None},
        "grad_cosine": None if method == "ce" else {"mean": 0.01 * seed, "frac_positive": 0.5},
        "config_hash": f"{bench}-{method}-{seed}-{mode}", "wall_s": 1.0, "status": "done",
    }  # fmt: skip
    row.update(extra)
    return row


def make_rows() -> list[dict]:
    rows = []
    for bench, diffs, ce_seeds in (
        ("synth", DIFFS_SYNTH, [1, 2, 3, 4, 5]),
        ("turk", DIFFS_TURK, [1, 2, 3, 4, 5]),
    ):
        for s in ce_seeds:
            dfa = None if (bench == "synth" and s == 3) else CE_EM[s] + 0.1
            rows.append(_row(bench, "ce", s, CE_EM[s], dfa))
        for method, by_seed in diffs.items():
            for s, d in by_seed.items():
                base = CE_EM.get(s, 0.40)
                rows.append(_row(bench, method, s, base + d / 100.0, base + 0.1 + d / 200.0))
    # a second mode: never paired with lora cells
    for s in (1, 2, 3):
        rows.append(_row("synth", "ce", s, 0.30, 0.35, mode="full"))
        rows.append(_row("synth", "up", s, 0.30 + 0.01 * s, 0.35, mode="full"))
    rows.append({"benchmark": "synth", "method": "up", "seed": 7, "mode": "lora", "status": "failed",
                 "error": "CUDA out of memory"})  # fmt: skip
    return rows


def _find(summary, bench, method, metric="exact_match", mode="lora"):
    hits = [
        c for c in summary["comparisons"]
        if (c["benchmark"], c["method"], c["metric"], c["mode"]) == (bench, method, metric, mode)
    ]  # fmt: skip
    assert len(hits) == 1
    return hits[0]


@pytest.fixture(scope="module")
def per_benchmark():
    return build_summary(make_rows(), alpha=0.10, family="per-benchmark", conditional_logit_metrics=())


@pytest.fixture(scope="module")
def all_family():
    return build_summary(make_rows(), alpha=0.10, family="all", conditional_logit_metrics=())


def test_contract_keys_and_json_safety(per_benchmark) -> None:
    s = per_benchmark
    assert s["alpha"] == 0.10 and s["family"] == "per-benchmark"
    for c in s["comparisons"]:
        assert set(c) >= CONTRACT_KEYS
        assert "mode" in c and "note" in c
    text = json.dumps(s, allow_nan=False)  # raises on NaN or infinity
    assert "NaN" not in text and "Infinity" not in text
    # one comparison per (benchmark, mode, method != ce, metric)
    expected = 2 * (len(DIFFS_SYNTH) + len(DIFFS_TURK) + 1)
    assert len(s["comparisons"]) == expected


@pytest.mark.parametrize(
    ("bench", "method"), [("synth", "up"), ("synth", "ties"), ("synth", "noisy"), ("turk", "ties")]
)
def test_seed_level_statistics_match_scipy(per_benchmark, bench, method) -> None:
    diffs = (DIFFS_SYNTH if bench == "synth" else DIFFS_TURK)[method]
    seeds = sorted(s for s in diffs if s in CE_EM)
    d = np.array([diffs[s] for s in seeds])
    base = np.array([100 * CE_EM[s] for s in seeds])
    c = _find(per_benchmark, bench, method)
    ref = scipy.stats.ttest_rel(base + d, base)
    assert c["n"] == len(seeds) and c["seeds"] == seeds
    assert c["mean_diff"] == pytest.approx(d.mean())
    assert c["sd_diff"] == pytest.approx(d.std(ddof=1))
    assert c["t"] == pytest.approx(ref.statistic)
    assert c["p_t"] == pytest.approx(ref.pvalue)
    ci = ref.confidence_interval(0.95)
    assert (c["ci95_low"], c["ci95_high"]) == pytest.approx((ci.low, ci.high))
    assert c["p_wilcoxon"] == pytest.approx(scipy.stats.wilcoxon(d).pvalue)
    perm = scipy.stats.permutation_test((d,), np.mean, permutation_type="samples", n_resamples=np.inf)
    assert c["p_signflip"] == pytest.approx(perm.pvalue)
    assert c["hedges_gz"] == pytest.approx(d.mean() / d.std(ddof=1) * (1 - 3 / (4 * (len(d) - 1) - 1)))
    assert c["note"] is None


def test_hand_checked_values(per_benchmark) -> None:
    up = _find(per_benchmark, "synth", "up")
    assert up["mean_diff"] == pytest.approx(3.0)
    assert up["p_signflip"] == 0.0625 and up["p_wilcoxon"] == 0.0625  # the n = 5 floor
    ties = _find(per_benchmark, "synth", "ties")
    # sign-flip over {1, 1, -1, 2, 0}: |±1 ±1 ±1 ±2| >= 3 in 8 of 16 patterns, times 2 for the zero
    assert ties["p_signflip"] == pytest.approx(16 / 32)


def test_unequal_seed_sets_pair_on_shared_seeds(per_benchmark) -> None:
    c = _find(per_benchmark, "synth", "short")
    assert c["seeds"] == [1, 2, 4] and c["n"] == 3
    assert c["seeds_method_only"] == [6] and c["seeds_baseline_only"] == [3, 5]
    ref = scipy.stats.ttest_rel([53.0, 50.0, 61.0], [50.0, 52.0, 55.0])
    assert c["p_t"] == pytest.approx(ref.pvalue)


def test_missing_metric_values_drop_only_that_seed(per_benchmark) -> None:
    # ce has dfa_accuracy = null on synth seed 3: dfa pairs on 4 seeds, exact match on 5
    assert _find(per_benchmark, "synth", "up", "dfa_accuracy")["seeds"] == [1, 2, 4, 5]
    assert _find(per_benchmark, "synth", "up", "exact_match")["n"] == 5


@pytest.mark.parametrize(
    ("method", "fragment"), [("same", "zero variance"), ("flat", "zero variance"), ("one", "n = 1 < 2")]
)
def test_degenerate_comparisons_are_null_and_counted_in_m(per_benchmark, method, fragment) -> None:
    c = _find(per_benchmark, "synth", method)
    for key in ("t", "p_t", "p_wilcoxon", "hedges_gz", "ci95_low", "ci95_high",
                "p_bonferroni", "p_holm", "p_bh"):  # fmt: skip
        assert c[key] is None, key
    # 'flat' (+2 pp on each of 3 seeds) keeps its exact sign-flip p: 2/2^3
    assert c["p_signflip"] == (0.25 if method == "flat" else None)
    assert not any(c[k] for k in ("reject_single", "reject_bonferroni", "reject_holm", "reject_bh"))
    assert fragment in c["note"]
    fam = next(f for f in per_benchmark["families"] if f["id"] == c["family_id"])
    assert method in [e["method"] for e in fam["degenerate"]]
    assert c["family_m"] == fam["m"] == 7


def _check_family(summary, members, alpha=0.10):
    """statsmodels on the declared family: a degenerate member enters as p = 1 (counted in m)."""
    tested = [c for c in members if c["p_t"] is not None]
    p = np.array([1.0 if c["p_t"] is None else c["p_t"] for c in members])
    keep = np.array([c["p_t"] is not None for c in members])
    for name, sm in (("bonferroni", "bonferroni"), ("holm", "holm"), ("bh", "fdr_bh")):
        reject, adj, _, _ = multipletests(p, alpha=alpha, method=sm)
        np.testing.assert_allclose([c[f"p_{name}"] for c in tested], adj[keep], rtol=1e-12)
        assert [c[f"reject_{name}"] for c in tested] == reject[keep].tolist()
    assert [c["reject_single"] for c in tested] == (p[keep] <= alpha).tolist()
    assert all(c["family_m"] == len(members) for c in members)
    return len(members)


def test_per_benchmark_families(per_benchmark) -> None:
    s = per_benchmark
    for bench in ("synth", "turk"):
        for metric in ("exact_match", "dfa_accuracy"):
            members = [c for c in s["comparisons"]
                       if c["benchmark"] == bench and c["metric"] == metric and c["mode"] == "lora"]  # fmt: skip
            m = _check_family(s, members)
            assert m == (7 if bench == "synth" else 3)
    fam = next(f for f in s["families"] if f["id"] == "synth / lora / exact_match")
    assert fam["m"] == 7 and fam["m_declared"] == 7 and fam["n_tested"] == 4
    assert fam["bonferroni_threshold"] == pytest.approx(0.1 / 7)
    assert "m = 7 (3 degenerate, counted in m)" in s["family_definition"]
    assert "per-benchmark" in s["family_definition"]


def test_all_family_spans_benchmarks_within_mode(all_family) -> None:
    s = all_family
    members = [c for c in s["comparisons"] if c["metric"] == "exact_match" and c["mode"] == "lora"]
    assert {c["benchmark"] for c in members} == {"synth", "turk"}
    assert _check_family(s, members) == 10
    full = _find(s, "synth", "up", mode="full")
    assert full["family_m"] == 1 and full["family_id"] != members[0]["family_id"]
    assert "across all benchmarks" in s["family_definition"]
    # the choice of family changes the adjusted p-values, not the raw ones
    assert _find(s, "turk", "up")["p_t"] == _find(s, "turk", "up")["p_t"]


def test_family_choice_changes_corrections_only(per_benchmark, all_family) -> None:
    a, b = _find(per_benchmark, "turk", "up"), _find(all_family, "turk", "up")
    assert a["p_t"] == b["p_t"] and a["mean_diff"] == b["mean_diff"]
    assert b["p_bonferroni"] == pytest.approx(min(1.0, 10 * a["p_t"]))
    assert a["p_bonferroni"] == pytest.approx(min(1.0, 3 * a["p_t"]))


def test_modes_are_compared_separately(per_benchmark) -> None:
    c = _find(per_benchmark, "synth", "up", mode="full")
    assert c["n"] == 3
    assert c["mean_diff"] == pytest.approx(2.0)  # +1, +2, +3 pp against the full-FT ce


def test_failed_cells_are_listed_and_excluded(per_benchmark) -> None:
    assert per_benchmark["failed"] == [
        {"benchmark": "synth", "method": "up", "seed": 7, "mode": "lora", "status": "failed",
         "error": "CUDA out of memory"}
    ]  # fmt: skip
    assert 7 not in _find(per_benchmark, "synth", "up")["seeds"]
    assert per_benchmark["counts"]["failed"] == 1


def test_verdicts_and_power(per_benchmark) -> None:
    v = next(
        v
        for v in per_benchmark["metric_verdicts"]
        if (v["benchmark"], v["mode"], v["metric"]) == ("synth", "lora", "exact_match")
    )
    single = [h["method"] for h in v["single"]]
    assert "up" in single and "same" not in single
    assert v["n_degenerate"] == 3 and v["family_m"] == 7
    p = next(r for r in per_benchmark["power"] if r["family_id"] == v["family_id"])
    assert p["n"] == 5 and p["m"] == 7
    assert p["alpha_corrected"] == pytest.approx(0.1 / 7)
    assert p["mde_sd_single"] == pytest.approx(1.36, abs=0.005)
    assert p["floor_nonparametric"] == 0.0625
    assert p["floor_blocks_corrected"] is True and p["floor_blocks_single"] is False
    tested = [c["sd_diff"] for c in per_benchmark["comparisons"]
              if c["family_id"] == v["family_id"] and c["sd_diff"] and c["p_t"] is not None]  # fmt: skip
    assert p["sd_diff_median"] == pytest.approx(float(np.median(tested)))
    # the MDE uses the pooled SD: root of the mean variance
    assert p["sd_diff_pooled"] == pytest.approx(float(np.sqrt(np.mean(np.square(tested)))))
    assert p["mde_pp_corrected"] == pytest.approx(p["mde_sd_corrected"] * p["sd_diff_pooled"])
    assert p["mde_pp_single"] == pytest.approx(p["mde_sd_single"] * p["sd_diff_pooled"])
    assert "n_values" in p and 3 in p["n_values"]  # 'short' has n = 3
    # headroom: ce's mean against the metric's ends and the corrected MDE
    base = float(np.median([c["baseline_mean"] for c in per_benchmark["comparisons"]
                            if c["family_id"] == v["family_id"] and c["p_t"] is not None]))  # fmt: skip
    assert p["baseline_mean"] == pytest.approx(base) and p["room_above_pp"] == pytest.approx(100 - base)
    fam = [c for c in per_benchmark["comparisons"] if c["family_id"] == v["family_id"] and c["p_t"] is not None]
    fell = any(c["reject_holm"] and c["mean_diff"] < 0 for c in fam)  # a fall that showed: no floor claimed
    rose = any(c["reject_holm"] and c["mean_diff"] > 0 for c in fam)
    assert p["floor_hides_decrease"] is (base < p["mde_pp_corrected"] and not fell)
    assert p["ceiling_hides_increase"] is (100 - base < p["mde_pp_corrected"] and not rose)


def test_coupling_matches_scipy_spearman(per_benchmark) -> None:
    rows = make_rows()
    ce = {r["seed"]: r for r in rows if r["benchmark"] == "turk" and r["method"] == "ce"}
    # one point per method: its means over seeds of Δgeometry and ΔEM
    x, y, g = [], [], []
    for method in sorted(DIFFS_TURK):
        mine = [r for r in rows if r["benchmark"] == "turk" and r["method"] == method]
        y.append(np.mean([DIFFS_TURK[method][r["seed"]] for r in mine]))
        x.append(np.mean([r["geometry"]["curvature_answer_L2"] - ce[r["seed"]]["geometry"]["curvature_answer_L2"]
                          for r in mine]))  # fmt: skip
        g.append(np.mean([r["grad_cosine"]["mean"] for r in mine]))
    geo = next(c for c in per_benchmark["coupling"]
               if (c["benchmark"], c["kind"], c["key"]) == ("turk", "geometry", "curvature_answer_L2"))  # fmt: skip
    ref = scipy.stats.spearmanr(x, y)
    assert geo["n"] == 3 and geo["n_cells"] == 15 and geo["unit"] == "method (mean over seeds)"
    # three methods: the exact permutation p over all 3! pairings, not scipy's t-approximation
    exact = np.mean([abs(scipy.stats.spearmanr(np.array(p), y).statistic) >= abs(ref.statistic) - 1e-12
                     for p in itertools.permutations(x)])  # fmt: skip
    assert geo["rho"] == pytest.approx(ref.statistic) and geo["p"] == pytest.approx(exact)
    # BH across every coupling row with a p-value
    tested = [c for c in per_benchmark["coupling"] if c["p"] is not None]
    _, adj, _, _ = multipletests([c["p"] for c in tested], method="fdr_bh")
    np.testing.assert_allclose([c["p_bh"] for c in tested], adj, rtol=1e-12)
    assert "descriptive" in per_benchmark["coupling_label"]
    gc = next(c for c in per_benchmark["coupling"]
              if (c["benchmark"], c["kind"], c["key"]) == ("turk", "grad_cosine", "mean"))  # fmt: skip
    # every turk method has seeds 1-5 and cosine 0.01 x seed: the method means are equal, so rho is undefined
    assert np.ptp(g) == pytest.approx(0.0) and gc["rho"] is None and "constant" in gc["note"]
    empty = next(c for c in per_benchmark["coupling"] if c["key"] == "rank_L4")
    assert empty["rho"] is None and empty["note"]


def test_grad_cosine_per_auxiliary(per_benchmark) -> None:
    r = next(
        r
        for r in per_benchmark["grad_cosine"]
        if (r["benchmark"], r["mode"], r["method"]) == ("synth", "lora", "up")
    )
    assert r["mean"] == pytest.approx(0.03) and r["frac_positive"] == 0.5 and r["n_seeds"] == 5


def test_items_from_predictions_loader() -> None:
    rows = [_row("b", "ce", s, 0.5, 0.5, predictions_file=f"p/ce{s}.jsonl") for s in (1, 2, 3)]
    rows += [_row("b", "up", s, 0.75, 0.5, predictions_file=f"p/up{s}.jsonl") for s in (1, 2, 3)]
    rows[-1]["metrics"]["exact_match"] = 0.5  # seed 3: no difference
    ce_correct = [True, True, False, False]
    up_correct = {1: [True, True, True, False], 2: [True, True, True, False], 3: [True, False, True, False]}
    files = {f"p/ce{s}.jsonl": [{"item": i, "gold": "a", "pred": "a", "exact": c, "dfa": c, "parse_error": None}
                                for i, c in enumerate(ce_correct)] for s in (1, 2, 3)}  # fmt: skip
    for s, cs in up_correct.items():
        files[f"p/up{s}.jsonl"] = [{"item": i, "gold": "a", "pred": "b", "exact": c, "dfa": c if i else None,
                                    "parse_error": None} for i, c in enumerate(cs)]  # fmt: skip
    s = build_summary(rows, predictions_loader=files.get, bootstrap_reps=200, conditional_logit_metrics=())
    em = next(e for e in s["items"] if e["metric"] == "exact_match")
    assert [(m["seed"], m["n_method_only"], m["n_baseline_only"]) for m in em["mcnemar"]] == [
        (1, 1, 0),
        (2, 1, 0),
        (3, 1, 1),
    ]
    assert em["bootstrap"]["point"] == pytest.approx(_find(s, "b", "up")["mean_diff"])
    dfa = next(e for e in s["items"] if e["metric"] == "dfa_accuracy")
    assert dfa["mcnemar"][0]["n_items"] == 3  # item 0 has dfa = null on the method side
    assert em["conditional_logit"] is None and s["settings"]["conditional_logit_metrics"] == []
    again = build_summary(
        rows, predictions_loader=files.get, bootstrap_reps=200, conditional_logit_metrics=()
    )
    assert again == s  # deterministic


def test_items_conditional_logit_on_exact_match_only() -> None:
    # one seed, 12 items: 4 both right, 3 both wrong, 4 only the method right, 1 only ce right
    ce_correct = [True] * 4 + [False] * 3 + [False] * 4 + [True]
    up_correct = [True] * 4 + [False] * 3 + [True] * 4 + [False]
    rows = [_row("b", "ce", 1, 5 / 12, 5 / 12, predictions_file="p/ce.jsonl"),
            _row("b", "up", 1, 8 / 12, 8 / 12, predictions_file="p/up.jsonl")]  # fmt: skip
    files = {
        f"p/{m}.jsonl": [{"item": i, "exact": c, "dfa": c} for i, c in enumerate(correct)]
        for m, correct in (("ce", ce_correct), ("up", up_correct))
    }
    s = build_summary(rows, predictions_loader=files.get, bootstrap_reps=50)
    assert s["settings"]["conditional_logit_metrics"] == ["exact_match"]
    assert not any("mixed" in k for k in s["settings"])
    em = next(e for e in s["items"] if e["metric"] == "exact_match")
    cl = em["conditional_logit"]
    assert (cl["n_rows"], cl["n_items"], cl["n_informative_items"], cl["n_seeds"]) == (24, 12, 5, 1)
    assert cl["converged"] and cl["note"] is None
    assert cl["coef"] == pytest.approx(math.log(4 / 1), abs=1e-4)  # matched pairs: log(b/c)
    assert cl["se"] == pytest.approx(math.sqrt(1 / 4 + 1 / 1), abs=1e-4)
    assert "mixed_model" not in em
    dfa = next(e for e in s["items"] if e["metric"] == "dfa_accuracy")
    assert dfa["conditional_logit"] is None  # not in conditional_logit_metrics
    json.dumps(s, allow_nan=False)


def test_duplicates_malformed_rows_and_no_baseline() -> None:
    rows = make_rows()
    rows.append(dict(rows[0]))  # duplicate ce cell
    rows.append({"benchmark": "synth", "status": "done"})
    rows.append(_row("lonely", "up", 1, 0.5, 0.5))
    s = build_summary(rows, conditional_logit_metrics=())
    assert any("more than once" in w for w in s["warnings"])
    assert any("wrong type" in w for w in s["warnings"])
    lonely = _find(s, "lonely", "up")
    assert lonely["n"] == 0 and "no ce baseline" in lonely["note"] and lonely["p_t"] is None
    json.dumps(s, allow_nan=False)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="family"):
        build_summary([], family="per-method")
    with pytest.raises(ValueError, match="alpha"):
        build_summary([], alpha=1.5)
    empty = build_summary([])
    assert empty["comparisons"] == [] and empty["families"] == []
    assert not any(
        isinstance(v, float) and math.isnan(v) for v in empty["counts"].values() if isinstance(v, float)
    )


def test_declared_family_size_does_not_shrink_with_the_data() -> None:
    rows = make_rows()
    # the grid declares a method that never finished, on both benchmarks: it counts in m
    declared = [{"benchmark": r["benchmark"], "method": r["method"], "seed": r["seed"], "mode": r["mode"]}
                for r in rows if r.get("status") == "done"]  # fmt: skip
    declared += [{"benchmark": b, "method": "ghost", "seed": 1, "mode": "lora"} for b in ("synth", "turk")]
    s = build_summary(rows, declared=declared, conditional_logit_metrics=())
    ghost = _find(s, "turk", "ghost")
    assert ghost["n"] == 0 and ghost["p_t"] is None and "declared by the grid" in ghost["note"]
    members = [
        c
        for c in s["comparisons"]
        if (c["benchmark"], c["metric"], c["mode"]) == ("turk", "exact_match", "lora")
    ]
    assert _check_family(s, members) == 4
    up = _find(s, "turk", "up")
    assert up["p_bonferroni"] == pytest.approx(min(1.0, 4 * up["p_t"]))
    assert s["settings"]["declared_from_grid"] is True
    with pytest.raises(ValueError, match="declared cell 0"):
        build_summary(rows, declared=[{"benchmark": 1, "method": "x"}])


def test_verdict_lists_are_split_by_direction() -> None:
    rows = make_rows()
    s = build_summary(rows, alpha=0.5, conditional_logit_metrics=())  # large alpha: harms pass too
    v = next(v for v in s["metric_verdicts"] if (v["benchmark"], v["metric"]) == ("turk", "exact_match"))
    for name in ("single", "bonferroni", "holm", "bh"):
        ups, downs = v["improvements"][name], v["harms"][name]
        assert all(h["mean_diff"] > 0 for h in ups) and all(h["mean_diff"] < 0 for h in downs)
        assert sorted(h["method"] for h in ups + downs) == sorted(h["method"] for h in v[name])
    assert [h["method"] for h in v["harms"]["single"]] == ["ties"]  # mean -0.8 pp, p_t ~ 0.11
    assert "up" in [h["method"] for h in v["improvements"]["single"]]


def test_paired_probability_of_improvement_and_item_step(per_benchmark) -> None:
    up, ties = _find(per_benchmark, "synth", "up"), _find(per_benchmark, "synth", "ties")
    assert up["prob_improvement"] == 1.0  # better on every seed
    assert ties["prob_improvement"] == pytest.approx((3 + 0.5) / 5)  # +1, +1, -1, +2, 0
    assert up["n_test"] == 200 and up["item_step_pp"] == pytest.approx(0.5) and not up["sd_below_item_step"]
    rows = [_row("b", "ce", s, 0.5, 0.5) for s in (1, 2, 3)]
    rows += [_row("b", "up", s, 0.5 + d, 0.5) for s, d in ((1, 0.010), (2, 0.011), (3, 0.012))]
    c = _find(build_summary(rows, conditional_logit_metrics=()), "b", "up")
    assert (
        c["sd_diff"] == pytest.approx(0.1) and c["sd_below_item_step"] and "below one test item" in c["note"]
    )


def test_family_fwer_is_stated_with_the_family_all_hint(per_benchmark, all_family) -> None:
    f = per_benchmark["family_fwer"]
    # per metric: synth/lora, synth/full, turk/lora
    assert f["k_per_metric"] == 3 and f["fwer_independent"] == pytest.approx(1 - 0.9**3)
    assert "--family all" in f["text"]
    assert all_family["family_fwer"]["k_per_metric"] == 2  # lora and full


def test_item_level_is_seed_level_and_bootstrap_keyed_by_comparison() -> None:
    rng = np.random.default_rng(4)
    n_items, seeds = 60, (1, 2, 3, 4)
    files, rows = {}, []
    for method in ("ce", "up", "noisy"):
        for s in seeds:
            correct = rng.random(n_items) < (0.5 if method == "ce" else 0.6)
            files[f"p/{method}{s}.jsonl"] = [
                {"item": i, "exact": bool(c), "dfa": bool(c)} for i, c in enumerate(correct)
            ]
            rows.append(_row("b", method, s, float(correct.mean()), float(correct.mean()),
                             predictions_file=f"p/{method}{s}.jsonl"))  # fmt: skip
    s = build_summary(rows, predictions_loader=files.get, bootstrap_reps=200, conditional_logit_metrics=())
    em = next(e for e in s["items"] if (e["method"], e["metric"]) == ("up", "exact_match"))
    lo = [m["log_odds_ratio"] for m in em["mcnemar"]]
    ref = scipy.stats.ttest_1samp(lo, 0.0)
    assert em["item_level"]["t"] == pytest.approx(ref.statistic) and em["item_level"]["p_t"] == pytest.approx(
        ref.pvalue
    )
    assert "primary" in em["bootstrap"]["note"]
    # dropping another method leaves this comparison's bootstrap interval unchanged
    fewer = [r for r in rows if r["method"] != "noisy"]
    s2 = build_summary(fewer, predictions_loader=files.get, bootstrap_reps=200, conditional_logit_metrics=())
    em2 = next(e for e in s2["items"] if (e["method"], e["metric"]) == ("up", "exact_match"))
    assert em2["bootstrap"] == em["bootstrap"]
    json.dumps(s, allow_nan=False)


def test_two_seed_comparisons_enter_the_family_with_a_floor_note() -> None:
    rows = [_row("b", "ce", s, 0.5, 0.5) for s in (1, 2)]
    rows += [_row("b", "up", s, 0.5 + d, 0.5 + d) for s, d in ((1, 0.01), (2, 0.03))]
    s = build_summary(rows, conditional_logit_metrics=())
    c = _find(s, "b", "up")
    assert c["p_t"] == pytest.approx(scipy.stats.ttest_1samp([1.0, 3.0], 0.0).pvalue)
    assert c["hedges_gz"] is None and "floor is 0.5" in c["note"]
    assert c["p_bonferroni"] is not None  # it is in the family ...
    assert "1 tested on n = 2 seeds" in s["family_definition"]  # ... with the floor stated


def test_spearman_small_n_uses_the_exact_permutation_p() -> None:
    from jepa_audit.stats.coupling import spearman

    # three methods in perfect order: scipy's t-approximation says p = 0, the exact p is 2/3! = 1/3
    r = spearman(np.array([1.0, 2.0, 3.0]), np.array([3.0, 5.0, 9.0]))
    assert r.rho == 1.0 and r.p == pytest.approx(1 / 3) and "exact" in r.note
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=6), np.r_[rng.normal(size=5), 0.0]
    obs = abs(scipy.stats.spearmanr(x, y).statistic)
    ref = np.mean(
        [
            abs(scipy.stats.spearmanr(np.array(p), y).statistic) >= obs - 1e-12
            for p in itertools.permutations(x)
        ]
    )
    assert spearman(x, y).p == pytest.approx(ref)
    big_x, big_y = rng.normal(size=12), rng.normal(size=12)
    assert spearman(big_x, big_y).p == pytest.approx(scipy.stats.spearmanr(big_x, big_y).pvalue)


def test_alpha_above_the_target_power_gives_no_mde() -> None:
    s = build_summary(make_rows(), alpha=0.9, conditional_logit_metrics=())
    assert all(p["mde_sd_single"] is None and "no MDE" in p["note"] for p in s["power"] if p["n_values"])


def test_headroom_flags_a_floor_only_where_no_fall_showed() -> None:
    from jepa_audit.stats.sections import _headroom

    def comp(diff: float, rejected: bool) -> dict:
        return {"baseline_mean": 0.9, "mean_diff": diff, "reject_holm": rejected}

    quiet = _headroom([comp(-0.9, False), comp(0.5, False), comp(-0.2, False)], mde_pp_corrected=3.46)
    assert quiet["floor_hides_decrease"] is True and quiet["ceiling_hides_increase"] is False
    assert quiet["baseline_mean"] == 0.9 and quiet["room_below_pp"] == 0.9 and quiet["room_above_pp"] == 99.1
    # a fall that passed Holm shows that one could be seen: no floor is claimed (SCAN simple: ce 19.95 %,
    # corrected MDE 24.4 pp, nine auxiliaries fell by ~20 pp and passed)
    assert _headroom([comp(-0.9, True), comp(0.5, False)], 3.46)["floor_hides_decrease"] is False
    top = _headroom([{"baseline_mean": 99.0, "mean_diff": 0.5, "reject_holm": False}], 3.46)
    assert top["ceiling_hides_increase"] is True and top["floor_hides_decrease"] is False
