"""What the user sees while the grid runs: a rich live display on a terminal, plain log lines otherwise.

Terminal: one bar for the grid (cells done / total, elapsed, ETA) and one line per running cell (step /
total, loss). Not a terminal (CI, ``nohup``, a pipe): one line when a cell starts or ends, and a line per
running cell at most every ``PLAIN_EVERY_S`` seconds, so logs stay readable and small.

The ETA is the grid's own throughput (cells finished in this run per second of wall time), which accounts
for parallel workers; before the first cell finishes it extrapolates the running cells' step fractions.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

PLAIN_EVERY_S = 30.0


def fmt_duration(s: float | None) -> str:
    if s is None or not math.isfinite(s):
        return "?"
    if s < 10:
        return f"{s:.1f}s"
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{sec:02d}s" if m else f"{sec}s")


def _literal(text: str) -> str:
    """``text`` escaped for the live display's markup-rendered columns, so it shows as written."""
    from rich.markup import escape

    return escape(text)


def _summary(row: dict[str, Any] | None) -> str:
    from jepa_audit.results import ResultsRow

    try:
        scores = ResultsRow.parse(row or {}).scores()  # the task's metrics, primary first
    except ValueError:  # no row yet, or not a finished one: nothing to show
        return ""
    parts = [f"{k} {v:.3f}" for k, v in scores.items() if v is not None]
    return f" ({', '.join(parts)})" if parts else ""


class AuditProgress:
    """Progress of one ``run_audit`` call. Use as a context manager; all methods are cheap."""

    def __init__(
        self, total: int, done: int, workers: int, *, stream: TextIO | None = None, live: bool | None = None
    ) -> None:
        self.total = total
        self.done = done
        self.failed = 0
        self.workers = max(1, workers)
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty() if live is None else live
        self.t0 = time.monotonic()
        self.finished_here = 0
        self.running: dict[str, dict[str, Any]] = {}  # key -> {"t0", "event", "task", "last_plain"}
        self._progress: Any = None
        self._overall: Any = None

    # -- lifecycle ------------------------------------------------------------------------------------------
    def __enter__(self) -> AuditProgress:
        if self.live:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[info]}"),
                console=Console(file=self.stream),
                refresh_per_second=4,
            )
            self._progress.start()
            self._overall = self._progress.add_task(
                "[bold]cells", total=self.total, completed=self.done, info=""
            )
        else:
            self.log(
                f"{self.total} cells: {self.done} already done, {self.total - self.done} to run, "
                f"{self.workers} worker(s)"
            )
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def log(self, msg: str) -> None:
        if self._progress is not None:
            self._progress.console.print(msg, highlight=False, markup=False)  # user text, printed literally
        else:
            print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=self.stream, flush=True)

    # -- events ---------------------------------------------------------------------------------------------
    def started(self, key: str) -> None:
        info: dict[str, Any] = {
            "t0": time.monotonic(),
            "event": None,
            "task": None,
            "last_plain": time.monotonic(),
        }
        if self._progress is not None:
            info["task"] = self._progress.add_task(_literal(f"  {key}"), total=None, info="starting")
        else:
            self.log(f"[{self.done + self.failed + len(self.running) + 1}/{self.total}] start {key}")
        self.running[key] = info

    def update(self, key: str, event: dict[str, Any]) -> None:
        info = self.running.get(key)
        if info is None:
            return
        info["event"] = event
        step, total, loss = event.get("step"), event.get("total"), event.get("loss")
        phase = str(event.get("phase") or "train")  # run_cell reports base pre-training, train, eval
        text = phase + (f" loss {loss:.4f}" if isinstance(loss, (int, float)) else "")
        if self._progress is not None:
            self._progress.update(info["task"], completed=step or 0, total=total, info=_literal(text))
            self._progress.update(self._overall, info=f"ETA {fmt_duration(self.eta())}")
        elif time.monotonic() - info["last_plain"] >= PLAIN_EVERY_S:
            info["last_plain"] = time.monotonic()
            self.log(f"      {key} {phase} {step}/{total}" + (f" loss {loss:.4f}" if "loss" in text else ""))

    def poll(self, read: Callable[[str], dict[str, Any] | None]) -> None:
        """Show what pool or Ray workers reported since the last call. ``read(key)`` is a running cell's latest
        progress event (its attempt folder's progress.json: ``executors.read_progress``), or None."""
        for key in list(self.running):
            ev = read(key)
            if ev is not None and ev != self.running[key]["event"]:
                self.update(key, ev)

    def finished(
        self, key: str, ok: bool, wall_s: float, row: dict[str, Any] | None = None, error: str | None = None
    ) -> None:
        info = self.running.pop(key, None)
        if ok:
            self.done += 1
            self.finished_here += 1
        else:
            self.failed += 1
        if info and info["task"] is not None and self._progress is not None:
            self._progress.remove_task(info["task"])
        n = self.done + self.failed
        eta = fmt_duration(self.eta())
        if ok:
            self.log(f"[{n}/{self.total}] done {key} in {fmt_duration(wall_s)}{_summary(row)}; ETA {eta}")
        else:
            self.log(f"[{n}/{self.total}] FAILED {key} after {fmt_duration(wall_s)}: {error}")
        if self._progress is not None:
            self._progress.update(
                self._overall,
                completed=self.done,
                info=f"ETA {eta}" + (f", {self.failed} failed" if self.failed else ""),
            )

    # -- ETA ------------------------------------------------------------------------------------------------
    def eta(self) -> float | None:
        """Seconds until the grid is done, or None when nothing is known yet."""
        remaining = self.total - self.done - self.failed
        if remaining <= 0:
            return 0.0
        elapsed = time.monotonic() - self.t0
        if self.finished_here:
            return elapsed / self.finished_here * remaining
        per_cell = []
        for info in self.running.values():
            ev = info["event"] or {}
            if ev.get("phase", "train") != "train":  # only training steps extrapolate to a cell's time
                continue
            step, total = ev.get("step"), ev.get("total")
            if isinstance(step, (int, float)) and isinstance(total, (int, float)) and step > 0 and total > 0:
                per_cell.append((time.monotonic() - info["t0"]) * total / step)
        if not per_cell:
            return None
        return sum(per_cell) / len(per_cell) * math.ceil(remaining / self.workers)
