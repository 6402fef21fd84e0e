"""The ``jepa-audit`` command line (typer).  Thin: parse, then call the modules that do the work.

Heavy imports (torch, transformers) happen inside the commands, so ``--help`` and ``aux list`` stay fast.
Errors the user can fix (config, data, model directory, regex file) print one line and exit 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from jepa_audit.config import PRESETS  # light (pydantic, yaml): the help lists the preset files

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Audit auxiliary objectives for LLM fine-tuning.")
aux_app = typer.Typer(no_args_is_help=True, help="The registry of auxiliary objectives.")
regex_app = typer.Typer(no_args_is_help=True, help="Regexes in the NL-RX (dk.brics) dialect.")
data_app = typer.Typer(no_args_is_help=True, help="Data: the embedded corpus and local NL-RX copies.")
tasks_app = typer.Typer(no_args_is_help=True, help="The registry of tasks (NL-RX, SCAN, GSM8K, ...).")
app.add_typer(aux_app, name="aux")
app.add_typer(tasks_app, name="tasks")
app.add_typer(regex_app, name="regex")
app.add_typer(data_app, name="data")
err = Console(stderr=True)

PresetOpt = Annotated[str | None, typer.Option("--preset", "-p", help=" | ".join(PRESETS))]
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file (on top of the preset)")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", "-s", help="override, e.g. --set train.steps=100")]
IncludeOpt = Annotated[
    list[Path] | None,
    typer.Option("--include", "-I", help="plugin .py file or folder of them (objectives, tasks); repeatable"),
]


def _say(msg: str) -> None:
    """Print user-facing text literally on stderr: never parsed as rich markup (``[/]`` or ``run[red]1``
    in a path or a value must show as typed), never re-wrapped."""
    err.print(msg, highlight=False, markup=False, soft_wrap=True)


def _fail(msg: str) -> None:
    from rich.text import Text

    err.print(Text("error: ", style="bold red") + Text(str(msg)), highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _user_errors() -> tuple[type[BaseException], ...]:
    from jepa_audit.audit import StoreError
    from jepa_audit.config import ConfigError
    from jepa_audit.data import DataError
    from jepa_audit.data.views import TemplateError
    from jepa_audit.models.load import ModelError

    return (ConfigError, DataError, ModelError, TemplateError, StoreError, KeyError)


def _config(
    preset: str | None,
    config: Path | None,
    overrides: list[str] | None,
    default: str | None = None,
    include: list[Path] | None = None,
) -> Any:
    """The resolved config; its plugins (``--include``, ``plugins:``) and entry points are imported first."""
    from jepa_audit.config import ConfigError
    from jepa_audit.plugins import load_config

    try:
        return load_config(preset or (None if config else default), config, overrides or [], includes=include)
    except ConfigError as e:
        _fail(str(e))


def _plugins(include: list[Path] | None) -> None:
    """Import the ``--include`` plugins and installed entry points (commands that read no config)."""
    from jepa_audit.plugins import PluginError, load_plugins

    try:
        load_plugins(include or [])
    except PluginError as e:
        _fail(str(e))


@app.command()
def audit(
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="output directory (default runs/<preset>)")] = None,
    executor: Annotated[str | None, typer.Option(help="local | ray")] = None,
    workers: Annotated[int | None, typer.Option(help="cells run side by side")] = None,
    force: Annotated[bool, typer.Option(help="accept a config change in an existing --out")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the cells and a compute estimate")] = False,
    include: IncludeOpt = None,
) -> None:
    """Run the grid (benchmark × method × seed × mode), then write summary.json and the report. Resumable."""
    from jepa_audit.audit import run_audit
    from jepa_audit.audit.runner import check_workers
    from jepa_audit.cell import preflight

    cfg = _config(preset, config, set_, default="quick", include=include)
    out_dir = out or Path("runs") / cfg.preset
    try:
        if workers is not None:
            check_workers(workers)  # before the (slow) preflight
        preflight(cfg)  # bad data, model dir or method id: one clear error before any cell starts
        code = run_audit(cfg, out_dir, executor=executor, workers=workers, force=force, dry_run=dry_run)
    except _user_errors() as e:
        _fail(str(e).strip("'\""))
    raise typer.Exit(code)


@app.command()
def report(
    directory: Annotated[Path, typer.Argument(help="an audit output directory holding results.jsonl")],
    alpha: Annotated[float, typer.Option(help="single-cell significance level")] = 0.10,
    family: Annotated[str, typer.Option(help="per-benchmark | all")] = "per-benchmark",
    item_logit: Annotated[
        bool,
        typer.Option(
            help="fit the per-item conditional logit (item strata) on exact match "
            "(secondary; ~2 s per fit on 20,000 rows)"
        ),
    ] = True,
    include: IncludeOpt = None,
    sesoi: Annotated[
        float | None,
        typer.Option(
            help="smallest effect of interest of the primary metric, pp (default: the run's declared "
            "stats.sesoi_pp from grid.json, else 2.0); a different value is flagged in the report"
        ),
    ] = None,
) -> None:
    """Recompute summary.json, report.md and report.html from DIR/results.jsonl alone."""
    from jepa_audit.objectives import declared_targets  # loaded by _plugins anyway
    from jepa_audit.report import ReportError, write_report

    _plugins(include)
    if family not in ("per-benchmark", "all"):
        _fail(f"--family must be per-benchmark or all, got {family!r}")
    try:
        # rows written before cells recorded target_geometry get their targets from the registry
        extra: dict = {"target_lookup": declared_targets}
        if not item_logit:
            extra["conditional_logit_metrics"] = ()
        if sesoi is not None:
            extra["sesoi_pp"] = sesoi
        summary = write_report(directory, alpha=alpha, family=family, **extra)
    except ReportError as e:
        _fail(str(e))
    n = len(summary.get("comparisons", []))
    if (summary.get("progress") or {}).get("sentence"):
        _say(f"warning: {summary['progress']['sentence']}")
    for e in summary.get("excluded_rows", []):  # what the runner's validation does not trust, and why
        cell = f" ({e['cell']})" if e.get("cell") else ""
        _say(f"note: results.jsonl line {e['line']}{cell} left out: {e['reason']}")
    typer.echo(f"wrote {directory}/summary.json, report.md, report.html ({n} comparisons)")


@aux_app.command("list")
def aux_list(
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    include: IncludeOpt = None,
) -> None:
    """List every registered objective: id, family, core flag, extra forward rows and backward passes, defaults;
    plugin objectives (--include, entry points) with the file they came from."""
    _plugins(include)
    from jepa_audit.objectives import spec_rows

    rows = spec_rows()
    if as_json:
        typer.echo(json.dumps(rows, indent=1))
        return
    out = Console()
    out.print(aux_table(rows, out.width))
    for r in rows:
        if r["origin"] != "built-in":
            out.print(f"{r['id']}: plugin from {r['origin']}", highlight=False, markup=False, soft_wrap=True)


# aux list columns after id and description, most wanted first: narrow terminals drop from the end
AUX_COLUMNS = (("family", "family"), ("core", "core"), ("+fwd", "extra_forward"), ("+bwd", "extra_backward"),
               ("λ", "default_weight"), ("grad", "grad_mode"))
AUX_MIN_DESCRIPTION = 30  # characters of description kept before columns start to be dropped


def _aux_cell(r: dict[str, Any], key: str) -> str:
    v = r[key]
    if key == "core":
        return "★" if v else ""
    return f"{v:g}" if isinstance(v, float) else str(v)


def aux_table(rows: list[dict[str, Any]], width: int) -> Any:
    """The ``aux list`` table for a terminal ``width`` columns wide: one line per objective, never wrapped.

    The description is cut with an ellipsis to what is left; when fewer than AUX_MIN_DESCRIPTION characters
    would be left, the least wanted columns (grad, λ, +bwd, ...) are dropped and named in the caption.
    ``--json`` always has every field in full."""
    from rich import box
    from rich.cells import cell_len
    from rich.table import Table
    from rich.text import Text

    def need(name: str, key: str) -> int:  # content width + one space of padding either side + a separator
        return max(cell_len(name), *(cell_len(_aux_cell(r, key)) for r in rows)) + 3

    kept = list(AUX_COLUMNS)
    fixed = need("id", "id") + 2  # plus the description's padding
    while kept and fixed + sum(need(*c) for c in kept) + AUX_MIN_DESCRIPTION > width:
        kept.pop()
    dropped = [c[0] for c in AUX_COLUMNS if c not in kept]
    caption = f"{', '.join(dropped)} hidden at this width; `aux list --json` has every field" if dropped else None
    desc = max(10, width - fixed - sum(need(*c) for c in kept))  # what is left for the description
    t = Table(box=box.SIMPLE_HEAD, show_edge=False, caption=caption, caption_justify="left")
    t.add_column("id", no_wrap=True, min_width=need("id", "id") - 3)
    for name, key in kept:
        t.add_column(name, no_wrap=True, min_width=need(name, key) - 3)
    t.add_column("description", no_wrap=True, overflow="ellipsis", max_width=desc)
    for r in rows:
        cells = [r["id"], *(_aux_cell(r, key) for _, key in kept), r["description"]]
        t.add_row(*(Text(c) for c in cells))  # registry text, never rich markup
    return t


@aux_app.command("calibrate")
def aux_calibrate(
    method: Annotated[str, typer.Argument(help="objective id, e.g. T3-Local")],
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="directory (default runs/calibrate-<ID>)")] = None,
    include: IncludeOpt = None,
) -> None:
    """Choose λ for one objective on the validation slice (never test), exactly as the audit's calibration
    stage does (dose grid, calibration seeds); writes OUT/calibration.json and prints its entries as JSON."""
    from jepa_audit.audit.calibration import CalibrationIncomplete, calibrate_method
    from jepa_audit.objectives import get_objective_class

    cfg = _config(preset, config, set_, default="quick", include=include)
    try:
        get_objective_class(method)
        entries = calibrate_method(cfg, method, out or Path("runs") / f"calibrate-{method}", stream=sys.stderr)
    except CalibrationIncomplete as e:  # lost runs: retried by the same command, like a failed cell
        _say(f"error: {e}")
        raise typer.Exit(1) from None
    except (*_user_errors(), ValueError) as e:
        _fail(str(e).strip("'\""))
    typer.echo(json.dumps(entries, indent=1))


@aux_app.command("check")
def aux_check(
    method: Annotated[str, typer.Argument(help="objective id, e.g. a plugin's")],
    include: IncludeOpt = None,
    param: Annotated[
        list[str] | None, typer.Option("--param", help="objective parameter key=value (beats the spec's default)")
    ] = None,
) -> None:
    """Run the objective battery on one objective before a grid is spent on it: finite fp32 loss whose
    gradients reach the model, seeded determinism, λ = 0 equals CE exactly, five finite training steps.
    Exit 0 when every check passes, 1 when one fails."""
    _plugins(include)
    from jepa_audit.config import ConfigError, parse_override
    from jepa_audit.objectives import get_objective_class, origin_of
    from jepa_audit.objectives.check import run_checks

    try:
        get_objective_class(method)
        params = {}
        for item in param or []:
            key, value = parse_override(item)
            params[".".join(key)] = value
        results = run_checks(method, params)
    except (KeyError, ValueError, ConfigError) as e:
        _fail(str(e).strip("'\""))
    typer.echo(f"{method} ({origin_of(method)})")
    for r in results:
        typer.echo(f"  {'PASS' if r.ok else 'FAIL'} {r.name}: {r.detail}")
    bad = [r.name for r in results if not r.ok]
    typer.echo(f"{method}: {len(results) - len(bad)}/{len(results)} checks passed" + (f"; failed: {', '.join(bad)}" if bad else ""))
    raise typer.Exit(1 if bad else 0)


@regex_app.command("equiv")
def regex_equiv(
    a: Annotated[str | None, typer.Argument(help="first regex")] = None,
    b: Annotated[str | None, typer.Argument(help="second regex")] = None,
    pairs: Annotated[Path | None, typer.Option("--pairs", help="file of regex_a<TAB>regex_b lines")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Are two regexes the same language (NL-RX / dk.brics dialect)? With a witness when not."""
    from jepa_audit.regex import equiv_pairs_cli

    if pairs is None and (a is None or b is None):
        _fail("give two regexes A B, or --pairs FILE")
    raise typer.Exit(equiv_pairs_cli(a, b, pairs, as_json))


