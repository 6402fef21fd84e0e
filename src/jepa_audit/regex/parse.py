"""Parse the NL-RX regex dialect exactly as dk.brics.automaton 1.11 reads it.

The grammar is brics' ``RegExp`` with its default flags (``ALL``), loosest first::

    union    := inter ( '|' inter )*
    inter    := concat ( '&' concat )*
    concat   := repeat+                      (stops before ')', '|', '&' or the end)
    repeat   := compl ( '*' | '+' | '?' | '{n}' | '{n,}' | '{n,m}' )*
    compl    := '~' compl | charclass
    charclass:= '[' '^'? classitems ']' | simple
    simple   := '.' | '#' | '@' | '"' chars '"' | '(' ')' | '(' union ')' | '<' chars '>' | charexp
    charexp  := '\\'? any-character

What this module holds (every dialect decision; ``docs/regex.md`` repeats them):

* **Characters are UTF-16 code units**, as Java ``char`` is: the universe is U+0000..U+FFFF and a
  character outside the BMP is two units (a surrogate pair). ``.`` matches one unit, so ``.`` does
  not match "😀" but ``..`` does, and ``[😀]`` is a class of two surrogates. This is what brics
  does; it keeps every answer in agreement with it.
* ``\\x`` is always the literal ``x``: ``\\b`` is a literal ``b`` (not a word boundary), ``\\d`` a
  literal ``d``, ``\\\\`` a backslash. The published NL-RX numbers were computed that way.
* A metacharacter where an operand is expected is a literal: ``)a``, ``|a``, ``*a``, ``{3}``;
  ``a||b`` is ``a`` or ``|b``; ``a&&b`` is ``a`` and ``&b``.
* ``~`` binds tighter than the postfix operators: ``~a*`` is ``(~a)*``, ``~dog`` is ``(~d)og``.
  ``~~X`` is ``X`` (the AST keeps at most one complement per chain; the languages are equal).
* ``[`` opens a class that runs to the next unescaped ``]`` whatever lies between, so
  ``([A-Z)|([0-9])`` holds the class ``[A-Z)|([0-9]``. The first item after ``[`` (or ``[^``) is
  always a character, so ``[]a]`` is the class of ``]`` and ``a``; ``[]`` and ``[^]`` are errors.
  ``x-]`` at the end of a class is ``x`` and ``-``. ``[^...]`` is one character not in the class.
* A reversed range ``[9-0]`` and a reversed count ``{3,2}`` are valid and denote the empty language.
  ``()`` and the empty regex denote the empty string.
* Counts are decimal integers up to 2**31-1 (Java ``int``); larger ones are parse errors, as in
  brics (``NumberFormatException``). ``{,n}``, ``{}``, ``{x}``, an unclosed ``{n`` are errors.
* brics' default-flag specials are kept: ``#`` is the empty language, ``@`` is any string,
  ``"..."`` is a quoted literal string, and ``<lo-hi>`` is a decimal numeric interval read as brics
  reads it (``<5-10>``: any digit string whose value lies in 5..10, leading zeros allowed; when both
  bounds are written with the same number of digits, ``<05-10>``, exactly that many digits).
  ``<name>`` is an automaton reference, which brics cannot resolve without a provider: a parse error.
  None of these occurs in NL-RX.
* Errors brics raises are :class:`RegexParseError` here, with the position (a Python string index
  into the regex as given): a trailing ``|``/``&``/``~``, a trailing ``\\``, ``(a|``, ``(a``, ``a)``,
  ``[a``, ``"ab``, ``<1-2``.
* Resource limits of this implementation, not of brics: nesting deeper than :data:`MAX_DEPTH`
  (parentheses, postfix operators and complements together) is a :class:`RegexParseError` whose
  message says it is a limit. brics itself would overflow its Java stack somewhat deeper.

The parser is a hand-written recursive descent that mirrors brics' methods one for one, but loops
where brics recurses on an associative operator, so only parentheses recurse.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

__all__ = [
    "MAX_CODE_UNIT",
    "MAX_DEPTH",
    "AnyString",
    "CharSet",
    "Complement",
    "Concat",
    "Empty",
    "Inter",
    "Literal",
    "Node",
    "NumInterval",
    "RegexParseError",
    "Repeat",
    "Union",
    "parse",
    "to_code_units",
]

#: The largest character (UTF-16 code unit); the universe of characters is 0..MAX_CODE_UNIT.
MAX_CODE_UNIT = 0xFFFF
#: Deepest nesting this parser accepts (a resource limit that keeps recursion far from Python's).
MAX_DEPTH = 100
#: Java's Integer.MAX_VALUE: brics parses counts and interval bounds with Integer.parseInt.
_JAVA_INT_MAX = 2**31 - 1


class RegexParseError(ValueError):
    """A regex the NL-RX dialect (brics) rejects.

    Holds ``message`` (what was expected) and ``position``, a 0-based index into the regex string
    as the caller gave it (for a regex made only of BMP characters, also brics' position).
    """

    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"{message} at position {position}")
        self.message = message
        self.position = position


# ---------------------------------------------------------------------------------------------
# AST. Frozen, hashable, compared by value. Characters are UTF-16 code units (ints).
# ---------------------------------------------------------------------------------------------


class Node:
    """Base of the AST nodes; each node is an immutable value."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Empty(Node):
    """The empty language (``#``, a reversed range or count)."""


@dataclass(frozen=True, slots=True)
class AnyString(Node):
    """Every string (``@``)."""


@dataclass(frozen=True, slots=True)
class CharSet(Node):
    """One character from a set: sorted, disjoint, non-adjacent inclusive code-unit ranges.

    ``.`` is ``CharSet(((0, 0xFFFF),))``; a reversed range gives the empty set ``CharSet(())``.
    """

    ranges: tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True)
