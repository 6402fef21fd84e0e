"""DFA-equivalence of NL-RX regexes, as dk.brics.automaton decides it, plus the CLI behind
``jepa-audit regex equiv``.

``equivalent(a, b)`` answers True, False (with a shortest witness: a string accepted by exactly
one side) or None (a parse error, with its message in ``error``; or undecided within the budgets,
also with a message in ``error``). It never raises and never hangs: every DFA build and every
product walk stops at ``max_states`` states or ``time_budget_s`` seconds (wall clock, checked in
the loops). Two identical strings that parse are equivalent without building anything.

:class:`DfaScorer` is what an evaluation uses: it keeps the minimised DFA of every regex it has
compiled (gold and predictions alike) in a bounded LRU cache keyed by the regex string, so a test
set's gold automata are built once for all the cells of a grid. Parse errors are cached too;
state-budget failures are cached with their budget, time-budget failures are not (they depend on
the machine's load).

Dependency choice (measured on NL-RX; numbers in ``docs/regex.md``): we tried automata-lib
9.2, greenery 4.2, interegular 0.3 and pyformlang 1.0, and depend on none of them.

* Their own parsers read another dialect. greenery, interegular and pyformlang (``PythonRegex``)
  read ``~`` and ``&`` as literal characters, silently wrong on the 39 % of NL-RX gold regexes
  that use them; greenery and interegular reject ``\\b`` (19 % of golds); pyformlang reads it as
  a word boundary; automata-lib rejects ``~``. brics' quirks (``[`` running to the next ``]``,
  metacharacters as literals, ``{3,2}``, ``<lo-hi>``) are in none. So the parser is ours.
* As automata engines, fed our AST over our partition alphabet (a fair test of their operations),
  automata-lib and interegular were correct on every pair but about 14x slower than ours on average
  (p99 10-30x), greenery 500x slower with 2 % of pairs over 5 s, and pyformlang over 5 s on every
  pair tried. None reaches 1,000 pairs/s, none gives a shortest witness, and none has a budget.
* What we need is small: Brzozowski derivatives with hash-consing, Hopcroft minimisation and a
  lazy breadth-first product, about 1,100 lines in :mod:`.automaton`, exact and within budget.
"""

from __future__ import annotations

import json
import random
import re
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from typing import Literal as TLiteral

from .automaton import BudgetExceeded, Dfa, TermTable, find_difference
from .parse import RegexParseError, parse, to_code_units

MAX_REGEX_CHARS = 1000  # longer inputs are answered `undecided` at once (see _compare)
MAX_PAIR_LINE_BYTES = 1 << 20  # a longer line of a pairs file gets an error of its own (memory stays bounded)
MAX_SKIP_BYTES = 64 << 20  # past a too-long line, give up on a file with no line end within this many bytes

__all__ = [
    "DfaScorer",
    "EquivResult",
    "compile_regex",
    "equiv_pairs_cli",
    "equivalent",
    "is_empty_language",
    "is_universal",
    "matches",
    "model_like_pairs",
    "perturb_regex",
    "time_scoring",
]

_DEFAULT_MAX_STATES = 20000
_DEFAULT_TIME_BUDGET_S = 0.5


@dataclass(frozen=True, slots=True)
class EquivResult:
    """The answer for one pair of regexes.

    ``equivalent``: True, False, or None (undecided within budget, or a parse error).
    ``witness``: when False, a shortest string accepted by exactly one side (may be ``""``);
    otherwise None. ``error``: why ``equivalent`` is None (``"parse error in ..."`` or
    ``"undecided: ..."``); None otherwise. ``witness_side``: which side accepts the witness,
    ``"a"`` (the first regex: gold, for a scorer) or ``"b"``; None without a witness.
    """

    equivalent: bool | None
    witness: str | None
    error: str | None
    witness_side: TLiteral["a", "b"] | None = None

    @property
    def parse_error(self) -> bool:
        """One side does not parse (``error`` starts with ``"parse error"``)."""
        return self.error is not None and self.error.startswith("parse error")

    @property
    def undecided(self) -> bool:
        """Both sides parse but no answer came within budget (``error`` says which budget)."""
        return self.equivalent is None and not self.parse_error

    def to_json(self, line: int) -> dict:
        """The JSON object of the CLI contract (DESIGN.md), for input line ``line``."""
        return {"line": line, "equivalent": self.equivalent, "witness": self.witness, "error": self.error}


