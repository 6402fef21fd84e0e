"""DFA equivalence of NL-RX regexes: operators, alphabet soundness, witnesses, budgets, scorer, CLI.

Every expected value here is also what dk.brics.automaton 1.11 answers (tests/test_regex_brics.py
re-checks a sample live where Java is installed).
"""

from __future__ import annotations

import json
import math
import os
import random
import re
from pathlib import Path

import pytest

import jepa_audit.regex.equiv as equiv_mod
from jepa_audit.regex import (
    BudgetExceeded,
    DfaScorer,
    EquivResult,
    RegexParseError,
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
from jepa_audit.regex.automaton import find_difference

SHARED_DATA = Path(
    os.environ.get("JEPA_AUDIT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
NLRX_TEST = SHARED_DATA / "llm-jepa-nlrx" / "synth_test.jsonl"
NLRX_TARG = SHARED_DATA / "nl-rx" / "NL-RX-Synth" / "targ.txt"


def assert_same(a: str, b: str) -> None:
    r = equivalent(a, b)
    assert r == EquivResult(True, None, None), (a, b, r)


def assert_differ(a: str, b: str, witness: str | None = None) -> EquivResult:
    r = equivalent(a, b)
    assert r.equivalent is False and r.error is None, (a, b, r)
    assert r.witness is not None
    # the witness is accepted by exactly the side it names
    assert matches(a, r.witness) == (r.witness_side == "a")
    assert matches(b, r.witness) == (r.witness_side == "b")
    if witness is not None:
        assert r.witness == witness, (a, b, r)
    return r


# -- the motivating case and each operator -------------------------------------------------------------


def test_union_order_does_not_matter() -> None:
    assert_same("(dog)|(cat)", "(cat)|(dog)")
    assert_same("((dog)|(truck)){5,}", "((truck)|(dog)){5,}")


def test_intersection_order_does_not_matter() -> None:
    assert_same("(.*dog.*)&(.*[0-9].*)", "(.*[0-9].*)&(.*dog.*)")
    assert_same("([A-Za-z])&([a-z])", "[a-z]")
    assert_same("(dog)&(truck)", "#")


def test_concatenation() -> None:
    assert_same("(dog)(truck)", "dogtruck")
    assert_same(".*(.*)", ".*")
    assert_differ("(dog)(truck)", "(truck)(dog)", "dogtruck")


def test_repetition_operators() -> None:
    assert_same("a+", "aa*")
    assert_same("a?", "()|a")
    assert_same("a{3}", "aaa")
    assert_same("a{2,}", "aaa*")
    assert_same("a{1,3}", "a|aa|aaa")
    assert_same("a{0}", "()")
    assert_same("(a*)*", "a*")
    assert_differ("a{2,}", "a+", "a")
    assert_differ("a*", "a+", "")
    assert_differ("(dog){2,}", "(dog){3,}", "dogdog")


def test_complement() -> None:
    r = assert_differ("~(.*dog.*)", ".*", "dog")
    assert r.witness_side == "b"
    assert_same("~(~(a))", "a")
    assert_same("~(a)", "()|[^a]|..+")
    assert_same("(~(a))&(a)", "#")
    assert_same("(~(a))|(a)", "@")


def test_precedence_matters_semantically() -> None:
    assert_same("~a*", "(~a)*")
    assert_differ("~a*", "~(a*)", "")  # (~a)* is every string; ~(a*) rejects ""
    assert_same("~dog", "(~d)og")
    assert_same("ab|cd&ef", "(ab)|((cd)&(ef))")
    assert_same("a&b|c", "((a)&(b))|(c)")
    assert_differ("ab*", "(ab)*", "")


def test_brics_readings() -> None:
    assert_same("\\b", "b")
    assert_same("\\b(dog)\\b", "bdogb")
    assert_differ("\\b(dog)\\b", "dog", "dog")
    assert_same("[9-0]", "#")
    assert_same("a{3,2}", "#")
    assert_same("()", '""')
    assert_same("a||b", "a|(\\|b)")
    assert_same("a&&b", "#")  # 'a' and the string "&b" share nothing
    assert_same("([A-Z)|([0-9])", "[A-Z)|(\\[0-9]")
    assert_same("{3}", "\\{3\\}")
    assert_same(".", "[^a]|a")


def test_numeric_interval_as_brics_reads_it() -> None:
    assert_same("<5-10>", "0*([5-9]|10)")
    assert_same("<0-10>", "0*[0-9]|0*10")
    assert_same("<05-10>", "0[5-9]|10")
    assert_same("<1-1000>", "0*([1-9][0-9]{0,2}|1000)")
    assert_same("<3-3>", "3")  # both bounds one digit wide: exactly one digit
    assert_same("<3-12>", "0*([3-9]|1[0-2])")


# -- alphabet soundness ----------------------------------------------------------------------------------


def test_other_character_class_makes_complement_sound() -> None:
    # Over the alphabet {a, b} of the characters written, these are equal; over Unicode they
    # differ on any other character.
    r = assert_differ("~(a*)", "(a|b)*b(a|b)*")
    assert len(r.witness) == 1 and r.witness not in "ab"
    assert r.witness_side == "a"
    assert_same("~([a-z])&.", "[^a-z]")
    assert_differ(".", "[a-z]|[A-Z]|[0-9]")


def test_characters_outside_the_bmp_are_two_code_units() -> None:
    assert matches("..", "😀")
    assert not matches(".", "😀")
    assert matches("😀", "😀")
    assert_same("[😀]", "[\ud83d\ude00]")
    r = assert_differ("😀", "..")
    assert len(r.witness) in (1, 2)


# -- empty and universal languages ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "regex",
    ["#", "[9-0]", "a{3,2}", "([A-Z])&([a-z])", "~(.*)", "(dog)&(truck)", "\\b([A-Z])&([AEIOUaeiou])\\b"],
)
def test_empty_language(regex: str) -> None:
    assert is_empty_language(regex)
    assert not is_universal(regex)
    assert_same(regex, "#")


@pytest.mark.parametrize(
    "regex", [".*", "@", "~#", "(~(a))|(a)", "~(a)|(a)", "(.*)(.*)", "~(([a-z])&([0-9]))"]
)
def test_universal_language(regex: str) -> None:
    assert is_universal(regex)
    assert not is_empty_language(regex)
    assert_same(regex, ".*")


def test_empty_and_universal_raise_on_bad_regex() -> None:
    with pytest.raises(RegexParseError):
        is_empty_language("(a")
    with pytest.raises(BudgetExceeded):
        is_universal("a{50000}", max_states=1000)


@pytest.mark.skipif(not NLRX_TARG.exists(), reason=f"NL-RX raw data not found at {NLRX_TARG}")
def test_nl_rx_gold_empty_and_universal_counts() -> None:
    # regex-dialect.md: of the 10,000 gold regexes, 1,559 match nothing and 494 match everything
    scorer = DfaScorer(time_budget_s=30.0)  # a count, not a speed test: no time limit to speak of
    golds = NLRX_TARG.read_text(encoding="utf-8").splitlines()
    assert len(golds) == 10_000
    dfas = [scorer.compile(g) for g in golds]
    assert sum(d.is_empty() for d in dfas) == 1559
    assert sum(d.is_universal() for d in dfas) == 494


# -- witnesses ----------------------------------------------------------------------------------------------


def test_witness_is_shortest() -> None:
    assert_differ("(.*a){3}", "(.*a){4}", "aaa")
    assert_differ(".*dog.*", ".*(dog|truck).*", "truck")
    assert_differ("[0-9]{3,}", "[0-9]{4,}", "000")
    r = assert_differ("a{5}", "a{5}|b{7}")
    assert r.witness == "bbbbbbb" and r.witness_side == "b"


def test_witness_prefers_readable_characters() -> None:
    r = assert_differ("~(a)", "#")
    assert r.witness == ""  # ε is shortest
    r = assert_differ("[^a]", "#")
    assert r.witness == "b"


def test_witness_can_be_empty_string() -> None:
    r = assert_differ("a*", "a+", "")
    assert r.witness_side == "a"


def test_find_difference_on_dfas_directly() -> None:
    a, b = compile_regex(".*dog.*"), compile_regex(".*do.*")
    w, in_a = find_difference(a, b)  # type: ignore[misc]
    assert (w, in_a) == ("do", False)
    assert find_difference(a, a) is None


# -- DFA operations ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (".*dog.*", ".*[0-9].*"),
        ("(dog)|(truck)", "[a-z]{3}"),
        ("~(.*a.*)", "a*"),
        ("\\b[A-Z].*", ".*[0-9]\\b"),
    ],
)
def test_product_complement_match_regex_operators(a: str, b: str) -> None:
    da, db = compile_regex(a), compile_regex(b)
    assert find_difference(da.intersect(db).minimise(), compile_regex(f"({a})&({b})")) is None
    assert find_difference(da.union(db).minimise(), compile_regex(f"({a})|({b})")) is None
    assert find_difference(da.complement(), compile_regex(f"~({a})")) is None
    assert find_difference(da.product(db, "xor"), compile_regex(f"(({a})&~({b}))|(~({a})&({b}))")) is None


