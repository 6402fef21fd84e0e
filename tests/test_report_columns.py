"""The report's tables come from one column specification (stats/columns.py) in the summary, build.py and both
templates: headers and cells line up, every column reads keys the summary fills, and a new column shows up in
report.md and report.html alike."""

from __future__ import annotations

import json
import re
import shutil
from html import unescape
from pathlib import Path

import pytest

from jepa_audit.audit.store import encode_row
from jepa_audit.report import build, write_report
from jepa_audit.stats import summary as summary_mod
from jepa_audit.stats.columns import (
    COMPARISON_COLUMNS,
    SUMMARY_TABLES,
    VERDICT_COLUMNS,
    Column,
    require_sources,
)
from test_report import OPTIONS, _write_results

#: table name → (its columns, the Markdown section heading, the HTML section id)
TABLES = {
    "aux_verdicts": (VERDICT_COLUMNS, "## The answer", "answer"),
    "comparisons": (COMPARISON_COLUMNS, "## All comparisons", "comparisons"),
    "items": (SUMMARY_TABLES["items"], "## Per-item analyses", "items"),
    "coupling": (SUMMARY_TABLES["coupling"], "## Coupling", "coupling"),
    "grad_cosine": (SUMMARY_TABLES["grad_cosine"], "## Gradient cosine per auxiliary", "grad"),
}


def _row(method: str, seed: int, em: float, family: str, bench: str = "synth") -> dict:
    return {
        "benchmark": bench, "method": method, "seed": seed, "mode": "lora", "family": family,
        "metrics": {"exact_match": em, "dfa_accuracy": em, "n_test": 12},
        "geometry": {"curvature_answer_L2": 30.0 + seed % 3},
        "grad_cosine": None if method == "ce" else {"mean": 0.1, "frac_positive": 0.5},
        "config_hash": "x", "wall_s": 1.0, "status": "done",
    }  # fmt: skip


def _write_corner_cases(out: Path) -> None:
    """test_report's audit plus seeds only one arm has, a zero-variance and a one-seed comparison."""
    _write_results(out)
    extra = [_row("t1_straight", 99, 0.75, "trajectory"), _row("ce", 98, 0.5, "reference")]
    for s in (1, 2, 3):
        extra += [_row("ce", s, 0.5, "reference", "other"), _row("flat", s, 0.5, "predictive", "other")]
    extra.append(_row("lonely", 1, 0.6, "predictive", "other"))
    with open(out / "results.jsonl", "ab") as f:
        f.write(b"".join(encode_row(r) for r in extra))


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("columns") / "audit"
    out.mkdir()
    _write_corner_cases(out)
    return out


@pytest.fixture(scope="module")
def built(results_dir) -> tuple[dict, str, str]:
    summary = write_report(results_dir, **OPTIONS)
    return (
        summary,
        (results_dir / "report.md").read_text(encoding="utf-8"),
        (results_dir / "report.html").read_text(encoding="utf-8"),
    )


def _md_table(md: str, heading: str) -> list[list[str]]:
    """The cells of the first table after ``heading`` (header, separator and body rows), unescaped pipes only."""
    lines = md[md.index("\n" + heading) + 1 :].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]])
    return rows


def _html_table(html: str, section_id: str) -> list[tuple[str, list[tuple[str, str]]]]:
    """Per row of the first table after ``<h2 id=section_id>``: (the tr's attributes, [(tag + class, text)])."""
    start = html.index(f'<h2 id="{section_id}">')
    table = html[html.index("<table>", start) : html.index("</table>", start)]
    out = []
    for attrs, body in re.findall(r"<tr([^>]*)>(.*?)</tr>", table):
        cells = [(tag + cls, unescape(text)) for tag, cls, text in re.findall(r"<(th|td)([^>]*)>(.*?)</\1>", body)]
        out.append((attrs, cells))
    return out


