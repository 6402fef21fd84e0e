"""The verdict's decisions (stats/decisions.py, issue #25): every new number against scipy (one-sided t) and
statsmodels (Holm); the reward and representation states, the labels, the intervals at the decision's level,
and the seeds needed."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.stats
from statsmodels.stats.multitest import multipletests

from jepa_audit.audit.store import encode_row
from jepa_audit.results_file import cell_key
from jepa_audit.stats.decisions import (
    REPRESENTATION_STATES,
    REWARD_STATES,
    holm_levels,
    nonsup_p,
    representation_state,
    reward_state,
    t_interval,
    upper_bound,
    verdict_label,
)
from jepa_audit.stats.power import power_nonsup, seeds_needed
from jepa_audit.stats.summary import build_summary

SEEDS = [1, 2, 3, 4, 5]


def _rows(shifts_pp: dict[str, float], sd_pp: float, seed: int = 0, n: int = 5) -> list[dict]:
    """ce plus one method per entry of ``shifts_pp`` (true EM gain in pp, paired noise ``sd_pp``)."""
    rng = np.random.default_rng(seed)
    rows = []
    base = {s: 0.5 + rng.normal(0, 0.02) for s in range(n)}
    for s in range(n):
        rows.append({"benchmark": "synth", "method": "ce", "seed": s, "mode": "lora", "status": "done",
                     "metrics": {"exact_match": base[s], "dfa_accuracy": base[s]}, "target_geometry": []})
    for m, g in shifts_pp.items():
        for s in range(n):
            em = base[s] + (g + rng.normal(0, sd_pp)) / 100
            rows.append({"benchmark": "synth", "method": m, "seed": s, "mode": "lora", "status": "done",
                         "metrics": {"exact_match": em, "dfa_accuracy": em}, "target_geometry": []})
    return rows


def _diffs(rows: list[dict], method: str) -> np.ndarray:
    em = {(r["method"], r["seed"]): r["metrics"]["exact_match"] for r in rows}
    seeds = sorted({r["seed"] for r in rows})
    return np.array([100 * (em[(method, s)] - em[("ce", s)]) for s in seeds])


def test_nonsup_upper95_and_their_holm_equal_scipy_and_statsmodels():
    methods = {"A": 0.0, "B": 1.0, "C": 5.0, "D": -3.0, "E": 0.5}
    rows = _rows(methods, 1.0)
    s = build_summary(rows, alpha=0.10, conditional_logit_metrics=(), sesoi_pp=2.0)
    comps = [c for c in s["comparisons"] if c["metric"] == "exact_match"]
    assert s["sesoi_pp"] == 2.0 and not s["sesoi_overridden"]
    for c in comps:
        d = _diffs(rows, c["method"])
        ref = scipy.stats.ttest_1samp(d, 2.0, alternative="less")
        assert c["p_nonsup"] == pytest.approx(ref.pvalue, rel=1e-9) and nonsup_p(d, 2.0) == pytest.approx(ref.pvalue)
        up = d.mean() + scipy.stats.t.ppf(0.95, d.size - 1) * scipy.stats.sem(d)
        assert c["upper95"] == pytest.approx(up) and upper_bound(d) == pytest.approx(up)
    holm = multipletests([c["p_nonsup"] for c in comps], alpha=0.10, method="holm")[1]
    assert [c["p_nonsup_holm"] for c in comps] == pytest.approx(list(holm))
    assert all(c["p_nonsup"] is None for c in s["comparisons"] if c["metric"] == "dfa_accuracy")


def test_degenerate_comparison_enters_nonsup_holm_as_p_one():
    rows = _rows({"A": 0.0, "B": 1.0, "C": -2.0}, 1.0)
    for r in rows:  # B identical to ce on every seed: zero variance
        if r["method"] == "B":
            r["metrics"] = dict(next(x for x in rows if x["method"] == "ce" and x["seed"] == r["seed"])["metrics"])
    comps = {c["method"]: c for c in build_summary(rows, conditional_logit_metrics=())["comparisons"]
             if c["metric"] == "exact_match"}  # fmt: skip
    assert comps["B"]["p_nonsup"] is None and comps["B"]["p_nonsup_holm"] is None and comps["B"]["upper95"] is None
    holm = multipletests([comps["A"]["p_nonsup"], comps["C"]["p_nonsup"], 1.0], method="holm")[1][:2]
    assert [comps["A"]["p_nonsup_holm"], comps["C"]["p_nonsup_holm"]] == pytest.approx(list(holm))


def test_intervals_at_the_decision_level_agree_with_the_marks():
    """Over many random families, a Holm rejection's interval (at 1 − α/(m − r + 1)) excludes 0 and a
    non-rejection's (at 1 − α/m) holds it; both equal scipy's t.interval at that level. The same for the
    non-superiority decision and its one-sided bound against Δ."""
    alpha = 0.10
    checked = {"reject": 0, "keep": 0, "nonsup": 0}
    for rep in range(12):
        rng = np.random.default_rng(rep)
        methods = {f"M{i}": float(rng.choice([0.0, 1.0, 3.0, -3.0])) for i in range(10)}
        rows = _rows(methods, float(rng.choice([0.3, 1.5])), seed=rep, n=int(rng.choice([3, 5])))
        comps = [c for c in build_summary(rows, alpha=alpha, conditional_logit_metrics=())["comparisons"]
                 if c["metric"] == "exact_match"]  # fmt: skip
        m = len(comps)
        for c in comps:
            d = _diffs(rows, c["method"])
            lo, hi = scipy.stats.t.interval(c["ci_holm_level"], d.size - 1, loc=d.mean(), scale=scipy.stats.sem(d))
            assert (c["ci_holm_low"], c["ci_holm_high"]) == pytest.approx((lo, hi))
            if c["reject_holm"]:
                assert c["ci_holm_low"] > 0 or c["ci_holm_high"] < 0
                checked["reject"] += 1
            else:
                assert c["ci_holm_level"] == pytest.approx(1 - alpha / m) and c["ci_holm_low"] <= 0 <= c["ci_holm_high"]
                checked["keep"] += 1
            assert (c["upper_holm"] < 2.0) == c["reject_nonsup_holm"]
            checked["nonsup"] += c["reject_nonsup_holm"]
    assert min(checked.values()) > 5  # every branch was exercised


def test_holm_levels_match_statsmodels_decisions():
    rng = np.random.default_rng(3)
    for _ in range(30):
        p = list(rng.uniform(0, 0.2, size=int(rng.integers(1, 9))) ** 2)
        levels = holm_levels(p, 0.10)
        reject = multipletests(p, alpha=0.10, method="holm")[0]
        assert [pi <= lev for pi, lev in zip(p, levels, strict=True)] == list(reject)
    assert holm_levels([None, 0.001], 0.10) == [0.05, 0.05]


def test_t_interval_matches_scipy():
    d = np.array([1.0, 2.5, -0.5, 3.0])
    assert t_interval(d, 0.99) == pytest.approx(scipy.stats.t.interval(0.99, 3, loc=d.mean(), scale=scipy.stats.sem(d)))
    assert t_interval(np.array([1.0, 1.0]), 0.9) == (None, None)


def test_reward_states_and_degenerate_rules():
    kw = {"alpha": 0.10, "m": 10, "sesoi": 2.0}
    assert reward_state(n=5, mean_diff=3.0, p_holm=0.01, p_nonsup_holm=0.9, **kw)[0] == "gain"
    assert reward_state(n=5, mean_diff=-3.0, p_holm=0.01, p_nonsup_holm=0.001, **kw)[0] == "harm"
    assert reward_state(n=5, mean_diff=0.1, p_holm=0.5, p_nonsup_holm=0.05, **kw)[0] == "no_gain_shown"
    assert reward_state(n=5, mean_diff=0.1, p_holm=0.5, p_nonsup_holm=0.2, **kw)[0] == "inconclusive"
    state, note = reward_state(n=3, mean_diff=0.0, p_holm=None, p_nonsup_holm=None, **kw)
    assert state == "inconclusive" and "one-sided 0.125" in note and "α/m = 0.01" in note
    # ten identical seeds below Δ: the one-sided sign-flip floor 1/1024 passes α/m
    state, note = reward_state(n=10, mean_diff=0.0, p_holm=None, p_nonsup_holm=None, **kw)
    assert state == "no_gain_shown" and "sign-flip" in note
    state, note = reward_state(n=10, mean_diff=-5.0, p_holm=None, p_nonsup_holm=None, p_signflip=2 / 1024, **kw)
    assert state == "harm" and "Bonferroni" in note
    assert reward_state(n=1, mean_diff=1.0, p_holm=None, p_nonsup_holm=None, **kw)[0] == "inconclusive"


def test_representation_states_follow_direction_and_size():
    e = {"key": "k", "p_holm": 0.01, "mean_diff": -1.0, "shift_in_seed_sds": -2.0}
    assert representation_state([{**e, "direction": "decrease"}], 0.1, 0.5)[0] == "moved"
    assert representation_state([{**e, "direction": "either"}], 0.1, 0.5)[0] == "moved"
    assert representation_state([{**e, "direction": "increase"}], 0.1, 0.5)[0] == "moved_against"
    assert representation_state([{**e, "direction": "decrease", "shift_in_seed_sds": -0.3}], 0.1, 0.5)[0] == "not_shown"
    assert representation_state([{**e, "direction": "decrease", "p_holm": 0.2}], 0.1, 0.5)[0] == "not_shown"
    both = [{**e, "direction": "increase"}, {**e, "key": "j", "direction": "decrease"}]
    assert representation_state(both, 0.1, 0.5)[:3] == ("moved", ["j"], ["k"])


def test_verdict_labels_name_both_halves_and_never_call_harm_reward():
    labels = {(r, w): verdict_label(r, w) for r in REPRESENTATION_STATES for w in REWARD_STATES}
    assert len(set(labels.values())) == 12
    assert [k for k, v in labels.items() if v == "representation_without_reward"] == [("moved", "no_gain_shown")]
    for (_rep, rew), label in labels.items():
        if rew == "harm":
            assert "harm" in label and "reward" not in label
        if rew == "gain":
            assert "gain" in label
    assert labels[("moved", "inconclusive")] == "representation_and_reward_inconclusive"
    with pytest.raises(ValueError, match="expected one of"):
        verdict_label("moved", "reward")


def test_seeds_needed_reaches_the_power_and_one_fewer_does_not():
    alpha = 0.10 / 23
    for sd in (0.2, 1.5, 4.0):
        n = seeds_needed(2.0, sd, alpha)
        assert n is not None and power_nonsup(2.0 / sd, n, alpha) >= 0.8
        assert n == 2 or power_nonsup(2.0 / sd, n - 1, alpha) < 0.8
    # power_nonsup against a seeded simulation of the one-sided test at true mean 0
    rng = np.random.default_rng(0)
    d = rng.normal(0.0, 1.5, size=(20_000, 6))
    p = scipy.stats.ttest_1samp(d, 2.0, axis=1, alternative="less").pvalue
    assert power_nonsup(2.0 / 1.5, 6, 0.05) == pytest.approx(float(np.mean(p <= 0.05)), abs=0.01)
    assert seeds_needed(2.0, 0.0, alpha) is None and seeds_needed(2.0, 1e6, alpha, n_max=50) is None


def test_power_rows_and_verdicts_carry_mde_and_seeds_needed():
    rows = _rows({"A": 0.0, "B": 1.0, "C": 0.5}, 1.5)
    s = build_summary(rows, conditional_logit_metrics=())
    pw = next(p for p in s["power"] if p["metric"] == "exact_match")
    assert pw["seeds_needed"] == seeds_needed(2.0, pw["sd_diff_pooled"], 0.10 / 3) and pw["sesoi_pp"] == 2.0
    v = s["verdicts"][0]
    assert v["seeds_needed"] == pw["seeds_needed"] and v["mde_pp_corrected"] == pw["mde_pp_corrected"]
    # EM superiority, EM non-superiority, DFA; no manipulation family (these methods declare no target)
    assert s["family_fwer_all"]["k"] == 3 and "at most 0.3" in s["family_fwer_all"]["text"]


def test_sesoi_declared_in_grid_json_and_overridden_by_the_report(tmp_path):
    from typer.testing import CliRunner

    from jepa_audit.cli import app
    from jepa_audit.report import ReportError, write_report

    rows = [{**r, "cell": cell_key(r["benchmark"], r["method"], r["seed"], r["mode"]), "config_hash": "h"}
            for r in _rows({"A": 0.0, "B": 1.0}, 1.0)]  # fmt: skip
    (tmp_path / "results.jsonl").write_bytes(b"".join(encode_row(r) for r in rows))  # checksummed, as the runner writes
    cells = {r["cell"]: {**{k: r[k] for k in ("benchmark", "method", "seed", "mode")}, "hash": "h"} for r in rows}
    (tmp_path / "grid.json").write_text(json.dumps({"cells": cells, "stats": {"sesoi_pp": 3.0, "min_shift_sd": 1.0}}))
    s = write_report(tmp_path, 0.10)
    assert s["sesoi_pp"] == 3.0 and s["min_shift_sd"] == 1.0 and not s["sesoi_overridden"]
    res = CliRunner().invoke(app, ["report", str(tmp_path), "--sesoi", "1.5", "--no-item-logit"])
    assert res.exit_code == 0, res.output
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["sesoi_pp"] == 1.5 and s["sesoi_declared_pp"] == 3.0 and s["sesoi_overridden"]
    md = (tmp_path / "report.md").read_text()
    assert "Δ = 1.5 pp was set for this report" in md
    # the comparisons table prints, beside its Holm mark, the interval at the Holm decision's level (here m = 2)
    assert "| CI at the Holm decision's level | p_nonsup_Holm (Δ) | one-sided 95 % upper |" in md
    assert ") at 95 % |" in md  # not rejected: the simultaneous 1 − α/m
    with pytest.raises(ReportError, match="--sesoi must be a positive number"):
        write_report(tmp_path, 0.10, sesoi_pp=0)


def test_stats_config_is_recorded_in_grid_json_and_not_hashed(tmp_path):
    from _fake_cells import fast_cell
    from jepa_audit.audit.runner import run_audit
    from jepa_audit.config import Config, load_config

    cfg = Config()
    cfg.audit.benchmarks, cfg.audit.methods, cfg.audit.seeds = ["synth"], ["ce"], [1]
    assert cfg.cell_hash() == load_config(None, None, ["stats.sesoi_pp=5"]).cell_hash()
    cfg.stats.sesoi_pp = 1.0
    assert run_audit(cfg, tmp_path, workers=1, cell_fn=fast_cell, report=False, live=False) == 0
    assert json.loads((tmp_path / "grid.json").read_text())["stats"] == {"sesoi_pp": 1.0, "min_shift_sd": 0.5}


def test_forest_plot_draws_the_intervals_of_its_marks():
    """The forest plot's thick bar is the 1 − α interval (the fill's level) and its thin whisker the Holm-level
    one (the ring's): with α given it draws differently from the plain 95 % version, and deterministically."""
    from jepa_audit.report import plots

    rows = _rows({"A": 3.0, "B": 0.0}, 1.0)
    comps = [c for c in build_summary(rows, conditional_logit_metrics=())["comparisons"] if c["metric"] == "exact_match"]
    png = plots.forest_plot(comps, "t", 0.10)
    assert png.startswith(b"\x89PNG") and png == plots.forest_plot(comps, "t", 0.10)
    assert png != plots.forest_plot(comps, "t")