def test_minimal_dfas_are_canonical() -> None:
    a = compile_regex("((dog)|(truck)){2,}")
    b = compile_regex("((truck)|(dog))((dog)|(truck))+")
    assert a.n_states == b.n_states
    assert compile_regex(".*").n_states == 1
    assert compile_regex("#").n_states == 1
    assert compile_regex(".*dog.*").n_states == 4


def test_shortest_accepted() -> None:
    assert compile_regex("(truck)|(dog)").shortest_accepted() == "dog"
    assert compile_regex("#").shortest_accepted() is None
    assert compile_regex("a*").shortest_accepted() == ""


# -- budgets ------------------------------------------------------------------------------------------------


def test_state_budget_gives_undecided() -> None:
    r = equivalent("a{50000}", "a{50001}", time_budget_s=60.0)  # the state budget must bite first
    assert r.equivalent is None and r.witness is None
    assert r.error == "undecided: state budget of 20000 states exceeded"
    assert (
        equivalent("a{50}", "a{51}", max_states=20).error == "undecided: state budget of 20 states exceeded"
    )
    # identical strings need no automaton
    assert equivalent("a{50000}", "a{50000}").equivalent is True


@pytest.mark.timeout(120)  # hang guard; latency itself is measured by `jepa-audit bench`
def test_time_budget_gives_undecided() -> None:
    hard = "(~(.*a.{12}))&(~(.*b.{12}))&(.*c.{11})"
    r = equivalent(hard, hard + "|x", time_budget_s=0.02, max_states=10**7)
    assert r.equivalent is None
    assert r.error == "undecided: time budget of 0.02 s exceeded"


