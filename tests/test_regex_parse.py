"""The NL-RX dialect parser reads regexes the way dk.brics.automaton 1.11 does.

Expected readings come from ``../shared/reference/regex-dialect.md`` and were re-checked against
brics itself (see tests/test_regex_brics.py for the live cross-check).
"""

from __future__ import annotations

import pytest

from jepa_audit.regex import RegexParseError, parse
from jepa_audit.regex.parse import (
    MAX_DEPTH,
    AnyString,
    CharSet,
    Complement,
    Concat,
    Empty,
    Inter,
    Literal,
    NumInterval,
    Repeat,
    Union,
    from_code_units,
    to_code_units,
)

ANY = CharSet(((0, 0xFFFF),))


def lit(s: str) -> Literal:
    return Literal(tuple(ord(c) for c in s))


def cs(*ranges: tuple[str, str]) -> CharSet:
    return CharSet(tuple((ord(a), ord(b)) for a, b in ranges))


# -- atoms ---------------------------------------------------------------------------------------


def test_literal_word_is_one_literal() -> None:
    assert parse("dog") == lit("dog")


def test_dot_is_any_code_unit() -> None:
    assert parse(".") == ANY


def test_char_class_and_ranges_are_merged_and_sorted() -> None:
    assert parse("[A-Za-z]") == cs(("A", "Z"), ("a", "z"))
    assert parse("[AEIOUaeiou]") == CharSet(tuple((ord(c), ord(c)) for c in "AEIOUaeiou"))
    assert parse("[a-cb-e]") == cs(("a", "e"))  # overlapping ranges merge


def test_negated_class_is_one_char_outside() -> None:
    assert parse("[^a]") == CharSet(((0, ord("a") - 1), (ord("a") + 1, 0xFFFF)))


def test_reversed_range_is_the_empty_set() -> None:
    assert parse("[9-0]") == CharSet(())


def test_escaped_b_is_a_literal_b_not_a_word_boundary() -> None:
    assert parse("\\b") == lit("b")
    assert parse("\\b(dog)\\b") == lit("bdogb")


def test_any_escape_is_the_literal_character() -> None:
    assert parse("\\d") == lit("d")
    assert parse("\\\\") == lit("\\")
    assert parse("\\*") == lit("*")
    assert parse("[\\]]") == cs(("]", "]"))


def test_empty_group_and_empty_regex_are_the_empty_string() -> None:
    assert parse("()") == Literal(())
    assert parse("") == Literal(())


def test_brics_default_flag_specials() -> None:
    assert parse("#") == Empty()
    assert parse("@") == AnyString()
    assert parse('"a|b"') == lit("a|b")  # quoted: metacharacters are literal
    assert parse('""') == Literal(())
    assert parse("<5-10>") == NumInterval(5, 10, 0)
    assert parse("<05-10>") == NumInterval(5, 10, 2)  # same width: fixed number of digits
    assert parse("<10-05>") == NumInterval(5, 10, 2)  # brics swaps reversed bounds
    assert parse("<10-5>") == NumInterval(5, 10, 0)
    assert parse("<+1-5>") == NumInterval(1, 5, 0)  # Java parseInt accepts a leading '+'


# -- operators and precedence ----------------------------------------------------------------------


def test_union_intersection_concat_flatten() -> None:
    assert parse("a|b|c") == Union((lit("a"), lit("b"), lit("c")))
    assert parse("a&b&c") == Inter((lit("a"), lit("b"), lit("c")))


def test_precedence_union_below_intersection_below_concat() -> None:
    assert parse("ab|cd&ef") == Union((lit("ab"), Inter((lit("cd"), lit("ef")))))
    assert parse("a&b|c") == Union((Inter((lit("a"), lit("b"))), lit("c")))


def test_postfix_binds_tighter_than_concatenation() -> None:
    assert parse("dog*") == Concat((lit("do"), Repeat(lit("g"), 0, None)))
    assert parse("(dog)*") == Repeat(lit("dog"), 0, None)


def test_each_postfix_operator() -> None:
    a = lit("a")
    assert parse("a*") == Repeat(a, 0, None)
    assert parse("a+") == Repeat(a, 1, None)
    assert parse("a?") == Repeat(a, 0, 1)
    assert parse("a{3}") == Repeat(a, 3, 3)
    assert parse("a{3,}") == Repeat(a, 3, None)
    assert parse("a{2,5}") == Repeat(a, 2, 5)
    assert parse("a{12}") == Repeat(a, 12, 12)  # multi-digit counts
    assert parse("a{3,2}") == Repeat(a, 3, 2)  # kept: the empty language
    assert parse("a*?+") == Repeat(Repeat(Repeat(a, 0, None), 0, 1), 1, None)


def test_complement_binds_tighter_than_postfix() -> None:
    assert parse("~a*") == Repeat(Complement(lit("a")), 0, None)
    assert parse("~dog") == Concat((Complement(lit("d")), lit("og")))
    assert parse("~(dog)") == Complement(lit("dog"))
    assert parse("~~a") == lit("a")
    assert parse("~~~a") == Complement(lit("a"))


