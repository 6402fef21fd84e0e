"""The embedded corpus: an NL-RX-style synchronous grammar of (description, regex) pairs.

NL-RX-Synth itself came from a synchronous grammar (Locascio et al., 2016); this module holds our own,
written after studying its 10,000 lines, so a fresh machine can run the audit with nothing downloaded.

What it holds
-------------
* **One tree, three renderings.** A sampled tree (:class:`_Node`) is rendered once as a regex and twice
  as English: the *synth* wording is canonical and systematic (one phrase per construction, as in
  NL-RX-Synth), the *turk* wording is a paraphrase (synonyms, reordered clauses, casual phrasing, dropped
  articles, occasional typos, as NL-RX-Turk paraphrases Synth line by line).  Both wordings share the
  regex, so the two benchmarks differ only in wording, as in NL-RX.
* **The NL-RX dialect only.** Regexes use ``| & ~ * + {n,} {n}``, ``.``, the five classes
  ``[AEIOUaeiou] [0-9] [A-Za-z] [A-Z] [a-z]``, literal words and ``\\b`` (a literal ``b`` in brics, which
  NL-RX writes around "words with ..."), and NL-RX's surface habits: operands of ``|``/``&`` in
  parentheses, ``X.*Y.*`` for "followed by", ``(X).*(Y).*`` for "before", ``(X)(.*)`` / ``(.*)(X)`` for
  "starting/ending with", ``.*X.*`` for "containing", ``~(X)`` for "not", ``(X){n,}`` for repetition.
  Strings are named in order of mention, ``dog``, ``truck``, ``ring``, ``lake``, exactly as in
  NL-RX-Synth (which never breaks that order), so at most four per line.
* **Consistency.** Unlike NL-RX (whose ``.*(A)|(B).*`` for "containing A or B" reads, by precedence,
  as ``.*A`` or ``B.*``), parentheses are added wherever precedence needs them, so every regex means
  what its description says under NL-RX's conventions.  The grammar is layered so that a synth
  description has exactly one parse: "before" binds loosest, then a repetition suffix
  (", 3 or more times") which applies to the whole or/and group before it, then "or"/"and", then
  "followed by" and unit modifiers ("not", "starting with", ...), which take a single primitive.
  Hence a synth description determines its regex (tested).
* **Determinism.** Everything comes from ``random.Random`` seeded with integers or strings (both stable
  across runs and platforms); the same seed gives the same list, byte for byte.

Public functions: :func:`generate_pairs` (tree → both wordings and the regex), :func:`generate`
(examples in one wording, with exclusion sets, for the pre-training pool), :func:`corpus_stats`.
"""

from __future__ import annotations

import bisect
import itertools
import random
import re
import statistics
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from jepa_audit.data.examples import DataError, Example

__all__ = [
    "GENERATOR_VERSION",
    "WORDS",
    "Pair",
    "corpus_stats",
    "generate",
    "generate_pairs",
    "regex_tokens",
]

#: Bumped whenever the grammar or a wording changes (it names the corpus in ``Splits.source``).
GENERATOR_VERSION = 1
#: String literals in order of mention, as NL-RX-Synth names them.
WORDS: tuple[str, ...] = ("dog", "truck", "ring", "lake")

Wording = Literal["synth", "turk", "mixed"]

# ------------------------------------------------------------------------------------------------------
# Primitives
# ------------------------------------------------------------------------------------------------------

#: kind → (regex atom, synth phrase). "word" is filled in per tree (dog, truck, ...).
_PRIM: dict[str, tuple[str, str]] = {
    "vowel": ("[AEIOUaeiou]", "a vowel"),
    "number": ("[0-9]", "a number"),
    "letter": ("[A-Za-z]", "a letter"),
    "capital": ("[A-Z]", "a capital letter"),
    "lower": ("[a-z]", "a lower-case letter"),
    "char": (".", "a character"),
}
# NL-RX-Synth mentions a string in ~31% of primitive slots; the six classes share the rest evenly.
_PRIM_KINDS = ("word", "vowel", "number", "letter", "capital", "lower", "char")
_PRIM_WEIGHTS = (0.26, 0.125, 0.125, 0.125, 0.12, 0.12, 0.125)