def test_overlong_regex_is_undecided_without_building() -> None:
    long = "a?" * 3000
    r = equivalent(long, ".*")
    assert r.equivalent is None and r.error.startswith("undecided: a regex of 6000 characters")


def test_scorer_caches_state_budget_failures_but_retries_with_more() -> None:
    s = DfaScorer(max_states=100)
    assert s.score("a{500}", "a{501}").error == "undecided: state budget of 100 states exceeded"
    with pytest.raises(BudgetExceeded):
        s.compile("a{500}")
    assert s.compile("a{500}", max_states=1000).n_states == 502


# -- parse errors ---------------------------------------------------------------------------------------------


def test_parse_error_names_side_and_position() -> None:
    assert equivalent("(a", "a") == EquivResult(None, None, "parse error in A at position 2: expected ')'")
    assert equivalent("a", "a|") == EquivResult(
        None, None, "parse error in B at position 2: unexpected end-of-string"
    )


# -- matches --------------------------------------------------------------------------------------------------


def test_matches_full_match_semantics() -> None:
    assert matches(".*dog.*", "a dog!")
    assert not matches("dog", "a dog")
    assert matches("\\b(dog)\\b", "bdogb")
    assert not matches("\\b(dog)\\b", "dog")
    assert matches("~(.*dog.*)", "cat")
    assert not matches("~(.*dog.*)", "hotdog")
    assert matches("", "")
    with pytest.raises(RegexParseError):
        matches("[a", "a")