@app.command()
def bench(
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object on stdout")] = False,
    device: Annotated[str, typer.Option(help="cpu | cuda")] = "cpu",
    write_docs: Annotated[bool, typer.Option(help="update docs/performance.md with the table")] = False,
    compile_: Annotated[
        bool, typer.Option("--compile", help="also time a torch.compile'd step (minutes of inductor compile)")
    ] = False,
    include: IncludeOpt = None,
) -> None:
    """Measure step-time ratios, probe/geometry overhead, decoding and DFA throughput in one run."""
    from jepa_audit.bench import run_bench

    _plugins(include)
    result = run_bench(device=device, quiet=as_json, write_docs=write_docs, compile_model=compile_)
    typer.echo(json.dumps(result, indent=1) if as_json else _bench_table(result))


@app.command()
def rehearse(
    preset: Annotated[str, typer.Argument(help="a GPU preset (one whose model.kind is hf)")],
    layers: Annotated[int | None, typer.Option(help="decoder layers (default: the real 16; full width and vocabulary)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the JSON on stdout (else a summary)")] = False,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="JSON file (default rehearse-PRESET.json)")] = None,
) -> None:
    """Rehearse a GPU preset on the CPU at the real model shape (random weights): calibration, one cell per
    method class, decoding, scoring, geometry and the report, a few steps each. Exit 0 only if every phase passed."""
    from jepa_audit.rehearse import rehearse as run

    out = out or Path(f"rehearse-{preset}.json")
    try:
        r = run(preset, layers, out=out, stream=None if as_json else sys.stderr)
    except ValueError as e:
        _fail(str(e))
    if as_json:
        typer.echo(json.dumps(r, indent=1, default=str))
    else:
        for name, p in r["phases"].items():
            parts = p.values() if "ok" not in p else [p]
            ok = all(q.get("ok", True) for q in parts if isinstance(q, dict))
            typer.echo(f"{'pass' if ok else 'FAIL'}  {name}")
        typer.echo(f"{'ok' if r['ok'] else 'FAILED: ' + ', '.join(r['failed'])}; {r['wall_s']:.0f} s, peak RSS "
                   f"{r['peak_rss_gb']:.1f} GB (estimate {r['memory_estimate']['gradient_surgery_gb']:.1f} GB); {out}")
    raise typer.Exit(0 if r["ok"] else 1)


