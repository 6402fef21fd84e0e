"""``jepa-audit audit``: grid → cells → results.jsonl → report, resumable after a kill.

The runner is the only writer of the audit directory. In order it: expands the grid, takes the directory
lock, checks the grid against the manifest (a changed config is refused unless ``force``), skips finished
cells, runs the rest on the chosen executor, commits each finished cell's row the moment it arrives, records
failures in ``failures.jsonl`` (never in results.jsonl, so a rerun retries them), and finally writes the
statistics and the report from whatever finished.
"""

from __future__ import annotations

import contextlib
import functools
import math
import sys
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from jepa_audit.audit import calibration
from jepa_audit.audit.executors import CellFn, CellJob, make_executor, read_progress
from jepa_audit.audit.grid import Cell, expand_grid
from jepa_audit.audit.progress import AuditProgress, fmt_duration
from jepa_audit.audit.store import (
    PREDICTIONS_CHECKSUM,
    RowMismatchError,
    Store,
    StoreError,
    StoreNotice,
    atomic_write,
    file_sha256,
)
from jepa_audit.audit.tracking import Tracker
from jepa_audit.config import Config, ConfigError, dump_config
from jepa_audit.results import ResultsRow, RowError, TargetLookup
from jepa_audit.tasks import get_task

# Used by --dry-run when no measured step time is available: a tiny (d=64, 2-layer) Llama, batch 16,
# ~60 tokens, one CPU thread, CE only. A guess: run `jepa-audit bench` for a measured value.
DEFAULT_STEP_TIME_S = 0.05
# Eval seconds per (micro-batch × max_new_tokens) in units of a training step.  Calibrated on the `cpu`
# preset (tiny model, 2,000 test rows, 32 micro-batches of 64, 43 ms CE step): median eval 3.8 s over 89
# cells, i.e. 0.043 (rows stop at end-of-turn, well before max_new_tokens, and a cached one-token step is
# far cheaper than a training step).  0.3 overestimated that preset's wall time by 60 %.  On a GPU with a
# real model the ratio differs: `jepa-audit bench --device cuda` measures the step, not this factor.
EVAL_DECODE_FACTOR = 0.045
# Seconds a worker spends on a cell besides training and decoding, once the base and the encoded splits are
# memoised in the worker: load the cached base and wrap it (0.08-0.14 s warm on the tiny model), build the
# objective, geometry, write predictions. The `cpu` preset's median cell: 20 s - train 15.4 s - eval 3.8 s
# (docs/performance.md, "Per-cell start-up"). A worker's first cell pays its imports once more (not counted).
CELL_STARTUP_S = 0.8
# Test rows per benchmark assumed when the task cannot say without reading its data (Task.test_rows is None):
# NL-RX's llm-jepa split, the figure every task was estimated with before tasks declared their own.
UNKNOWN_TEST_ROWS = 2000

StepTimeFn = Callable[[Config], float]
ReportFn = Callable[[Path, float, str], Any]


def _say(stream: TextIO | None, msg: str) -> None:
    print(msg, file=stream or sys.stdout, flush=True)


def registry_methods() -> set[str] | None:
    """Objective ids known to the registry (plus ``ce``), or None when the registry is not importable."""
    try:
        import jepa_audit.objectives  # noqa: F401  (importing the package registers every family)
        from jepa_audit.objectives.base import registry
    except ImportError:
        return None
    ids = set(registry())
    return (ids | {"ce"}) if ids else None


def registry_targets() -> TargetLookup | None:
    """The objectives registry's declared targets per method (``objectives.declared_targets``), or None when
    the registry is not importable (the report then names the methods whose rows lack ``target_geometry``)."""
    try:
        from jepa_audit.objectives import declared_targets
    except ImportError:
        return None
    return declared_targets


