"""Deterministic automata for the NL-RX dialect over a finite partition alphabet.

Pipeline: AST (:mod:`.parse`) → hash-consed extended-regex *terms* → DFA by Brzozowski
derivatives → Hopcroft minimisation → class compression. Two DFAs are compared by a lazy product
that walks pairs of states breadth first, so the first pair that disagrees on acceptance gives a
*shortest* witness.

Why derivatives (and not Thompson + subsets): NL-RX is full of ``~(...)`` and ``&`` over ``.*X.*``
patterns. Derivatives treat ``~``, ``&`` and counted repeats ``{n,m}`` natively, with no
intermediate determinisation per operator, and hash-consing lets every regex share the derivatives
of common sub-terms (``.*``, ``[0-9]``, ``(dog)``) across a whole evaluation.

What is held:

* **Characters** are UTF-16 code units 0..0xFFFF (see :mod:`.parse`). A *partition* splits that
  range into segments (``bounds`` = sorted segment starts, first 0) and numbers each segment's
  class (``ids``). Each term has its own coarse partition of *derivative classes* (Owens, Reppy &
  Turon 2009): characters in one class give the same derivative. A DFA's alphabet is the meet of
  the partitions of every character set in its regex; one class is always "every character no set
  mentions", which is what makes complement sound for the whole of Unicode (a naive alphabet of the
  characters written in the regex would call ``~(a*)`` and ``(a|b)*b(a|b)*`` equal).
* **Terms** are interned (structurally equal terms are the same object) and kept in a normal form:
  union and intersection are flat, sorted, duplicate-free sets (associativity, commutativity,
  idempotence: what makes the set of derivatives finite), concatenation is a right-nested list, and
  a few cheap identities hold (``∅`` absorbs, ``ε`` is neutral, ``~~r = r``, ``(r*)* = r*``,
  ``r*r* = r*``, character sets in a union or intersection merge into one set).
* **Budgets**: a DFA build stops with :class:`BudgetExceeded` past ``max_states`` states or past a
  ``time.monotonic()`` deadline, checked every few derivative steps, so no input hangs.

Everything here is single-threaded: a :class:`TermTable` and the DFAs it builds belong to one
caller at a time (:mod:`.equiv` puts a lock around the shared default).
"""

from __future__ import annotations

import time
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterable, Sequence

from .parse import (
    MAX_CODE_UNIT,
    AnyString,
    CharSet,
    Complement,
    Concat,
    Empty,
    Inter,
    Literal,
    Node,
    NumInterval,
    Repeat,
    Union,
    _ranges_union,
    from_code_units,
    to_code_units,
)

__all__ = ["BudgetExceeded", "Dfa", "Partition", "Term", "TermTable", "find_difference"]

# Term kinds. Small ints: compared in the hot loops.
EMPTY, EPS, SET, CAT, STAR, REP, OR, AND, NOT = range(9)

#: How many derivative steps run between two looks at the clock.
_CLOCK_EVERY = 256
#: A table holding more interned terms than this is emptied before the next build.
_TABLE_LIMIT = 200_000


class BudgetExceeded(Exception):
    """A build or comparison ran past its state budget (``kind == "states"``) or time budget
    (``kind == "time"``); the answer is undecided, not wrong."""

    def __init__(self, kind: str, limit: float) -> None:
        if kind == "states":
            msg = f"state budget of {int(limit)} states exceeded"
        else:
            msg = f"time budget of {limit:g} s exceeded"
        super().__init__(msg)
        self.kind = kind
        self.limit = limit


# ---------------------------------------------------------------------------------------------
# Partitions of the code-unit range
# ---------------------------------------------------------------------------------------------


class Partition:
    """A partition of 0..0xFFFF into ``n`` classes.

    ``bounds``: sorted segment starts (``bounds[0] == 0``); ``ids``: the class of each segment,
    numbered in order of first appearance, adjacent segments always in different classes;
    ``reps``: the first code unit of each class. Interned by its :class:`TermTable`, so two equal
    partitions are the same object and compare by identity.
    """

    __slots__ = ("bounds", "ids", "n", "reps")

    def __init__(self, bounds: tuple[int, ...], ids: tuple[int, ...]) -> None:
        self.bounds = bounds
        self.ids = ids
        self.n = (max(ids) + 1) if ids else 1
        reps = [-1] * self.n
        for b, k in zip(bounds, ids, strict=True):
            if reps[k] < 0:
                reps[k] = b
        self.reps = tuple(reps)

    def class_of(self, c: int) -> int:
        """The class of code unit ``c``."""
        return self.ids[bisect_right(self.bounds, c) - 1]

    def segments(self, k: int) -> list[tuple[int, int]]:
        """The inclusive code-unit ranges that make up class ``k``."""
        out = []
        b = self.bounds
        for i, kk in enumerate(self.ids):
            if kk == k:
                out.append((b[i], (b[i + 1] - 1) if i + 1 < len(b) else MAX_CODE_UNIT))
        return out


