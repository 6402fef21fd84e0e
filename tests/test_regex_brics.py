"""Optional cross-check against dk.brics.automaton itself (Debian's ``libautomaton-java``).

Runs where ``java``, ``javac`` and ``/usr/share/java/automaton.jar`` exist (``apt-get install
libautomaton-java default-jdk-headless``); skips, saying which is missing, elsewhere. A tiny Java
helper is compiled into a temporary directory at test time; no jar or class file is kept.

For each pair, brics says whether each side parses, whether it is empty or total, whether the two
are equal, and whether each side accepts our witness. We must agree on all of it.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from jepa_audit.regex import BudgetExceeded, RegexParseError, compile_regex, equivalent, perturb_regex
from jepa_audit.regex.parse import to_code_units

JAR = Path("/usr/share/java/automaton.jar")
SHARED_DATA = Path(
    os.environ.get("JEPA_AUDIT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
NLRX_TEST = SHARED_DATA / "llm-jepa-nlrx" / "synth_test.jsonl"

_missing = [name for name in ("java", "javac") if shutil.which(name) is None]
if not JAR.exists():
    _missing.append(str(JAR))
pytestmark = pytest.mark.skipif(
    bool(_missing),
    reason=f"brics cross-check needs {', '.join(_missing)} (apt-get install libautomaton-java default-jdk-headless)",
)

JAVA_SOURCE = r"""
import dk.brics.automaton.Automaton;
import dk.brics.automaton.RegExp;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;

/** Lines "hexA TAB hexB [TAB hexW]" (UTF-16 code units, 4 hex digits each) -> one answer a line:
 *  per side E (parse error) / 0 (empty) / 1 (total) / - ; then T/F/? for equals; then, with a
 *  witness, 1/0 for whether each side accepts it. */