class Literal(Node):
    """A fixed string of code units (a run of plain characters, ``"..."``, or ``()`` as ``""``)."""

    units: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Concat(Node):
    """Concatenation of two or more parts."""

    parts: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Union(Node):
    """Union (``|``) of two or more parts."""

    parts: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Inter(Node):
    """Intersection (``&``) of two or more parts."""

    parts: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Complement(Node):
    """Every string (over all code units) that ``operand`` rejects (``~``)."""

    operand: Node


@dataclass(frozen=True, slots=True)
class Repeat(Node):
    """``operand`` repeated ``lo`` to ``hi`` times; ``hi is None`` means unbounded.

    ``*`` is (0, None), ``+`` is (1, None), ``?`` is (0, 1). ``hi < lo`` is kept as written and
    denotes the empty language.
    """

    operand: Node
    lo: int
    hi: int | None


@dataclass(frozen=True, slots=True)
class NumInterval(Node):
    """brics' ``<lo-hi>``: digit strings whose value is in lo..hi.

    ``digits > 0``: exactly that many digits (zero-padded); ``digits == 0``: any number of leading
    zeros. ``lo <= hi`` always (brics swaps reversed bounds).
    """

    lo: int
    hi: int
    digits: int


def to_code_units(s: str) -> str:
    """Return ``s`` as a string of UTF-16 code units (astral characters become surrogate pairs).

    Python strings may hold lone surrogates, so each character of the result is one Java ``char``.
    """
    if not s or max(s) < "\U00010000":
        return s  # the common case: nothing outside the BMP, units == characters
    out: list[str] = []
    for ch in s:
        cp = ord(ch)
        if cp > 0xFFFF:
            cp -= 0x10000
            out.append(chr(0xD800 + (cp >> 10)))
            out.append(chr(0xDC00 + (cp & 0x3FF)))
        else:
            out.append(ch)
    return "".join(out)


def from_code_units(units: list[int] | tuple[int, ...]) -> str:
    """Turn code units back into a Python string, joining valid surrogate pairs into one character.

    Lone surrogates stay lone surrogates (a string brics can hold but UTF-8 cannot).
    """
    raw = "".join(map(chr, units))
    if not any(0xD800 <= u <= 0xDFFF for u in units):
        return raw
    return raw.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")