def _merge_partitions(
    p: Partition, q: Partition
) -> tuple[tuple[int, ...], tuple[int, ...], list[tuple[int, int]]]:
    """Sweep two partitions together; return (bounds, ids, pairs) of their meet, where
    ``pairs[k]`` is the (p-class, q-class) of meet class ``k``."""
    pb, pi, qb, qi = p.bounds, p.ids, q.bounds, q.ids
    merged = sorted(set(pb).union(qb))
    bounds: list[int] = []
    ids: list[int] = []
    index: dict[tuple[int, int], int] = {}
    pairs: list[tuple[int, int]] = []
    i = j = 0
    lp, lq = len(pb), len(qb)
    for s in merged:
        while i + 1 < lp and pb[i + 1] <= s:
            i += 1
        while j + 1 < lq and qb[j + 1] <= s:
            j += 1
        key = (pi[i], qi[j])
        k = index.get(key)
        if k is None:
            k = index[key] = len(pairs)
            pairs.append(key)
        if ids and ids[-1] == k:
            continue  # same class as the previous segment: one longer segment
        bounds.append(s)
        ids.append(k)
    return tuple(bounds), tuple(ids), pairs


# ---------------------------------------------------------------------------------------------
# Terms
# ---------------------------------------------------------------------------------------------


class Term:
    """One interned extended-regex term. Compare terms with ``is``.

    ``kind`` is one of EMPTY, EPS, SET, CAT, STAR, REP, OR, AND, NOT; ``a``/``b`` are the operands
    (CAT: head, tail; STAR, REP, NOT: operand), ``lo``/``hi`` the counts of REP (``hi`` None for
    unbounded), ``kids`` the operands of OR/AND sorted by ``uid``, ``ranges`` the code-unit ranges
    of SET. ``nullable``: whether the term accepts the empty string. ``part`` (its derivative-class
    partition) and ``nxt`` (its derivative per class, filled lazily) are caches.
    """

    __slots__ = ("uid", "kind", "a", "b", "lo", "hi", "kids", "ranges", "nullable", "part", "nxt")

    def __init__(self, uid: int, kind: int, nullable: bool) -> None:
        self.uid = uid
        self.kind = kind
        self.nullable = nullable
        self.a: Term | None = None
        self.b: Term | None = None
        self.lo = 0
        self.hi: int | None = None
        self.kids: tuple[Term, ...] = ()
        self.ranges: tuple[tuple[int, int], ...] = ()
        self.part: Partition | None = None
        self.nxt: list[Term | None] | None = None

    def __repr__(self) -> str:  # for debugging only
        return f"Term#{self.uid}({_KIND_NAMES[self.kind]})"


_KIND_NAMES = ("EMPTY", "EPS", "SET", "CAT", "STAR", "REP", "OR", "AND", "NOT")


def _has_complement_pair(kids: dict[int, Term]) -> bool:
    """Whether some kid is ``~r`` with ``r`` also a kid (r | ~r is everything, r & ~r nothing)."""
    return any(k.kind == NOT and k.a.uid in kids for k in kids.values())  # type: ignore[union-attr]


def _ranges_and(
    a: tuple[tuple[int, int], ...], b: tuple[tuple[int, int], ...]
) -> tuple[tuple[int, int], ...]:
    out = []
    i = j = 0
    while i < len(a) and j < len(b):
        lo = max(a[i][0], b[j][0])
        hi = min(a[i][1], b[j][1])
        if lo <= hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return tuple(out)


def _in_ranges(ranges: tuple[tuple[int, int], ...], c: int) -> bool:
    for lo, hi in ranges:
        if c < lo:
            return False
        if c <= hi:
            return True
    return False