def _python_pattern(gold: str) -> str:
    """Python `re` reading of an NL-RX regex without ~ and &: only `\\b` differs."""
    return gold.replace("\\b", "b")


@pytest.mark.skipif(not NLRX_TEST.exists(), reason=f"NL-RX test split not found at {NLRX_TEST}")
def test_agrees_with_python_re_on_gold_regexes() -> None:
    """An independent oracle: where the dialects coincide (no ~ or &), Python's `re` and our DFA
    must agree on random strings and on strings sampled from the DFA itself."""
    rng = random.Random(0)
    golds = sorted({json.loads(line)["messages"][2]["content"] for line in NLRX_TEST.open(encoding="utf-8")})
    golds = [g for g in golds if "~" not in g and "&" not in g]
    alphabet = "dogtruckringbaAEZ09x- "
    checked = 0
    for gold in rng.sample(golds, 150):
        py = re.compile(_python_pattern(gold), re.DOTALL)
        dfa = compile_regex(gold)
        part = dfa.partition()
        samples = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))) for _ in range(20)]
        for _ in range(20):  # random walks through the DFA, to hit accepted strings too
            q, s = 0, []
            for _ in range(rng.randint(0, 15)):
                k = rng.randrange(dfa.k)
                lo, hi = rng.choice(part.segments(k))
                c = rng.randint(lo, min(hi, lo + 200))
                if 0xD800 <= c <= 0xDFFF:
                    c = ord("x")
                    k = part.class_of(c)
                s.append(chr(c))
                q = dfa.delta[q][k]
            samples.append("".join(s))
        for s in samples:
            assert (py.fullmatch(s) is not None) == dfa.accepts(s) == matches(gold, s), (gold, s)
            checked += 1
    assert checked == 150 * 40


# -- the scorer -------------------------------------------------------------------------------------------------


def test_scorer_score_and_names() -> None:
    s = DfaScorer()
    assert s.score("(dog)|(cat)", "(cat)|(dog)").equivalent is True
    r = s.score(".*dog.*", ".*")
    assert r.equivalent is False and r.witness == "" or r.witness_side == "b"
    assert s.score("[0-9]", "[0-9").error == "parse error in prediction at position 4: expected ']'"
    assert s.score("(", "a").error == "parse error in gold at position 1: unexpected end-of-string"


def test_score_many_keeps_order_and_never_raises() -> None:
    s = DfaScorer()
    pairs = [("a", "a"), ("a", "b"), ("a", "(a"), ("a{99999}", "a{99998}"), ("\\b", "b")]
    res = s.score_many(pairs)
    assert [r.equivalent for r in res] == [True, False, None, None, True]
    assert res[2].error is not None and res[2].error.startswith("parse error in prediction")
    assert res[3].error is not None and res[3].error.startswith("undecided")
    assert [r.parse_error for r in res] == [False, False, True, False, False]
    assert [r.undecided for r in res] == [False, False, False, True, False]


def test_scorer_lru_is_bounded() -> None:
    s = DfaScorer(cache_size=3)
    for i in range(10):
        s.score(f"a{{{i}}}", "a*")
    assert len(s._cache) == 3
    assert list(s._cache) == ["a{8}", "a{9}", "a*"]  # "a*" was used last


