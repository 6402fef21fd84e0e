"""``jepa-audit report DIR``: results.jsonl → summary.json, report.md, report.html.

The report is built from ``DIR/results.jsonl`` alone (plus the per-item prediction files its rows
reference, when present). All numbers are computed in :mod:`jepa_audit.stats`; this module turns
them into preformatted strings and figures, and the templates only lay them out. The HTML is one
self-contained file (figures inline as base64 PNG, no scripts, no external resources); every string
that comes from data is escaped by jinja2's autoescape in HTML and by a Markdown escaper in the
Markdown report. Equal inputs give byte-identical outputs.
"""

from __future__ import annotations

import base64
import json
import math
from collections import defaultdict
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from html import escape as html_escape
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from jepa_audit.results_file import (
    PREDICTIONS_CHECKSUM,
    StoreError,
    atomic_write_all,
    clean_temporaries,
    file_sha256,
    lock_holder,
    manifest_hashes,
    read_results,
)
from jepa_audit.stats.columns import (
    COMPARISON_COLUMNS,
    COUPLING_COLUMNS,
    GRAD_COSINE_COLUMNS,
    ITEM_COLUMNS,
    VERDICT_COLUMNS,
    Column,
)
from jepa_audit.stats.manipulation import headline, headroom_sentence, verdict_table
from jepa_audit.stats.summary import (
    BASELINE,
    FAMILIES,
    METRICS,
    build_summary,
    coupling_method_points,
    index_rows,
)

from . import plots

__all__ = [
    "ReportError",
    "ReportWriteError",
    "load_declared",
    "load_results",
    "predictions_loader",
    "read_rows",
    "write_report",
    "render",
]

RESULTS = "results.jsonl"
SUMMARY = "summary.json"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
CALIBRATION = "calibration.json"  # the λ calibration stage's picks and curves (audit/calibration.py)
GRID = "grid.json"  # the runner's manifest: every cell the grid defined in this directory
_TEMPLATES = Path(__file__).parent / "templates"
_MAX_SCATTER_PANELS = 12
_EXAMPLES_PER_METHOD = 2
_MAX_STRING = 160


class ReportError(Exception):
    """The results directory cannot be turned into a report (missing or malformed input)."""


class ReportWriteError(ReportError):
    """The report files cannot be written (full disk, read-only directory); the old ones are unchanged."""


# --------------------------------------------------------------------------- input


def load_results(path: Path) -> list[dict[str, Any]]:
    """The trusted rows of a results.jsonl, through the runner's own reader (:func:`read_rows`)."""
    return read_rows(path)[0]