class TermTable:
    """Interns terms and partitions, and computes derivatives with memoisation.

    Holds the intern maps, the memo of partition meets, and the clock state of the build in
    progress (``deadline``, ``budget_s``). Emptied by :meth:`maybe_reset` when it grows past a
    bound, between builds only (a build relies on the identity of its terms).
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget every term and partition (DFAs already built keep working: they hold none)."""
        self._terms: dict[tuple, Term] = {}
        self._parts: dict[tuple, Partition] = {}
        self._meets: dict[tuple[int, int], Partition] = {}
        self._cmaps: dict[tuple[int, int], tuple[int, ...]] = {}
        self._uid = 0
        self.deadline = float("inf")
        self.budget_s = float("inf")
        self._steps = 0
        self.TRIVIAL = self._partition((0,), (0,))
        self.EMPTY = self._new(EMPTY, False, (EMPTY,))
        self.EPS = self._new(EPS, True, (EPS,))
        self.ANY = self.mk_set(((0, MAX_CODE_UNIT),))
        self.TOP = self.mk_star(self.ANY)

    def maybe_reset(self) -> None:
        """Empty the table if it has grown past its bound (call between builds)."""
        if len(self._terms) > _TABLE_LIMIT:
            self.reset()

    def __len__(self) -> int:
        return len(self._terms)

    # -- interning ---------------------------------------------------------------------------
    def _new(self, kind: int, nullable: bool, key: tuple) -> Term:
        t = Term(self._uid, kind, nullable)
        self._uid += 1
        self._terms[key] = t
        return t

    def _partition(self, bounds: tuple[int, ...], ids: tuple[int, ...]) -> Partition:
        key = (bounds, ids)
        p = self._parts.get(key)
        if p is None:
            p = self._parts[key] = Partition(bounds, ids)
        return p

    def meet(self, p: Partition, q: Partition) -> Partition:
        """The coarsest partition that refines both ``p`` and ``q`` (memoised)."""
        if p is q or q.n == 1:
            return p
        if p.n == 1:
            return q
        key = (id(p), id(q)) if id(p) < id(q) else (id(q), id(p))
        r = self._meets.get(key)
        if r is None:
            bounds, ids, _ = _merge_partitions(p, q)
            r = self._meets[key] = self._partition(bounds, ids)
        return r

    # -- smart constructors ------------------------------------------------------------------
    def mk_set(self, ranges: tuple[tuple[int, int], ...]) -> Term:
        """One character from normalised ``ranges`` (empty ranges: the empty language)."""
        if not ranges:
            return self.EMPTY
        key = (SET, ranges)
        t = self._terms.get(key)
        if t is None:
            t = self._new(SET, False, key)
            t.ranges = ranges
        return t

    def mk_cat(self, x: Term, y: Term) -> Term:
        """``x`` followed by ``y``."""
        if x is self.EMPTY or y is self.EMPTY:
            return self.EMPTY
        if x is self.EPS:
            return y
        if y is self.EPS:
            return x
        if x.kind != CAT:
            return self._cat2(x, y)
        heads = []
        while x.kind == CAT:  # re-associate to the right without recursion
            heads.append(x.a)
            x = x.b  # type: ignore[assignment]
        heads.append(x)
        r = y
        for h in reversed(heads):
            r = self._cat2(h, r)  # type: ignore[arg-type]
        return r

    def _cat2(self, h: Term, t: Term) -> Term:
        if h.kind == STAR and (t is h or (t.kind == CAT and t.a is h)):
            return t  # r*r* == r*: keeps ".*(.*)" and friends from multiplying states
        key = (CAT, h.uid, t.uid)
        r = self._terms.get(key)
        if r is None:
            r = self._new(CAT, h.nullable and t.nullable, key)
            r.a, r.b = h, t
        return r

    def mk_star(self, r: Term) -> Term:
        """Zero or more ``r``."""
        if r is self.EMPTY or r is self.EPS:
            return self.EPS
        if r.kind == STAR:
            return r
        if r.kind == REP and r.lo <= 1 and r.hi is None:
            return self.mk_star(r.a)  # type: ignore[arg-type]  # (r+)* == r*
        key = (STAR, r.uid)
        t = self._terms.get(key)
        if t is None:
            t = self._new(STAR, True, key)
            t.a = r
        return t

    def mk_rep(self, r: Term, lo: int, hi: int | None) -> Term:
        """``r`` repeated ``lo`` to ``hi`` times (``hi`` None: unbounded; ``hi < lo``: empty)."""
        if hi is not None and hi < lo:
            return self.EMPTY
        if hi == 0:
            return self.EPS
        if r is self.EMPTY:
            return self.EPS if lo == 0 else self.EMPTY
        if r is self.EPS:
            return self.EPS
        if r.kind == STAR:
            return r  # (r*){lo,hi} with hi >= 1 is r*
        if lo == 0 and hi is None:
            return self.mk_star(r)
        if lo == 1 and hi == 1:
            return r
        key = (REP, r.uid, lo, hi)
        t = self._terms.get(key)
        if t is None:
            t = self._new(REP, lo == 0 or r.nullable, key)
            t.a, t.lo, t.hi = r, lo, hi
        return t

    def mk_not(self, r: Term) -> Term:
        """Every string ``r`` rejects."""
        if r.kind == NOT:
            return r.a  # type: ignore[return-value]
        if r is self.EMPTY:
            return self.TOP
        if r is self.TOP:
            return self.EMPTY
        key = (NOT, r.uid)
        t = self._terms.get(key)
        if t is None:
            t = self._new(NOT, not r.nullable, key)
            t.a = r
        return t

    def mk_or(self, terms: Iterable[Term]) -> Term:
        """Union of ``terms``, in normal form."""
        gathered = self._gather(terms, OR, unit=self.EMPTY, zero=self.TOP)
        if gathered is None:
            return self.TOP
        kids, sets = gathered
        if sets:
            s = sets[0] if len(sets) == 1 else self.mk_set(_ranges_union([r for x in sets for r in x.ranges]))
            kids[s.uid] = s
        if len(kids) > 1:
            if self.EPS.uid in kids and any(k.nullable for k in kids.values() if k is not self.EPS):
                del kids[self.EPS.uid]  # ε | r == r when r accepts ε
            if _has_complement_pair(kids):
                return self.TOP  # r | ~r
        if not kids:
            return self.EMPTY
        return self._nary(OR, kids, any)

    def mk_and(self, terms: Iterable[Term]) -> Term:
        """Intersection of ``terms``, in normal form."""
        gathered = self._gather(terms, AND, unit=self.TOP, zero=self.EMPTY)
        if gathered is None:
            return self.EMPTY
        kids, sets = gathered
        if sets:
            ranges = sets[0].ranges
            for x in sets[1:]:
                ranges = _ranges_and(ranges, x.ranges)
            s = self.mk_set(ranges)
            if s is self.EMPTY:
                return self.EMPTY
            kids[s.uid] = s
        if self.EPS.uid in kids:
            # ε & r is ε when r accepts ε, else nothing
            return self.EPS if all(k.nullable for k in kids.values()) else self.EMPTY
        if len(kids) > 1 and _has_complement_pair(kids):
            return self.EMPTY  # r & ~r
        if not kids:
            return self.TOP
        return self._nary(AND, kids, all)

    def _gather(
        self, terms: Iterable[Term], kind: int, *, unit: Term, zero: Term
    ) -> tuple[dict[int, Term], list[Term]] | None:
        """The operands of an n-ary ``kind`` (OR/AND) term: nested ``kind`` terms spliced in, ``unit`` dropped,
        character sets kept apart (the caller merges them into one), the rest keyed by uid. None as soon as
        ``zero``, which absorbs the whole term, turns up."""
        kids: dict[int, Term] = {}
        sets: list[Term] = []
        for t in terms:
            if t.kind == kind:
                for k in t.kids:
                    if k.kind == SET:
                        sets.append(k)
                    else:
                        kids[k.uid] = k
            elif t is unit:
                continue
            elif t is zero:
                return None
            elif t.kind == SET:
                sets.append(t)
            else:
                kids[t.uid] = t
        return kids, sets

    def _nary(self, kind: int, kids: dict[int, Term], nullable: Callable[[Iterable[bool]], bool]) -> Term:
        """The one kid itself, else the interned ``kind`` term over ``kids`` in uid order (``nullable`` is
        ``any`` for OR, ``all`` for AND)."""
        if len(kids) == 1:
            return next(iter(kids.values()))
        uids = sorted(kids)
        key = (kind, *uids)
        t = self._terms.get(key)
        if t is None:
            ordered = tuple([kids[u] for u in uids])
            t = self._new(kind, nullable(k.nullable for k in ordered), key)
            t.kids = ordered
        return t

    # -- from the AST --------------------------------------------------------------------------
    def from_ast(self, node: Node) -> Term:
        """The term of a parsed regex (see :mod:`.parse` for what each node means)."""
        if isinstance(node, Literal):
            r = self.EPS
            for u in reversed(node.units):
                r = self.mk_cat(self.mk_set(((u, u),)), r)
            return r
        if isinstance(node, CharSet):
            return self.mk_set(node.ranges)
        if isinstance(node, Concat):
            r = self.EPS
            for p in reversed(node.parts):
                r = self.mk_cat(self.from_ast(p), r)
            return r
        if isinstance(node, Union):
            return self.mk_or([self.from_ast(p) for p in node.parts])
        if isinstance(node, Inter):
            return self.mk_and([self.from_ast(p) for p in node.parts])
        if isinstance(node, Complement):
            return self.mk_not(self.from_ast(node.operand))
        if isinstance(node, Repeat):
            return self.mk_rep(self.from_ast(node.operand), node.lo, node.hi)
        if isinstance(node, Empty):
            return self.EMPTY
        if isinstance(node, AnyString):
            return self.TOP
        if isinstance(node, NumInterval):
            return self._interval(node.lo, node.hi, node.digits)
        raise TypeError(f"not a regex AST node: {node!r}")

    def _digits(self, lo: str, hi: str) -> Term:
        """Digit strings of ``len(lo) == len(hi)`` characters between ``lo`` and ``hi`` inclusive."""
        if not lo:
            return self.EPS
        a, b = ord(lo[0]), ord(hi[0])
        if a == b:
            return self.mk_cat(self.mk_set(((a, a),)), self._digits(lo[1:], hi[1:]))
        rest = len(lo) - 1
        parts = [
            self.mk_cat(self.mk_set(((a, a),)), self._digits(lo[1:], "9" * rest)),
            self.mk_cat(self.mk_set(((b, b),)), self._digits("0" * rest, hi[1:])),
        ]
        if b - a >= 2:
            any_digit = self.mk_set(((48, 57),))
            parts.append(self.mk_cat(self.mk_set(((a + 1, b - 1),)), self.mk_rep(any_digit, rest, rest)))
        return self.mk_or(parts)

    def _interval(self, lo: int, hi: int, digits: int) -> Term:
        """brics' numeric interval ``<lo-hi>`` (checked against brics 1.11, see docs/regex.md)."""
        if digits > 0:
            return self._digits(str(lo).zfill(digits), str(hi).zfill(digits))
        # Any number of leading zeros, then the value written without them ("0" for zero).
        parts = []
        for width in range(len(str(lo)), len(str(hi)) + 1):
            a = max(lo, 10 ** (width - 1) if width > 1 else 0)
            b = min(hi, 10**width - 1)
            if a <= b:
                parts.append(self._digits(str(a), str(b)))
        zeros = self.mk_star(self.mk_set(((48, 48),)))
        return self.mk_cat(zeros, self.mk_or(parts))

    # -- derivative classes and derivatives ----------------------------------------------------
    def part(self, t: Term) -> Partition:
        """The derivative-class partition of ``t``: characters in one class give one derivative."""
        p = t.part
        if p is not None:
            return p
        k = t.kind
        if k == SET:
            p = self._set_partition(t.ranges)
        elif k == CAT:
            # part(h t) = part(h), met with part(t) when h accepts ε. Computed from the far end of
            # the chain of concatenations back to t, with a loop: one step per part, no recursion.
            chain = []
            x = t
            while x.kind == CAT and x.part is None:
                chain.append(x)
                x = x.b  # type: ignore[assignment]
            q = self.part(x)
            for y in reversed(chain):
                ph = self.part(y.a)  # type: ignore[arg-type]
                q = self.meet(ph, q) if y.a.nullable else ph  # type: ignore[union-attr]
                y.part = q
                y.nxt = [None] * q.n
            return q
        elif k in (STAR, REP, NOT):
            p = self.part(t.a)  # type: ignore[arg-type]
        elif k in (OR, AND):
            p = self.TRIVIAL
            for kid in t.kids:
                p = self.meet(p, self.part(kid))
        else:
            p = self.TRIVIAL
        t.part = p
        t.nxt = [None] * p.n
        return p

    def _set_partition(self, ranges: tuple[tuple[int, int], ...]) -> Partition:
        bounds: list[int] = []
        inside: list[bool] = []
        for lo, hi in ranges:
            if lo > 0 and not bounds:
                bounds.append(0)
                inside.append(False)
            bounds.append(lo)
            inside.append(True)
            if hi < MAX_CODE_UNIT:
                bounds.append(hi + 1)
                inside.append(False)
        first = inside[0]
        ids = tuple(0 if x == first else 1 for x in inside)
        return self._partition(tuple(bounds), ids)

    def alphabet(self, t: Term) -> Partition:
        """The meet of the partitions of every character set in ``t``: a DFA alphabet for ``t``.

        Every derivative of ``t`` only holds sets that are unions and intersections of these, so
        this partition is fine enough for every state reachable from ``t``.
        """
        seen: set[int] = set()
        stack = [t]
        p = self.TRIVIAL
        while stack:
            x = stack.pop()
            if x.uid in seen:
                continue
            seen.add(x.uid)
            if x.kind == SET:
                p = self.meet(p, self.part(x))
            elif x.kind == CAT:
                stack.append(x.a)  # type: ignore[arg-type]
                stack.append(x.b)  # type: ignore[arg-type]
            elif x.kind in (STAR, REP, NOT):
                stack.append(x.a)  # type: ignore[arg-type]
            elif x.kind in (OR, AND):
                stack.extend(x.kids)
        return p

    def class_map(self, fine: Partition, coarse: Partition) -> tuple[int, ...]:
        """For each class of ``fine``, the class of ``coarse`` that contains it (memoised)."""
        key = (id(fine), id(coarse))
        m = self._cmaps.get(key)
        if m is None:
            m = self._cmaps[key] = tuple(coarse.class_of(c) for c in fine.reps)
        return m

    def deriv(self, t: Term, c: int) -> Term:
        """The Brzozowski derivative of ``t`` by code unit ``c`` (memoised per derivative class)."""
        p = t.part
        if p is None:
            p = self.part(t)
        k = 0 if p.n == 1 else p.ids[bisect_right(p.bounds, c) - 1]
        nx = t.nxt
        r = nx[k]  # type: ignore[index]
        if r is None:
            r = nx[k] = self._deriv(t, c)  # type: ignore[index]
        return r

    def _deriv(self, t: Term, c: int) -> Term:
        self._steps += 1
        if self._steps >= _CLOCK_EVERY:
            self._steps = 0
            if time.monotonic() > self.deadline:
                raise BudgetExceeded("time", self.budget_s)
        k = t.kind
        if k == SET:
            return self.EPS if _in_ranges(t.ranges, c) else self.EMPTY
        if k == CAT:
            # d(h t) = d(h) t | (d(t) if h accepts ε)
            h, tail = t.a, t.b
            if h.nullable and tail.kind == CAT and tail.a.nullable:  # type: ignore[union-attr]
                self._warm_chain(tail, c)  # type: ignore[arg-type]
            r = self.mk_cat(self.deriv(h, c), tail)  # type: ignore[arg-type]
            if h.nullable:  # type: ignore[union-attr]
                r2 = self.deriv(tail, c)  # type: ignore[arg-type]
                if r is self.EMPTY:
                    return r2
                if r2 is not self.EMPTY and r2 is not r:
                    r = self.mk_or((r, r2))
            return r
        if k == STAR:
            return self.mk_cat(self.deriv(t.a, c), t)  # type: ignore[arg-type]
        if k == REP:
            # d(r{n,m}) = d(r) r{n-1,m-1}; also right when r accepts ε (then r{n-1,m-1} ⊆ r{n,m}).
            rest = self.mk_rep(t.a, max(t.lo - 1, 0), None if t.hi is None else t.hi - 1)  # type: ignore[arg-type]
            return self.mk_cat(self.deriv(t.a, c), rest)  # type: ignore[arg-type]
        if k in (OR, AND):
            # deriv() inlined: OR/AND terms have many operands whose derivatives are memo hits
            out = []
            for x in t.kids:
                p = x.part
                if p is None:
                    p = self.part(x)
                j = 0 if p.n == 1 else p.ids[bisect_right(p.bounds, c) - 1]
                nx = x.nxt
                r = nx[j]  # type: ignore[index]
                if r is None:
                    r = nx[j] = self._deriv(x, c)  # type: ignore[index]
                out.append(r)
            return self.mk_or(out) if k == OR else self.mk_and(out)
        if k == NOT:
            return self.mk_not(self.deriv(t.a, c))  # type: ignore[arg-type]
        return self.EMPTY  # EMPTY, EPS

    def _warm_chain(self, t: Term, c: int) -> None:
        """Memoise the derivatives by ``c`` along a chain of concatenations with nullable heads,
        from its far end back to ``t``, so that deriving ``t`` recurses one level, not once per
        part ("a?a?a?..." would otherwise exhaust Python's stack)."""
        chain = []
        x = t
        while x.kind == CAT and x.a.nullable:  # type: ignore[union-attr]
            p = x.part if x.part is not None else self.part(x)
            j = 0 if p.n == 1 else p.ids[bisect_right(p.bounds, c) - 1]
            if x.nxt[j] is not None:  # type: ignore[index]
                break  # memoised from here on
            chain.append(x)
            x = x.b  # type: ignore[assignment]
        for y in reversed(chain):
            self.deriv(y, c)

    def matches(self, t: Term, units: str) -> bool:
        """Whether ``t`` accepts the code-unit string ``units`` (walks derivatives lazily)."""
        for ch in units:
            t = self.deriv(t, ord(ch))
            if t is self.EMPTY:
                return False
        return t.nullable

    # -- DFA construction ------------------------------------------------------------------------
    def build_dfa(self, t: Term, max_states: int, deadline: float, budget_s: float) -> Dfa:
        """Explore every derivative of ``t`` into a complete DFA (start state 0).

        Raises :class:`BudgetExceeded` past ``max_states`` states or the ``deadline``.
        """
        self.deadline, self.budget_s, self._steps = deadline, budget_s, 0
        try:
            alpha = self.alphabet(t)
            index: dict[int, int] = {t.uid: 0}
            states = [t]
            rows: list[tuple[int, ...]] = []
            i = 0
            while i < len(states):
                s = states[i]
                i += 1
                p = self.part(s)
                targets = []
                for j in range(p.n):
                    d = s.nxt[j]  # type: ignore[index]
                    if d is None:
                        d = self.deriv(s, p.reps[j])
                    q = index.get(d.uid)
                    if q is None:
                        q = index[d.uid] = len(states)
                        states.append(d)
                        if len(states) > max_states:
                            raise BudgetExceeded("states", max_states)
                    targets.append(q)
                if p.n == 1:
                    rows.append((targets[0],) * alpha.n)
                else:
                    cmap = self.class_map(alpha, p)
                    rows.append(tuple([targets[j] for j in cmap]))
                if (i & 63) == 0 and time.monotonic() > deadline:
                    raise BudgetExceeded("time", budget_s)
            return Dfa(alpha.bounds, alpha.ids, tuple(rows), tuple(s.nullable for s in states))
        finally:
            self.deadline, self.budget_s = float("inf"), float("inf")


