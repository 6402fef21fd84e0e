"""Evaluation: batched greedy decoding → exact match and DFA-equivalence accuracy, per item.

Exact match compares whitespace-stripped strings (as LLM-JEPA).  DFA accuracy asks whether the predicted
regex denotes the same language as the gold one in the NL-RX (dk.brics) dialect; a prediction that does not
parse counts as wrong and keeps its parse error; an undecided comparison (budget exceeded) counts as wrong
and is counted separately.  Nothing a model emits can crash an evaluation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn
from transformers import PreTrainedTokenizerBase

from jepa_audit.config import EvalCfg
from jepa_audit.data.examples import Example
from jepa_audit.data.views import Encoded
from jepa_audit.decode import end_ids, greedy_decode
from jepa_audit.regex import DfaScorer

_SCORERS: dict[tuple[int, float], DfaScorer] = {}


def scorer_for(cfg: EvalCfg) -> DfaScorer:
    """One memoising scorer per budget per process, so gold automata are shared across cells."""
    key = (cfg.dfa_max_states, cfg.dfa_time_budget_s)
    if key not in _SCORERS:
        _SCORERS[key] = DfaScorer(max_states=cfg.dfa_max_states, time_budget_s=cfg.dfa_time_budget_s)
    return _SCORERS[key]


@dataclass
class EvalResult:
    metrics: dict[str, Any]  # exact_match, dfa_accuracy (0-1), n_test, n_parse_errors, n_undecided
    predictions: list[dict[str, Any]]  # one per item: item, nl, gold, pred, exact, dfa, parse_error


def score_predictions(
    examples: Sequence[Example], preds: Sequence[str], cfg: EvalCfg
) -> EvalResult:
    scorer = scorer_for(cfg)
    items, n_exact, n_dfa, n_err, n_undecided = [], 0, 0, 0, 0
    for ex, pred in zip(examples, preds, strict=True):
        exact = pred.strip() == ex.regex.strip()
        dfa, err, undecided = True, None, False
        if not exact:
            # leading/trailing whitespace is stripped as for exact match (a decoded leading space is an
            # artefact of the tokenizer); inner spaces stay literal characters, as brics reads them
            r = scorer.score(ex.regex, pred.strip())
            dfa, err, undecided = r.equivalent, r.error, r.undecided
        n_exact += exact
        n_dfa += dfa is True
        n_err += err is not None and not undecided
        n_undecided += undecided
        items.append(
            {"item": ex.idx, "nl": ex.nl, "gold": ex.regex, "pred": pred, "exact": exact, "dfa": dfa,
             "parse_error": err}
        )
    n = max(1, len(items))
    metrics = {
        "exact_match": n_exact / n,
        "dfa_accuracy": n_dfa / n,
        "n_test": len(items),
        "n_parse_errors": n_err,
        "n_undecided": n_undecided,
    }
    return EvalResult(metrics, items)


def evaluate(
    model: nn.Module,
    tok: PreTrainedTokenizerBase,
    rows: Sequence[Encoded],
    examples: Sequence[Example],
    cfg: EvalCfg,
    progress: Callable[[int], None] | None = None,
) -> EvalResult:
    """Greedy-decode the prompts of ``rows`` and score them against ``examples`` (same order)."""
    # the end-of-turn the template closes answers with, and every eos id of the model's generation config
    stop = end_ids(model, tok, {r.full[-1] for r in rows})
    out = greedy_decode(
        model,
        [r.prompt for r in rows],
        pad_id=int(tok.pad_token_id),
        stop_ids=stop,
        max_new_tokens=cfg.max_new_tokens,
        batch_size=cfg.batch_size,
        progress=progress,
    )
    preds = [tok.decode(ids, skip_special_tokens=True) for ids in out]
    return score_predictions(examples, preds, cfg)
