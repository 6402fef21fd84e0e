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
import os
from collections import defaultdict
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from jepa_audit.stats.summary import BASELINE, FAMILIES, METRICS, build_summary, coupling_points, index_rows

from . import plots

__all__ = ["ReportError", "load_results", "predictions_loader", "write_report", "render"]

RESULTS = "results.jsonl"
SUMMARY = "summary.json"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
_TEMPLATES = Path(__file__).parent / "templates"
_MAX_SCATTER_PANELS = 12
_EXAMPLES_PER_METHOD = 2
_MAX_STRING = 160


class ReportError(Exception):
    """The results directory cannot be turned into a report (missing or malformed input)."""


# --------------------------------------------------------------------------- input


def load_results(path: Path) -> list[dict[str, Any]]:
    """Parse a results.jsonl file: one JSON object per non-blank line.

    Raises :class:`ReportError` naming the file (and line) when it is missing, unreadable, not
    UTF-8, or a line is not a JSON object.
    """
    path = Path(path)
    if not path.is_file():
        raise ReportError(f"{path}: results file not found (expected one JSON object per finished cell)")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(f"{path}: cannot read results file: {exc}") from exc
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ReportError(
                f"{path}, line {lineno}: not valid JSON ({exc.msg}); expected one object per line"
            ) from exc
        if not isinstance(row, dict):
            raise ReportError(f"{path}, line {lineno}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
    return rows


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
    families: list[dict[str, Any]]
    verdicts: list[dict[str, Any]]
    power: list[dict[str, Any]]
    comparisons: list[dict[str, Any]]
    items: list[dict[str, Any]]
    items_note: str | None
    coupling: list[dict[str, Any]]
    grad_cosine: list[dict[str, Any]]
    failed: list[dict[str, str]]
    warnings: list[str]
    examples: list[dict[str, str]]
    figures: dict[str, list[Figure]] = field(default_factory=dict)
    bootstrap_note: str = ""
    headline: str = ""  # stats.manipulation.headline: the result in words, before any table
    aux_verdicts: list[dict[str, str]] = field(default_factory=list)  # stats.manipulation.verdict_table


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
        "single": _hits(v["single"]),
        "bonferroni": _hits(v["bonferroni"]),
        "holm": _hits(v["holm"]),
        "bh": _hits(v["bh"]),
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
        "sd": _pp(r["sd_diff_median"], signed=False),
        "mde_pp_single": _pp(r["mde_pp_single"], signed=False),
        "mde_sd_single": _pp(r["mde_sd_single"], signed=False),
        "mde_pp_corrected": _pp(r["mde_pp_corrected"], signed=False),
        "mde_sd_corrected": _pp(r["mde_sd_corrected"], signed=False),
        "floor": _num(r["floor_nonparametric"]),
        "floor_blocks_single": bool(r["floor_blocks_single"]),
        "floor_blocks_corrected": bool(r["floor_blocks_corrected"]),
        "distinct_resamples": str(math.comb(2 * n - 1, n)) if n else "—",
    }


def _comparison_view(c: Mapping[str, Any]) -> dict[str, Any]:
    flags = [
        name
        for key, name in (
            ("reject_single", "α"),
            ("reject_bonferroni", "Bonf"),
            ("reject_holm", "Holm"),
            ("reject_bh", "BH"),
        )
        if c[key]
    ]
    return {
        "benchmark": c["benchmark"],
        "mode": c["mode"],
        "metric": c["metric"],
        "aux_family": c["aux_family"],
        "method": c["method"],
        "n": str(c["n"]),
        "seeds": ", ".join(str(s) for s in c["seeds"]),
        "unpaired": ", ".join(
            [f"{s} (method only)" for s in c["seeds_method_only"]]
            + [f"{s} ({BASELINE} only)" for s in c["seeds_baseline_only"]]
        ),
        "baseline_mean": _pp(c["baseline_mean"], signed=False),
        "method_mean": _pp(c["method_mean"], signed=False),
        "mean_diff": _pp(c["mean_diff"]),
        "sd_diff": _pp(c["sd_diff"], signed=False),
        "ci": "—" if c["ci95_low"] is None else f"({_pp(c['ci95_low'])}, {_pp(c['ci95_high'])})",
        "t": _signed(c["t"]),
        "p_t": _p(c["p_t"]),
        "p_wilcoxon": _p(c["p_wilcoxon"]),
        "p_signflip": _p(c["p_signflip"]),
        "hedges_gz": _signed(c["hedges_gz"]),
        "p_bonferroni": _p(c["p_bonferroni"]),
        "p_holm": _p(c["p_holm"]),
        "p_bh": _p(c["p_bh"]),
        "prob_improvement": _num(c["prob_improvement"], 2),
        "rejects": " ".join(flags) if flags else "—",
        "any_reject": bool(flags),
        "note": c["note"] or "",
    }


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


def _items_view(e: Mapping[str, Any], fitted: Sequence[str]) -> dict[str, Any]:
    mc = "; ".join(
        f"{s['seed']}: p = {_p(s['p'])} (+{s['n_method_only']}/−{s['n_baseline_only']} of {s['n_items']})"
        for s in e["mcnemar"]
    )
    b = e["bootstrap"]
    return {
        "benchmark": e["benchmark"],
        "mode": e["mode"],
        "metric": e["metric"],
        "method": e["method"],
        "n_seeds": str(e["n_seeds"]),
        "mcnemar": mc,
        "bootstrap": "—" if b["point"] is None else f"{_pp(b['point'])} ({_pp(b['low'])}, {_pp(b['high'])})",
        "logit": _logit_cell(e["conditional_logit"], fitted),
    }