# Regex precedence levels (loosest first), as brics reads them; a bare word like ``dog`` is a concatenation.
_UNION, _INTER, _CONCAT, _POSTFIX, _ATOM = range(5)


class _Node:
    """A grammar node. ``op`` names the construction; ``kids`` are sub-nodes; ``arg`` its parameter.

    op ∈ prim (arg: kind), follow, not, ustart, uend, ucontain (one prim kid each, follow two),
    or, and (2-3 unit kids), rep (one group kid; arg: (lo, exact)), before (two item kids),
    top (one body kid; arg: (neg, pos, words)).  ``word`` is the literal of a "word" prim.
    """

    __slots__ = ("arg", "kids", "op", "word")

    def __init__(self, op: str, kids: tuple[_Node, ...] = (), arg: Any = None) -> None:
        self.op, self.kids, self.arg, self.word = op, kids, arg, ""

    def prims(self) -> Iterable[_Node]:
        """Primitive leaves in order of mention (description order = regex order)."""
        if self.op == "prim":
            yield self
        for k in self.kids:
            yield from k.prims()


# ------------------------------------------------------------------------------------------------------
# Sampling: weights chosen so operator shares land near NL-RX-Synth's (measured in docs/data.md)
# ------------------------------------------------------------------------------------------------------

_P_NEG = 0.10  # frame negation: "lines not having ..."
_POS = ("with", "having", "containing", "starting", "ending")
_POS_WEIGHTS = (0.50, 0.09, 0.17, 0.12, 0.12)
_P_WORDS = 0.19  # "... words with ...": NL-RX-Synth has \b in 19% of lines
_P_BEFORE = 0.40  # NL-RX-Synth: "before" in 43% of lines (our dedup by regex favours longer ones)
_P_REP = 0.26
_GROUP = ("unit", "or2", "or3", "and2", "and3")
_GROUP_WEIGHTS = (0.55, 0.17, 0.09, 0.12, 0.07)
_UNIT = ("prim", "follow", "not", "ustart", "uend", "ucontain")
_UNIT_WEIGHTS = (0.72, 0.15, 0.05, 0.03, 0.03, 0.02)
_MAX_REGEX_CHARS = 44  # NL-RX-Synth: max 54, 90th percentile 36
_MIN_REGEX_CHARS = 6
_MAX_DESC_WORDS = 21  # NL-RX-Synth: max 21


def _cum(weights: Sequence[float]) -> tuple[float, ...]:
    return tuple(itertools.accumulate(weights))


def _pick(rng: random.Random, population: Sequence[str], cum: tuple[float, ...]) -> str:
    """Weighted choice with precomputed cumulative weights (``random.choices`` rebuilds them per call,
    which dominated generation time)."""
    return population[bisect.bisect(cum, rng.random() * cum[-1])]


_PRIM_CUM = _cum(_PRIM_WEIGHTS)
_POS_CUM = _cum(_POS_WEIGHTS)
_GROUP_CUM = _cum(_GROUP_WEIGHTS)
_UNIT_CUM = _cum(_UNIT_WEIGHTS)