# ---------------------------------------------------------------------------------------------
# DFAs
# ---------------------------------------------------------------------------------------------


class Dfa:
    """A complete DFA over a partition alphabet; the start state is 0.

    Holds ``bounds``/``ids`` (the partition of 0..0xFFFF into ``k`` classes, as in
    :class:`Partition`), ``delta`` (for each state, its target for each class) and ``accept``.
    Immutable by convention; holds no terms, so it outlives the :class:`TermTable` that built it.
    """

    __slots__ = ("bounds", "ids", "k", "delta", "accept")

    def __init__(
        self,
        bounds: tuple[int, ...],
        ids: tuple[int, ...],
        delta: tuple[tuple[int, ...], ...],
        accept: tuple[bool, ...],
    ) -> None:
        self.bounds = bounds
        self.ids = ids
        self.k = (max(ids) + 1) if ids else 1
        self.delta = delta
        self.accept = accept

    @property
    def n_states(self) -> int:
        """The number of states (a dead state, if any, included)."""
        return len(self.delta)

    def partition(self) -> Partition:
        """The alphabet as a :class:`Partition` (a fresh, uninterned one)."""
        return Partition(self.bounds, self.ids)

    def step(self, state: int, c: int) -> int:
        """The state after reading code unit ``c`` in ``state``."""
        return self.delta[state][self.ids[bisect_right(self.bounds, c) - 1]]

    def accepts(self, s: str) -> bool:
        """Whether the DFA accepts the Python string ``s`` (read as UTF-16 code units)."""
        q = 0
        for ch in to_code_units(s):
            q = self.step(q, ord(ch))
        return self.accept[q]

    def is_empty(self) -> bool:
        """No string is accepted (every state is reachable, as built)."""
        return not any(self.accept)

    def is_universal(self) -> bool:
        """Every string is accepted."""
        return all(self.accept)

    def complement(self) -> Dfa:
        """The DFA of every string (over all code units) this one rejects."""
        return Dfa(self.bounds, self.ids, self.delta, tuple(not a for a in self.accept))

    def product(
        self,
        other: Dfa,
        op: str,
        max_states: int = 10**9,
        deadline: float = float("inf"),
        budget_s: float = 0.0,
    ) -> Dfa:
        """The reachable product with acceptance ``op`` in {"and", "or", "xor", "minus"}.

        Raises :class:`BudgetExceeded` past ``max_states`` states or the ``deadline``.
        """
        acc_op = {
            "and": lambda x, y: x and y,
            "or": lambda x, y: x or y,
            "xor": lambda x, y: x != y,
            "minus": lambda x, y: x and not y,
        }[op]
        bounds, ids, pairs = _merge_partitions(self.partition(), other.partition())
        index = {(0, 0): 0}
        order = [(0, 0)]
        rows: list[tuple[int, ...]] = []
        i = 0
        while i < len(order):
            p, q = order[i]
            i += 1
            if (i & 63) == 0 and time.monotonic() > deadline:
                raise BudgetExceeded("time", budget_s)
            dp, dq = self.delta[p], other.delta[q]
            row = []
            for ca, cb in pairs:
                key = (dp[ca], dq[cb])
                t = index.get(key)
                if t is None:
                    t = index[key] = len(order)
                    order.append(key)
                    if len(order) > max_states:
                        raise BudgetExceeded("states", max_states)
                row.append(t)
            rows.append(tuple(row))
        accept = tuple(acc_op(self.accept[p], other.accept[q]) for p, q in order)
        return Dfa(bounds, ids, tuple(rows), accept)

    def intersect(self, other: Dfa) -> Dfa:
        """The DFA of the strings both accept (not minimised)."""
        return self.product(other, "and")

    def union(self, other: Dfa) -> Dfa:
        """The DFA of the strings either accepts (not minimised)."""
        return self.product(other, "or")

    def minimise(self, deadline: float = float("inf")) -> Dfa:
        """The minimal equivalent DFA, renumbered breadth first from the start, with identical
        alphabet classes merged. Equal languages give equal tables.

        Hopcroft's O(n k log n) refinement (measured faster than Moore's even on the small NL-RX
        DFAs). If the deadline passes, returns ``self`` unchanged: minimising only saves later work.
        """
        d = self._compress()
        n = d.n_states
        if all(d.accept) or not any(d.accept):
            # One block: a single state looping on every class.
            return Dfa((0,), (0,), ((0,),), (d.accept[0],))
        block_of = d._hopcroft(deadline)
        if block_of is None:
            return self
        # Renumber blocks breadth first from the start state.
        order = {block_of[0]: 0}
        queue = [0]
        rows: list[tuple[int, ...]] = []
        accept: list[bool] = []
        reps: dict[int, int] = {}
        for st in range(n):
            reps.setdefault(block_of[st], st)
        delta = d.delta
        i = 0
        while i < len(queue):
            st = queue[i]
            i += 1
            row = []
            for t in delta[st]:
                b = block_of[t]
                j = order.get(b)
                if j is None:
                    j = order[b] = len(queue)
                    queue.append(reps[b])
                row.append(j)
            rows.append(tuple(row))
            accept.append(d.accept[st])
        return Dfa(d.bounds, d.ids, tuple(rows), tuple(accept))._compress()

    def _hopcroft(self, deadline: float) -> list[int] | None:
        """Block of each state after Hopcroft's refinement (None past the deadline)."""
        n, k, delta = self.n_states, self.k, self.delta
        inv: list[dict[int, list[int]]] = [{} for _ in range(k)]
        for st in range(n):
            if (st & 1023) == 1023 and time.monotonic() > deadline:
                return None
            row = delta[st]
            for c in range(k):
                inv[c].setdefault(row[c], []).append(st)
        acc = {st for st in range(n) if self.accept[st]}
        block_of = [0 if st in acc else 1 for st in range(n)]
        blocks: list[set[int]] = [acc, set(range(n)) - acc]
        waiting = {0, 1}
        work = [0, 1]
        steps = 0
        while work:
            a = work.pop()
            waiting.discard(a)
            splitter = list(blocks[a])
            for c in range(k):
                steps += 1
                if (steps & 255) == 0 and time.monotonic() > deadline:
                    return None
                inv_c = inv[c]
                touched: dict[int, list[int]] = {}
                for t in splitter:
                    for st in inv_c.get(t, ()):
                        touched.setdefault(block_of[st], []).append(st)
                for b, members in touched.items():
                    if len(members) == len(blocks[b]):
                        continue
                    mset = set(members)
                    new = len(blocks)
                    blocks.append(mset)
                    blocks[b] -= mset
                    for st in members:
                        block_of[st] = new
                    if b in waiting:
                        waiting.add(new)
                        work.append(new)
                    else:
                        smaller = new if len(mset) <= len(blocks[b]) else b
                        waiting.add(smaller)
                        work.append(smaller)
        return block_of

    def _compress(self) -> Dfa:
        """Merge alphabet classes whose columns are identical in every state (fewer classes make
        every later product cheaper)."""
        k = self.k
        cols = {}
        new_of = []
        for c in range(k):
            col = tuple(row[c] for row in self.delta)
            j = cols.get(col)
            if j is None:
                j = cols[col] = len(cols)
            new_of.append(j)
        if len(cols) == k:
            return self
        bounds: list[int] = []
        ids: list[int] = []
        for b, old in zip(self.bounds, self.ids, strict=True):
            j = new_of[old]
            if ids and ids[-1] == j:
                continue
            bounds.append(b)
            ids.append(j)
        # renumber classes by first appearance, as Partition requires
        first: dict[int, int] = {}
        for j in ids:
            first.setdefault(j, len(first))
        ids2 = tuple(first[j] for j in ids)
        inv = [0] * len(first)
        for j, nj in first.items():
            inv[nj] = j
        keep = []
        for nj in range(len(first)):
            keep.append(new_of.index(inv[nj]))
        rows = tuple(tuple(row[c] for c in keep) for row in self.delta)
        return Dfa(tuple(bounds), ids2, rows, self.accept)

    def shortest_accepted(self) -> str | None:
        """A shortest accepted string (readable characters preferred), or None if empty."""
        if self.accept[0]:
            return ""
        part = self.partition()
        order = _readable_class_order(part)
        parent: dict[int, tuple[int, int]] = {0: (-1, -1)}
        queue = deque([0])
        while queue:
            s = queue.popleft()
            row = self.delta[s]
            for c, ch in order:
                t = row[c]
                if t in parent:
                    continue
                parent[t] = (s, ch)
                if self.accept[t]:
                    units = []
                    while t != 0:
                        t, u = parent[t]
                        units.append(u)
                    return from_code_units(units[::-1])
                queue.append(t)
        return None