def _bench_table(r: dict[str, Any]) -> str:
    lines = [f"{k}: {v}" for k, v in r.items() if k != "aux_step_ratio"]
    lines += [f"  aux {k}: {v:.3f}x" for k, v in sorted(r.get("aux_step_ratio", {}).items())]
    return "\n".join(lines)


@app.command("train")
def train_cmd(
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="where the cell row, predictions and model go")] = Path(
        "runs/train"
    ),
    include: IncludeOpt = None,
) -> None:
    """Fine-tune and evaluate one cell (benchmark, aux.method, seed, adapter.mode from the config)."""
    from jepa_audit.cell import run_cell

    cfg = _config(preset, config, set_, default="smoke", include=include)
    with _progress() as cb:
        try:
            row = run_cell(cfg, out, progress=cb, save_model=out / "model")
        except _user_errors() as e:
            _fail(str(e).strip("'\""))
    (out / "cell.json").write_text(json.dumps(row, indent=1))
    m = row["metrics"]
    scores = ", ".join(f"{s['name']} {m[s['name']]:.3f}" for s in row["metric_specs"])
    typer.echo(f"{cfg.benchmark}/{cfg.aux.method}/seed {cfg.seed}: {scores} on {m['n_test']} items "
               f"({row['wall_s']:.0f} s); model in {out/'model'}")


