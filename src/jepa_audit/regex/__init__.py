"""Regex semantics for NL-RX: the brics dialect parser and DFA-equivalence accuracy.

Public API (what the rest of ``jepa_audit`` calls):

* :func:`equivalent` (a, b) → :class:`EquivResult` (``equivalent``: True/False/None,
  ``witness``, ``error``); never raises, never hangs (state and time budgets).
* :class:`DfaScorer` — ``score(gold, pred)``, ``score_many(pairs)``; memoises compiled automata.
* :func:`matches` (full match), :func:`is_empty_language`, :func:`is_universal`,
  :func:`compile_regex` (the minimised :class:`Dfa`), :func:`parse` (the AST).
* :func:`equiv_pairs_cli` — the behaviour of ``jepa-audit regex equiv``.
* :func:`time_scoring`, :func:`model_like_pairs`, :func:`perturb_regex` — for ``jepa-audit bench``.

Dialect decisions are in :mod:`.parse` and ``docs/regex.md``.
"""

from .automaton import BudgetExceeded, Dfa
from .equiv import (
    DfaScorer,
    EquivResult,
    compile_regex,
    equiv_pairs_cli,
    equivalent,
    is_empty_language,
    is_universal,
    matches,
    model_like_pairs,
    perturb_regex,
    time_scoring,
)
from .parse import RegexParseError, parse

__all__ = [
    "BudgetExceeded",
    "Dfa",
    "DfaScorer",
    "EquivResult",
    "RegexParseError",
    "compile_regex",
    "equiv_pairs_cli",
    "equivalent",
    "is_empty_language",
    "is_universal",
    "matches",
    "model_like_pairs",
    "parse",
    "perturb_regex",
    "time_scoring",
]