# ---------------------------------------------------------------------------------------------
# Equivalence: lazy product, breadth first
# ---------------------------------------------------------------------------------------------

# Preference order for witness characters: readable ones first, surrogates last.
_PREFERRED = (
    (ord("a"), ord("z")),
    (ord("A"), ord("Z")),
    (ord("0"), ord("9")),
    (0x21, 0x7E),
    (0x20, 0x20),
    (0xA1, 0xD7FF),
    (0xE000, 0xFFFF),
    (0x00, 0xA0),
    (0xD800, 0xDFFF),
)


def _best_char(ranges: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """(rank, code unit) of the most readable character in ``ranges`` (lower rank is better)."""
    best = (len(_PREFERRED), MAX_CODE_UNIT)
    for lo, hi in ranges:
        for rank, (plo, phi) in enumerate(_PREFERRED):
            if rank > best[0]:
                break
            a, b = max(lo, plo), min(hi, phi)
            if a <= b:
                best = min(best, (rank, a))
                break
    return best


def _readable_class_order(part: Partition) -> list[tuple[int, int]]:
    """(class, representative unit) for every class of ``part``, most readable first."""
    ranked = []
    for k in range(part.n):
        rank, ch = _best_char(part.segments(k))
        ranked.append((rank, ch, k))
    ranked.sort()
    return [(k, ch) for _, ch, k in ranked]


def find_difference(
    a: Dfa, b: Dfa, max_states: int = 10**9, deadline: float = float("inf"), budget_s: float = float("inf")
) -> tuple[str, bool] | None:
    """A shortest string accepted by exactly one of ``a`` and ``b``, or None if they are equal.

    Returns ``(witness, accepted_by_a)``. Walks the product of the two DFAs lazily and breadth
    first over the classes of their joint partition (the meet of their alphabets), most readable
    class first; stops at the first pair of states that disagree. Raises
    :class:`BudgetExceeded` past ``max_states`` pairs or the deadline.
    """
    acc_a, acc_b = a.accept, b.accept
    if acc_a[0] != acc_b[0]:
        return "", acc_a[0]
    bounds, ids, pairs = _merge_partitions(a.partition(), b.partition())
    joint = Partition(bounds, ids)
    order = _readable_class_order(joint)
    cols = [(pairs[k][0], pairs[k][1], ch) for k, ch in order]
    nb = b.n_states
    da, db = a.delta, b.delta
    parent: dict[int, tuple[int, int]] = {0: (-1, -1)}
    queue = deque([0])
    count = 0
    popped = 0
    while queue:
        popped += 1
        if (popped & 63) == 0 and time.monotonic() > deadline:
            raise BudgetExceeded("time", budget_s)
        key = queue.popleft()
        p, q = divmod(key, nb)
        rp, rq = da[p], db[q]
        for ca, cb, ch in cols:
            tp, tq = rp[ca], rq[cb]
            nk = tp * nb + tq
            if nk in parent:
                continue
            parent[nk] = (key, ch)
            if acc_a[tp] != acc_b[tq]:
                units = []
                while nk != 0:
                    nk, u = parent[nk]
                    units.append(u)
                return from_code_units(units[::-1]), acc_a[tp]
            queue.append(nk)
            count += 1
            if count > max_states:
                raise BudgetExceeded("states", max_states)
    return None