@app.command("eval")
def eval_cmd(
    model_dir: Annotated[Path, typer.Argument(help="a local HF model directory (e.g. runs/train/model)")],
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="write predictions.jsonl here")] = None,
    include: IncludeOpt = None,
) -> None:
    """Evaluate a local model directory on the configured benchmark's test split (the task's metrics)."""
    from jepa_audit.cell import evaluate_dir

    cfg = _config(preset, config, set_, default="smoke", include=include)
    with _progress() as cb:
        try:
            res = evaluate_dir(cfg, model_dir, progress=cb)
        except _user_errors() as e:
            _fail(str(e).strip("'\""))
    if out:
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "predictions.jsonl", "w", encoding="utf-8") as f:
            for item in res.predictions:
                f.write(json.dumps(item, ensure_ascii=False) + "\n")
    typer.echo(json.dumps(res.metrics))


@data_app.command("fetch")
def data_fetch() -> None:
    """Explain how to get NL-RX: nothing is downloaded at run time."""
    _fail(
        "jepa-audit does not download data (these machines have no internet). Put NL-RX on disk "
        "(the raw NL-RX-Synth/ and NL-RX-Turk/ folders, or LLM-JEPA's jsonl files) and point to it with "
        "--set data.source=nl-rx --set data.path=/path/to/nl-rx"
    )