class _Sampler:
    """Samples one tree. Holds the frame (negated? which position?) and the classes used so far, since
    NL-RX-Synth never names one character class twice in a line (each class occurs at most once per
    regex there); strings may repeat, as they get new names (dog, truck, ...)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.neg = rng.random() < _P_NEG
        self.pos = _pick(rng, _POS, _POS_CUM)
        self.words = rng.random() < _P_WORDS
        self.used: set[str] = set()

    def prim(self) -> _Node:
        while True:
            kind = _pick(self.rng, _PRIM_KINDS, _PRIM_CUM)
            if kind == "word" or kind not in self.used:
                self.used.add(kind)
                return _Node("prim", arg=kind)

    def unit(self, first: bool) -> _Node:
        while True:
            op = _pick(self.rng, _UNIT, _UNIT_CUM)
            # Why the exclusions: "lines with starting with ..." reads badly, and a unit modifier under a
            # starting/ending/containing frame ("lines ending with a letter or ending with ...") blurs
            # which part the frame takes; "not" under a negated frame is a double negative. NL-RX-Synth
            # has all of these; we keep the wording unambiguous instead.
            if op in ("ustart", "uend", "ucontain") and (
                first or self.pos in ("starting", "ending", "containing")
            ):
                continue
            if op == "not" and (self.neg or first):
                continue
            break
        if op == "prim":
            return self.prim()
        if op == "follow":
            return _Node("follow", (self.prim(), self.prim()))
        return _Node(op, (self.prim(),))

    def group(self, first: bool) -> _Node:
        kind = _pick(self.rng, _GROUP, _GROUP_CUM)
        if kind == "unit":
            return self.unit(first)
        kids = tuple(self.unit(first and i == 0) for i in range(int(kind[-1])))
        return _Node(kind[:-1], kids)

    def item(self, first: bool) -> _Node:
        rng = self.rng
        g = self.group(first)
        if rng.random() >= _P_REP:
            return g
        r = rng.random()
        if r < 0.60:
            arg = (rng.randint(2, 7), False)  # NL-RX-Synth uses {2,} .. {7,} about equally
        elif r < 0.79:
            arg = (1, False)  # "at least once" → +
        elif r < 0.96:
            arg = (0, False)  # "zero or more times" → *
        else:
            arg = (rng.randint(2, 5), True)  # "exactly n times" → {n}: not in NL-RX, but in the dialect
        return _Node("rep", (g,), arg)

    def tree(self) -> _Node:
        first = self.item(True)
        body = _Node("before", (first, self.item(False))) if self.rng.random() < _P_BEFORE else first
        return _Node("top", (body,), (self.neg, self.pos, self.words))


def _tree(rng: random.Random) -> _Node:
    return _Sampler(rng).tree()


# ------------------------------------------------------------------------------------------------------
# Regex rendering
# ------------------------------------------------------------------------------------------------------


def _rx(n: _Node) -> tuple[str, int]:
    """Regex text and its precedence level."""
    op = n.op
    if op == "prim":
        if n.arg == "word":
            return n.word, _CONCAT
        return _PRIM[n.arg][0], _ATOM
    if op == "follow":
        return f"{_rx(n.kids[0])[0]}.*{_rx(n.kids[1])[0]}.*", _CONCAT
    if op == "not":
        return f"~({_rx(n.kids[0])[0]})", _POSTFIX
    if op == "ustart":
        return f"({_rx(n.kids[0])[0]})(.*)", _CONCAT
    if op == "uend":
        return f"(.*)({_rx(n.kids[0])[0]})", _CONCAT
    if op == "ucontain":
        return f".*{_rx(n.kids[0])[0]}.*", _CONCAT
    if op in ("or", "and"):
        sep, lvl = ("|", _UNION) if op == "or" else ("&", _INTER)
        return sep.join(f"({_rx(k)[0]})" for k in n.kids), lvl
    if op == "rep":
        lo, exact = n.arg
        suffix = "*" if lo == 0 else "+" if lo == 1 and not exact else f"{{{lo}}}" if exact else f"{{{lo},}}"
        return f"({_rx(n.kids[0])[0]}){suffix}", _POSTFIX
    if op == "before":
        return f"({_rx(n.kids[0])[0]}).*({_rx(n.kids[1])[0]}).*", _CONCAT
    if op == "top":
        neg, pos, words = n.arg
        s, lvl = _rx(n.kids[0])
        if words:
            # A primitive is parenthesised as NL-RX writes operands (`\b(dog)\b`); a union/intersection
            # must be, or `\b` would bind to its first/last operand only.
            bare = lvl in (_CONCAT, _POSTFIX) and n.kids[0].op != "prim"
            s = f"\\b{s}\\b" if bare else f"\\b({s})\\b"
            lvl = _CONCAT
        if pos == "containing":
            s, lvl = (f".*({s}).*" if lvl < _CONCAT else f".*{s}.*"), _CONCAT
        elif pos == "starting":
            s, lvl = f"({s})(.*)", _CONCAT
        elif pos == "ending":
            s, lvl = f"(.*)({s})", _CONCAT
        if neg:
            s, lvl = f"~({s})", _POSTFIX
        return s, lvl
    raise AssertionError(op)


# ------------------------------------------------------------------------------------------------------
# Synth wording: one phrase per construction
# ------------------------------------------------------------------------------------------------------

_NUM_WORDS = {0: "zero", 1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven"}


def _synth(n: _Node) -> str:
    op = n.op
    if op == "prim":
        return f"the string '{n.word}'" if n.arg == "word" else _PRIM[n.arg][1]
    k = [_synth(c) for c in n.kids]
    if op == "follow":
        return f"{k[0]} followed by {k[1]}"
    if op == "not":
        return f"not {k[0]}"
    if op == "ustart":
        return f"starting with {k[0]}"
    if op == "uend":
        return f"ending with {k[0]}"
    if op == "ucontain":
        return f"containing {k[0]}"
    if op == "or":
        return f"{k[0]} or {k[1]}" if len(k) == 2 else f"either {k[0]}, {k[1]}, or {k[2]}"
    if op == "and":
        return f"{k[0]} and {k[1]}" if len(k) == 2 else f"{k[0]}, {k[1]}, and {k[2]}"
    if op == "rep":
        lo, exact = n.arg
        if exact:
            return f"{k[0]}, exactly {lo} times"
        if lo == 0:
            return f"{k[0]}, zero or more times"
        if lo == 1:
            return f"{k[0]} at least once"
        return f"{k[0]}, {lo} or more times"
    if op == "before":
        return f"{k[0]} before {k[1]}"
    if op == "top":
        neg, pos, words = n.arg
        frame = {
            "with": "with",
            "having": "having",
            "containing": "containing",
            "starting": "starting with",
            "ending": "ending with",
        }[pos]
        if neg:
            frame = "not having" if pos in ("with", "having") else f"not {frame}"
        return f"lines {frame} {'words with ' if words else ''}{k[0]}"
    raise AssertionError(op)


# ------------------------------------------------------------------------------------------------------
# Turk-like wording: synonyms, reordered clauses, casual phrasing, dropped articles, typos
# ------------------------------------------------------------------------------------------------------

# Synonym sets stay disjoint across constructions whose regexes differ ("then" only for "followed by",
# "preceding" only for "before", "contain" only for "containing"), so a careful reader can still recover
# the exact regex, as from a good NL-RX-Turk line.
_T_PRIM: dict[str, tuple[str, ...]] = {
    "vowel": ("a vowel", "a vowel", "a vowel", "vowel", "a vowel character"),
    "number": ("a number", "a number", "a numeral", "a digit", "number"),
    "letter": ("a letter", "a letter", "a letter", "letter", "a letter of the alphabet"),
    "capital": (
        "a capital letter",
        "an uppercase letter",
        "an upper-case letter",
        "a capital",
        "capital letter",
    ),
    "lower": (
        "a lower-case letter",
        "a lowercase letter",
        "a small letter",
        "a lower case letter",
        "lower-case letter",
    ),
    "char": ("a character", "a character", "any character", "character", "a symbol"),
}
_T_WORD = ("the string '{w}'", "the string '{w}'", "'{w}'", "the word '{w}'", '"{w}"', "string '{w}'")
_T_FRAME: dict[tuple[bool, str], tuple[str, ...]] = {
    (False, "with"): ("with", "with", "that have", "which have", "having", "featuring"),
    (False, "having"): ("having", "with", "that have", "which have"),
    (False, "containing"): (
        "containing",
        "containing",
        "that contain",
        "which contain",
        "including",
        "that include",
    ),
    (False, "starting"): (
        "starting with",
        "that start with",
        "beginning with",
        "which begin with",
        "that begin with",
    ),
    (False, "ending"): (
        "ending with",
        "that end with",
        "ending in",
        "which end with",
        "finishing with",
        "terminating in",
    ),
    (True, "with"): ("without", "not having", "that do not have", "that don't have", "lacking"),
    (True, "having"): ("without", "not having", "that do not have", "that don't have"),
    (True, "containing"): (
        "not containing",
        "that do not contain",
        "that don't contain",
        "which don't include",
    ),
    (True, "starting"): ("not starting with", "that do not start with", "that don't begin with"),
    (True, "ending"): ("not ending with", "that do not end with", "that don't end in"),
}
_T_WORDS = ("words with", "words with", "words that have", "words having", "a word with")
_ARTICLE = re.compile(r"^(a|an|the) ")


def _bare(phrase: str) -> str:
    """Drop a leading article ("a vowel" → "vowel"), as NL-RX-Turk writers often do."""
    return _ARTICLE.sub("", phrase, count=1)


def _turk(n: _Node, rng: random.Random) -> str:
    op = n.op
    ch = rng.choice
    if op == "prim":
        if n.arg == "word":
            return ch(_T_WORD).format(w=n.word)
        return ch(_T_PRIM[n.arg])
    k = [_turk(c, rng) for c in n.kids]
    if op == "follow":
        return ch(
            (
                f"{k[0]} followed by {k[1]}",
                f"{k[0]} followed by {k[1]}",
                f"{k[0]} then {k[1]}",
                f"{k[0]} and then {k[1]}",
                f"{k[1]} preceded by {k[0]}",
            )
        )
    if op == "not":
        return ch((f"not {k[0]}", f"not {k[0]}", f"no {_bare(k[0])}", f"anything but {k[0]}"))
    if op == "ustart":
        return ch((f"starting with {k[0]}", f"beginning with {k[0]}", f"that starts with {k[0]}"))
    if op == "uend":
        return ch((f"ending with {k[0]}", f"ending in {k[0]}", f"that ends with {k[0]}"))
    if op == "ucontain":
        return ch((f"containing {k[0]}", f"that contains {k[0]}"))
    if op == "or":
        if len(k) == 2:
            return ch((f"{k[0]} or {k[1]}", f"{k[0]} or {k[1]}", f"either {k[0]} or {k[1]}"))
        return ch(
            (
                f"either {k[0]}, {k[1]}, or {k[2]}",
                f"{k[0]}, {k[1]}, or {k[2]}",
                f"{k[0]}, {k[1]} or {k[2]}",
                f"{k[0]} or {k[1]} or {k[2]}",
            )
        )
    if op == "and":
        if len(k) == 2:
            return ch(
                (
                    f"{k[0]} and {k[1]}",
                    f"{k[0]} and {k[1]}",
                    f"both {k[0]} and {k[1]}",
                    f"{k[0]} as well as {k[1]}",
                    f"{k[0]} along with {k[1]}",
                )
            )
        return ch(
            (
                f"{k[0]}, {k[1]}, and {k[2]}",
                f"{k[0]}, {k[1]} and {k[2]}",
                f"{k[0]}, {k[1]}, as well as {k[2]}",
            )
        )
    if op == "rep":
        lo, exact = n.arg
        g = k[0]
        if exact:
            return ch(
                (
                    f"{g}, exactly {lo} times",
                    f"{g} exactly {lo} times",
                    f"{g} precisely {_NUM_WORDS[lo]} times",
                )
            )
        if lo == 0:
            return ch(
                (
                    f"{g}, zero or more times",
                    f"{g} zero or more times",
                    f"{g} any number of times",
                    f"zero or more of {g}",
                )
            )
        if lo == 1:
            return ch(
                (f"{g} at least once", f"{g} one or more times", f"{g}, once or more", f"one or more of {g}")
            )
        return ch(
            (
                f"{g}, {lo} or more times",
                f"{g} at least {lo} times",
                f"{g} {_NUM_WORDS[lo]} or more times",
                f"{g}, {lo} times or more",
                f"{g} repeated at least {lo} times",
                f"{lo} or more of {g}",
            )
        )
    if op == "before":
        return ch(
            (
                f"{k[0]} before {k[1]}",
                f"{k[0]} before {k[1]}",
                f"{k[0]} preceding {k[1]}",
                f"{k[0]} prior to {k[1]}",
                f"{k[1]} after {k[0]}",
                f"{k[0]} coming before {k[1]}",
            )
        )
    if op == "top":
        neg, pos, words = n.arg
        noun = "items" if rng.random() < 0.1 else "lines"
        body = k[0]
        if words:
            body = f"{ch(_T_WORDS)} {body}"
        if not neg and pos in ("starting", "ending") and rng.random() < 0.2:
            # Reordered clause: the position moves behind its object.
            where = "at the start" if pos == "starting" else "at the end"
            s = f"{noun} with {body} {where}"
        else:
            s = f"{noun} {ch(_T_FRAME[(neg, pos)])} {body}"
            if not neg and pos in ("with", "having", "containing") and rng.random() < 0.08:
                s += " in them"
        return s
    raise AssertionError(op)


_TYPO_WORD = re.compile(r"(?<!['\"\w])[a-z]{4,}(?![\w'\"])")


def _typo(s: str, rng: random.Random) -> str:
    """One casual typo in an unquoted word of 4+ letters (never inside a quoted string, whose regex
    literal must stay recoverable): swap two neighbours, drop a letter or double one."""
    # The lookarounds of _TYPO_WORD skip quoted strings; "lines"/"items" stay intact so the frame
    # remains recognisable.
    spans = [m.span() for m in _TYPO_WORD.finditer(s) if m.group() not in ("lines", "items")]
    if not spans:
        return s
    a, b = rng.choice(spans)
    w = s[a:b]
    i = rng.randrange(1, len(w) - 1)  # never the first or last letter, as in most real typos
    kind = rng.randrange(3)
    if kind == 0:
        w2 = w[:i] + w[i + 1] + w[i] + w[i + 2 :]
    elif kind == 1:
        w2 = w[:i] + w[i + 1 :]
    else:
        w2 = w[:i] + w[i] + w[i:]
    return s[:a] + w2 + s[b:]


def _turk_text(tree: _Node, rng: random.Random) -> str:
    s = _turk(tree, rng)
    s = re.sub(r"\s+", " ", s).strip()
    if rng.random() < 0.08:
        s = _typo(s, rng)
    if rng.random() < 0.12:
        s = s[0].upper() + s[1:]
    if rng.random() < 0.06:
        s += "."
    return s


# ------------------------------------------------------------------------------------------------------
# Generation
# ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pair:
    """One generated pair in both wordings. ``synth`` and ``turk`` describe the same ``regex``."""

    synth: str
    turk: str
    regex: str


def _sample(rng: random.Random) -> tuple[_Node, str, str]:
    """Sample a tree within NL-RX's size range; name its strings; return (tree, regex, synth text)."""
    while True:
        tree = _tree(rng)
        prims = [p for p in tree.prims() if p.arg == "word"]
        if len(prims) > len(WORDS):
            continue
        for p, w in zip(prims, WORDS, strict=False):
            p.word = w
        regex = _rx(tree)[0]
        if not _MIN_REGEX_CHARS <= len(regex) <= _MAX_REGEX_CHARS:
            continue
        text = _synth(tree)
        if len(text.split()) > _MAX_DESC_WORDS:
            continue
        return tree, regex, text


