"""Adjusted p-values against statsmodels' multipletests and hand-worked examples."""

from __future__ import annotations

import numpy as np
import pytest
from statsmodels.stats.multitest import multipletests

from jepa_audit.stats.multiplicity import adjust, benjamini_hochberg, bonferroni, holm

P_CASES = [
    np.array([0.01, 0.04, 0.03, 0.005]),
    np.array([0.2, 0.2, 0.2, 0.01, 0.01]),  # ties
    np.array([0.0, 1.0, 0.5, 0.049, 0.051]),
    np.array([0.3]),
    np.array([0.001, 0.0045, 0.0046, 0.02, 0.08, 0.09, 0.1, 0.5, 0.7, 0.99, 0.0001, 0.03]),
    np.random.default_rng(7).uniform(size=22),
    np.random.default_rng(8).uniform(size=44) ** 4,
]
SM_NAMES = {"bonferroni": "bonferroni", "holm": "holm", "bh": "fdr_bh"}


@pytest.mark.parametrize("p", P_CASES)
@pytest.mark.parametrize("method", ["bonferroni", "holm", "bh"])
def test_adjusted_p_matches_statsmodels(p: np.ndarray, method: str) -> None:
    ref = multipletests(p, alpha=0.10, method=SM_NAMES[method])[1]
    np.testing.assert_allclose(adjust(p, method), ref, rtol=1e-12, atol=0)


@pytest.mark.parametrize("p", P_CASES)
@pytest.mark.parametrize("method", ["bonferroni", "holm", "bh"])
@pytest.mark.parametrize("alpha", [0.05, 0.10])
def test_rejections_match_statsmodels_threshold_procedures(p, method, alpha) -> None:
    reject = adjust(p, method) <= alpha
    np.testing.assert_array_equal(reject, multipletests(p, alpha=alpha, method=SM_NAMES[method])[0])


@pytest.mark.parametrize("p", P_CASES)
@pytest.mark.parametrize("method", ["bonferroni", "holm", "bh"])
def test_adjusted_p_is_monotone_capped_and_not_below_raw(p, method) -> None:
    adj = adjust(p, method)
    order = np.argsort(p, kind="stable")
    assert np.all(np.diff(adj[order]) >= -1e-15)
    assert np.all(adj <= 1.0)
    assert np.all(adj >= p - 1e-15)


def test_hand_worked_example() -> None:
    p = np.array([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(bonferroni(p), [0.04, 0.16, 0.12, 0.02])
    # Holm: sorted 0.005*4, 0.01*3, 0.03*2, 0.04*1 -> 0.02, 0.03, 0.06, max(0.04, 0.06)
    np.testing.assert_allclose(holm(p), [0.03, 0.06, 0.06, 0.02])
    # BH: sorted p*4/i = 0.02, 0.02, 0.04, 0.04
    np.testing.assert_allclose(benjamini_hochberg(p), [0.02, 0.04, 0.04, 0.02])


def test_empty_family_and_bad_input() -> None:
    for method in ("bonferroni", "holm", "bh"):
        assert adjust(np.array([]), method).size == 0
    with pytest.raises(ValueError):
        adjust(np.array([0.1, np.nan]), "holm")
    with pytest.raises(ValueError):
        adjust(np.array([1.5]), "bh")
    with pytest.raises(ValueError):
        adjust(np.array([0.1]), "hochberg")
