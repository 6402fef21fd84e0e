"""Data: (description, regex) pairs from real NL-RX or the embedded generator, split for one benchmark.

``load_benchmark(cfg, "synth" | "turk")`` returns :class:`Splits` (train / val / test of
:class:`Example`); ``pretraining_pool(cfg, n, seed)`` returns generated pairs for pre-training the tiny
base, disjoint from every pair the benchmarks hold.  ``docs/data.md`` describes the forms, the split
policies and how the embedded corpus compares with NL-RX-Synth.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from jepa_audit.data.examples import BENCHMARKS, DataError, Example, Splits
from jepa_audit.data.generator import GENERATOR_VERSION, generate, generate_pairs
from jepa_audit.data.nlrx import GEOMETRY_SEED, VAL_SEED, carve_geometry, carve_val, load_nlrx, real_pairs

if TYPE_CHECKING:
    from jepa_audit.config import DataCfg

__all__ = ["BENCHMARKS", "DataError", "Example", "Splits", "load_benchmark", "pretraining_pool"]


def _check_benchmark(benchmark: str) -> None:
    if benchmark not in BENCHMARKS:
        raise DataError(f"unknown benchmark {benchmark!r}; expected one of: {', '.join(BENCHMARKS)}")


def _embedded(cfg: DataCfg, benchmark: str) -> Splits:
    # One corpus, two wordings: row i of "synth" and row i of "turk" share the regex, as in NL-RX.
    pairs = generate_pairs(cfg.n_train + cfg.n_test, cfg.corpus_seed)
    rows = [
        Example(nl=p.synth if benchmark == "synth" else p.turk, regex=p.regex, idx=i)
        for i, p in enumerate(pairs)
    ]
    train, val = carve_val(rows[: cfg.n_train], cfg.val_size, what="data.n_train (the embedded train split)")
    train, geometry = carve_geometry(train, cfg.geometry_size, what="data.n_train less data.val_size")
    test = [Example(nl=e.nl, regex=e.regex, idx=i) for i, e in enumerate(rows[cfg.n_train :])]
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


def load_benchmark(cfg: DataCfg, benchmark: str) -> Splits:
    """The splits of one benchmark (``"synth"`` or ``"turk"``) under ``cfg``.

    ``cfg.source == "embedded"``: ``cfg.n_train`` + ``cfg.n_test`` generated pairs (seed
    ``cfg.corpus_seed``), distinct regexes, train then test. ``"nl-rx"``: the files under ``cfg.path``,
    split by ``cfg.split`` (see :mod:`jepa_audit.data.nlrx`). In both, ``cfg.val_size`` rows are carved
    from train by a fixed-seed permutation (deep-regex: its own validation split, first ``val_size``
    rows), then the geometry pool (``cfg.geometry_size`` rows) from the rest of train by another (deep-regex:
    the next rows of its validation split), then train and test are cut to their first ``cfg.max_train`` / ``cfg.max_test`` rows.
    Raises :class:`DataError` on an unknown benchmark or any data problem.
    """
    _check_benchmark(benchmark)
    if cfg.source == "embedded":
        return _embedded(cfg, benchmark)
    if cfg.source == "nl-rx":
        if not cfg.path:
            raise DataError(
                "data.source=nl-rx needs data.path: a local NL-RX directory (nothing is downloaded)"
            )
        train, val, test, source, geometry = load_nlrx(
            cfg.path, benchmark, cfg.split, cfg.val_size, max_train=cfg.max_train, max_test=cfg.max_test,
            geometry_size=cfg.geometry_size,
        )
        return Splits(benchmark=benchmark, source=source, train=train, val=val, test=test, geometry=geometry)
    raise DataError(f"data.source={cfg.source!r}; expected embedded or nl-rx")


def pretraining_pool(cfg: DataCfg, n: int, seed: int) -> list[Example]:
    """``n`` generated pairs (seed ``seed``) for pre-training the base, mixing synth and turk wording.

    Disjoint from the benchmarks: with the embedded corpus no pool regex occurs anywhere in it (all
    rows, both wordings, before any ``max_*`` cut), so no pool pair equals a benchmark pair; with real
    NL-RX no pool pair equals a real (description, regex) pair. Regexes are distinct within the pool.
    """
    if cfg.source == "embedded":
        bench = generate_pairs(cfg.n_train + cfg.n_test, cfg.corpus_seed)
        return generate(n, seed, "mixed", exclude_regexes={p.regex for p in bench})
    if cfg.source == "nl-rx":
        if not cfg.path:
            raise DataError(
                "data.source=nl-rx needs data.path: a local NL-RX directory (nothing is downloaded)"
            )
        return generate(n, seed, "mixed", exclude_pairs=real_pairs(cfg.path))
    raise DataError(f"data.source={cfg.source!r}; expected embedded or nl-rx")