public class BricsEquiv {
    static String unhex(String h) {
        StringBuilder sb = new StringBuilder();
        for (int i = 0; i + 4 <= h.length(); i += 4) sb.append((char) Integer.parseInt(h.substring(i, i + 4), 16));
        return sb.toString();
    }
    static Automaton compile(String s) {
        try { return new RegExp(s).toAutomaton(); } catch (Throwable e) { return null; }
    }
    static String status(Automaton a) {
        return a == null ? "E" : (a.isEmpty() ? "0" : (a.isTotal() ? "1" : "-"));
    }
    public static void main(String[] args) throws Exception {
        BufferedReader r = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.US_ASCII));
        PrintStream out = new PrintStream(System.out, true, "US-ASCII");
        String line;
        while ((line = r.readLine()) != null) {
            String[] f = line.split("\t", -1);
            Automaton a = compile(unhex(f[0]));
            Automaton b = compile(unhex(f[1]));
            StringBuilder o = new StringBuilder(status(a)).append(status(b));
            o.append(a != null && b != null ? (a.equals(b) ? "T" : "F") : "?");
            if (f.length > 2 && a != null && b != null) {
                String w = unhex(f[2]);
                o.append(a.run(w) ? "1" : "0").append(b.run(w) ? "1" : "0");
            }
            out.println(o);
        }
    }
}
"""


@pytest.fixture(scope="module")
def brics(tmp_path_factory: pytest.TempPathFactory):
    """A function that sends lines to the compiled helper and returns its answers."""
    d = tmp_path_factory.mktemp("brics")
    (d / "BricsEquiv.java").write_text(JAVA_SOURCE, encoding="utf-8")
    subprocess.run(
        ["javac", "-cp", str(JAR), "-d", str(d), str(d / "BricsEquiv.java")], check=True, timeout=120
    )

    def run(lines: list[str]) -> list[str]:
        proc = subprocess.run(
            ["java", "-Xss64m", "-cp", f"{JAR}{os.pathsep}{d}", "BricsEquiv"],
            input="\n".join(lines) + "\n",
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
        )
        return proc.stdout.splitlines()

    return run


def _hex(s: str) -> str:
    return "".join(f"{ord(c):04x}" for c in to_code_units(s))


def _status(regex: str) -> str:
    try:
        dfa = compile_regex(regex, time_budget_s=30.0)
    except RegexParseError:
        return "E"
    except BudgetExceeded:
        return "?"
    return "0" if dfa.is_empty() else "1" if dfa.is_universal() else "-"


def _check(brics, pairs: list[tuple[str, str]]) -> int:
    """Compare every pair with brics; return how many pairs were compared on equality."""
    ours = [equivalent(a, b, time_budget_s=30.0) for a, b in pairs]
    lines = []
    for (a, b), r in zip(pairs, ours, strict=True):
        fields = [_hex(a), _hex(b)]
        if r.witness is not None:
            fields.append(_hex(r.witness))
        lines.append("\t".join(fields))
    answers = brics(lines)
    assert len(answers) == len(pairs)
    compared = 0
    for (a, b), r, o in zip(pairs, ours, answers, strict=True):
        assert r.error is None or not r.error.startswith(("undecided", "internal")), (a, b, r)
        assert o[:2] == _status(a) + _status(b), (a, b, o)
        if o[2] == "?":
            assert r.equivalent is None and r.error is not None and r.error.startswith("parse error"), (
                a,
                b,
                r,
            )
            continue
        assert r.equivalent == (o[2] == "T"), (a, b, o, r)
        if r.witness is not None:
            assert o[3:5] == ("10" if r.witness_side == "a" else "01"), (a, b, o, r)
        compared += 1
    return compared


DIALECT_PAIRS = [
    ("(dog)|(cat)", "(cat)|(dog)"),
    ("~(.*dog.*)", ".*"),
    ("\\b", "b"),
    ("[9-0]", "#"),
    ("a{3,2}", "#"),
    ("()", '""'),
    ("", "()"),
    ("a||b", "a|(\\|b)"),
    ("a&&b", "a"),
    ("([A-Z)|([0-9])", "[A-Z)|(\\[0-9]"),
    ("~a*", "(~a)*"),
    ("~dog", "(~d)og"),
    ("{3}", "\\{3\\}"),
    ("[]a]", "[a\\]]"),
    ("[a-]", "[\\-a]"),
    ("~~a", "a"),
    ("@", "~#"),
    ("<5-10>", "0*([5-9]|10)"),
    ("<05-10>", "0[5-9]|10"),
    ("<3-3>", "3"),
    ("<+1-10>", "[0-9][0-9]&<1-10>"),
    (".", "[\u0000-\uffff]"),
    ("😀", ".."),
    ("[😀]", "[\ud83d\ude00]"),
    ("~(a*)", "(a|b)*b(a|b)*"),
    ("a|", "a"),
    ("[^]", "a"),
    ("<foo>", "a"),
    ("a{99999999999}", "a"),
    ("(a", "a"),
    ('"ab', "a"),
    ("a)", "a"),
    ("a{,3}", "a"),
    ("\\", "a"),
]


def test_dialect_cases_agree_with_brics(brics) -> None:
    assert _check(brics, DIALECT_PAIRS) == 25


@pytest.mark.skipif(not NLRX_TEST.exists(), reason=f"NL-RX test split not found at {NLRX_TEST}")
def test_nl_rx_pairs_agree_with_brics(brics) -> None:
    rng = random.Random(4)
    golds = [json.loads(line)["messages"][2]["content"] for line in NLRX_TEST.open(encoding="utf-8")]
    sample = rng.sample(golds, 300)
    pairs = [(g, perturb_regex(g, rng)) for g in sample] + [(g, rng.choice(golds)) for g in sample[:100]]
    assert _check(brics, pairs) > 300


def test_random_regexes_agree_with_brics(brics) -> None:
    rng = random.Random(5)
    tokens = list('ab()|&~*+?{},0123-[]^.\\#@"<>') + [
        "[a-z]",
        ".*",
        "[0-9]",
        "{2,}",
        "{1,3}",
        "\\b",
        "dog",
        "é",
    ]

    def soup() -> str:
        return "".join(rng.choice(tokens) for _ in range(rng.randint(0, 10)))

    def tree(depth: int = 0) -> str:
        k = rng.randrange(9 if depth < 4 else 3)
        if k < 3:
            return rng.choice(
                ["a", "b", "[a-c]", ".", "[^a]", "[b-a]", "#", "@", "()", '"ab"', "<1-12>", "\\b"]
            )
        if k == 3:
            return f"({tree(depth + 1)})|({tree(depth + 1)})"
        if k == 4:
            return f"({tree(depth + 1)})&({tree(depth + 1)})"
        if k == 5:
            return f"~({tree(depth + 1)})"
        if k == 6:
            return f"({tree(depth + 1)})" + rng.choice(["*", "+", "?", "{2}", "{0,2}", "{2,}", "{3,1}"])
        return tree(depth + 1) + tree(depth + 1)

    pairs = [(soup(), soup()) for _ in range(200)]
    for _ in range(200):
        a = tree()
        pairs.append((a, rng.choice([tree(), a, f"({a})|{tree()}", f"~~({a})", f"{a}&{tree()}"])))
    assert _check(brics, pairs) > 150