def read_rows(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(trusted rows, excluded lines) of ``path`` via :func:`jepa_audit.results_file.read_results`.

    The same validation as the runner: a line is excluded when it is torn (the last line without its
    newline), not a JSON object, fails its ``row_sha256``, duplicates or conflicts with another row of its
    cell, or (when ``grid.json`` sits next to it) carries another config's ``config_hash``. Each excluded
    line is ``{"line", "cell", "reason"}``. Raises :class:`ReportError` when the file is missing or
    unreadable.
    """
    path = Path(path)
    if not path.is_file():
        if path.is_dir():
            raise ReportError(f"{path}: is a directory, expected the results file (one JSON object per finished cell)")
        raise ReportError(f"{path}: results file not found (expected one JSON object per finished cell)")
    try:
        found = read_results(path, manifest_hashes(path.parent))
    except StoreError as exc:
        raise ReportError(str(exc)) from None
    return list(found.rows.values()), found.excluded()


def _excluded_warnings(path: Path, excluded: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per excluded results line, for the report's warnings."""
    return [
        f"{path.name} line {e['line']}" + (f" (cell {e['cell']})" if e.get("cell") else "")
        + f" excluded: {e['reason']}"
        for e in excluded
    ]


def _read_json(path: Path, what: str) -> Any:
    """The JSON in ``path``, or None when there is no such file; :class:`ReportError` naming the file (as
    ``what``) when it cannot be read or parsed."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportError(f"{path}: cannot read {what} ({exc}); restore it or delete it") from exc


def load_declared(out_dir: Path) -> list[dict[str, Any]] | None:
    """The cells the audit grid declared, from ``DIR/grid.json`` (written by the runner), or None without one.

    Each entry is ``{"benchmark", "method", "seed", "mode"}``; they fix every family's size m. Raises
    :class:`ReportError` naming the file when it exists but is not the runner's manifest.
    """
    path = Path(out_dir) / GRID
    manifest = _read_json(path, "the grid manifest")
    if manifest is None:
        return None
    cells = manifest.get("cells") if isinstance(manifest, dict) else None
    if not isinstance(cells, dict):
        raise ReportError(
            f"{path}: expected {{'cells': {{key: {{'benchmark', 'method', 'seed', 'mode', ...}}}}}}"
        )
    out = []
    for key, cell in sorted(cells.items()):
        if not (
            isinstance(cell, dict) and all(isinstance(cell.get(k), str) for k in ("benchmark", "method"))
        ):
            raise ReportError(f"{path}: cell {key!r} lacks a benchmark and method (expected strings)")
        out.append({k: cell.get(k) for k in ("benchmark", "method", "seed", "mode")})
    return out


_STATS_DEFAULTS = {"sesoi_pp": 2.0, "min_shift_sd": 0.5}  # config.StatsCfg's defaults (no config import here)


def load_declared_stats(out_dir: Path) -> dict[str, float]:
    """The decision settings the run declared before testing (``grid.json``'s ``stats``: ``sesoi_pp``,
    ``min_shift_sd``), or {} when grid.json is absent or predates them. Raises :class:`ReportError` naming the
    file when a value is not a non-negative number."""
    path = Path(out_dir) / GRID
    manifest = _read_json(path, "the grid manifest")
    if manifest is None:
        return {}
    stats = manifest.get("stats") if isinstance(manifest, dict) else None
    if not isinstance(stats, dict):
        return {}
    out = {}
    for key in _STATS_DEFAULTS:
        v = stats.get(key)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
            raise ReportError(f"{path}: stats.{key} = {v!r}; expected a number ≥ 0")
        out[key] = float(v)
    return out


def load_calibration(out_dir: Path) -> dict[str, Any] | None:
    """``DIR/calibration.json`` (the λ calibration stage's picks and dose-response curves), or None without one.
    Raises :class:`ReportError` naming the file when it exists but is not a JSON object with ``pairs``."""
    path = Path(out_dir) / CALIBRATION
    doc = _read_json(path, "the calibration file")
    if doc is None:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("pairs"), dict):
        raise ReportError(f"{path}: expected an object with a 'pairs' mapping (the calibration stage's output)")
    return doc


def predictions_loader(out_dir: Path) -> Callable[[str], list[dict[str, Any]] | None]:
    """A cached reader of per-item prediction files given relative to ``out_dir``.

    Returns the parsed rows, or ``None`` when the file is missing, outside ``out_dir``, or malformed.
    """
    root = Path(out_dir).resolve()
    cache: dict[str, list[dict[str, Any]] | None] = {}

    def load(rel: str) -> list[dict[str, Any]] | None:
        if rel in cache:
            return cache[rel]
        result: list[dict[str, Any]] | None = None
        path = (root / rel).resolve()
        if path.is_relative_to(root) and path.is_file():
            try:
                with open(path, encoding="utf-8") as f:
                    parsed = [json.loads(line) for line in f if line.strip()]
                if all(isinstance(p, dict) for p in parsed):
                    result = parsed
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                result = None
        cache[rel] = result
        return result

    return load


def verify_predictions(out_dir: Path, rows: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """(rows, warnings): each row's predictions file checked against the ``predictions_sha256`` the runner
    recorded in the row when it committed the cell.

    A file that does not match (edited, replaced or damaged after the cell finished) is refused: its row comes
    back without ``predictions_file``, so the item-level analyses and the examples leave that cell out, and a
    warning names the file. Rows written before the checksum existed (no ``predictions_sha256``) are read as
    before, with one note saying how many files could not be verified."""
    root = Path(out_dir).resolve()
    out: list[dict[str, Any]] = []
    warnings: list[str] = []
    unverified = 0
    for row in rows:
        rel = row.get("predictions_file")
        if not isinstance(rel, str) or not rel:
            out.append(dict(row))
            continue
        want = row.get(PREDICTIONS_CHECKSUM)
        if not isinstance(want, str):
            unverified += 1
            out.append(dict(row))
            continue
        path = (root / rel).resolve()
        got = file_sha256(path) if path.is_relative_to(root) else None
        if got is not None and got != want:
            warnings.append(
                f"predictions file {rel!r} does not match the {PREDICTIONS_CHECKSUM} recorded in its row (edited "
                "after the cell finished?): refused, its cell is left out of the item-level analyses"
            )
            out.append({k: v for k, v in row.items() if k != "predictions_file"})
            continue
        out.append(dict(row))
    if unverified:
        warnings.append(
            f"note: {unverified} row(s) were written before predictions files had a checksum (no "
            f"{PREDICTIONS_CHECKSUM}): their predictions files are read unverified"
        )
    return out, warnings


def refuse_calibration_rows(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Raise :class:`ReportError` (one line) when ``path`` holds λ-calibration runs: their scores are on the
    validation split, and verdicts built from them would read as test results (``report DIR/calibration``)."""
    cal = [
        r for r in rows
        if r.get("kind") == "calibration" or (isinstance(r.get("metrics"), Mapping) and r["metrics"].get("split") == "validation")
    ]  # fmt: skip
    if cal:
        raise ReportError(
            f"{path}: {len(cal)} row(s) are λ-calibration runs scored on the validation split (kind: calibration), "
            f"not test cells; report the audit directory above it (jepa-audit report {Path(path).parent.parent}); "
            "the picks are in its calibration.json"
        )


def _progress(out_dir: Path, rows: Sequence[Mapping[str, Any]], declared: Sequence[Mapping[str, Any]] | None) -> dict[str, Any]:
    """Declared cells (grid.json) against rows, and whether an audit holds the directory now.

    ``{"declared", "with_rows", "missing", "in_progress" (who holds the lock, or None), "sentence",
    "warnings"}``: a report written while an audit runs, or after some cells failed, says so before its
    headline instead of speaking only of the cells that have rows."""
    def ident(c: Mapping[str, Any]) -> tuple:
        return tuple(str(c.get(k)) for k in ("benchmark", "method", "seed", "mode"))

    have = {ident(r) for r in rows}
    cells = {ident(c) for c in declared or []}
    missing = len(cells - have)
    holder = lock_holder(out_dir)
    sentence = ""
    warnings: list[str] = []
    if holder:
        sentence = (
            f"In progress: an audit is running in this directory ({holder}); {len(cells & have)} of {len(cells)} "
            "declared cells have a row so far, and every count below covers only those."
        )
    elif missing:
        sentence = (
            f"Incomplete: {missing} of {len(cells)} declared cells have no row (failed or not run); every count "
            "below covers only the cells that have one."
        )
    if sentence:
        warnings.append(sentence)
    return {"declared": len(cells), "with_rows": len(cells & have), "missing": missing,
            "in_progress": holder, "sentence": sentence, "warnings": warnings}  # fmt: skip


# --------------------------------------------------------------------------- formatting


def _pp(x: float | None, signed: bool = True) -> str:
    if x is None:
        return "—"
    return f"{x:+.2f}" if signed else f"{x:.2f}"


def _p(p: float | None) -> str:
    if p is None:
        return "—"
    return f"{p:.1e}" if p < 1e-4 else f"{p:.4f}"


def _num(x: float | None, digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}g}"


def _signed(x: float | None, digits: int = 2) -> str:
    return "—" if x is None else f"{x:+.{digits}f}"


def _clip(text: Any) -> str:
    text = " ".join(str(text).split()) if text is not None else ""
    return text if len(text) <= _MAX_STRING else text[: _MAX_STRING - 1] + "…"


def md_escape(value: Any) -> str:
    """Escape a value for Markdown text and table cells: no raw HTML, links, emphasis or pipes."""
    text = "" if value is None else str(value)
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    for ch in "\\`*[]|":
        text = text.replace(ch, "\\" + ch)
    return " ".join(text.splitlines())


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


# --------------------------------------------------------------------------- view model


@dataclass
class Figure:
    """One inline figure: a title, a caption and a PNG data URI."""

    section: str
    title: str
    caption: str
    uri: str


@dataclass
class ReportData:
    """Everything the templates print, as preformatted strings (templates do no arithmetic)."""

    title: str
    counts: dict[str, str]
    alpha: str
    family: str
    family_definition: str
    family_fwer: str
    families: list[dict[str, Any]]
    verdicts: list[dict[str, Any]]
    power: list[dict[str, Any]]
    comparisons: list[dict[str, Any]]
    items: list[dict[str, Any]]
    items_note: str | None
    coupling: list[dict[str, Any]]
    coupling_label: str
    grad_cosine: list[dict[str, Any]]
    failed: list[dict[str, str]]
    warnings: list[str]
    examples: list[dict[str, str]]
    figures: dict[str, list[Figure]] = field(default_factory=dict)
    bootstrap_note: str = ""
    logit_label: str = ""
    headline: str = ""  # stats.manipulation.headline: the result in words, before any table
    aux_verdicts: list[dict[str, str]] = field(default_factory=list)  # stats.manipulation.verdict_table
    # The tables' columns (stats/columns.py), which both templates loop over for the header and the cells.
    aux_columns: list[Column] = field(default_factory=lambda: list(VERDICT_COLUMNS))
    comparison_columns: list[Column] = field(default_factory=lambda: list(COMPARISON_COLUMNS))
    item_columns: list[Column] = field(default_factory=lambda: list(ITEM_COLUMNS))
    coupling_columns: list[Column] = field(default_factory=lambda: list(COUPLING_COLUMNS))
    grad_columns: list[Column] = field(default_factory=lambda: list(GRAD_COSINE_COLUMNS))
    sesoi: str = "2"  # Δ, pp, as the verdicts used it
    min_shift_sd: str = "0.5"
    calibration_note: str = ""  # when the calibration runs' budget differs from the test cells'
    dose_readings: list[dict[str, str]] = field(default_factory=list)  # per pair: the verdict read against its curve


def _curve_text(pair: Mapping[str, Any]) -> str:
    """A calibration curve in words: per dose, validation EM ± SE (%) and the target keys' values, the pick
    and the validation best marked."""
    parts = []
    for c in pair.get("curve") or []:
        em = "—" if c.get("val_pp") is None else f"{c['val_pp']:.1f}" + (
            f" ± {c['se_pp']:.1f}" if c.get("se_pp") is not None else "") + " %"  # fmt: skip
        tg = ", ".join(f"{k} {_num(v)}" for k, v in (c.get("target") or {}).items())
        mark = "".join(m for m, on in ((" pick", c.get("dose") == pair.get("picked_dose")),
                                       (" best", c.get("dose") == pair.get("best_dose"))) if on)  # fmt: skip
        parts.append(f"dose {c.get('dose'):g}{f' [{mark.strip()}]' if mark else ''}: EM {em}" + (f", {tg}" if tg else ""))
    return "; ".join(parts)


def _hits(entries: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    return [{"method": e["method"], "diff": _pp(e["mean_diff"]), "p": _p(e["p"])} for e in entries]


def _verdict_view(v: Mapping[str, Any], alpha: float) -> dict[str, Any]:
    m = v["family_m"] or 0
    return {
        "heading": f"{v['benchmark']} · {v['mode']} · {v['metric']}",
        "family_id": v["family_id"],
        "m": str(m),
        "n_comparisons": str(v["n_comparisons"]),
        "n_degenerate": str(v["n_degenerate"]),
        "alpha": f"{alpha:g}",
        "bonferroni_threshold": _num(alpha / m) if m else "—",
        "improvements": {k: _hits(x) for k, x in v["improvements"].items()},
        "harms": {k: _hits(x) for k, x in v["harms"].items()},
    }


def _power_view(r: Mapping[str, Any]) -> dict[str, Any]:
    n = r["n"]
    return {
        "heading": f"{r['benchmark']} · {r['mode']} · {r['metric']}",
        "family_id": r["family_id"],
        "testable": n is not None,
        "note": r["note"],
        "n": str(n) if n is not None else "—",
        "m": str(r["m"]),
        "alpha": f"{r['alpha']:g}",
        "alpha_corrected": _num(r["alpha_corrected"]),
        "power": f"{100 * r['power']:.0f} %",
        "sd": _pp(r["sd_diff_pooled"], signed=False),
        "mde_pp_single": _pp(r["mde_pp_single"], signed=False),
        "mde_sd_single": _pp(r["mde_sd_single"], signed=False),
        "mde_pp_corrected": _pp(r["mde_pp_corrected"], signed=False),
        "mde_sd_corrected": _pp(r["mde_sd_corrected"], signed=False),
        "floor": _num(r["floor_nonparametric"]),
        "floor_blocks_single": bool(r["floor_blocks_single"]),
        "floor_blocks_corrected": bool(r["floor_blocks_corrected"]),
        "distinct_resamples": str(math.comb(2 * n - 1, n)) if n else "—",
        "headroom": headroom_sentence(r),
    }


def _interval(c: Mapping[str, Any], col: Column) -> str:
    """``(low, high)`` in signed pp from the column's two sources, or — when there is none."""
    low, high = (c[k] for k in col.reads)
    return "—" if low is None else f"({_pp(low)}, {_pp(high)})"


def _interval_at_level(c: Mapping[str, Any], col: Column) -> str:
    """``(low, high) at L %``: the interval beside the Holm mark is at the Holm decision's level
    (stats/decisions.py: holm_levels), and says which."""
    low, high, level = (c[k] for k in col.reads)
    return "—" if low is None else f"({_pp(low)}, {_pp(high)}) at {100 * level:.4g} %"


_REJECT_NAMES = {"reject_single": "α", "reject_bonferroni": "Bonf", "reject_holm": "Holm", "reject_bh": "BH"}


def _rejects(c: Mapping[str, Any], col: Column) -> str:
    """The corrections a comparison passes, e.g. ``α Holm``, or — for none."""
    flags = [_REJECT_NAMES[k] for k in col.reads if c[k]]
    return " ".join(flags) if flags else "—"


def _note(c: Mapping[str, Any], col: Column) -> str:
    """The comparison's note, then the seeds only one arm has (left out of the pairing)."""
    note_key, method_only, baseline_only = col.reads
    unpaired = ", ".join(
        [f"{s} (method only)" for s in c[method_only]] + [f"{s} ({BASELINE} only)" for s in c[baseline_only]]
    )
    return (c[note_key] or "") + (f" unpaired seeds: {unpaired}" if unpaired else "")


def _range(c: Mapping[str, Any], col: Column) -> str:
    """``min to max`` of the column's two sources (signed, ``col.digits`` after the point), or —."""
    low, high = (c[k] for k in col.reads)
    digits = col.digits or 2
    return "—" if low is None else f"{_signed(low, digits)} to {_signed(high, digits)}"


def _odds(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x:.2f}" if 0.1 <= x < 100 else f"{x:.2g}"


def _logit_cell(cl: Mapping[str, Any] | None, fitted: Sequence[str]) -> str:
    if cl is None:
        return f"not fitted (fitted for {', '.join(fitted)} only)" if fitted else "not fitted (switched off)"
    if not cl["converged"]:
        return f"no estimate: {cl['note']}"
    return (
        f"log-odds {_signed(cl['coef'], 3)} ± {_num(cl['se'], 2)}, "
        f"OR {_odds(cl['odds_ratio'])} ({_odds(cl['ci95_low'])}–{_odds(cl['ci95_high'])}), p ≈ {_p(cl['p'])}"
    )


def _item_level_cell(e: Mapping[str, Any], col: Column) -> str:
    """The seed-level t-test of the per-seed McNemar log-odds ratios, in words."""
    il = e[col.reads[0]]
    if il["p_t"] is None:
        return f"mean log OR {_signed(il['mean_log_odds'], 3)}; no test: {il['note']}"
    return (
        f"mean log OR {_signed(il['mean_log_odds'], 3)} (95 % CI {_signed(il['ci95_low'], 3)} to "
        f"{_signed(il['ci95_high'], 3)}), t = {_signed(il['t'])}, p = {_p(il['p_t'])}"
    )


def _mcnemar_cell(e: Mapping[str, Any], col: Column) -> str:
    """Per seed: McNemar's exact p, the items only the method (+) and only ce (−) gets right, the log OR."""
    return "; ".join(
        f"{s['seed']}: p = {_p(s['p'])} (+{s['n_method_only']}/−{s['n_baseline_only']} of {s['n_items']}, "
        f"log OR {_signed(s['log_odds_ratio'])})"
        for s in e[col.reads[0]]
    )


def _bootstrap_cell(e: Mapping[str, Any], col: Column) -> str:
    """The bootstrap's point estimate and 95 % percentile interval in signed pp, or —."""
    b = e[col.reads[0]]
    return "—" if b["point"] is None else f"{_pp(b['point'])} ({_pp(b['low'])}, {_pp(b['high'])})"


def _items_view(e: Mapping[str, Any], fitted: Sequence[str], columns: Sequence[Column]) -> dict[str, Any]:
    """A per-item entry's cells (``columns``), and ``logit`` for the conditional logit's own table."""
    return {**_row_view(e, columns), "logit": _logit_cell(e["conditional_logit"], fitted)}


def _one(fmt: Callable[[Any, Column], str]) -> Callable[[Mapping[str, Any], Column], str]:
    """A formatter of the column's one source value."""
    return lambda c, col: fmt(c[col.reads[0]], col)


#: One formatter per Column.kind (stats/columns.py): (summary row, column) → the cell's text.
_FORMATS: dict[str, Callable[[Mapping[str, Any], Column], str]] = {
    "text": _one(lambda v, col: "" if v is None else str(v)),
    "int": _one(lambda v, col: str(v)),
    "pp": _one(lambda v, col: _pp(v, signed=False)),
    "pp_signed": _one(lambda v, col: _pp(v)),
    "p": _one(lambda v, col: _p(v)),
    "num": _one(lambda v, col: _num(v) if col.digits is None else _num(v, col.digits)),
    "signed": _one(lambda v, col: _signed(v) if col.digits is None else _signed(v, col.digits)),
    "ci": _interval,
    "ci_holm": _interval_at_level,
    "rejects": _rejects,
    "note": _note,
    "range": _range,
    "item_level": _item_level_cell,
    "mcnemar": _mcnemar_cell,
    "bootstrap": _bootstrap_cell,
    "coupling_kind": _one(lambda v, col: "Δ geometry" if v == "geometry" else "gradient cosine"),
}


def _row_view(row: Mapping[str, Any], columns: Sequence[Column]) -> dict[str, Any]:
    """One table row as the templates print it: ``{column.key: text}`` for every column, in order."""
    out = {}
    for col in columns:
        fmt = _FORMATS.get(col.kind)
        if fmt is None:
            raise ValueError(f"column {col.key!r}: no formatter for kind {col.kind!r}; known: {sorted(_FORMATS)}")
        out[col.key] = fmt(row, col)
    return out


def _comparison_view(c: Mapping[str, Any], columns: Sequence[Column]) -> dict[str, Any]:
    """A comparison row's cells, and ``any_reject`` (the row is shaded in HTML when any correction rejects)."""
    return {**_row_view(c, columns), "any_reject": any(c[k] for k in _REJECT_NAMES)}


def _examples(
    rows: Sequence[Mapping[str, Any]], load: Callable[[str], list[dict[str, Any]] | None]
) -> list[dict[str, str]]:
    """A few items per auxiliary on which it and ce disagree on exact match (first shared seed)."""
    idx = index_rows(rows)
    out: list[dict[str, str]] = []
    for key in idx.groups():
        base = idx.cells[key].get(BASELINE, {})
        for method in idx.methods(key):
            mine = idx.cells[key][method]
            for seed in sorted(set(mine) & set(base), key=lambda s: (type(s).__name__, s)):
                a, b = mine[seed].get("predictions_file"), base[seed].get("predictions_file")
                pa = load(a) if isinstance(a, str) else None
                pb = load(b) if isinstance(b, str) else None
                if pa is None or pb is None:
                    continue
                by_item: dict[Hashable, Mapping[str, Any]] = {
                    p["item"]: p for p in pb if isinstance(p.get("item"), int | str)
                }
                shown = 0
                for p in sorted(
                    (p for p in pa if isinstance(p.get("item"), int | str)),
                    key=lambda p: (type(p["item"]).__name__, p["item"]),
                ):
                    q = by_item.get(p["item"])
                    if q is None or not isinstance(p.get("exact"), bool) or p.get("exact") == q.get("exact"):
                        continue
                    out.append(
                        {
                            "benchmark": key[0],
                            "mode": key[1],
                            "method": method,
                            "seed": str(seed),
                            "item": str(p["item"]),
                            "gold": _clip(p.get("gold")),
                            "baseline_pred": _clip(q.get("pred")),
                            "method_pred": _clip(p.get("pred")),
                            "who": method if p["exact"] else BASELINE,
                        }
                    )
                    shown += 1
                    if shown >= _EXAMPLES_PER_METHOD:
                        break
                break
    return out


def _figures(summary: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Figure]]:
    figs: dict[str, list[Figure]] = {"forest": [], "ladder": [], "coupling": [], "grad": [], "dose": []}
    comps = summary["comparisons"]
    alpha = summary["alpha"]
    for v in summary["metric_verdicts"]:
        members = [
            c
            for c in comps
            if (c["benchmark"], c["mode"], c["metric"]) == (v["benchmark"], v["mode"], v["metric"])
        ]
        title = f"{v['benchmark']} · {v['mode']} · {v['metric']}: method − {BASELINE}"
        figs["forest"].append(
            Figure(
                "forest",
                title,
                "Mean paired difference over seeds, grouped by auxiliary family. Filled: p_t ≤ α, with the thick "
                f"{100 * (1 - alpha):g} % t-interval; black ring: survives Holm within the family, with the thin "
                "interval at the Holm decision's level (1 − α/(m − r + 1) when rejected at rank r, else 1 − α/m); "
                "diamond: degenerate (no interval).",
                _data_uri(plots.forest_plot(members, title, alpha)),
            )
        )
    for fam in summary["families"]:
        members = [c for c in comps if c["family_id"] == fam["id"] and not c["degenerate"]]
        if not fam["m"]:
            continue
        title = f"family {fam['id']} (m = {fam['m']})"
        figs["ladder"].append(
            Figure(
                "ladder",
                title,
                "Sorted p_t against the single-cell α, Bonferroni α/m, Holm and BH thresholds; hollow markers are "
                "the Wilcoxon and sign-flip p-values, the dotted line their floor.",
                _data_uri(plots.p_ladder(members, alpha, fam["m"], title)),
            )
        )
    idx = index_rows(rows)
    coupling = {(r["benchmark"], r["mode"], r["kind"], r["key"]): r for r in summary["coupling"]}
    for key in idx.groups():
        pts = coupling_method_points(idx, key)
        if not pts["methods"]:
            continue
        families = [idx.aux_family.get(m, "unspecified") for m in pts["methods"]]
        panels = []
        for kind, columns in (("grad_cosine", pts["grad_cosine"]), ("geometry", pts["geometry"])):
            for name, x in columns.items():
                r = coupling[(key[0], key[1], kind, name)]
                label = f"grad cosine {name}" if kind == "grad_cosine" else f"Δ {name}"
                panels.append(
                    {"key": label, "x": x, "y": pts["delta_em"], "rho": r["rho"], "n": r["n"], "kind": kind}
                )
        grad = [p for p in panels if p["kind"] == "grad_cosine" and p["rho"] is not None]
        geo = sorted(
            (p for p in panels if p["kind"] == "geometry" and p["rho"] is not None),
            key=lambda p: (-abs(p["rho"]), p["key"]),
        )
        chosen = (grad + geo)[:_MAX_SCATTER_PANELS]
        if chosen:
            title = f"{key[0]} · {key[1]}: coupling with ΔEM"
            figs["coupling"].append(
                Figure(
                    "coupling",
                    title,
                    f"Descriptive. One point per auxiliary: its mean over seeds of the change vs the same seed's "
                    f"{BASELINE} (gradient cosine: raw value) and of ΔEM in pp. Panels: gradient cosine, then geometry "
                    f"keys by |ρ| (at most {_MAX_SCATTER_PANELS}, so the panels shown are selected for large |ρ|; "
                    f"all keys, with BH-adjusted p, are in the table).",
                    _data_uri(plots.coupling_scatter(chosen, families, title)),
                )
            )
    curves: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for pair in (summary.get("calibration") or {}).get("pairs", []):
        curves[(pair["benchmark"], pair["mode"])].append(pair)
    for (bench, mode), pairs in sorted(curves.items()):
        title = f"{bench} · {mode}: dose-response on validation (λ calibration)"
        figs["dose"].append(
            Figure(
                "dose",
                title,
                "Per auxiliary: validation EM (blue, ±1 SE; ring: the validation-best dose) and its target keys' shift "
                "from the smallest dose in pooled seed SDs of the test grid (red, right axis; raw values when no SD "
                "is known) against the dose; dashed line: the picked dose, where the test cells ran.",
                _data_uri(plots.dose_response_plot(sorted(pairs, key=lambda p: p["method"]), title)),
            )
        )
    by_key: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for r in summary["grad_cosine"]:
        by_key[(r["benchmark"], r["mode"])].append(r)
    for (bench, mode), members in sorted(by_key.items()):
        if not any(r["mean"] is not None for r in members):
            continue
        title = f"{bench} · {mode}: auxiliary–CE gradient cosine"
        figs["grad"].append(
            Figure(
                "grad",
                title,
                "Left: mean cosine over seeds (whisker: min–max over seeds). Right: mean fraction of probes with "
                "a positive cosine.",
                _data_uri(plots.grad_cosine_plot(members, title)),
            )
        )
    return figs


def _report_data(
    summary: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], load: Callable[[str], Any]
) -> ReportData:
    counts = summary["counts"]
    alpha = summary["alpha"]
    primary = (summary.get("metrics") or [{"name": "exact_match"}])[0]["name"]  # the verdicts' metric
    power = [p for p in summary.get("power", []) if p["metric"] == primary]
    sesoi = summary.get("sesoi_pp", 2.0)
    declared = summary.get("sesoi_declared_pp")
    sesoi_note = (
        f"Δ = {sesoi:g} pp was set for this report (report --sesoi); the run declared Δ = {declared:g} pp before "
        "testing (grid.json), so the no-gain-shown decisions here are not the pre-declared ones."
        if summary.get("sesoi_overridden") else None
    )  # fmt: skip
    return ReportData(
        headline=headline(summary["verdicts"], alpha, power, sesoi_note=sesoi_note,
                          fwer_text=(summary.get("family_fwer_all") or {}).get("text")),
        aux_verdicts=verdict_table(summary["verdicts"], power),
        sesoi=f"{sesoi:g}",
        min_shift_sd=f"{summary.get('min_shift_sd', 0.5):g}",
        calibration_note=(summary.get("calibration") or {}).get("steps_note") or "",
        dose_readings=[
            {"pair": f"{p['benchmark']} · {p['mode']} · {p['method']}", "reading": p.get("reading") or "—",
             "curve": _curve_text(p),
             "flags": ", ".join(f for f, on in (("picked the smallest dose", p.get("picked_smallest")),
                                               ("picked the largest dose", p.get("picked_largest")),
                                               ("pick is not the validation-best dose", p.get("picked_is_best") is False))
                                if on)}  # fmt: skip
            for p in (summary.get("calibration") or {}).get("pairs", [])
        ],
        title="jepa-audit report",
        counts={
            "task": str(summary.get("task", "nlrx")),
            # EM in the tables and plots is the task's primary metric (NL-RX, SCAN, GSM8K: exact_match)
            "metrics": ", ".join(m["name"] for m in summary.get("metrics", [])) or ", ".join(METRICS),
            "rows": str(counts["rows"]),
            "done": str(counts["done"]),
            "failed": str(counts["failed"]),
            "benchmarks": ", ".join(counts["benchmarks"]) or "—",
            "modes": ", ".join(counts["modes"]) or "—",
            "methods": str(len(counts["methods"])),
            "seeds": ", ".join(str(s) for s in counts["seeds"]) or "—",
            # how the two views and the CE labels were built (rows before these keys: prefix, answer)
            "views": ", ".join(sorted({str(r.get("views", "prefix")) for r in rows})) or "—",
            "labels": ", ".join(sorted({str(r.get("labels", "answer")) for r in rows})) or "—",
        },
        alpha=f"{alpha:g}",
        family=summary["family"],
        family_definition=summary["family_definition"],
        family_fwer=summary["family_fwer"]["text"],
        families=[
            {
                "id": f["id"],
                "m": str(f["m"]),
                "n_tested": str(f["n_tested"]),
                "threshold": _num(f["bonferroni_threshold"]),
                "degenerate": [{"method": e["method"], "note": e["note"] or ""} for e in f["degenerate"]],
            }
            for f in summary["families"]
        ],
        verdicts=[_verdict_view(v, alpha) for v in summary["metric_verdicts"]],
        power=[_power_view(r) for r in summary["power"]],
        comparisons=[_comparison_view(c, COMPARISON_COLUMNS) for c in summary["comparisons"]],
        comparison_columns=list(COMPARISON_COLUMNS),
        items=[_items_view(e, summary["settings"]["conditional_logit_metrics"], ITEM_COLUMNS) for e in summary["items"]],
        item_columns=list(ITEM_COLUMNS),
        items_note=summary["items_note"],
        coupling=[_row_view(r, COUPLING_COLUMNS) for r in summary["coupling"]],
        coupling_columns=list(COUPLING_COLUMNS),
        coupling_label=summary["coupling_label"],
        grad_cosine=[_row_view(r, GRAD_COSINE_COLUMNS) for r in summary["grad_cosine"]],
        grad_columns=list(GRAD_COSINE_COLUMNS),
        failed=[
            {
                k: "—" if f.get(k) is None else str(f[k])
                for k in ("benchmark", "mode", "method", "seed", "status", "error")
            }
            for f in summary["failed"]
        ],
        warnings=list(summary["warnings"]),
        examples=_examples(rows, load),
        figures=_figures(summary, rows),
        bootstrap_note=(
            "Percentile bootstrap intervals at small n are coarse: with n seeds there are only C(2n−1, n) distinct "
            "seed-level resamples (126 at n = 5), so they tend to be too narrow. The seed-level t-interval is the "
            "primary CI; the bootstrap is secondary. Each draw redraws the same test items for every seed (the items "
            "are shared), and its random stream is keyed by (benchmark, mode, metric, method)."
        ),
        logit_label=summary["settings"]["conditional_logit_label"],
    )