def _ranges_union(ranges: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """Normalise inclusive ranges: drop reversed ones, sort, merge overlapping and adjacent ones."""
    rs = sorted(r for r in ranges if r[0] <= r[1])
    out: list[list[int]] = []
    for lo, hi in rs:
        if out and lo <= out[-1][1] + 1:
            if hi > out[-1][1]:
                out[-1][1] = hi
        else:
            out.append([lo, hi])
    return tuple((a, b) for a, b in out)


def _ranges_complement(ranges: tuple[tuple[int, int], ...]) -> tuple[tuple[int, int], ...]:
    """The complement of normalised ranges within 0..MAX_CODE_UNIT."""
    out: list[tuple[int, int]] = []
    nxt = 0
    for lo, hi in ranges:
        if lo > nxt:
            out.append((nxt, lo - 1))
        nxt = hi + 1
    if nxt <= MAX_CODE_UNIT:
        out.append((nxt, MAX_CODE_UNIT))
    return tuple(out)


class _Parser:
    """One parse of one regex. Mirrors brics ``RegExp``'s private parse methods.

    Holds the code-unit string ``b``, the cursor ``pos`` and the count of open parentheses;
    ``offsets`` maps a code-unit position back to the caller's string index when they differ.
    """

    def __init__(self, units: str, offsets: list[int] | None) -> None:
        self.b = units
        self.n = len(units)
        self.pos = 0
        self.parens = 0  # open parentheses: bounds the parser's own recursion
        self.offsets = offsets

    # -- error reporting ---------------------------------------------------------------------
    def error(self, message: str, pos: int | None = None) -> RegexParseError:
        p = self.pos if pos is None else pos
        if self.offsets is not None:
            p = self.offsets[min(p, len(self.offsets) - 1)]
        return RegexParseError(message, p)

    # -- brics' cursor primitives --------------------------------------------------------------
    def more(self) -> bool:
        return self.pos < self.n

    def peek(self, chars: str) -> bool:
        return self.pos < self.n and self.b[self.pos] in chars

    def match(self, c: str) -> bool:
        if self.pos < self.n and self.b[self.pos] == c:
            self.pos += 1
            return True
        return False

    def next(self) -> int:
        if self.pos >= self.n:
            raise self.error("unexpected end-of-string")
        c = self.b[self.pos]
        self.pos += 1
        return ord(c)

    # -- grammar -------------------------------------------------------------------------------
    # Each method returns (node, depth): the depth of the AST it built, so that the limit bounds
    # the recursion of every later stage, not only the parser's own.
    def parse(self) -> Node:
        if self.n == 0:
            return Literal(())  # brics: the empty regex is the empty string
        e, _ = self.union()
        if self.pos < self.n:
            # Only an unmatched ')' can stop the top-level union early.
            raise self.error("end-of-string expected")
        return e

    def check_depth(self, depth: int) -> int:
        if depth > MAX_DEPTH:
            raise self.error(f"regex nested deeper than {MAX_DEPTH} levels (a limit of this implementation)")
        return depth

    def union(self) -> tuple[Node, int]:
        e, d = self.inter()
        if not self.peek("|"):
            return e, d
        parts = [e]
        while self.match("|"):
            e, d2 = self.inter()
            parts.append(e)
            d = max(d, d2)
        return Union(tuple(parts)), self.check_depth(d + 1)

    def inter(self) -> tuple[Node, int]:
        e, d = self.concat()
        if not self.peek("&"):
            return e, d
        parts = [e]
        while self.match("&"):
            e, d2 = self.concat()
            parts.append(e)
            d = max(d, d2)
        return Inter(tuple(parts)), self.check_depth(d + 1)

    def concat(self) -> tuple[Node, int]:
        e, d = self.repeat()
        parts = [e]
        # brics: continue while more() && !peek(")|") && !peek("&")
        while self.pos < self.n and self.b[self.pos] not in ")|&":
            e, d2 = self.repeat()
            parts.append(e)
            d = max(d, d2)
        if len(parts) == 1:
            return e, d
        return _make_concat(parts), self.check_depth(d + 1)

    def repeat(self) -> tuple[Node, int]:
        e, d = self.compl()
        while self.pos < self.n and self.b[self.pos] in "?*+{":
            c = self.b[self.pos]
            self.pos += 1
            if c == "?":
                e = Repeat(e, 0, 1)
            elif c == "*":
                e = Repeat(e, 0, None)
            elif c == "+":
                e = Repeat(e, 1, None)
            else:
                lo = self.integer()
                hi: int | None = lo  # "{n}"
                if self.match(","):
                    hi = self.integer() if self.peek("0123456789") else None  # "{n,m}" or "{n,}"
                if not self.match("}"):
                    raise self.error("expected '}'")
                e = Repeat(e, lo, hi)
            d = self.check_depth(d + 1)
        return e, d

    def integer(self) -> int:
        start = self.pos
        while self.peek("0123456789"):
            self.pos += 1
        if start == self.pos:
            raise self.error("integer expected")
        value = int(self.b[start : self.pos])
        if value > _JAVA_INT_MAX:
            # brics: Integer.parseInt throws NumberFormatException, an IllegalArgumentException
            raise self.error(f"count {self.b[start : self.pos]} is larger than 2147483647", start)
        return value

    def compl(self) -> tuple[Node, int]:
        count = 0
        while self.match("~"):
            count += 1
        e, d = self.charclass()
        if count % 2:
            # ~~X == X: keep the parity only, so a long chain of '~' cannot nest deeply.
            return Complement(e), self.check_depth(d + 1)
        return e, d

    def charclass(self) -> tuple[Node, int]:
        if not self.match("["):
            return self.simple()
        negate = self.match("^")
        ranges: list[tuple[int, int]] = [self.class_item()]
        while self.pos < self.n and self.b[self.pos] != "]":
            ranges.append(self.class_item())
        if not self.match("]"):
            raise self.error("expected ']'")
        rs = _ranges_union(ranges)
        return CharSet(_ranges_complement(rs) if negate else rs), 1

    def class_item(self) -> tuple[int, int]:
        c = self.charexp()
        if self.match("-"):
            if self.peek("]"):
                # brics: "x-]" is x and '-': step back so that '-' is read as the next item
                self.pos -= 1
                return (c, c)
            return (c, self.charexp())  # a reversed range is kept here and dropped later: empty
        return (c, c)

    def simple(self) -> tuple[Node, int]:
        b = self.b
        if self.pos >= self.n:
            raise self.error("unexpected end-of-string")
        c = b[self.pos]
        if c == ".":
            self.pos += 1
            return CharSet(((0, MAX_CODE_UNIT),)), 1
        if c == "#":
            self.pos += 1
            return Empty(), 1
        if c == "@":
            self.pos += 1
            return AnyString(), 1
        if c == '"':
            self.pos += 1
            start = self.pos
            end = b.find('"', start)
            if end < 0:
                self.pos = self.n
                raise self.error("expected '\"'")
            self.pos = end + 1
            return Literal(tuple(map(ord, b[start:end]))), 1
        if c == "(":
            open_at = self.pos
            self.pos += 1
            if self.match(")"):
                return Literal(()), 1
            self.parens += 1
            if self.parens > MAX_DEPTH:
                raise self.error(
                    f"regex nested deeper than {MAX_DEPTH} levels (a limit of this implementation)", open_at
                )
            e, d = self.union()
            if not self.match(")"):
                raise self.error("expected ')'")
            self.parens -= 1
            return e, d
        if c == "<":
            return self.angle(), 1
        return Literal((self.charexp(),)), 1

    def angle(self) -> Node:
        self.pos += 1
        start = self.pos
        end = self.b.find(">", start)
        if end < 0:
            self.pos = self.n
            raise self.error("expected '>'")
        self.pos = end + 1
        s = self.b[start:end]
        at = end  # brics reports these errors at pos - 1, the '>'
        i = s.find("-")
        if i == -1:
            raise self.error(f"automaton reference <{s}> is not supported (brics: not found)", at)
        if i == 0 or i == len(s) - 1 or i != s.rfind("-"):
            raise self.error("interval syntax error", at)
        smin, smax = s[:i], s[i + 1 :]
        lo, hi = _java_parse_int(smin), _java_parse_int(smax)
        if lo is None or hi is None:
            raise self.error("interval syntax error", at)
        digits = len(smin) if len(smin) == len(smax) else 0
        if lo > hi:
            lo, hi = hi, lo
        return NumInterval(lo, hi, digits)

    def charexp(self) -> int:
        self.match("\\")  # brics: an escape makes any following character literal
        return self.next()


def _java_parse_int(s: str) -> int | None:
    """Java ``Integer.parseInt`` for the strings brics passes it (no '-' can occur here)."""
    body = s[1:] if s.startswith("+") else s
    if not body:
        return None
    value = 0
    for ch in body:
        # Java accepts any Unicode decimal digit (Character.digit); so does str.isdecimal.
        if not ch.isdecimal():
            return None
        value = value * 10 + int(ch)
        if value > _JAVA_INT_MAX:
            return None
    return value


def _make_concat(parts: list[Node]) -> Node:
    """Concatenate, joining runs of adjacent literals into one :class:`Literal`.

    Linear in the number of code units: a run is collected in one list and frozen once (joining
    tuple by tuple copied the run so far at every character, quadratic on long literals)."""
    out: list[Node] = []
    run: list[Literal] = []

    def flush() -> None:
        if len(run) == 1:
            out.append(run[0])
        elif run:
            out.append(Literal(tuple(u for lit in run for u in lit.units)))
        run.clear()

    for p in parts:
        if isinstance(p, Literal):
            run.append(p)
        else:
            flush()
            out.append(p)
    flush()
    return out[0] if len(out) == 1 else Concat(tuple(out))


@lru_cache(maxsize=16384)
def parse(regex: str) -> Node:
    """Parse ``regex`` (NL-RX dialect, read as brics reads it) into an AST.

    Raises :class:`RegexParseError` with the position of the problem. Results are memoised (the
    AST is immutable), so scoring the same gold regex again costs nothing here.
    """
    units = to_code_units(regex)
    offsets: list[int] | None = None
    if len(units) != len(regex):
        # Map each code-unit position back to the caller's character index.
        offsets = []
        for i, ch in enumerate(regex):
            offsets.append(i)
            if ord(ch) > 0xFFFF:
                offsets.append(i)
        offsets.append(len(regex))
    return _Parser(units, offsets).parse()