class DfaScorer:
    """Scores (gold, prediction) pairs by DFA equivalence, memoising compiled automata.

    Holds the budgets, one :class:`~.automaton.TermTable` (derivatives shared across regexes) and
    an LRU cache of at most ``cache_size`` compiled regexes. Not thread-safe: one per thread.
    """

    def __init__(
        self,
        max_states: int = _DEFAULT_MAX_STATES,
        time_budget_s: float = _DEFAULT_TIME_BUDGET_S,
        cache_size: int = 8192,
    ) -> None:
        self.max_states = max_states
        self.time_budget_s = time_budget_s
        self.cache_size = cache_size
        self._table = TermTable()
        # value: a minimised Dfa, a parse error, or the state budget a build failed under (int)
        self._cache: OrderedDict[str, Dfa | RegexParseError | int] = OrderedDict()

    # -- compiling ---------------------------------------------------------------------------
    def compile(
        self, regex: str, *, max_states: int | None = None, time_budget_s: float | None = None
    ) -> Dfa:
        """The minimised DFA of ``regex``. Raises RegexParseError or BudgetExceeded."""
        ms = self.max_states if max_states is None else max_states
        budget = self.time_budget_s if time_budget_s is None else time_budget_s
        return self._compiled(regex, ms, time.monotonic() + budget, budget)

    def _compiled(self, regex: str, max_states: int, deadline: float, budget: float) -> Dfa:
        cache = self._cache
        hit = cache.get(regex)
        if hit is not None:
            cache.move_to_end(regex)
            if isinstance(hit, Dfa):
                return hit
            if isinstance(hit, RegexParseError):
                raise RegexParseError(hit.message, hit.position)
            if max_states <= hit:
                raise BudgetExceeded("states", max_states)
        try:
            ast = parse(regex)
        except RegexParseError as e:
            self._store(regex, e)
            raise
        table = self._table
        table.maybe_reset()
        term = table.from_ast(ast)
        try:
            dfa = table.build_dfa(term, max_states, deadline, budget)
        except BudgetExceeded as e:
            if e.kind == "states":
                self._store(regex, max_states)
            raise
        dfa = dfa.minimise(deadline)
        self._store(regex, dfa)
        return dfa

    def _store(self, regex: str, value: Dfa | RegexParseError | int) -> None:
        self._cache[regex] = value
        self._cache.move_to_end(regex)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    # -- scoring -----------------------------------------------------------------------------
    def score(self, gold: str, pred: str) -> EquivResult:
        """Whether ``pred`` denotes the same language as ``gold`` (never raises)."""
        return self._compare(gold, pred, ("gold", "prediction"), self.max_states, self.time_budget_s)

    def score_many(self, pairs: list[tuple[str, str]]) -> list[EquivResult]:
        """:meth:`score` for each (gold, prediction) pair, in order."""
        return [self.score(g, p) for g, p in pairs]

    def _compare(self, a: str, b: str, names: tuple[str, str], max_states: int, budget: float) -> EquivResult:
        deadline = time.monotonic() + budget
        try:
            for name, regex in zip(names, (a, b), strict=True):
                try:
                    parse(regex)
                except RegexParseError as e:
                    return EquivResult(
                        None, None, f"parse error in {name} at position {e.position}: {e.message}"
                    )
            if a == b:
                return EquivResult(True, None, None)
            longest = max(len(a), len(b))
            if longest > MAX_REGEX_CHARS:
                # building terms of a regex this long is not interruptible by the clock (it can overrun
                # the budget by seconds); NL-RX regexes are under 100 characters
                return EquivResult(None, None, f"undecided: a regex of {longest} characters is longer than the "
                                   f"{MAX_REGEX_CHARS} this scorer decides within its budget")
            da = self._compiled(a, max_states, deadline, budget)
            db = self._compiled(b, max_states, deadline, budget)
            diff = find_difference(da, db, max_states, deadline, budget)
            if diff is None:
                return EquivResult(True, None, None)
            witness, in_a = diff
            return EquivResult(False, witness, None, "a" if in_a else "b")
        except BudgetExceeded as e:
            return EquivResult(None, None, f"undecided: {e}")
        except RecursionError:
            return EquivResult(None, None, "undecided: regex nested too deeply for this implementation")
        except MemoryError:
            return EquivResult(None, None, "undecided: out of memory")
        except Exception as e:  # noqa: BLE001 - a scorer must never crash an evaluation
            return EquivResult(None, None, f"internal error: {type(e).__name__}: {e}")