@pytest.mark.parametrize("name", sorted(TABLES))
def test_both_templates_print_every_column_in_order_with_as_many_cells_as_headers(built, name) -> None:
    summary, md, html = built
    columns, heading, section_id = TABLES[name]
    n_rows = len(summary["verdicts"] if name == "aux_verdicts" else summary[name])
    assert n_rows > 0, f"the fixture should give {name} rows"

    header, sep, *body = _md_table(md, heading)
    assert header == [build.md_escape(c.header) for c in columns]
    assert sep == ["---"] * len(columns)
    assert len(body) >= n_rows and all(len(r) == len(columns) for r in body)

    head, *rows = _html_table(html, section_id)
    assert [text for _, text in head[1]] == [c.header for c in columns]
    assert len(rows) >= n_rows
    for _, cells in rows:
        # one <td> per column, with the column's class (num: right-aligned digits, note: grey text)
        assert [tag for tag, _ in cells] == ["td" + (f' class="{c.css}"' if c.css else "") for c in columns]


def test_comparison_cells_are_the_summary_statistics(built) -> None:
    summary, md, html = built
    comps = summary["comparisons"]
    _, _, *md_rows = _md_table(md, "## All comparisons")
    _, *html_rows = _html_table(html, "comparisons")
    assert len(md_rows) == len(html_rows) == len(comps)
    col = {c.key: i for i, c in enumerate(COMPARISON_COLUMNS)}
    for c, md_cells, (attrs, cells) in zip(comps, md_rows, html_rows, strict=True):
        html_cells = [text for _, text in cells]
        assert md_cells[col["method"]] == build.md_escape(c["method"]) and html_cells[col["method"]] == c["method"]
        assert html_cells[col["n"]] == str(c["n"])
        flags = [n for k, n in (("reject_single", "α"), ("reject_bonferroni", "Bonf"), ("reject_holm", "Holm"),
                                ("reject_bh", "BH")) if c[k]]  # fmt: skip
        assert html_cells[col["rejects"]] == (" ".join(flags) or "—")
        assert ('class="reject"' in attrs) == bool(flags)  # the row shading keeps any_reject
        if c["ci95_low"] is None:
            assert html_cells[col["ci"]] == "—" and html_cells[col["t"]] == "—"
        else:
            low, high = (float(x) for x in html_cells[col["ci"]].strip("()").split(", "))
            assert low == pytest.approx(c["ci95_low"], abs=0.005) and high == pytest.approx(c["ci95_high"], abs=0.005)
        if c["ci_holm_low"] is not None:
            assert html_cells[col["ci_holm"]].endswith(f" at {100 * c['ci_holm_level']:.4g} %")
        note = html_cells[col["note"]]
        assert note.startswith(c["note"] or "")
        for s in c["seeds_method_only"]:
            assert f"{s} (method only)" in note
        for s in c["seeds_baseline_only"]:
            assert f"{s} (ce only)" in note
    by_method = {(c["benchmark"], c["method"], c["metric"]): i for i, c in enumerate(comps)}
    i = by_method[("synth", "t1_straight", "exact_match")]
    assert html_rows[i][1][col["note"]][1] == " unpaired seeds: 99 (method only), 98 (ce only)"
    assert "unpaired seeds: 2 (ce only), 3 (ce only)" in md_rows[by_method[("other", "lonely", "exact_match")]][-1]


def test_a_new_column_shows_up_in_both_reports(results_dir, tmp_path, monkeypatch) -> None:
    out = tmp_path / "audit"
    shutil.copytree(results_dir, out)
    extra = Column(key="p_nonsup", header="p_nonsup (raw)", kind="p", css="num", doc="one-sided, against Δ")
    monkeypatch.setattr(build, "COMPARISON_COLUMNS", (*COMPARISON_COLUMNS, extra))
    summary = write_report(out, **OPTIONS)
    header, _, *md_rows = _md_table((out / "report.md").read_text(encoding="utf-8"), "## All comparisons")
    head, *html_rows = _html_table((out / "report.html").read_text(encoding="utf-8"), "comparisons")
    assert header[-1] == "p_nonsup (raw)" and head[1][-1] == ("th", "p_nonsup (raw)")
    for c, md_cells, (_, cells) in zip(summary["comparisons"], md_rows, html_rows, strict=True):
        assert len(md_cells) == len(cells) == len(COMPARISON_COLUMNS) + 1
        assert cells[-1][0] == 'td class="num"' and md_cells[-1] == cells[-1][1]
        if c["p_nonsup"] is None:
            assert md_cells[-1] == "—"
        else:
            assert float(md_cells[-1]) == pytest.approx(c["p_nonsup"], rel=1e-3, abs=5e-5)


