"""Real NL-RX: loaders for its three on-disk forms, form detection, and the two split policies.

Forms (see ``shared/data/nl-rx/SOURCE.md`` and ``shared/data/llm-jepa-nlrx/SOURCE.md``):

* **raw**: ``NL-RX-Synth/{src,targ}.txt`` and ``NL-RX-Turk/{src,targ}.txt``, 10,000 lines each, one
  description / one raw regex per line, no trailing newline; optionally ``split_index.tsv`` beside them
  (``split<TAB>split_line<TAB>raw_line``, 0-based), which maps the Deep-Regex split lines to raw lines.
* **deep-regex**: ``data_{synth,turk}_eval_{synth,turk}/{src,targ}-{train,val,test}.txt``; preprocessed
  (lowercased, punctuation split, ``<M0>``.. placeholders, one regex character per token). Loaded as a
  form, but never trained on: the deep-regex split is rebuilt on raw text through ``split_index.tsv``.
* **jsonl**: LLM-JEPA's ``{synth,turk}_{train,test}.jsonl`` (system, user = NL, assistant = regex).

Split policies:

* ``llm-jepa`` (8,000/2,000): HF ``train_test_split(test_size=0.2, seed=42)`` over the raw lines in file
  order, i.e. ``perm = numpy.random.default_rng(42).permutation(N)``, test = ``perm[:ceil(0.2 N)]``,
  train = the rest, both in permutation order. Rebuilt from raw when present (it equals the jsonl files
  row for row, tested); read from the jsonl files otherwise.
* ``deep-regex`` (6,500/1,000/2,500): raw lines picked through ``split_index.tsv``; its own validation
  split serves as ``val`` (first ``val_size`` rows of it).

For ``llm-jepa`` the validation slice is carved from train by :func:`carve_val` (a permutation with the
fixed seed :data:`VAL_SEED`, independent of any cell seed) and removed from train; the geometry pool
(``data.geometry_size`` rows) is then carved from the rest by :func:`carve_geometry` (seed :data:`GEOMETRY_SEED`):
held out from training, and never the validation rows λ is chosen on.

Every problem raises :class:`~jepa_audit.data.examples.DataError` naming the file and what was expected.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from jepa_audit.data.carve import GEOMETRY_SEED, VAL_SEED, carve_geometry, carve_val, reindex
from jepa_audit.data.examples import DataError, Example
from jepa_audit.data.lines import read_lines

__all__ = [
    "BENCHMARKS",
    "DEEP_REGEX_SPLITS",
    "LLM_JEPA_SEED",
    "LLM_JEPA_TEST_FRACTION",
    "SPLIT_TEST_ROWS",
    "Found",
    "detect",
    "llm_jepa_permutation",
    "read_deep_regex",
    "read_jsonl",
    "read_raw",
    "read_split_index",
    "real_pairs",
]

#: Seed and test fraction of LLM-JEPA's split (HF ``train_test_split(test_size=0.2, seed=42)``).
LLM_JEPA_SEED = 42
LLM_JEPA_TEST_FRACTION = 0.2
#: NL-RX's benchmarks (NL-RX-Synth and NL-RX-Turk wording); other tasks declare theirs in ``Task.benchmarks``.
BENCHMARKS: tuple[str, ...] = ("synth", "turk")
DEEP_REGEX_SPLITS = ("train", "val", "test")
#: Test rows per benchmark of each split policy (before data.max_test).
SPLIT_TEST_ROWS = {"llm-jepa": 2000, "deep-regex": 2500}
_RAW_DIR = {"synth": "NL-RX-Synth", "turk": "NL-RX-Turk"}
_ROLES = ("system", "user", "assistant")

_EXPECTED_LAYOUT = (
    "expected one of: (a) a directory holding NL-RX-Synth/{src,targ}.txt and NL-RX-Turk/{src,targ}.txt "
    "(raw NL-RX; optionally split_index.tsv and data_{synth,turk}_eval_{synth,turk}/ beside them); "
    "(b) a directory holding LLM-JEPA's {synth,turk}_{train,test}.jsonl; "
    "(c) a directory with nl-rx/ and/or llm-jepa-nlrx/ subdirectories laid out as (a) and (b)"
)


# ------------------------------------------------------------------------------------------------------
# Low-level readers (each checks its own file)
# ------------------------------------------------------------------------------------------------------


def _read_pairs(src: Path, targ: Path, start_idx: int = 0) -> list[Example]:
    nl = read_lines(src, "one English description per line")
    rx = read_lines(targ, "one regex per line")
    if len(nl) != len(rx):
        raise DataError(
            f"{src} has {len(nl)} lines but {targ} has {len(rx)}; expected the same number "
            "(line i of targ is the regex of line i of src)"
        )
    return [Example(prompt=a, target=b, idx=start_idx + i) for i, (a, b) in enumerate(zip(nl, rx, strict=True))]


def read_raw(raw_root: Path, benchmark: str) -> list[Example]:
    """Raw NL-RX lines of one benchmark in file order (``idx`` = raw line number, 0-based)."""
    _check_benchmark(benchmark)
    d = Path(raw_root) / _RAW_DIR[benchmark]
    return _read_pairs(d / "src.txt", d / "targ.txt")


def read_deep_regex(root: Path, benchmark: str) -> dict[str, list[Example]]:
    """Deep-Regex's preprocessed split files of one benchmark, as they are (tokenised, placeholders).

    ``root`` holds ``data_<b>_eval_<b>/``. Returns ``{"train": [...], "val": [...], "test": [...]}``.
    """
    _check_benchmark(benchmark)
    d = Path(root) / f"data_{benchmark}_eval_{benchmark}"
    return {s: _read_pairs(d / f"src-{s}.txt", d / f"targ-{s}.txt") for s in DEEP_REGEX_SPLITS}


def read_split_index(path: Path, n_raw: int | None = None) -> dict[str, list[int]]:
    """``split_index.tsv`` → ``{"train": [raw_line, ...], "val": [...], "test": [...]}`` in split-line order.

    Checked: header ``split<TAB>split_line<TAB>raw_line``, integer fields, split lines 0..k-1 without
    gaps, and (given ``n_raw``) every raw line used at most once and inside 0..n_raw-1.
    """
    path = Path(path)
    lines = read_lines(path, "a header split<TAB>split_line<TAB>raw_line, then one mapping per line")
    if lines[0].split("\t") != ["split", "split_line", "raw_line"]:
        raise DataError(
            f"{path}: line 1 is {lines[0]!r}; expected the header split<TAB>split_line<TAB>raw_line"
        )
    rows: dict[str, dict[int, int]] = {s: {} for s in DEEP_REGEX_SPLITS}
    used: set[int] = set()
    for i, ln in enumerate(lines[1:], start=2):
        parts = ln.split("\t")
        if len(parts) != 3 or parts[0] not in rows or not parts[1].isdigit() or not parts[2].isdigit():
            raise DataError(
                f"{path}: line {i} is {ln!r}; expected <train|val|test><TAB><split line><TAB><raw line>"
            )
        split, k, raw = parts[0], int(parts[1]), int(parts[2])
        if k in rows[split]:
            raise DataError(
                f"{path}: line {i}: {split} line {k} is mapped twice; expected each split line once"
            )
        if raw in used or (n_raw is not None and raw >= n_raw):
            raise DataError(
                f"{path}: line {i}: raw line {raw} is reused or outside 0..{(n_raw or 0) - 1}; "
                "expected a one-to-one map onto the raw lines"
            )
        used.add(raw)
        rows[split][k] = raw
    out: dict[str, list[int]] = {}
    for s, m in rows.items():
        if sorted(m) != list(range(len(m))):
            raise DataError(f"{path}: the {s} split lines are not 0..{len(m) - 1} without gaps")
        out[s] = [m[k] for k in range(len(m))]
    return out


def read_jsonl(path: Path) -> list[Example]:
    """LLM-JEPA's jsonl: one ``{"messages": [system, user, assistant]}`` object per line.

    Checked: the file exists and is UTF-8, every line parses as JSON, has exactly those three roles in
    that order, and string contents (user and assistant non-empty).
    """
    path = Path(path)
    what = 'one JSON object per line: {"messages": [{"role": "system", ...}, {"role": "user", ...}, {"role": "assistant", ...}]}'
    out = []
    for i, ln in enumerate(read_lines(path, what)):
        try:
            obj = json.loads(ln)
        except json.JSONDecodeError as e:
            raise DataError(
                f"{path}: line {i + 1} is not valid JSON ({e.msg} at column {e.colno}); expected {what}"
            ) from None
        msgs = obj.get("messages") if isinstance(obj, dict) else None
        if not isinstance(msgs, list) or len(msgs) != 3 or not all(isinstance(m, dict) for m in msgs):
            raise DataError(f"{path}: line {i + 1} has no list of three messages; expected {what}")
        roles = tuple(m.get("role") for m in msgs)
        if roles != _ROLES:
            raise DataError(
                f"{path}: line {i + 1} has roles {list(roles)}; expected ['system', 'user', 'assistant']"
            )
        contents = [m.get("content") for m in msgs]
        if (
            not all(isinstance(c, str) for c in contents)
            or not contents[1].strip()
            or not contents[2].strip()
        ):
            raise DataError(
                f"{path}: line {i + 1}: message contents must be strings, user and assistant non-empty"
            )
        out.append(Example(prompt=contents[1], target=contents[2], idx=i))
    return out


# ------------------------------------------------------------------------------------------------------
# Form detection
# ------------------------------------------------------------------------------------------------------


@dataclass
class Found:
    """Which NL-RX forms a ``data.path`` holds (each the directory where it was found, or None)."""

    path: Path
    raw: Path | None = None  # holds NL-RX-Synth/ and/or NL-RX-Turk/
    split_index: Path | None = None  # split_index.tsv beside the raw dirs
    deep_regex: Path | None = None  # holds data_<b>_eval_<b>/
    jsonl: Path | None = None  # holds <b>_{train,test}.jsonl
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """One line saying which forms were found, e.g. for logs and ``Splits.source``."""
        parts = []
        if self.raw:
            parts.append(f"raw NL-RX at {self.raw}" + (" with split_index.tsv" if self.split_index else ""))
        if self.deep_regex:
            parts.append(f"Deep-Regex split folders at {self.deep_regex}")
        if self.jsonl:
            parts.append(f"LLM-JEPA jsonl at {self.jsonl}")
        return "; ".join(parts) or "nothing recognisable"


def detect(path: str | Path) -> Found:
    """Look in ``path`` and in its ``nl-rx/`` and ``llm-jepa-nlrx/`` subdirectories for the three forms."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"data.path {root}: not a directory; {_EXPECTED_LAYOUT}")
    found = Found(path=root)
    for d in (root, root / "nl-rx", root / "llm-jepa-nlrx"):
        if not d.is_dir():
            continue
        if found.raw is None and any((d / n).is_dir() for n in _RAW_DIR.values()):
            found.raw = d
            if (d / "split_index.tsv").is_file():
                found.split_index = d / "split_index.tsv"
        if found.deep_regex is None and any((d / f"data_{b}_eval_{b}").is_dir() for b in BENCHMARKS):
            found.deep_regex = d
        if found.jsonl is None and any(
            (d / f"{b}_{s}.jsonl").is_file() for b in BENCHMARKS for s in ("train", "test")
        ):
            found.jsonl = d
    if not (found.raw or found.deep_regex or found.jsonl):
        raise DataError(f"data.path {root}: no NL-RX data found; {_EXPECTED_LAYOUT}")
    return found