def check_row(row: dict[str, Any]) -> str | None:
    """Why a returned row cannot count as a finished cell, or None if it can."""

    status = row.get("status", "done")
    if status != "done":
        return str(row.get("error") or f"the cell returned status {status!r}")
    if not isinstance(row.get("metrics"), dict):
        return "the row has no 'metrics' object"
    try:
        scores = ResultsRow.parse(row).scores()  # the task's metrics the row declares
    except (RowError, ValueError) as e:
        return str(e)
    for k, v in scores.items():
        if v is None:
            return f"metrics.{k} is {row['metrics'].get(k)!r}, expected a finite number (NaN during training or evaluation?)"
    return None


# ----------------------------------------------------------------------------------------------------------
# --dry-run: the cells and what they will cost
# ----------------------------------------------------------------------------------------------------------


def _step_time(cfg: Config, step_time_fn: StepTimeFn | None) -> tuple[float, str]:
    if step_time_fn is None:
        try:
            from jepa_audit.audit.step_time import measure_step_time as step_time_fn
        except ImportError:
            return DEFAULT_STEP_TIME_S, "a fixed guess: jepa_audit.audit.step_time.measure_step_time is not available"
    try:
        return float(step_time_fn(cfg)), "measured"
    except Exception as e:  # a failed measurement must not block a dry run
        return DEFAULT_STEP_TIME_S, f"a fixed guess: measuring failed with {type(e).__name__}: {e}"


def estimate_cell_s(cfg: Config, step_time: float) -> tuple[float, float]:
    """(train seconds, eval seconds) of one cell at ``step_time`` seconds per micro-batch step; the eval time is
    the mean over the grid's benchmarks of each one's test rows (:meth:`Task.test_rows`, capped by
    ``data.max_test``; :data:`UNKNOWN_TEST_ROWS` where the task cannot say)."""
    train = cfg.train.steps * cfg.train.grad_accum * step_time
    d, task = cfg.data, get_task(cfg.data.task)
    per_row = cfg.eval.max_new_tokens * step_time * EVAL_DECODE_FACTOR
    evals = []
    for benchmark in cfg.audit.benchmarks or [cfg.benchmark]:
        n_test = task.test_rows(d, benchmark)
        n_test = UNKNOWN_TEST_ROWS if n_test is None else n_test
        n_test = min(n_test, d.max_test) if d.max_test else n_test
        evals.append(math.ceil(n_test / cfg.eval.batch_size) * per_row)
    return train, sum(evals) / len(evals)