# --------------------------------------------------------------------------- rendering and output


def _environments() -> tuple[jinja2.Environment, jinja2.Environment]:
    loader = jinja2.FileSystemLoader(str(_TEMPLATES))
    common = {
        "loader": loader,
        "undefined": jinja2.StrictUndefined,
        "trim_blocks": True,
        "lstrip_blocks": True,
        "keep_trailing_newline": True,
    }
    html = jinja2.Environment(autoescape=True, **common)
    html.filters["header"] = _html_header
    md = jinja2.Environment(autoescape=False, finalize=md_escape, **common)
    return md, html


def _html_header(text: str) -> Markup:
    """A column header (text of the code, stats/columns.py) as HTML element content: ``&``, ``<`` and ``>``
    escaped, quotes kept as they are (autoescape would write ``decision's`` as ``decision&#39;s``)."""
    return Markup(html_escape(text, quote=False))


def render(data: ReportData) -> tuple[str, str]:
    """Render the Markdown and HTML reports of ``data``."""
    md_env, html_env = _environments()
    context = {"r": data, "baseline": BASELINE}
    return md_env.get_template("report.md.j2").render(**context), html_env.get_template(
        "report.html.j2"
    ).render(**context)


def _write_all(files: Mapping[Path, str]) -> None:
    """Write the report files all or none (:func:`jepa_audit.results_file.atomic_write_all`): a full disk or a
    read-only directory leaves the previous report files as they were and no temporary file behind. Raises
    :class:`ReportWriteError` naming the path and the cause."""
    try:
        atomic_write_all(files, label=" the report")
    except StoreError as e:
        raise ReportWriteError(str(e)) from None