# ------------------------------------------------------------------------------------------------------
# Split policies
# ------------------------------------------------------------------------------------------------------


def _check_benchmark(benchmark: str) -> None:
    if benchmark not in BENCHMARKS:
        raise DataError(f"unknown benchmark {benchmark!r}; expected one of: {', '.join(BENCHMARKS)}")


def llm_jepa_permutation(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(test rows, train rows) of LLM-JEPA's split of ``n`` lines: HF ``train_test_split(test_size=0.2,
    seed=42)``, whose test size is ``ceil(0.2 n)`` (2,000 of 10,000)."""
    perm = np.random.default_rng(LLM_JEPA_SEED).permutation(n)
    n_test = math.ceil(LLM_JEPA_TEST_FRACTION * n)
    return perm[:n_test], perm[n_test:]


def llm_jepa_split(found: Found, benchmark: str) -> tuple[list[Example], list[Example], str]:
    """(train, test, source) of the llm-jepa policy, from raw lines if present, else from jsonl."""
    if found.raw is not None:
        raw = read_raw(found.raw, benchmark)
        test_rows, train_rows = llm_jepa_permutation(len(raw))
        train = [raw[i] for i in train_rows.tolist()]
        test = [raw[i] for i in test_rows.tolist()]
        src = f"NL-RX raw ({found.raw / _RAW_DIR[benchmark]}), llm-jepa split rebuilt (permutation seed 42)"
        return reindex(train), reindex(test), src
    if found.jsonl is not None:
        train = read_jsonl(found.jsonl / f"{benchmark}_train.jsonl")
        test = read_jsonl(found.jsonl / f"{benchmark}_test.jsonl")
        return train, test, f"LLM-JEPA jsonl ({found.jsonl}), llm-jepa split"
    raise DataError(
        f"data.path {found.path}: the llm-jepa split needs raw NL-RX ({_RAW_DIR[benchmark]}/{{src,targ}}.txt) "
        f"or LLM-JEPA's {benchmark}_{{train,test}}.jsonl; found only {found.describe()} "
        "(the Deep-Regex files are preprocessed and cannot be mapped back to raw lines without split_index.tsv)"
    )


def deep_regex_split(found: Found, benchmark: str) -> tuple[dict[str, list[Example]], str]:
    """{train, val, test} of the deep-regex policy on raw text, through ``split_index.tsv``."""
    if found.raw is None or found.split_index is None:
        raise DataError(
            f"data.path {found.path}: the deep-regex split on raw text needs NL-RX-Synth/ and NL-RX-Turk/ with "
            f"split_index.tsv beside them (it maps split lines to raw lines); found {found.describe()}. The "
            "preprocessed data_*_eval_* files hold tokenised regexes with <M0>-style placeholders, which are "
            "not the raw NL-RX form this project trains and scores on"
        )
    raw = read_raw(found.raw, benchmark)
    index = read_split_index(found.split_index, n_raw=len(raw))
    parts = {s: reindex([raw[i] for i in index[s]]) for s in DEEP_REGEX_SPLITS}
    src = f"NL-RX raw ({found.raw / _RAW_DIR[benchmark]}), deep-regex split via {found.split_index.name}"
    return parts, src


def load_nlrx(
    path: str | Path,
    benchmark: str,
    split: str,
    val_size: int,
    max_train: int | None = None,
    max_test: int | None = None,
    geometry_size: int = 0,
) -> tuple[list[Example], list[Example], list[Example], str, list[Example]]:
    """(train, val, test, source, geometry) of real NL-RX under a split policy, with val and the geometry
    pool carved (before the ``max_*`` limits) and limits applied.

    deep-regex: val is the first ``val_size`` rows of its validation split and the geometry pool the next
    ``geometry_size`` (fewer when that split runs out: :func:`jepa_audit.cell.geometry_batch` warns)."""
    _check_benchmark(benchmark)
    found = detect(path)
    if split == "llm-jepa":
        train, test, src = llm_jepa_split(found, benchmark)
        train, val = carve_val(train, val_size, what=f"the llm-jepa train split of {benchmark}")
        train, geometry = carve_geometry(train, geometry_size, what=f"the llm-jepa train split of {benchmark} less val")
        src += (f"; val {len(val)} rows carved from train (seed {VAL_SEED}), geometry pool {len(geometry)} rows "
                f"carved from the rest (seed {GEOMETRY_SEED})")
    elif split == "deep-regex":
        parts, src = deep_regex_split(found, benchmark)
        train, val, test = parts["train"], parts["val"][:val_size], parts["test"]
        geometry = reindex(parts["val"][val_size : val_size + geometry_size])
        src += f"; val = first {len(val)} rows of its validation split, geometry pool = the next {len(geometry)}"
    else:
        raise DataError(f"data.split={split!r}; expected llm-jepa or deep-regex")
    if max_train is not None:
        train = train[:max_train]
    if max_test is not None:
        test = test[:max_test]
    return train, val, test, f"{src} [found: {found.describe()}]", geometry


def real_pairs(path: str | Path) -> set[tuple[str, str]]:
    """Every (description, regex) pair of real NL-RX found under ``path`` (both benchmarks, all rows),
    from raw files if present, else from the jsonl files; used to keep the pre-training pool clean."""
    found = detect(path)
    pairs: set[tuple[str, str]] = set()
    for b in BENCHMARKS:
        if found.raw is not None and (found.raw / _RAW_DIR[b]).is_dir():
            pairs.update((e.prompt, e.target) for e in read_raw(found.raw, b))
        if found.jsonl is not None:
            for s in ("train", "test"):
                p = found.jsonl / f"{b}_{s}.jsonl"
                if p.is_file():
                    pairs.update((e.prompt, e.target) for e in read_jsonl(p))
    return pairs