# A shared scorer for the module-level functions; the lock makes them safe to call from threads.
_LOCK = threading.RLock()

_DEFAULT = DfaScorer()


def equivalent(
    a: str, b: str, *, max_states: int = _DEFAULT_MAX_STATES, time_budget_s: float = _DEFAULT_TIME_BUDGET_S
) -> EquivResult:
    """Whether regexes ``a`` and ``b`` (NL-RX dialect, read as brics reads it) denote the same
    language. Never raises; see :class:`EquivResult`."""
    with _LOCK:
        return _DEFAULT._compare(a, b, ("A", "B"), max_states, time_budget_s)


def compile_regex(
    regex: str, *, max_states: int = _DEFAULT_MAX_STATES, time_budget_s: float = _DEFAULT_TIME_BUDGET_S
) -> Dfa:
    """The minimised DFA of ``regex``. Raises RegexParseError or BudgetExceeded."""
    with _LOCK:
        return _DEFAULT.compile(regex, max_states=max_states, time_budget_s=time_budget_s)


def matches(regex: str, s: str) -> bool:
    """Whether ``regex`` matches the whole of ``s`` (brics semantics; ``s`` is read as UTF-16 code
    units, so ``.`` matches half of an astral character). Raises RegexParseError."""
    ast = parse(regex)
    with _LOCK:
        table = _DEFAULT._table
        table.maybe_reset()
        return table.matches(table.from_ast(ast), to_code_units(s))


def is_empty_language(
    regex: str, *, max_states: int = _DEFAULT_MAX_STATES, time_budget_s: float = _DEFAULT_TIME_BUDGET_S
) -> bool:
    """Whether ``regex`` matches no string at all. Raises RegexParseError or BudgetExceeded."""
    return compile_regex(regex, max_states=max_states, time_budget_s=time_budget_s).is_empty()


def is_universal(
    regex: str, *, max_states: int = _DEFAULT_MAX_STATES, time_budget_s: float = _DEFAULT_TIME_BUDGET_S
) -> bool:
    """Whether ``regex`` matches every string. Raises RegexParseError or BudgetExceeded."""
    return compile_regex(regex, max_states=max_states, time_budget_s=time_budget_s).is_universal()


# ---------------------------------------------------------------------------------------------
# Benchmark helpers (for `jepa-audit bench`): model-like predictions and a timed scoring run
# ---------------------------------------------------------------------------------------------


def perturb_regex(gold: str, rng: random.Random) -> str:
    """A model-like answer for ``gold``: one small edit of a kind a model might make (a dropped
    character, a swapped class or word, an off-by-one count, ``\\b`` dropped, ``&`` for ``|``, a
    complement added or removed, a stray ``.*``, ``+`` for ``*``). Often still equivalent, often
    not, sometimes unparsable: the mix a scorer meets."""
    k = rng.randrange(8)
    if k == 0 and len(gold) > 1:
        i = rng.randrange(len(gold))
        return gold[:i] + gold[i + 1 :]
    if k == 1:
        return gold.replace("[a-z]", "[A-Za-z]", 1).replace("dog", "truck", 1)
    if k == 2:
        return re.sub(r"\{(\d+),\}", lambda m: f"{{{int(m.group(1)) + 1},}}", gold, count=1)
    if k == 3:
        return gold.replace("\\b", "")
    if k == 4:
        return gold.replace("|", "&", 1)
    if k == 5:
        return f"~({gold})" if not gold.startswith("~") else gold[1:]
    if k == 6:
        i = rng.randrange(len(gold) + 1)
        return gold[:i] + ".*" + gold[i:]
    return gold.replace("*", "+", 1)