@data_app.command("stats")
def data_stats(
    preset: PresetOpt = None, config: ConfigOpt = None, set_: SetOpt = None, include: IncludeOpt = None
) -> None:
    """Statistics of the configured benchmarks, as the task computes them (NL-RX: operators, lengths,
    empty-language share; jsonl: the rows read per file; others: sizes and text lengths)."""
    from jepa_audit.tasks import get_task, load_benchmark

    cfg = _config(preset, config, set_, default="quick", include=include)
    task = get_task(cfg.data.task)
    out = {}
    for b in cfg.audit.benchmarks:
        try:
            out[b] = task.stats(load_benchmark(cfg.data, b))
        except _user_errors() as e:
            _fail(str(e))
    typer.echo(json.dumps(out, indent=1))


@tasks_app.command("list")
def tasks_list(
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    include: IncludeOpt = None,
) -> None:
    """List every registered task: name, benchmarks, sources, metrics (primary first), presets, and where a
    plugin task came from."""
    _plugins(include)
    from jepa_audit.tasks import task_rows

    rows = task_rows()
    if as_json:
        typer.echo(json.dumps(rows, indent=1))
        return
    for r in rows:
        metrics = ", ".join(m["name"] for m in r["metrics"])
        typer.echo(f"{r['name']}: {r['description']}")
        typer.echo(f"  benchmarks: {', '.join(r['benchmarks'])}; sources: {', '.join(r['sources'])}; "
                   f"metrics: {metrics}; presets: {', '.join(r['presets']) or '-'}")
        if r["origin"] != "built-in":
            typer.echo(f"  plugin from {r['origin']}")


class _progress:
    """A rich progress bar fed by the cell's progress callbacks; plain lines when not a TTY."""

    def __enter__(self):
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.tty = sys.stderr.isatty()
        self.p = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                          TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=err,
                          disable=not self.tty)
        self.p.start()
        self.tasks: dict[str, Any] = {}
        self.last_plain = ""

        def cb(d: dict[str, Any]) -> None:
            phase = d.get("phase", "work")
            if phase not in self.tasks:
                self.tasks[phase] = self.p.add_task(phase, total=d.get("total", 0), info="")
            info = f"loss {d['loss']:.3f}" if "loss" in d else ""
            self.p.update(self.tasks[phase], completed=d.get("step", 0), total=d.get("total", 0), info=info)
            if not self.tty and d.get("step") == d.get("total") and self.last_plain != phase:
                self.last_plain = phase
                _say(f"{phase}: done ({d.get('total')}) {info}")

        return cb

    def __exit__(self, *exc: object) -> None:
        self.p.stop()


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