def test_nl_rx_gold_shapes() -> None:
    assert parse("~((dog.*[0-9].*){3,})") == Complement(
        Repeat(Concat((lit("dog"), Repeat(ANY, 0, None), cs(("0", "9")), Repeat(ANY, 0, None))), 3, None)
    )
    assert parse("\\b([A-Z])&([AEIOUaeiou])\\b") == Inter(
        (
            Concat((lit("b"), cs(("A", "Z")))),
            Concat((CharSet(tuple((ord(c), ord(c)) for c in "AEIOUaeiou")), lit("b"))),
        )
    )


# -- metacharacters read as literals ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("regex", "expected"),
    [
        (")a", lit(")a")),
        ("|a", lit("|a")),
        ("*a", lit("*a")),
        ("{3}", lit("{3}")),
        ("a||b", Union((lit("a"), lit("|b")))),
        ("a&&b", Inter((lit("a"), lit("&b")))),
        ("[a-]", cs(("-", "-"), ("a", "a"))),
        ("[]a]", cs(("]", "]"), ("a", "a"))),
        ("[a^]", cs(("^", "^"), ("a", "a"))),
        ("[.]", cs((".", "."))),
    ],
)
def test_metacharacter_where_operand_expected_is_literal(regex: str, expected: object) -> None:
    assert parse(regex) == expected


def test_unclosed_bracket_runs_to_the_next_close_bracket() -> None:
    # brics: the class is "[A-Z)|([0-9]"; the final ')' closes the group
    assert parse("([A-Z)|([0-9])") == CharSet(
        tuple(
            sorted({(ord("("), ord(")")), (ord("0"), ord("9")), (ord("A"), ord("[")), (ord("|"), ord("|"))})
        )
    )


# -- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("regex", "message", "position"),
    [
        ("a|", "unexpected end-of-string", 2),
        ("a&", "unexpected end-of-string", 2),
        ("a~", "unexpected end-of-string", 2),
        ("~", "unexpected end-of-string", 1),
        ("\\", "unexpected end-of-string", 1),
        ("a{,3}", "integer expected", 2),
        ("a{}", "integer expected", 2),
        ("a{x}", "integer expected", 2),
        ("a{3", "expected '}'", 3),
        ("[]", "expected ']'", 2),
        ("[^]", "expected ']'", 3),
        ("[a", "expected ']'", 2),
        ("(a|", "unexpected end-of-string", 3),
        ("(a", "expected ')'", 2),
        ("(", "unexpected end-of-string", 1),
        ("a)", "end-of-string expected", 1),
        ('"ab', "expected '\"'", 3),
        ("<1-2", "expected '>'", 4),
        ("<1-2-3>", "interval syntax error", 6),
        ("<a-b>", "interval syntax error", 4),
        ("<-1>", "interval syntax error", 3),
    ],
)
def test_rejected_like_brics(regex: str, message: str, position: int) -> None:
    with pytest.raises(RegexParseError) as info:
        parse(regex)
    assert info.value.message == message
    assert info.value.position == position
    assert str(info.value) == f"{message} at position {position}"


def test_automaton_reference_is_rejected_with_a_reason() -> None:
    with pytest.raises(RegexParseError, match="automaton reference <name> is not supported"):
        parse("a<name>")


def test_counts_beyond_java_int_are_errors() -> None:
    parse("a{2147483647}")  # parses (and would exceed any state budget later)
    with pytest.raises(RegexParseError, match="larger than 2147483647") as info:
        parse("a{2147483648}")
    assert info.value.position == 2
    with pytest.raises(RegexParseError, match="interval syntax error"):
        parse("<1-99999999999>")


def test_nesting_limit_is_an_error_with_position() -> None:
    ok = "(" * MAX_DEPTH + "a" + ")" * MAX_DEPTH
    assert parse(ok) == lit("a")
    with pytest.raises(RegexParseError, match="nested deeper") as info:
        parse("(" * (MAX_DEPTH + 1) + "a" + ")" * (MAX_DEPTH + 1))
    assert info.value.position == MAX_DEPTH
    with pytest.raises(RegexParseError, match="nested deeper"):
        parse("a" + "*" * (MAX_DEPTH + 5))
    assert parse("~" * 10_001 + "a") == Complement(lit("a"))  # a chain of '~' does not nest


def test_parse_error_is_a_value_error() -> None:
    assert issubclass(RegexParseError, ValueError)


# -- characters are UTF-16 code units, as in Java ----------------------------------------------------


def test_astral_characters_are_surrogate_pairs() -> None:
    assert parse("😀") == Literal((0xD83D, 0xDE00))
    assert parse("[😀]") == CharSet(((0xD83D, 0xD83D), (0xDE00, 0xDE00)))
    assert to_code_units("a😀") == "a\ud83d\ude00"
    assert from_code_units([0x61, 0xD83D, 0xDE00]) == "a😀"
    assert from_code_units([0xD83D]) == "\ud83d"  # a lone surrogate stays one


def test_error_position_counts_caller_characters() -> None:
    with pytest.raises(RegexParseError) as info:
        parse("😀(a")
    assert info.value.position == 3  # '😀' is one character of the caller's string