def model_like_pairs(golds: list[str], seed: int = 0, p_same: float = 0.5) -> list[tuple[str, str]]:
    """(gold, prediction) pairs: the gold itself with probability ``p_same``, else a perturbation."""
    rng = random.Random(seed)
    return [(g, g if rng.random() < p_same else perturb_regex(g, rng)) for g in golds]


def time_scoring(pairs: list[tuple[str, str]], scorer: DfaScorer | None = None) -> dict:
    """Score ``pairs`` one by one and report: ``n``, ``wall_s``, ``cpu_s``, ``pairs_per_s`` (wall),
    ``p50_ms``/``p99_ms``/``max_ms`` per-pair wall latency, and the counts of True/False/None."""
    scorer = scorer or DfaScorer()
    lat: list[float] = []
    counts = {"equivalent": 0, "different": 0, "none": 0}
    w0, c0 = time.perf_counter(), time.process_time()
    for g, p in pairs:
        t = time.perf_counter()
        r = scorer.score(g, p)
        lat.append(time.perf_counter() - t)
        counts["equivalent" if r.equivalent else "different" if r.equivalent is False else "none"] += 1
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    lat.sort()
    n = len(pairs)
    return {
        "n": n,
        "wall_s": wall,
        "cpu_s": cpu,
        "pairs_per_s": n / wall if wall > 0 else float("inf"),
        "p50_ms": 1000 * lat[n // 2] if n else 0.0,
        "p99_ms": 1000 * lat[min(n - 1, int(0.99 * n))] if n else 0.0,
        "max_ms": 1000 * lat[-1] if n else 0.0,
        **counts,
    }


SWEEP_UNIT = "dog(cat|[0-9])*.x"  # literals, a group, a class, a star, a dot: what parsing has to handle


def length_sweep(lengths: tuple[int, ...] = (10_000, 25_000, 50_000, 100_000, 200_000), repeats: int = 2) -> dict:
    """Time ``parse`` and ``equivalent(A, A)`` (cold caches) on identical regexes of ``lengths`` characters
    (``SWEEP_UNIT`` repeated) and fit the exponent k of time ∝ length^k by least squares on the logs:
    k ≈ 1 is linear, 2 quadratic. Fastest of ``repeats`` per point. Keys: ``regex_sweep_chars``,
    ``regex_parse_s``, ``regex_equiv_s`` (lists, seconds), ``regex_parse_exponent``,
    ``regex_equiv_exponent``. For ``jepa-audit bench``; never asserted on."""
    import numpy as np

    parse_s, equiv_s, chars = [], [], []
    for n in lengths:
        a = SWEEP_UNIT * max(1, round(n / len(SWEEP_UNIT)))  # whole units: n ± half a unit characters
        b = "".join(list(a))  # an equal, distinct string object
        chars.append(len(a))
        best_p = best_e = float("inf")
        for _ in range(repeats):
            parse.cache_clear()
            t = time.perf_counter()
            parse(a)
            best_p = min(best_p, time.perf_counter() - t)
            parse.cache_clear()
            t = time.perf_counter()
            res = DfaScorer()._compare(a, b, ("A", "B"), _DEFAULT_MAX_STATES, _DEFAULT_TIME_BUDGET_S)
            best_e = min(best_e, time.perf_counter() - t)
            if res.equivalent is not True:
                raise RuntimeError(f"length sweep: {n} characters not found equivalent to themselves: {res.error}")
        parse_s.append(best_p)
        equiv_s.append(best_e)
    logn = np.log(np.asarray(chars, dtype=float))
    return {
        "regex_sweep_chars": chars,
        "regex_parse_s": parse_s,
        "regex_equiv_s": equiv_s,
        "regex_parse_exponent": float(np.polyfit(logn, np.log(parse_s), 1)[0]),
        "regex_equiv_exponent": float(np.polyfit(logn, np.log(equiv_s), 1)[0]),
    }


# ---------------------------------------------------------------------------------------------
# CLI: jepa-audit regex equiv A B [--json] | --pairs FILE [--json]
# ---------------------------------------------------------------------------------------------


def _printable(s: str) -> str:
    """``s`` with lone surrogates (which no output encoding accepts) as backslash escapes."""
    return s.encode("utf-8", "backslashreplace").decode("utf-8")


def _human(res: EquivResult) -> str:
    if res.equivalent is True:
        return "equivalent"
    if res.equivalent is False:
        side = "A" if res.witness_side == "a" else "B"
        shown = json.dumps(res.witness)  # quoted and escaped; "" for the empty string
        return f"different: {shown} is accepted by {side} only"
    return _printable(res.error or "undecided")


def _emit(line: int, res: EquivResult, as_json: bool, numbered: bool) -> None:
    if as_json:
        # ensure_ascii keeps any witness (lone surrogates included) printable on every terminal
        print(json.dumps(res.to_json(line)))
    elif numbered:
        print(f"{line}: {_human(res)}")
    else:
        print(_human(res))


def equiv_pairs_cli(a: str | None, b: str | None, pairs: Path | None, as_json: bool) -> int:
    """``jepa-audit regex equiv``: compare ``A B``, or every ``A<TAB>B`` line of ``pairs``.

    Prints one answer per pair (a JSON object per DESIGN.md with ``as_json``, else a human line)
    and returns the exit status: 0, or 2 when the pairs file cannot be read (or the arguments are
    not one of the two forms), with one error line on stderr naming the file.

    Pairs file: UTF-8 (a leading BOM is ignored), lines split on ``\\n`` only, a trailing ``\\r``
    dropped; each line splits at its first TAB. A line without a TAB gets an answer with
    ``equivalent`` null and an error, like any other bad input.
    """
    if pairs is None:
        if a is None or b is None:
            print("error: give two regexes A B, or --pairs FILE", file=sys.stderr)
            return 2
        _emit(0, equivalent(a, b), as_json, numbered=False)
        return 0
    if a is not None or b is not None:
        print("error: give either two regexes A B or --pairs FILE, not both", file=sys.stderr)
        return 2
    path = Path(pairs)
    try:
        with open(path, "rb") as f:
            for i, line, error in _pair_lines(f):
                if error is not None:
                    res = EquivResult(None, None, error)
                elif "\t" not in line:
                    res = EquivResult(None, None, "parse error: line has no TAB between two regexes")
                else:
                    x, y = line.split("\t", 1)
                    res = equivalent(x, y)
                _emit(i, res, as_json, numbered=True)
    except OSError as e:
        print(f"error: cannot read pairs file {path}: {e.strerror or e}", file=sys.stderr)
        return 2
    except _PairsFileError as e:
        print(f"error: cannot read pairs file {path}: {e}", file=sys.stderr)
        return 2
    return 0


class _PairsFileError(Exception):
    """The pairs file cannot be read on (not UTF-8, or no line end in sight)."""


def _pair_lines(f: BinaryIO) -> Iterator[tuple[int, str, str | None]]:
    """(0-based line number, text, per-line error) of a pairs file, streamed: memory is bounded by
    :data:`MAX_PAIR_LINE_BYTES` whatever the file (``/dev/zero`` included).

    Lines split on ``\\n`` only; a trailing ``\\r`` and a leading BOM are dropped. A line longer than the
    limit gets an error of its own and is skipped to its end; a file with no line end within
    :data:`MAX_SKIP_BYTES` after that, or a line that is not UTF-8, stops the reading with
    :class:`_PairsFileError`."""
    i = 0
    while True:
        raw = f.readline(MAX_PAIR_LINE_BYTES + 1)
        if not raw:
            return
        if len(raw) > MAX_PAIR_LINE_BYTES and not raw.endswith(b"\n"):
            yield i, "", f"line longer than {MAX_PAIR_LINE_BYTES:,} bytes: skipped"
            skipped = len(raw)
            while not raw.endswith(b"\n"):
                raw = f.readline(1 << 16)
                skipped += len(raw)
                if not raw:
                    return
                if skipped > MAX_SKIP_BYTES:
                    raise _PairsFileError(
                        f"line {i} has no line end within {MAX_SKIP_BYTES >> 20} MiB (not a text file of pairs?)"
                    )
            i += 1
            continue
        if raw.endswith(b"\n"):
            raw = raw[:-1]
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        try:
            text = raw.decode("utf-8-sig" if i == 0 else "utf-8")
        except UnicodeDecodeError as e:
            raise _PairsFileError(f"line {i} is not UTF-8 (bad byte at column {e.start})") from None
        yield i, text, None
        i += 1