@pytest.mark.skipif(not NLRX_TEST.exists(), reason=f"NL-RX test split not found at {NLRX_TEST}")
def test_scores_the_nl_rx_test_set_fast() -> None:
    """2,000 (gold, model-like prediction) pairs: every pair decided or a prediction parse error.
    The speed target (≤ 2 s for 2,000 pairs on 2 cores) is measured by `jepa-audit bench`; the
    bounds here are loose so that a loaded CI machine does not fail them."""
    golds = [json.loads(line)["messages"][2]["content"] for line in NLRX_TEST.open(encoding="utf-8")]
    pairs = model_like_pairs(golds, seed=1, p_same=0.3)
    s = DfaScorer(time_budget_s=5.0)  # correctness first: no pair may be left undecided
    results = s.score_many(pairs)
    assert all(r.error is None or r.error.startswith("parse error in prediction") for r in results)
    assert sum(r.equivalent is True for r in results) > 800
    assert sum(r.equivalent is False for r in results) > 500
    stats = time_scoring(pairs, DfaScorer())  # the default budgets, cold caches
    assert stats["n"] == 2000 == stats["equivalent"] + stats["different"] + stats["none"]
    # the gold automata are memoised: a second cell with the same golds gets the same answers from the cache
    assert s.score_many(pairs) == results


def test_model_like_pairs_are_reproducible() -> None:
    golds = ["(dog)|(cat)", "~(.*dog.*)", "\\b[0-9]{3,}\\b"] * 10
    assert model_like_pairs(golds, seed=3) == model_like_pairs(golds, seed=3)
    assert perturb_regex("a", random.Random(0)) in {"a", "~(a)", ".*a", "a.*"}


# -- CLI ----------------------------------------------------------------------------------------------------------


def test_cli_single_pair_human(capsys: pytest.CaptureFixture[str]) -> None:
    assert equiv_pairs_cli("(dog)|(cat)", "(cat)|(dog)", None, False) == 0
    assert capsys.readouterr().out == "equivalent\n"
    assert equiv_pairs_cli("~(.*dog.*)", ".*", None, False) == 0
    assert capsys.readouterr().out == 'different: "dog" is accepted by B only\n'
    assert equiv_pairs_cli("(a", "a", None, False) == 0
    assert capsys.readouterr().out == "parse error in A at position 2: expected ')'\n"


def test_cli_single_pair_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert equiv_pairs_cli("a*", "a+", None, True) == 0
    assert json.loads(capsys.readouterr().out) == {
        "line": 0,
        "equivalent": False,
        "witness": "",
        "error": None,
    }


def test_cli_pairs_file_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # line 4 is undecided either way; a generous time budget makes the state budget the one that says so on a
    # loaded machine too (under pytest-xdist beside other work, 0.5 s of wall clock could run out first)
    real = equiv_mod.equivalent
    monkeypatch.setattr(equiv_mod, "equivalent", lambda a, b: real(a, b, time_budget_s=60.0))
    f = tmp_path / "pairs.tsv"
    f.write_bytes(
        "\ufeff(dog)|(cat)\t(cat)|(dog)\r\n~(.*dog.*)\t.*\nno tab here\n(a\ta\na{50000}\ta{50001}\n\\b\tb\n".encode()
    )
    assert equiv_pairs_cli(None, None, f, True) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert out == [
        {"line": 0, "equivalent": True, "witness": None, "error": None},
        {"line": 1, "equivalent": False, "witness": "dog", "error": None},
        {
            "line": 2,
            "equivalent": None,
            "witness": None,
            "error": "parse error: line has no TAB between two regexes",
        },
        {
            "line": 3,
            "equivalent": None,
            "witness": None,
            "error": "parse error in A at position 2: expected ')'",
        },
        {
            "line": 4,
            "equivalent": None,
            "witness": None,
            "error": "undecided: state budget of 20000 states exceeded",
        },
        {"line": 5, "equivalent": True, "witness": None, "error": None},
    ]