def write_report(
    out_dir: Path, alpha: float = 0.10, family: str = "per-benchmark", **summary_options: Any
) -> dict[str, Any]:
    """Recompute ``summary.json``, ``report.md`` and ``report.html`` in ``out_dir`` from its results.jsonl.

    The declared family (every comparison the grid defines, which fixes m) comes from ``out_dir/grid.json``
    when the runner wrote one; without it, from the rows alone.

    ``alpha`` and ``family`` are passed to :func:`jepa_audit.stats.summary.build_summary`, as are any
    ``summary_options`` (e.g. ``bootstrap_reps``, ``conditional_logit_metrics``, ``sesoi_pp``: Δ in pp, None =
    the value grid.json declared, else 2.0; a value that differs from the declared one is flagged in the
    report). Returns the summary dict.
    Rows are read through the runner's validation (:func:`read_rows`); lines it does not trust are left out
    and listed in ``summary["excluded_rows"]`` (``{"line", "cell", "reason"}``) and in the warnings. The
    three files are written to temporary names and renamed together at the end. Raises
    :class:`ReportError` for a missing or unreadable results file, a file that cannot be written (the
    previous files are then left as they were), and a bad ``alpha`` or ``family`` (checked before
    anything is read).
    """
    out_dir = Path(out_dir)
    sesoi = summary_options.get("sesoi_pp")
    if sesoi is not None and (isinstance(sesoi, bool) or not isinstance(sesoi, int | float) or not sesoi > 0):
        raise ReportError(f"--sesoi must be a positive number of percentage points, got {sesoi!r}")
    if family not in FAMILIES:
        raise ReportError(f"--family must be one of {', '.join(FAMILIES)}, got {family!r}")
    if not (isinstance(alpha, int | float) and 0.0 < alpha < 1.0):
        raise ReportError(f"--alpha must be in (0, 1), got {alpha!r}")
    clean_temporaries(out_dir, (SUMMARY, REPORT_MD, REPORT_HTML))  # left by a report killed mid-write
    rows, excluded = read_rows(out_dir / RESULTS)
    refuse_calibration_rows(out_dir / RESULTS, rows)
    rows, refused = verify_predictions(out_dir, rows)  # a predictions file edited after its cell: left out
    load = predictions_loader(out_dir)
    summary_options.setdefault("declared", load_declared(out_dir))
    summary_options.setdefault("calibration", load_calibration(out_dir))
    declared_stats = load_declared_stats(out_dir)
    for key in ("sesoi_pp", "min_shift_sd"):
        if summary_options.get(key) is None:
            summary_options[key] = declared_stats.get(key, _STATS_DEFAULTS[key])
    summary_options.setdefault("sesoi_declared", declared_stats.get("sesoi_pp"))
    summary = build_summary(rows, alpha=alpha, family=family, predictions_loader=load, **summary_options)
    summary["excluded_rows"] = excluded  # lines of results.jsonl not trusted, with the reason
    summary["progress"] = progress = _progress(out_dir, rows, summary_options["declared"])  # in progress?
    summary["warnings"] = (
        progress["warnings"] + _excluded_warnings(out_dir / RESULTS, excluded) + refused + list(summary["warnings"])
    )
    del progress["warnings"]
    data = _report_data(summary, rows, load)
    if progress["sentence"]:  # the headline speaks of the cells it has; say first how many it has not
        data.headline = f"{progress['sentence']} {data.headline}"
    md, html = render(data)
    summary_text = json.dumps(summary, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    _write_all({out_dir / SUMMARY: summary_text, out_dir / REPORT_MD: md, out_dir / REPORT_HTML: html})
    return summary