@lru_cache(maxsize=16)
def _pairs_cached(n: int, seed: int, exclude: frozenset[str]) -> tuple[Pair, ...]:
    rng = random.Random(seed)
    # A separate stream for the paraphrases, so the trees (and the synth wording) do not depend on how
    # many draws a paraphrase took; consumed in row order, so the corpus is prefix-stable in n.
    turk_rng = random.Random(f"turk/{seed}")
    out: list[Pair] = []
    seen: set[str] = set(exclude)
    attempts, limit = 0, 200 * n + 10_000
    while len(out) < n:
        attempts += 1
        if attempts > limit:
            raise DataError(
                f"embedded generator (seed {seed}): found only {len(out)} distinct regexes of the {n} asked "
                f"for after {limit} draws; ask for fewer pairs"
            )
        tree, regex, text = _sample(rng)
        # Distinct regexes: no regex repeats inside a corpus, so no test regex is also a train regex.
        if regex in seen:
            continue
        seen.add(regex)
        out.append(Pair(synth=text, turk=_turk_text(tree, turk_rng), regex=regex))
    return tuple(out)


def generate_pairs(n: int, seed: int, exclude_regexes: Collection[str] = ()) -> list[Pair]:
    """``n`` pairs with distinct regexes, none in ``exclude_regexes``; deterministic in ``seed``.

    Row i's ``synth`` and ``turk`` wordings describe the same regex (the same tree).
    """
    if n < 0:
        raise DataError(f"embedded generator: n must be >= 0, got {n}")
    return list(_pairs_cached(n, seed, frozenset(exclude_regexes)))