def test_cli_pairs_file_human(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "pairs.tsv"
    f.write_text("a\ta\na*\ta+\n", encoding="utf-8")
    assert equiv_pairs_cli(None, None, f, False) == 0
    assert capsys.readouterr().out == '0: equivalent\n1: different: "" is accepted by A only\n'


def test_cli_empty_pairs_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "empty.tsv"
    f.write_text("", encoding="utf-8")
    assert equiv_pairs_cli(None, None, f, True) == 0
    assert capsys.readouterr().out == ""


def test_cli_unreadable_pairs_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.tsv"
    assert equiv_pairs_cli(None, None, missing, True) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert str(missing) in captured.err and "cannot read pairs file" in captured.err
    assert captured.err.count("\n") == 1
    bad = tmp_path / "latin1.tsv"
    bad.write_bytes(b"caf\xe9\ta\n")
    assert equiv_pairs_cli(None, None, bad, False) == 2
    assert "not UTF-8" in capsys.readouterr().err
    assert equiv_pairs_cli(None, None, tmp_path, False) == 2  # a directory
    assert str(tmp_path) in capsys.readouterr().err


def test_cli_argument_forms(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert equiv_pairs_cli("a", None, None, False) == 2
    assert equiv_pairs_cli("a", "b", tmp_path / "x", False) == 2
    assert "error:" in capsys.readouterr().err


def test_cli_lone_surrogate_witness_is_printable(capsys: pytest.CaptureFixture[str]) -> None:
    assert equiv_pairs_cli("[\ud800]", "#", None, True) == 0
    out = capsys.readouterr().out
    assert json.loads(out)["witness"] == "\ud800"
    out.encode("ascii")  # escaped, printable anywhere
    assert equiv_pairs_cli("[\ud800]", "#", None, False) == 0
    capsys.readouterr().out.encode("utf-8")


def test_cli_pairs_file_is_streamed_with_a_per_line_limit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """#14.5: a line over the limit gets its own error and the next lines are still answered; an endless
    line (``/dev/zero``) ends in one error line, never a MemoryError."""
    from jepa_audit.regex import equiv as E

    f = tmp_path / "pairs.tsv"
    f.write_bytes(b"a\ta\n" + b"x" * (E.MAX_PAIR_LINE_BYTES + 10) + b"\tx\n" + b"a*\ta+\n")
    assert equiv_pairs_cli(None, None, f, True) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [o["line"] for o in out] == [0, 1, 2]
    assert out[0]["equivalent"] is True and out[2]["equivalent"] is False
    assert out[1]["equivalent"] is None and "longer than" in out[1]["error"]
    if Path("/dev/zero").exists():
        assert equiv_pairs_cli(None, None, Path("/dev/zero"), True) == 2
        captured = capsys.readouterr()
        assert "longer than" in captured.out
        assert captured.err.count("\n") == 1 and "/dev/zero" in captured.err and "no line end" in captured.err


def test_parse_copies_each_code_unit_a_bounded_number_of_times(monkeypatch: pytest.MonkeyPatch) -> None:
    """#14.5: parsing is linear: count the code units the parser puts into literals (joining a literal
    run tuple by tuple copied the run at every character: quadratic). No timing."""
    import importlib

    P = importlib.import_module("jepa_audit.regex.parse")
    copied = [0]

    class CountingLiteral(P.Literal):
        def __init__(self, units: tuple[int, ...]) -> None:
            copied[0] += len(units)
            super().__init__(units)

    monkeypatch.setattr(P, "Literal", CountingLiteral)
    per_char = []
    for n in (2_000, 8_000):
        copied[0] = 0
        P.parse.__wrapped__("ab" * (n // 2) + ".c" * (n // 2))
        per_char.append(copied[0] / (2 * n))
    assert per_char[1] <= per_char[0] * 1.1 and per_char[1] < 3, per_char


def test_length_sweep_reports_times_and_a_fitted_exponent() -> None:
    """The bench's length sweep (tiny lengths here; its times are measured, never asserted)."""
    from jepa_audit.regex.equiv import length_sweep

    r = length_sweep((200, 400, 800), repeats=1)
    assert len(r["regex_sweep_chars"]) == len(r["regex_parse_s"]) == len(r["regex_equiv_s"]) == 3
    assert r["regex_sweep_chars"][0] < r["regex_sweep_chars"][2]
    assert all(math.isfinite(r[k]) for k in ("regex_parse_exponent", "regex_equiv_exponent"))