def _coupling_view(r: Mapping[str, Any]) -> dict[str, str]:
    return {
        "benchmark": r["benchmark"],
        "mode": r["mode"],
        "kind": "Δ geometry" if r["kind"] == "geometry" else "gradient cosine",
        "key": r["key"],
        "n": str(r["n"]),
        "rho": _signed(r["rho"]),
        "p": _p(r["p"]),
        "note": r["note"] or "",
    }


def _grad_view(r: Mapping[str, Any]) -> dict[str, str]:
    return {
        "benchmark": r["benchmark"],
        "mode": r["mode"],
        "aux_family": r["aux_family"],
        "method": r["method"],
        "n_seeds": str(r["n_seeds"]),
        "mean": _signed(r["mean"], 3),
        "range": "—" if r["min"] is None else f"{_signed(r['min'], 3)} to {_signed(r['max'], 3)}",
        "frac_positive": _num(r["frac_positive"], 2),
    }


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
    figs: dict[str, list[Figure]] = {"forest": [], "ladder": [], "coupling": [], "grad": []}
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
                "Mean paired difference over seeds with its 95 % t-interval, grouped by auxiliary family. "
                "Filled: p_t ≤ α; black ring: survives Holm within the family; diamond: degenerate (no interval).",
                _data_uri(plots.forest_plot(members, title)),
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
        pts = coupling_points(idx, key)
        if not pts["cells"]:
            continue
        families = [idx.aux_family.get(m, "unspecified") for m, _ in pts["cells"]]
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
                    f"One point per (auxiliary, seed) cell; x is the change vs the same seed's {BASELINE} (gradient "
                    f"cosine: raw value), y is ΔEM in pp. Panels: gradient cosine, then geometry keys by |ρ| "
                    f"(at most {_MAX_SCATTER_PANELS}; all keys are in the table).",
                    _data_uri(plots.coupling_scatter(chosen, families, title)),
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
    from jepa_audit.stats.manipulation import headline, verdict_table

    counts = summary["counts"]
    alpha = summary["alpha"]
    return ReportData(
        headline=headline(summary["verdicts"], alpha),
        aux_verdicts=verdict_table(summary["verdicts"]),
        title="jepa-audit report",
        counts={
            "rows": str(counts["rows"]),
            "done": str(counts["done"]),
            "failed": str(counts["failed"]),
            "benchmarks": ", ".join(counts["benchmarks"]) or "—",
            "modes": ", ".join(counts["modes"]) or "—",
            "methods": str(len(counts["methods"])),
            "seeds": ", ".join(str(s) for s in counts["seeds"]) or "—",
        },
        alpha=f"{alpha:g}",
        family=summary["family"],
        family_definition=summary["family_definition"],
        families=[
            {
                "id": f["id"],
                "m": str(f["m"]),
                "m_declared": str(f["m_declared"]),
                "threshold": _num(f["bonferroni_threshold"]),
                "excluded": [{"method": e["method"], "note": e["note"] or ""} for e in f["excluded"]],
            }
            for f in summary["families"]
        ],
        verdicts=[_verdict_view(v, alpha) for v in summary["metric_verdicts"]],
        power=[_power_view(r) for r in summary["power"]],
        comparisons=[_comparison_view(c) for c in summary["comparisons"]],
        items=[_items_view(e, summary["settings"]["conditional_logit_metrics"]) for e in summary["items"]],
        items_note=summary["items_note"],
        coupling=[_coupling_view(r) for r in summary["coupling"]],
        grad_cosine=[_grad_view(r) for r in summary["grad_cosine"]],
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
            "seed-level resamples (126 at n = 5), so they tend to be too narrow. The t-interval is the primary CI."
        ),
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
    md = jinja2.Environment(autoescape=False, finalize=md_escape, **common)
    return md, html


def render(data: ReportData) -> tuple[str, str]:
    """Render the Markdown and HTML reports of ``data``."""
    md_env, html_env = _environments()
    context = {"r": data, "metrics": METRICS, "baseline": BASELINE}
    return md_env.get_template("report.md.j2").render(**context), html_env.get_template(
        "report.html.j2"
    ).render(**context)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_report(
    out_dir: Path, alpha: float = 0.10, family: str = "per-benchmark", **summary_options: Any
) -> dict[str, Any]:
    """Recompute ``summary.json``, ``report.md`` and ``report.html`` in ``out_dir`` from its results.jsonl.

    ``alpha`` and ``family`` are passed to :func:`jepa_audit.stats.summary.build_summary`, as are any
    ``summary_options`` (e.g. ``bootstrap_reps``, ``conditional_logit_metrics``). Returns the summary dict.
    Raises :class:`ReportError` for a missing or malformed results file, and for a bad ``alpha`` or
    ``family`` (checked before anything is read).
    """
    out_dir = Path(out_dir)
    if family not in FAMILIES:
        raise ReportError(f"--family must be one of {', '.join(FAMILIES)}, got {family!r}")
    if not (isinstance(alpha, int | float) and 0.0 < alpha < 1.0):
        raise ReportError(f"--alpha must be in (0, 1), got {alpha!r}")
    rows = load_results(out_dir / RESULTS)
    load = predictions_loader(out_dir)
    summary = build_summary(rows, alpha=alpha, family=family, predictions_loader=load, **summary_options)
    md, html = render(_report_data(summary, rows, load))
    _atomic_write(
        out_dir / SUMMARY, json.dumps(summary, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    )
    _atomic_write(out_dir / REPORT_MD, md)
    _atomic_write(out_dir / REPORT_HTML, html)
    return summary