def generate(
    n: int,
    seed: int,
    wording: Wording = "synth",
    *,
    exclude_regexes: Collection[str] = (),
    exclude_pairs: Collection[tuple[str, str]] = (),
) -> list[Example]:
    """``n`` examples (``idx`` 0..n-1) in one wording: ``synth``, ``turk`` or ``mixed`` (each row picks
    synth or turk wording with probability 1/2 from a seeded stream).

    Regexes are distinct and avoid ``exclude_regexes``; no (nl, regex) pair is in ``exclude_pairs``.
    """
    if wording not in ("synth", "turk", "mixed"):
        raise DataError(f"embedded generator: wording must be synth, turk or mixed, got {wording!r}")
    bad_pairs = set(exclude_pairs)
    pick = random.Random(f"mix/{seed}")
    out: list[Example] = []
    # Over-generate in rounds: the excluded pairs are rare, so one extra round almost always suffices.
    want = n
    while True:
        pairs = generate_pairs(want + 16, seed, exclude_regexes)
        out.clear()
        for p in pairs:
            if wording == "synth":
                nl = p.synth
            elif wording == "turk":
                nl = p.turk
            else:
                nl = p.synth if pick.random() < 0.5 else p.turk
            if (nl, p.regex) in bad_pairs:
                continue
            out.append(Example(prompt=nl, target=p.regex, idx=len(out)))
            if len(out) == n:
                return out
        want = 2 * want + 16
        pick = random.Random(f"mix/{seed}")