def plan(
    cfg: Config,
    cells: list[Cell],
    out_dir: Path,
    kind: str,
    workers: int,
    step_time_fn: StepTimeFn | None = None,
    stream: TextIO | None = None,
) -> dict[str, Any]:
    """Print the cell table and a compute estimate (``--dry-run``); creates nothing. Returns the numbers."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    store = Store(out_dir, lock=False) if out_dir.exists() else None
    failed = {f["cell"] for f in store.failures()} if store else set()
    table = Table(title=Text(f"audit grid '{cfg.audit.name}' → {out_dir}"), show_lines=False)
    for col in ("#", "cell", "benchmark", "method", "seed", "mode", "hash", "status"):
        table.add_column(col)
    pending = 0
    for i, c in enumerate(cells):
        status = (
            "done" if store and store.is_done(c) else ("failed, will retry" if c.key in failed else "pending")
        )
        pending += status != "done"
        cols = (str(i), c.key, c.benchmark, c.method, str(c.seed), c.mode, c.hash, status)
        table.add_row(*(Text(x) for x in cols))  # user text, never rich markup
    console = Console(file=stream or sys.stdout, width=140)
    console.print(table)

    est = estimate(cfg, pending, workers, step_time_fn)
    console.print(
        f"{len(cells)} cells ({len(cells) - pending} done, {pending} to run); executor {kind}, {workers} worker(s)\n"
        f"step time {est['step_time_s'] * 1000:.1f} ms ({est['step_time_source']}); per cell: train "
        f"{cfg.train.steps}×{cfg.train.grad_accum} steps ≈ {fmt_duration(est['train_s'])}, eval ≈ "
        f"{fmt_duration(est['eval_s'])}, start-up ≈ {fmt_duration(CELL_STARTUP_S)}; base pre-training ≈ "
        f"{fmt_duration(est['base_s'])} per benchmark (cached)\n"
        f"estimate: {fmt_duration(est['total_s'])} of compute, ≈ {fmt_duration(est['wall_s'])} wall with "
        f"{workers} worker(s). Objectives with extra forwards (views) cost up to ~2× a CE step; "
        "`jepa-audit bench` measures them.",
        highlight=False,
        markup=False,
    )
    return {"cells": len(cells), **est}


def estimate(cfg: Config, pending: int, workers: int, step_time_fn: StepTimeFn | None = None) -> dict[str, Any]:
    """The compute estimate of ``pending`` cells of ``cfg`` on ``workers`` workers (``--dry-run``, ``bench``).

    Seconds: ``train_s``/``eval_s`` per cell, ``cell_s`` (those plus CELL_STARTUP_S), ``base_s`` (tiny-base
    pre-training, once per benchmark), ``total_s`` (compute) and ``wall_s`` (``total_s / workers``); plus
    ``pending``, ``workers``, ``step_time_s`` and where it came from (``step_time_source``)."""
    step, source = _step_time(cfg, step_time_fn)
    train_s, eval_s = estimate_cell_s(cfg, step)
    base_s = cfg.base.steps * step if cfg.model.kind == "tiny" else 0.0  # once per corpus, then cached
    cell_s = train_s + eval_s + CELL_STARTUP_S
    total_s = pending * cell_s + base_s * len(cfg.audit.benchmarks)
    return {"pending": pending, "workers": workers, "step_time_s": step, "step_time_source": source,
            "train_s": train_s, "eval_s": eval_s, "cell_s": cell_s, "base_s": base_s, "total_s": total_s,
            "wall_s": total_s / max(1, workers)}


# ----------------------------------------------------------------------------------------------------------
# The audit
# ----------------------------------------------------------------------------------------------------------


def _write_report(out_dir: Path, cfg: Config, report_fn: ReportFn | None, log: Callable[[str], None]) -> bool:
    """Write the report; a failure is logged in one line (traceback in report_error.txt when it is a bug).

    A report that cannot be *written* (full disk, read-only directory) raises :class:`StoreError`: the
    cells are committed, and the user gets the path and cause as one line."""
    if report_fn is None:
        try:
            from jepa_audit.report import write_report
        except ImportError as e:
            log(f"report not written: jepa_audit.report is not available ({e})")
            return False
        # rows written before cells recorded target_geometry get their targets from the registry (the
        # statistics never import it: the torch side hands them the lookup)
        report_fn = functools.partial(write_report, target_lookup=registry_targets())
    from jepa_audit.report import ReportError, ReportWriteError

    try:
        report_fn(out_dir, cfg.audit.alpha, cfg.audit.family)
    except ReportWriteError as e:
        raise StoreError(str(e)) from None
    except ReportError as e:
        log(f"report not written: {e}")
        return False
    except Exception as e:
        where = ""
        with contextlib.suppress(StoreError):
            atomic_write(out_dir / "report_error.txt", traceback.format_exc())
            where = f" (traceback in {out_dir / 'report_error.txt'})"
        log(f"report failed: {type(e).__name__}: {e}{where}; rerun with `jepa-audit report {out_dir}`")
        return False
    with contextlib.suppress(OSError):
        (out_dir / "report_error.txt").unlink(missing_ok=True)  # an earlier failure is no longer current
    return True


def _open_store(out_dir: Path, stream: TextIO | None) -> Store:
    """Open (lock, repair) the store; what it repaired or took over is said in one plain line each."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", StoreNotice)
        store = Store(out_dir)
    for w in caught:
        if issubclass(w.category, StoreNotice):
            _say(stream, f"note: {w.message}")
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return store


