"""Real NL-RX: the three forms, form detection, both split policies, and clear errors on bad files."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from jepa_audit.config import DataCfg
from jepa_audit.data import DataError, Example
from jepa_audit.data.carve import VAL_SEED, carve_val
from jepa_audit.data.lines import read_lines
from jepa_audit.data.nlrx import (
    detect,
    llm_jepa_permutation,
    read_deep_regex,
    read_jsonl,
    read_raw,
    read_split_index,
)
from jepa_audit.tasks import load_benchmark, pretraining_pool

SYSTEM = "Convert natural language to regular expression."


def nlrx_cfg(path: Path, **kw) -> DataCfg:
    kw.setdefault("geometry_size", 0)  # these tests are about the splits; tests/test_geometry_pool.py has the pool
    return DataCfg(source="nl-rx", path=str(path), **kw)


def write_raw(root: Path, rows: dict[str, list[tuple[str, str]]]) -> Path:
    """Raw NL-RX layout with no trailing newline, as the real files."""
    for b, pairs in rows.items():
        d = root / {"synth": "NL-RX-Synth", "turk": "NL-RX-Turk"}[b]
        d.mkdir(parents=True, exist_ok=True)
        (d / "src.txt").write_text("\n".join(p[0] for p in pairs), encoding="utf-8")
        (d / "targ.txt").write_text("\n".join(p[1] for p in pairs), encoding="utf-8")
    return root


def jsonl_line(nl: str, rx: str, roles=("system", "user", "assistant")) -> str:
    msgs = [{"role": r, "content": c} for r, c in zip(roles, (SYSTEM, nl, rx), strict=True)]
    return json.dumps({"messages": msgs})


TOY = [(f"lines with the string 'dog', {k} or more times", f"(dog){{{k},}}") for k in range(2, 12)]


# ------------------------------------------------------------------------------------------------------
# The real files (skipped, saying why, where ../shared/data is absent)
# ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("benchmark", ["synth", "turk"])
def test_llm_jepa_split_rebuilt_from_raw_equals_jsonl_row_for_row(shared_data, benchmark):
    from_raw = load_benchmark(nlrx_cfg(shared_data / "nl-rx", val_size=0), benchmark)
    from_jsonl = load_benchmark(nlrx_cfg(shared_data / "llm-jepa-nlrx", val_size=0), benchmark)
    assert from_raw.sizes() == from_jsonl.sizes() == {"train": 8000, "val": 0, "geometry": 0, "test": 2000}
    assert from_raw.train == from_jsonl.train  # Example equality: nl, regex and idx, row for row
    assert from_raw.test == from_jsonl.test
    assert "llm-jepa split rebuilt" in from_raw.source and "LLM-JEPA jsonl" in from_jsonl.source
    # The permutation itself, as SOURCE.md states it: test = raw lines perm[:2000].
    test_rows, _ = llm_jepa_permutation(10000)
    raw = read_raw(shared_data / "nl-rx", benchmark)
    assert from_raw.test[0] == Example(raw[int(test_rows[0])].prompt, raw[int(test_rows[0])].target, 0)


def test_raw_files_and_shared_root_detection(shared_data):
    synth, turk = read_raw(shared_data / "nl-rx", "synth"), read_raw(shared_data / "nl-rx", "turk")
    assert len(synth) == len(turk) == 10000
    assert [e.target for e in synth] == [e.target for e in turk]  # Turk paraphrases Synth line for line
    assert synth[4] == Example("lines containing the string 'dog', 2 or more times", ".*(dog){2,}.*", 4)
    found = detect(shared_data)
    assert found.raw == shared_data / "nl-rx" and found.split_index is not None
    assert found.deep_regex == shared_data / "nl-rx" and found.jsonl == shared_data / "llm-jepa-nlrx"
    only_jsonl = detect(shared_data / "llm-jepa-nlrx")
    assert only_jsonl.raw is None and only_jsonl.jsonl is not None
    assert "LLM-JEPA jsonl at" in only_jsonl.describe()


def test_llm_jepa_val_carve_on_real_data(shared_data):
    s = load_benchmark(nlrx_cfg(shared_data, val_size=200, max_test=500), "synth")
    t = load_benchmark(nlrx_cfg(shared_data, val_size=200, max_test=500), "turk")
    assert s.sizes() == {"train": 7800, "val": 200, "geometry": 0, "test": 500}
    # Same raw lines in both benchmarks: the carve depends on sizes and a fixed seed only.
    assert [e.target for e in s.val] == [e.target for e in t.val]
    full = load_benchmark(nlrx_cfg(shared_data, val_size=0), "synth")
    assert {(e.prompt, e.target) for e in s.val} <= {(e.prompt, e.target) for e in full.train}
    assert [e.idx for e in s.train] == list(range(7800)) and f"seed {VAL_SEED}" in s.source


def test_deep_regex_split_on_raw_text_matches_the_preprocessed_files(shared_data):
    root = shared_data / "nl-rx"
    index = read_split_index(root / "split_index.tsv", n_raw=10000)
    assert {k: len(v) for k, v in index.items()} == {"train": 6500, "val": 1000, "test": 2500}
    classes = {"AEIOUaeiou": "<VOW>", "0-9": "<NUM>", "A-Za-z": "<LET>", "A-Z": "<CAP>", "a-z": "<LOW>"}

    def tokenise(raw: str) -> str:  # Deep-Regex's preprocessing, with string placeholders masked
        toks = []
        for t in re.findall(r"\[(?:AEIOUaeiou|0-9|A-Za-z|A-Z|a-z)\]|dog|truck|ring|lake|.", raw):
            if t.startswith("[") and len(t) > 1:
                toks += ["[", classes[t[1:-1]], "]"]
            else:
                toks.append("<M>" if t in ("dog", "truck", "ring", "lake") else t)
        return " ".join(toks)

    for b in ("synth", "turk"):
        sp = load_benchmark(nlrx_cfg(root, split="deep-regex", val_size=1000), b)
        assert sp.sizes() == {"train": 6500, "val": 1000, "geometry": 0, "test": 2500}
        pre = read_deep_regex(root, b)
        for part in ("train", "val", "test"):
            got = [tokenise(e.target) for e in getattr(sp, part)]
            want = [re.sub(r"<M\d>", "<M>", e.target) for e in pre[part]]
            assert got == want, (b, part)
    assert load_benchmark(nlrx_cfg(root, split="deep-regex", val_size=200), "synth").sizes()["val"] == 200


def test_pool_for_real_nlrx_holds_no_real_pair(shared_data):
    real = {(e.prompt, e.target) for b in ("synth", "turk") for e in read_raw(shared_data / "nl-rx", b)}
    pool = pretraining_pool(nlrx_cfg(shared_data), 2000, seed=1_000_003)
    assert len(pool) == 2000 and not {(e.prompt, e.target) for e in pool} & real


# ------------------------------------------------------------------------------------------------------
# Small files written here: policies on toy data and every error case
# ------------------------------------------------------------------------------------------------------


def test_toy_raw_llm_jepa_and_jsonl_agree(tmp_path):
    raw = write_raw(tmp_path / "raw", {"synth": TOY, "turk": TOY})
    test_rows, train_rows = llm_jepa_permutation(10)
    assert len(test_rows) == 2 and sorted([*test_rows, *train_rows]) == list(range(10))
    j = tmp_path / "jsonl"
    j.mkdir()
    for part, rows in (("train", train_rows), ("test", test_rows)):
        (j / f"synth_{part}.jsonl").write_text("\n".join(jsonl_line(*TOY[i]) for i in rows) + "\n")
    a = load_benchmark(nlrx_cfg(raw, val_size=3), "synth")
    b = load_benchmark(nlrx_cfg(j, val_size=3), "synth")
    assert a.train == b.train and a.val == b.val and a.test == b.test
    assert a.sizes() == {"train": 5, "val": 3, "geometry": 0, "test": 2}


def test_carve_val_is_fixed_disjoint_and_ordered():
    rows = [Example(f"d{i}", f"r{i}", i) for i in range(50)]
    rest, val = carve_val(rows, 10)
    assert (rest, val) == carve_val(rows, 10)
    assert len(rest) == 40 and len(val) == 10
    assert {e.prompt for e in rest}.isdisjoint({e.prompt for e in val})
    assert [int(e.prompt[1:]) for e in val] == sorted(int(e.prompt[1:]) for e in val)  # original order kept
    assert [e.idx for e in val] == list(range(10))


def test_trailing_newline_and_crlf_are_tolerated(tmp_path):
    p = tmp_path / "a.txt"
    p.write_bytes(b"one\r\ntwo\r\n")
    assert read_lines(p) == ["one", "two"]


def test_missing_file(tmp_path):
    write_raw(tmp_path, {"synth": TOY})
    (tmp_path / "NL-RX-Synth" / "targ.txt").unlink()
    with pytest.raises(
        DataError, match=r"NL-RX-Synth/targ\.txt: file not found; expected .*one regex per line"
    ):
        load_benchmark(nlrx_cfg(tmp_path), "synth")
    with pytest.raises(DataError, match=r"NL-RX-Turk/src\.txt: file not found"):
        load_benchmark(nlrx_cfg(tmp_path), "turk")


def test_line_count_mismatch(tmp_path):
    write_raw(tmp_path, {"synth": TOY})
    (tmp_path / "NL-RX-Synth" / "targ.txt").write_text("\n".join(r for _, r in TOY[:-1]))
    with pytest.raises(
        DataError, match=r"src\.txt has 10 lines but .*targ\.txt has 9; expected the same number"
    ):
        load_benchmark(nlrx_cfg(tmp_path), "synth")


def test_empty_line(tmp_path):
    write_raw(tmp_path, {"synth": TOY})
    lines = [d for d, _ in TOY]
    lines[3] = "  "
    (tmp_path / "NL-RX-Synth" / "src.txt").write_text("\n".join(lines))
    with pytest.raises(DataError, match=r"src\.txt: line 4 is empty"):
        load_benchmark(nlrx_cfg(tmp_path), "synth")


def test_non_utf8(tmp_path):
    write_raw(tmp_path, {"synth": TOY})
    (tmp_path / "NL-RX-Synth" / "src.txt").write_bytes(b"lines with a caf\xe9\nlines")
    with pytest.raises(DataError, match=r"src\.txt: not valid UTF-8 \(byte 0xe9 at offset 16, line 1\)"):
        load_benchmark(nlrx_cfg(tmp_path), "synth")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"messages": [', r"line 2 is not valid JSON"),
        (
            jsonl_line("a", "b", roles=("system", "assistant", "user")),
            r"line 2 has roles \['system', 'assistant', 'user'\]",
        ),
        (
            json.dumps({"messages": [{"role": "user", "content": "x"}]}),
            r"line 2 has no list of three messages",
        ),
        (json.dumps([1, 2]), r"line 2 has no list of three messages"),
        (jsonl_line("a", ""), r"line 2: message contents must be strings"),
    ],
)
def test_bad_jsonl(tmp_path, line, message):
    p = tmp_path / "synth_train.jsonl"
    p.write_text(jsonl_line(*TOY[0]) + "\n" + line + "\n", encoding="utf-8")
    (tmp_path / "synth_test.jsonl").write_text(jsonl_line(*TOY[1]) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=re.escape(str(p)) + ": " + message):
        read_jsonl(p)
    with pytest.raises(DataError, match=message):
        load_benchmark(nlrx_cfg(tmp_path, val_size=0), "synth")


def test_nothing_recognisable_lists_what_was_expected(tmp_path):
    (tmp_path / "stuff.txt").write_text("hello")
    with pytest.raises(
        DataError, match=r"no NL-RX data found; expected one of: \(a\) .*NL-RX-Synth.*\(b\) .*jsonl"
    ):
        load_benchmark(nlrx_cfg(tmp_path), "synth")
    with pytest.raises(DataError, match="not a directory"):
        load_benchmark(nlrx_cfg(tmp_path / "absent"), "synth")


def test_split_needs_the_right_form(tmp_path):
    write_raw(tmp_path, {"synth": TOY})
    with pytest.raises(DataError, match=r"deep-regex split on raw text needs .*split_index\.tsv"):
        load_benchmark(nlrx_cfg(tmp_path, split="deep-regex"), "synth")
    d = tmp_path / "pre" / "data_synth_eval_synth"
    d.mkdir(parents=True)
    with pytest.raises(
        DataError, match=r"llm-jepa split needs raw NL-RX .* found only Deep-Regex split folders"
    ):
        load_benchmark(nlrx_cfg(tmp_path / "pre"), "synth")


def test_toy_deep_regex_split_via_index(tmp_path):
    write_raw(tmp_path, {"synth": TOY})
    rows = [
        "split\tsplit_line\traw_line",
        "train\t0\t5",
        "train\t1\t2",
        "val\t0\t9",
        "test\t0\t0",
        "test\t1\t7",
    ]
    (tmp_path / "split_index.tsv").write_text("\n".join(rows))
    sp = load_benchmark(nlrx_cfg(tmp_path, split="deep-regex", val_size=5), "synth")
    assert [e.target for e in sp.train] == [TOY[5][1], TOY[2][1]]
    assert [e.target for e in sp.val] == [TOY[9][1]] and [e.target for e in sp.test] == [TOY[0][1], TOY[7][1]]
    (tmp_path / "split_index.tsv").write_text("\n".join([*rows, "test\t2\t5"]))
    with pytest.raises(DataError, match=r"split_index\.tsv: line 7: raw line 5 is reused"):
        load_benchmark(nlrx_cfg(tmp_path, split="deep-regex"), "synth")
    (tmp_path / "split_index.tsv").write_text("split\tline\traw\ntrain\t0\t1")
    with pytest.raises(DataError, match="expected the header"):
        load_benchmark(nlrx_cfg(tmp_path, split="deep-regex"), "synth")


def test_unknown_benchmark_names_the_valid_ones(tmp_path):
    write_raw(tmp_path, {"synth": TOY})
    with pytest.raises(DataError, match=r"unknown benchmark 'TURK'; expected one of: synth, turk"):
        load_benchmark(nlrx_cfg(tmp_path), "TURK")


def test_copied_real_layout_is_detected_as_raw(shared_data, tmp_path):
    # A raw-only copy (no index, no split folders): llm-jepa works, deep-regex says what is missing.
    dst = tmp_path / "nlrx"
    for b in ("NL-RX-Synth", "NL-RX-Turk"):
        shutil.copytree(shared_data / "nl-rx" / b, dst / b)
    sp = load_benchmark(nlrx_cfg(dst, val_size=0, max_train=10, max_test=10), "turk")
    assert sp.sizes() == {"train": 10, "val": 0, "geometry": 0, "test": 10}
    with pytest.raises(DataError, match="split_index.tsv"):
        load_benchmark(nlrx_cfg(dst, split="deep-regex"), "turk")