# ------------------------------------------------------------------------------------------------------
# Statistics (used for docs/data.md: embedded corpus vs NL-RX-Synth)
# ------------------------------------------------------------------------------------------------------

_CLASSES = ("[AEIOUaeiou]", "[0-9]", "[A-Za-z]", "[A-Z]", "[a-z]")
_TOKEN = re.compile(r"\\.|\[[^\]]*\]|\{\d+,?\d*\}|\.\*|[A-Za-z]+|.", re.S)


def regex_tokens(regex: str) -> list[str]:
    """Split an NL-RX regex into dialect tokens: ``\\b``, a ``[...]`` class, ``{n,}``/``{n}``, ``.*``,
    a literal word (a run of letters), or one character (``( ) | & ~ * + .``)."""
    return _TOKEN.findall(regex)


def _summary(xs: Sequence[float]) -> dict[str, float]:
    if not xs:
        return {"mean": 0.0, "median": 0.0, "p10": 0.0, "p90": 0.0, "min": 0.0, "max": 0.0}
    s = sorted(xs)
    return {
        "mean": round(statistics.fmean(s), 2),
        "median": float(statistics.median(s)),
        "p10": float(s[int(0.1 * (len(s) - 1))]),
        "p90": float(s[int(0.9 * (len(s) - 1))]),
        "min": float(s[0]),
        "max": float(s[-1]),
    }