def test_every_column_reads_keys_every_summary_row_has(built, results_dir) -> None:
    summary, _, _ = built
    saved = json.loads((results_dir / "summary.json").read_text(encoding="utf-8"))
    for section, columns in SUMMARY_TABLES.items():
        assert summary[section], f"the fixture should give {section} rows"
        for rows in (summary[section], saved[section]):
            for row in rows:
                for c in columns:
                    assert set(c.reads) <= set(row), (section, c.key)


def test_a_column_whose_statistic_nobody_fills_fails_the_summary(monkeypatch) -> None:
    rows = [_row("ce", s, 0.5, "reference") for s in (1, 2)] + [_row("t1", s, 0.6, "trajectory") for s in (1, 2)]
    missing = Column(key="p_new", header="p_new", kind="p", css="num")
    monkeypatch.setitem(summary_mod.SUMMARY_TABLES, "comparisons", (*COMPARISON_COLUMNS, missing))
    with pytest.raises(ValueError, match=r"comparisons\[0\]: column 'p_new' \('p_new'\) reads \['p_new'\]"):
        summary_mod.build_summary(rows, bootstrap_reps=10)


def test_the_specification_is_consistent() -> None:
    for name, (columns, _, _) in TABLES.items():
        keys = [c.key for c in columns]
        assert len(keys) == len(set(keys)), f"{name}: duplicate column keys"
        for c in columns:
            assert c.kind in build._FORMATS, f"{name}.{c.key}: no formatter for kind {c.kind!r}"
            assert c.header and c.header == c.header.strip()
    assert all(c.kind == "text" for c in VERDICT_COLUMNS)  # verdict_table's rows are already text
    with pytest.raises(ValueError, match="css 'wide' is not one of"):
        Column(key="x", header="x", css="wide")
    with pytest.raises(ValueError, match="no formatter for kind 'bogus'"):
        build._row_view({"x": 1}, [Column(key="x", header="x", kind="bogus")])
    with pytest.raises(ValueError, match=r"rows\[1\]: column 'ci' \('95 % CI'\) reads \['ci95_high'\]"):
        require_sources([c for c in COMPARISON_COLUMNS if c.key == "ci"],
                        [{"ci95_low": 1.0, "ci95_high": 2.0}, {"ci95_low": 1.0}], "rows")  # fmt: skip


def test_composite_cells() -> None:
    cols = {c.key: c for c in COMPARISON_COLUMNS}
    row = {
        "ci95_low": -1.234, "ci95_high": 5.0, "ci_holm_low": -2.0, "ci_holm_high": 6.5, "ci_holm_level": 0.975,
        "reject_single": True, "reject_bonferroni": False, "reject_holm": True, "reject_bh": False,
        "note": "n small", "seeds_method_only": [4], "seeds_baseline_only": ["s7"],
    }  # fmt: skip
    assert build._FORMATS["ci"](row, cols["ci"]) == "(-1.23, +5.00)"
    assert build._FORMATS["ci_holm"](row, cols["ci_holm"]) == "(-2.00, +6.50) at 97.5 %"
    assert build._FORMATS["rejects"](row, cols["rejects"]) == "α Holm"
    assert build._FORMATS["note"](row, cols["note"]) == "n small unpaired seeds: 4 (method only), s7 (ce only)"
    empty = {**row, "ci95_low": None, "ci_holm_low": None, "note": None, "seeds_method_only": [],
             "seeds_baseline_only": [], "reject_single": False, "reject_holm": False}  # fmt: skip
    assert [build._FORMATS[k](empty, cols[k]) for k in ("ci", "ci_holm", "rejects", "note")] == ["—", "—", "—", ""]
    rng = next(c for c in SUMMARY_TABLES["grad_cosine"] if c.key == "range")
    assert build._FORMATS["range"]({"min": -0.1, "max": 0.25}, rng) == "-0.100 to +0.250"
    assert build._FORMATS["range"]({"min": None, "max": None}, rng) == "—"