def check_workers(workers: object, source: str = "--workers") -> int:
    """``workers`` as a positive int, else :class:`ConfigError` naming ``source``."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"{source} must be a positive number of cells run side by side, got {workers!r}")
    return workers


def run_audit(
    cfg: Config,
    out_dir: str | Path,
    *,
    executor: str | None = None,
    workers: int | None = None,
    force: bool = False,
    dry_run: bool = False,
    cell_fn: CellFn | None = None,
    report: bool = True,
    report_fn: ReportFn | None = None,
    step_time_fn: StepTimeFn | None = None,
    known_methods: set[str] | None = None,
    stream: TextIO | None = None,
    live: bool | None = None,
    calibration_fn: CellFn | None = None,
) -> int:
    """Run (or resume) the audit grid of ``cfg`` in ``out_dir``. Returns 0 when every cell is done, else 1.

    - ``executor``/``workers``: override ``cfg.audit.executor``/``cfg.audit.workers``.
    - ``force``: replace recorded cells whose config hash changed (their old rows go to superseded.jsonl);
      without it such a change raises :class:`~jepa_audit.audit.store.GridChangedError`.
    - ``dry_run``: print the cells and a compute estimate (step time from ``step_time_fn``, by default
      ``jepa_audit.audit.step_time.measure_step_time``, else a documented guess); touches nothing.
    - ``cell_fn(cfg, cell_dir, progress) -> row``: defaults to :func:`jepa_audit.cell.run_cell`; for a
      process pool or Ray it must be an importable module-level function.
    - ``report``: after the grid, ``report_fn(out_dir, alpha, family)`` (default
      :func:`jepa_audit.report.write_report`) writes summary.json, report.md and report.html from what
      finished, even when some cells failed. A failed report makes the exit code 1.
    - ``known_methods``: ids to validate ``audit.methods`` against; by default the objectives registry when
      ``cell_fn`` is the real one (a custom ``cell_fn`` decides for itself).
    - ``stream``/``live``: where progress goes, and whether to force the live (rich) display on or off.
    - ``calibration_fn``: the λ calibration stage's run function (default
      :func:`jepa_audit.audit.calibration.run_calibration_cell`); the stage runs first when
      ``calibration.enabled`` and λ is not pinned, and its picks enter the test cells' configs and hashes.

    Raises :class:`~jepa_audit.audit.store.StoreLockedError` when another runner owns ``out_dir`` and
    :class:`~jepa_audit.config.ConfigError` for an invalid grid; a failing cell never raises.
    """
    out_dir = Path(out_dir)
    kind = executor or cfg.audit.executor
    n_workers = check_workers(cfg.audit.workers if workers is None else workers)
    if known_methods is None and cell_fn is None:
        known_methods = registry_methods()
    cells = expand_grid(cfg, known_methods=known_methods)
    if dry_run:
        cells = calibration.plan_stage(cfg, cells, out_dir, stream)
        plan(cfg, cells, out_dir, kind, n_workers, step_time_fn, stream)
        return 0
    if cell_fn is None:
        from jepa_audit.cell import run_cell as cell_fn

    with _open_store(out_dir, stream) as store:
        # λ calibration on validation (audit/calibration.py): frozen into the cells' configs before the grid
        try:
            cells = calibration.run_stage(
                cfg, cells, out_dir, kind=kind, workers=n_workers, fn=calibration_fn, stream=stream, live=live
            )
        except calibration.CalibrationIncomplete as e:  # a lost run: no λ from a partial curve, no test cell
            _say(stream, f"error: {e}")
            return 1
        by_key = {c.key: c for c in cells}
        changed = store.check_grid(cells, force=force, name=cfg.audit.name, stats=cfg.stats.model_dump())
        if changed:
            _say(
                stream,
                f"--force: {len(changed)} cell(s) with a changed config will run again "
                f"(old rows moved to {out_dir / 'superseded.jsonl'})",
            )
        atomic_write(out_dir / "config.yaml", dump_config(cfg))
        todo = [c for c in cells if not store.is_done(c)]
        # a copy per job: an in-process cell that resolves defaults on its config must not alter the grid's
        jobs = [
            CellJob(
                c.key,
                c.config.model_copy(deep=True),
                str(store.prepare_cell(c)),
                c.hash,
                cfg.tracking.tensorboard,
            )
            for c in todo
        ]
        attempts = {j.key: Path(j.cell_dir) for j in jobs}  # where each cell writes, this attempt only
        runner = make_executor(kind, n_workers, cfg)
        tracker = Tracker(cfg.tracking, out_dir, cfg.audit.name)
        failed: list[str] = []

        with AuditProgress(len(cells), len(cells) - len(todo), n_workers, stream=stream, live=live) as prog:

            def poll() -> None:  # pool/Ray workers report through cells/<key>/<attempt>/progress.json
                prog.poll(lambda key: read_progress(attempts[key]))

            for out in runner.run(jobs, cell_fn, on_start=prog.started, tick=poll, listener=prog.update):
                cell = by_key[out.key]
                error, row = out.error, None
                if error is None and out.row is not None:
                    error = check_row(out.row)
                if error is None and out.row is not None:
                    row = dict(out.row)
                    row.setdefault("wall_s", round(out.wall_s, 3))
                    if isinstance(row.get("predictions_file"), str):  # this attempt's file, relative to DIR
                        name = Path(row["predictions_file"]).name
                        row["predictions_file"] = (attempts[cell.key] / name).relative_to(out_dir).as_posix()
                        # its bytes as committed: the item-level analyses refuse a file edited afterwards
                        row[PREDICTIONS_CHECKSUM] = file_sha256(out_dir / row["predictions_file"])
                    try:
                        row = store.commit(cell, row)
                    except RowMismatchError as e:  # the row is not this cell's (a bug in the cell fn); a
                        # write error (full disk) is not caught here: it stops the runner naming results.jsonl
                        error = str(e)
                if error is not None or row is None:
                    error = error or "the cell returned no row"
                    store.record_failure(cell, error, out.traceback, out.wall_s)
                    failed.append(cell.key)
                    prog.finished(cell.key, False, out.wall_s, error=error)
                    continue
                tracker.cell_done(cell.key, row, attempts[cell.key])
                prog.finished(cell.key, True, out.wall_s, row=row)

            done = sum(store.is_done(c) for c in cells)
            if failed:
                prog.log(
                    f"{len(failed)} cell(s) failed (errors in {out_dir / 'failures.jsonl'} and "
                    f"cells/<key>/error.txt); run the same command again to retry them"
                )
            prog.log(f"{done}/{len(cells)} cells done in {out_dir}")
            report_ok = True
            if report and done == 0:
                prog.log("no cell has finished, so there is no report to write")
                report_ok = False
            elif report:
                report_ok = _write_report(out_dir, cfg, report_fn, prog.log)
    return 0 if done == len(cells) and report_ok else 1


def main(argv: list[str] | None = None) -> int:
    """``python -m jepa_audit.audit.runner [--preset P] [--out DIR] [--set k=v ...]``: the runner without the
    CLI (handy for debugging and for process-level tests)."""
    import argparse

    from jepa_audit.plugins import load_config

    p = argparse.ArgumentParser(prog="python -m jepa_audit.audit.runner")
    p.add_argument("--preset", default="quick")
    p.add_argument("--config")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--out", default="runs/audit")
    p.add_argument("--executor", choices=("local", "ray"))
    p.add_argument("--workers", type=int)
    p.add_argument("--force", action="store_true")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--include", action="append", default=[], help="plugin file or folder (docs/plugins.md)")
    a = p.parse_args(argv)
    cfg = load_config(preset=a.preset, file=a.config, overrides=a.overrides, includes=a.include)
    return run_audit(
        cfg, Path(a.out), executor=a.executor, workers=a.workers, force=a.force, dry_run=a.dry_run
    )


if __name__ == "__main__":
    sys.exit(main())