def _language_checker() -> Any:
    """``regex → (is_empty, is_universal)`` from :mod:`jepa_audit.regex`, or None if it is unavailable."""
    try:
        from jepa_audit.regex import compile_regex
    except ImportError:
        return None

    def check(regex: str) -> tuple[bool, bool]:
        dfa = compile_regex(regex)  # one minimised DFA answers both questions
        return bool(dfa.is_empty()), bool(dfa.is_universal())

    return check


def corpus_stats(examples: Sequence[Example], *, languages: bool = True) -> dict[str, Any]:
    """Descriptive statistics of a list of pairs.

    Keys: ``n``; ``distinct_regexes``/``distinct_descriptions``; ``desc_chars``, ``desc_words``,
    ``regex_chars`` (mean, median, p10, p90, min, max); ``operators``: for each dialect token kind the
    share of regexes holding it and its mean count per regex (``|``, ``&``, ``~``, ``*``, ``+``,
    ``{n,}``, ``{n}``, ``.*``, ``.`` (any character outside ``.*``), ``\\b``, the five classes and
    ``word``); ``share_word_boundary``, ``share_complement``, ``share_intersection``, ``share_union``;
    ``empty_language_share`` and ``universal_language_share`` (fractions of the regexes whose
    language is empty / all strings, via ``jepa_audit.regex`` (the same DFA ``is_empty_language`` builds); ``None`` when
    ``languages`` is false or that function is unavailable) and ``language_undecided`` (count).
    """
    n = len(examples)
    regexes = [e.target for e in examples]
    kinds = ("|", "&", "~", "*", "+", "{n,}", "{n}", ".*", ".", "\\b", *_CLASSES, "word")
    counts: dict[str, list[int]] = {k: [0] * n for k in kinds}
    for i, r in enumerate(regexes):
        for t in regex_tokens(r):
            if t.startswith("{"):
                k = "{n,}" if "," in t else "{n}"
            elif t == ".*":
                counts["*"][i] += 1  # the star of ".*" is a Kleene star too
                k = ".*"
            elif t[0].isalpha():
                k = "word"
            else:
                k = t
            if k in counts:
                counts[k][i] += 1
    ops = {
        k: {
            "share": round(sum(c > 0 for c in v) / n, 4) if n else 0.0,
            "per_regex": round(sum(v) / n, 3) if n else 0.0,
        }
        for k, v in counts.items()
    }
    out: dict[str, Any] = {
        "n": n,
        "distinct_regexes": len(set(regexes)),
        "distinct_descriptions": len({e.prompt for e in examples}),
        "desc_chars": _summary([len(e.prompt) for e in examples]),
        "desc_words": _summary([len(e.prompt.split()) for e in examples]),
        "regex_chars": _summary([len(r) for r in regexes]),
        "operators": ops,
        "share_word_boundary": ops["\\b"]["share"],
        "share_complement": ops["~"]["share"],
        "share_intersection": ops["&"]["share"],
        "share_union": ops["|"]["share"],
        "empty_language_share": None,
        "universal_language_share": None,
        "language_undecided": None,
    }
    check = _language_checker() if languages else None
    if check is not None and n:
        empty = universal = undecided = 0
        for r in regexes:
            try:
                e, u = check(r)
            except Exception:  # a budget or parse failure is counted as undecided, not fatal
                undecided += 1
                continue
            empty += e
            universal += u
        decided = n - undecided
        out["empty_language_share"] = round(empty / decided, 4) if decided else None
        out["universal_language_share"] = round(universal / decided, 4) if decided else None
        out["language_undecided"] = undecided
    return out
