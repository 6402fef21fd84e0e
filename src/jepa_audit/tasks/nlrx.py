"""NL-RX: natural language → regular expression (the audit's original task).

Benchmarks ``synth`` and ``turk`` (NL-RX-Synth and NL-RX-Turk wording of one regex set).  Sources: the
embedded NL-RX-style generator (``data.source=embedded``, nothing to download) or a local NL-RX copy
(``data.source=nl-rx``, ``data.path``; forms and splits in :mod:`jepa_audit.data.nlrx`).  Metrics: exact match
of the whitespace-stripped strings (as LLM-JEPA) and DFA-equivalence accuracy in the NL-RX (dk.brics)
dialect: a prediction that does not parse counts as wrong and keeps its parse error; an undecided comparison
(budget exceeded) counts as wrong and is counted separately.  The tiny base pre-trains on generated pairs
disjoint from the benchmarks.  ``docs/data.md`` describes the data.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Protocol

from jepa_audit.data.carve import GEOMETRY_SEED, VAL_SEED, carve_geometry, carve_val
from jepa_audit.data.examples import DataError, Example, Splits
from jepa_audit.data.generator import GENERATOR_VERSION, corpus_stats, generate, generate_pairs
from jepa_audit.data.nlrx import BENCHMARKS, SPLIT_TEST_ROWS, load_nlrx, real_pairs
from jepa_audit.regex import DfaScorer
from jepa_audit.results import LEGACY_METRICS
from jepa_audit.tasks.base import DataSettings, EvalSettings, Task, register_task


class NlrxSettings(DataSettings, Protocol):
    """The data settings NL-RX reads beyond every task's (config.DataCfg's NL-RX keys)."""

    split: Literal["llm-jepa", "deep-regex"]
    n_train: int  # embedded corpus: pairs per benchmark
    n_test: int
    corpus_seed: int


class DfaSettings(EvalSettings, Protocol):
    """The evaluation settings NL-RX's DFA-equivalence scorer reads (config.EvalCfg's dfa_* keys)."""

    dfa_max_states: int
    dfa_time_budget_s: float  # seconds per item


_SCORERS: dict[tuple[int, float], DfaScorer] = {}


def scorer_for(cfg: DfaSettings) -> DfaScorer:
    """One memoising scorer per budget per process, so gold automata are shared across cells."""
    key = (cfg.dfa_max_states, cfg.dfa_time_budget_s)
    if key not in _SCORERS:
        _SCORERS[key] = DfaScorer(max_states=cfg.dfa_max_states, time_budget_s=cfg.dfa_time_budget_s)
    return _SCORERS[key]


def _need_path(cfg: NlrxSettings) -> str:
    if not cfg.path:
        raise DataError("data.source=nl-rx needs data.path: a local NL-RX directory (nothing is downloaded)")
    return cfg.path


@register_task
class NlrxTask(Task):
    name = "nlrx"
    description = "NL-RX: English description → regular expression (dk.brics dialect); EM and DFA equivalence"
    benchmarks = BENCHMARKS
    sources = ("embedded", "nl-rx")
    system_prompt = "Convert natural language to regular expression."
    metrics = LEGACY_METRICS

    def load(self, cfg: NlrxSettings, benchmark: str) -> Splits:
        """``cfg.source == "embedded"``: ``cfg.n_train`` + ``cfg.n_test`` generated pairs (seed
        ``cfg.corpus_seed``), distinct regexes, train then test. ``"nl-rx"``: the files under ``cfg.path``,
        split by ``cfg.split`` (see :mod:`jepa_audit.data.nlrx`). In both, ``cfg.val_size`` rows are carved
        from train by a fixed-seed permutation (deep-regex: its own validation split, first ``val_size``
        rows), then the geometry pool (``cfg.geometry_size`` rows) from the rest of train by another
        (deep-regex: the next rows of its validation split), then train and test are cut to their first
        ``cfg.max_train`` / ``cfg.max_test`` rows."""
        self.check_benchmark(benchmark)
        if cfg.source == "embedded":
            return _embedded(cfg, benchmark)
        if cfg.source == "nl-rx":
            train, val, test, source, geometry = load_nlrx(
                _need_path(cfg), benchmark, cfg.split, cfg.val_size, max_train=cfg.max_train,
                max_test=cfg.max_test, geometry_size=cfg.geometry_size,
            )  # fmt: skip
            return Splits(benchmark=benchmark, source=source, train=train, val=val, test=test, geometry=geometry)
        raise DataError(f"data.source={cfg.source!r}; expected embedded or nl-rx")

    def pretraining_pool(self, cfg: NlrxSettings, n: int, seed: int) -> list[Example]:
        """``n`` generated pairs (seed ``seed``), mixing synth and turk wording, disjoint from the benchmarks:
        with the embedded corpus no pool regex occurs anywhere in it (all rows, both wordings, before any
        ``max_*`` cut); with real NL-RX no pool pair equals a real (description, regex) pair. Regexes are
        distinct within the pool."""
        if cfg.source == "embedded":
            bench = generate_pairs(cfg.n_train + cfg.n_test, cfg.corpus_seed)
            return generate(n, seed, "mixed", exclude_regexes={p.regex for p in bench})
        if cfg.source == "nl-rx":
            return generate(n, seed, "mixed", exclude_pairs=real_pairs(_need_path(cfg)))
        raise DataError(f"data.source={cfg.source!r}; expected embedded or nl-rx")

    def stats(self, splits: Splits) -> dict[str, Any]:
        s = splits.sizes()
        return {"source": splits.source, "n_train": s["train"], "n_val": s["val"], "n_test": s["test"],
                **corpus_stats(splits.train + splits.val + splits.test)}  # fmt: skip

    def test_rows(self, cfg: NlrxSettings, benchmark: str) -> int:
        return cfg.n_test if cfg.source == "embedded" else SPLIT_TEST_ROWS[cfg.split]

    def scorer(self, cfg: DfaSettings) -> DfaScorer:
        return scorer_for(cfg)

    def item_record(self, ex: Example, pred: str) -> dict[str, Any]:
        # "nl" (not "prompt"): the predictions files of NL-RX audits keep the fields they always had
        return {"item": ex.idx, "nl": ex.prompt, "gold": ex.target, "pred": pred}

    def score_item(self, ex: Example, pred: str, scorer: Any) -> dict[str, Any]:
        """``exact``, ``dfa`` (True, False, or None when undecided or unparsable) and ``parse_error``."""
        if pred.strip() == ex.target.strip():
            return {"exact": True, "dfa": True, "parse_error": None}
        # leading/trailing whitespace is stripped as for exact match (a decoded leading space is an
        # artefact of the tokenizer); inner spaces stay literal characters, as brics reads them
        r = scorer.score(ex.target, pred.strip())
        return {"exact": False, "dfa": r.equivalent, "parse_error": r.error}

    def counts(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """``n_parse_errors`` (a side does not parse) and ``n_undecided`` (no answer within the DFA budgets)."""
        undecided = [it["dfa"] is None and not (it["parse_error"] or "").startswith("parse error") for it in items]
        n_err = sum(it["parse_error"] is not None and not u for it, u in zip(items, undecided, strict=True))
        return {"n_parse_errors": n_err, "n_undecided": sum(undecided)}


def _embedded(cfg: NlrxSettings, benchmark: str) -> Splits:
    # One corpus, two wordings: row i of "synth" and row i of "turk" share the regex, as in NL-RX.
    pairs = generate_pairs(cfg.n_train + cfg.n_test, cfg.corpus_seed)
    rows = [
        Example(prompt=p.synth if benchmark == "synth" else p.turk, target=p.regex, idx=i)
        for i, p in enumerate(pairs)
    ]
    train, val = carve_val(rows[: cfg.n_train], cfg.val_size, what="data.n_train (the embedded train split)")
    train, geometry = carve_geometry(train, cfg.geometry_size, what="data.n_train less data.val_size")
    test = [Example(prompt=e.prompt, target=e.target, idx=i) for i, e in enumerate(rows[cfg.n_train :])]
    if cfg.max_train is not None:
        train = train[: cfg.max_train]
    if cfg.max_test is not None:
        test = test[: cfg.max_test]
    source = (
        f"embedded generator v{GENERATOR_VERSION} (seed {cfg.corpus_seed}, {benchmark} wording); "
        f"val {len(val)} rows carved from train (seed {VAL_SEED}), geometry pool {len(geometry)} rows carved "
        f"from the rest (seed {GEOMETRY_SEED})"
    )
    return Splits(benchmark=benchmark, source=source, train=train, val=val, test=test, geometry=geometry)
