"""The verdict's two halves as decisions, and the intervals that go with them (issue #25; DESIGN.md).

Pure functions on arrays and plain values; no file I/O, no torch.

**Reward half** (the primary metric, differences method − ce in pp, paired by seed):

- :func:`nonsup_p`: the one-sided non-superiority t-test of H0: mean ≥ Δ against H1: mean < Δ, Δ the declared
  smallest effect of interest (``stats.sesoi_pp``): t = (mean − Δ)/(sd/√n), df = n − 1, p = the t cdf.
  Equal to ``scipy.stats.ttest_1samp(d, Δ, alternative="less")``.
- :func:`upper_bound`: the one-sided upper confidence bound mean + t(level, n − 1)·sd/√n (``upper95`` at
  level 0.95: "gains above U pp ruled out at 95 %").
- :func:`reward_state`: ``gain`` / ``harm`` (the two-sided t-test passes Holm, by sign), ``no_gain_shown``
  (it does not, and the non-superiority test passes Holm over the same family), ``inconclusive``.

**Representation half** (the target geometry keys, manipulation entries): :func:`representation_state`:
``moved`` (some key passes Holm in its intended direction, or direction ``either``, with
|shift_in_seed_sds| ≥ ``stats.min_shift_sd``), ``moved_against`` (keys pass Holm, by at least as much, only
against their intended direction), ``not_shown``.

**Verdict**: :func:`verdict_label`: ``representation_without_reward`` exactly when representation = moved
and reward = no_gain_shown; every other label names both halves (``<representation>_and_<reward>``).

**Intervals at the decision's level**: :func:`holm_levels` gives, per member of a Holm family, the two-sided
(or one-sided) level at which its decision was made: α/(m − r + 1) for a member Holm rejected at rank r (its
step's threshold: the interval at 1 − that level excludes 0 exactly because it was rejected), α/m otherwise
(the simultaneous Bonferroni level; a member Holm did not reject has p > α/m, so that interval holds 0).
A decision mark therefore never sits beside an interval that contradicts it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import scipy.stats

from .multiplicity import holm

__all__ = [
    "REWARD_STATES",
    "REPRESENTATION_STATES",
    "nonsup_p",
    "upper_bound",
    "t_interval",
    "holm_levels",
    "holm_with_degenerate",
    "reward_state",
    "representation_state",
    "verdict_label",
]

REWARD_STATES: tuple[str, ...] = ("gain", "harm", "no_gain_shown", "inconclusive")
REPRESENTATION_STATES: tuple[str, ...] = ("moved", "moved_against", "not_shown")
_REP_WORD = {"moved": "representation", "moved_against": "representation_against",
             "not_shown": "representation_not_shown"}  # fmt: skip
_REWARD_WORD = {"gain": "gain", "harm": "harm", "no_gain_shown": "no_gain_shown",
                "inconclusive": "reward_inconclusive"}  # fmt: skip


def _defined(d: np.ndarray) -> bool:
    """n ≥ 2 and non-zero variance (the t-test is defined)."""
    return d.size >= 2 and float(np.ptp(d)) > 1e-12 * max(1.0, float(np.max(np.abs(d))))


def _moments(d: np.ndarray) -> tuple[int, float | None, float | None]:
    d = np.asarray(d, dtype=float)
    return (int(d.size), float(d.mean()), float(d.std(ddof=1))) if _defined(d) else (int(d.size), None, None)


def nonsup_p_moments(n: int, mean: float | None, sd: float | None, sesoi: float) -> float | None:
    """:func:`nonsup_p` from the summary of the differences (n, mean, SD with ddof 1); None unless n ≥ 2, sd > 0."""
    if n < 2 or mean is None or not sd:
        return None
    return float(scipy.stats.t.cdf((mean - float(sesoi)) / (sd / math.sqrt(n)), n - 1))


def upper_bound_moments(n: int, mean: float | None, sd: float | None, level: float = 0.95) -> float | None:
    """:func:`upper_bound` from (n, mean, SD); None unless n ≥ 2 and sd > 0."""
    if n < 2 or mean is None or not sd:
        return None
    return float(mean + scipy.stats.t.ppf(level, n - 1) * sd / math.sqrt(n))


def t_interval_moments(n: int, mean: float | None, sd: float | None, level: float) -> tuple[float | None, float | None]:
    """:func:`t_interval` from (n, mean, SD); (None, None) unless n ≥ 2 and sd > 0."""
    if n < 2 or mean is None or not sd:
        return None, None
    half = float(scipy.stats.t.ppf(0.5 + level / 2.0, n - 1) * sd / math.sqrt(n))
    return mean - half, mean + half


def nonsup_p(d: np.ndarray, sesoi: float) -> float | None:
    """One-sided p of H0: mean(d) ≥ ``sesoi`` vs H1: mean(d) < ``sesoi`` (paired t, df = n − 1). ``d``: (n,)
    differences in the unit of ``sesoi`` (pp). None when the t-test is undefined (n < 2, zero variance)."""
    return nonsup_p_moments(*_moments(d), sesoi)


def upper_bound(d: np.ndarray, level: float = 0.95) -> float | None:
    """One-sided upper confidence bound of mean(d) at ``level``: mean + t(level, n − 1)·sd/√n; None when the
    t-test is undefined."""
    return upper_bound_moments(*_moments(d), level)


def t_interval(d: np.ndarray, level: float) -> tuple[float | None, float | None]:
    """Two-sided t-interval of mean(d) at confidence ``level``: mean ± t(1 − (1 − level)/2, n − 1)·sd/√n."""
    return t_interval_moments(*_moments(d), level)


def holm_with_degenerate(p: Sequence[float | None]) -> list[float | None]:
    """Holm-adjusted p over a declared family where None (an undefined test) enters as p = 1 (counts in m,
    never rejected) and comes back None."""
    if not p:
        return []
    adj = holm(np.array([1.0 if x is None else float(x) for x in p]))
    return [None if x is None else float(a) for x, a in zip(p, adj, strict=True)]


def holm_levels(p: Sequence[float | None], alpha: float) -> list[float]:
    """Per member of a Holm family (raw p, None = undefined = p 1), the level of its decision: α/(m − r + 1)
    when Holm rejects it at rank r (1-based, ascending p), else α/m. ``m`` = len(p) (the declared family)."""
    m = len(p)
    if m == 0:
        return []
    adj = holm_with_degenerate(p)
    raw = [1.0 if x is None else float(x) for x in p]
    order = sorted(range(m), key=lambda i: raw[i])  # stable: ties keep their order, as in multiplicity.holm
    rank = {i: r for r, i in enumerate(order, start=1)}
    return [alpha / (m - rank[i] + 1) if adj[i] is not None and adj[i] <= alpha else alpha / m for i in range(m)]


def reward_state(
    *,
    n: int,
    mean_diff: float | None,
    p_holm: float | None,
    p_nonsup_holm: float | None,
    alpha: float,
    m: int,
    sesoi: float,
    p_signflip: float | None = None,
) -> tuple[str, str | None]:
    """(reward state, note) of one primary-metric comparison.

    Defined tests: ``gain``/``harm`` when ``p_holm`` ≤ α (by the sign of ``mean_diff``), else ``no_gain_shown``
    when ``p_nonsup_holm`` ≤ α, else ``inconclusive``. Degenerate comparisons (n < 2 or zero variance: no t)
    are ``inconclusive`` unless the exact sign-flip floor decides: the two-sided sign-flip p of a constant
    non-zero difference (2/2^n) with Bonferroni over m (p·m ≤ α: ``gain``/``harm``), or the one-sided
    sign-flip p of d − Δ for a constant difference below Δ (1/2^n; p·m ≤ α: ``no_gain_shown``). The note says
    which route decided, or why none could.
    """
    if p_holm is not None:
        if p_holm <= alpha and mean_diff is not None and mean_diff != 0:
            return ("gain" if mean_diff > 0 else "harm"), None
        if p_nonsup_holm is not None and p_nonsup_holm <= alpha:
            return "no_gain_shown", None
        return "inconclusive", None
    if n < 2 or mean_diff is None:
        return "inconclusive", f"n = {n} < 2 paired seeds: no test is defined"
    m = max(1, int(m))
    floor_two, floor_one = 2.0 / 2**n, 1.0 / 2**n
    if p_signflip is not None and mean_diff != 0 and p_signflip * m <= alpha:
        return ("gain" if mean_diff > 0 else "harm"), (
            f"zero variance: decided by the exact sign-flip test, p = {p_signflip:.3g} ≤ α/m = {alpha / m:.3g} "
            "(Bonferroni)"
        )
    if mean_diff < sesoi and floor_one * m <= alpha:
        return "no_gain_shown", (
            f"zero variance: every seed's difference ({mean_diff:+.3g} pp) is below Δ = {sesoi:g} pp; the exact "
            f"one-sided sign-flip p = 1/2^{n} = {floor_one:.3g} ≤ α/m = {alpha / m:.3g} (Bonferroni)"
        )
    return "inconclusive", (
        f"zero variance: t undefined; the exact sign-flip floor (two-sided {floor_two:.3g}, one-sided "
        f"{floor_one:.3g} at n = {n}) is above α/m = {alpha / m:.3g}, so no test can decide"
    )


def representation_state(
    entries: Sequence[dict], alpha: float, min_shift_sd: float
) -> tuple[str, list[str], list[str], list[str]]:
    """(state, keys moved as intended, keys moved against, keys that passed Holm but by less than
    ``min_shift_sd`` seed SDs, in either direction) from one auxiliary's manipulation entries (``key,
    direction, mean_diff, p_holm, shift_in_seed_sds``). A key whose shift in seed SDs is undefined cannot
    count as moved either way."""
    moved, against, small = [], [], []
    for e in entries:
        p, diff = e.get("p_holm"), e.get("mean_diff")
        if p is None or p > alpha or not diff:
            continue
        shift = e.get("shift_in_seed_sds")
        if shift is None or abs(shift) < min_shift_sd:  # small shifts are not a manipulation, either way
            small.append(e["key"])
            continue
        direction = e.get("direction") or "either"
        intended = direction == "either" or (diff > 0) == (direction == "increase")
        (moved if intended else against).append(e["key"])
    state = "moved" if moved else "moved_against" if against else "not_shown"
    return state, moved, against, small


def verdict_label(representation: str, reward: str) -> str:
    """``representation_without_reward`` only for (moved, no_gain_shown); else ``<rep>_and_<reward>`` with
    rep ∈ {representation, representation_against, representation_not_shown} and reward ∈ {gain, harm,
    no_gain_shown, reward_inconclusive}: both halves named, a harm never called reward."""
    if representation not in _REP_WORD or reward not in _REWARD_WORD:
        raise ValueError(f"verdict_label({representation!r}, {reward!r}): expected one of "
                         f"{list(_REP_WORD)} and one of {list(_REWARD_WORD)}")  # fmt: skip
    if representation == "moved" and reward == "no_gain_shown":
        return "representation_without_reward"
    return f"{_REP_WORD[representation]}_and_{_REWARD_WORD[reward]}"
