"""Where cells run: in-process, in a local process pool, or as Ray tasks. Executors only dispatch.

Every executor takes :class:`CellJob` s (picklable: key, config, cell directory) and yields an
:class:`Outcome` per job as it completes, in completion order. A cell that raises becomes an Outcome with
its error and traceback; the executor never stops the grid for one cell. Recording results is the
runner's job (one writer per directory).

Progress travels by file, not by queue: the ``progress`` callable handed to the cell function
(:class:`ProgressWriter`) appends each event to ``cells/<key>/progress.jsonl`` (the train log) and keeps
``cells/<key>/progress.json`` at the latest event, which the parent polls. Files survive a dead worker,
need no manager process, and work the same for a pool worker and a Ray task on a shared file system.
"""

from __future__ import annotations

import contextlib
import gc
import json
import multiprocessing
import os
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from jepa_audit.config import Config

CellFn = Callable[..., dict[str, Any]]  # (cfg, cell_dir, progress) -> row
Listener = Callable[[str, dict[str, Any]], None]  # (cell key, progress event)
PROGRESS_EVERY_S = 0.5  # progress.json is rewritten at most this often; the log gets every event
PARENT_POLL_S = 1.0  # how often a pool worker checks that the runner is still its parent
PR_SET_PDEATHSIG = 1  # linux/prctl.h


@dataclass
class CellJob:
    """What a worker needs to run one cell (picklable)."""

    key: str
    config: Config
    cell_dir: str
    hash: str
    tensorboard: bool = False
    # Ray: the plugin files' bytes by their driver path (plugins.bundle), for nodes that do not see them
    plugin_files: dict[str, bytes] | None = field(default=None, repr=False)


@dataclass
class Outcome:
    """The result of one attempt: ``row`` when it finished, else ``error`` and ``traceback``."""

    key: str
    row: dict[str, Any] | None
    error: str | None = None
    traceback: str = ""
    wall_s: float = 0.0
    files: dict[str, bytes] | None = field(default=None, repr=False)  # Ray without a shared file system

    @property
    def ok(self) -> bool:
        return self.row is not None and self.error is None


def cpu_count() -> int:
    """CPUs this process may use (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def threads_per_worker(workers: int) -> int:
    return max(1, cpu_count() // max(1, workers))


def _set_threads(n: int) -> None:
    """Limit BLAS/OpenMP threads so ``workers`` cells do not oversubscribe the cores.

    The environment variables reach torch when it is first imported (inside the cell); if torch is already
    imported, set it directly. torch is not imported here just for this: a fake cell in a test needs none.
    """
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)


def _die_with_parent(parent_pid: int) -> None:
    """Make this pool worker end when the runner does, even when the runner is killed by SIGKILL.

    Linux: ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` has the kernel kill us when the parent thread exits. Any
    OS: a daemon thread polls the parent pid once a second and exits when it changes (the orphan is
    re-parented). Without this a killed runner leaves workers training on and writing into a directory a
    resumed runner is using."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(PARENT_POLL_S)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="jepa-audit-parent-watch", daemon=True).start()


def _worker_main(conn: Connection, n_threads: int, parent_pid: int, gpu: str | None = None) -> None:
    """A pool worker: run ``(cell_fn, job)`` messages one at a time, answer each with its Outcome."""
    from jepa_audit.audit.devices import claim_gpu

    _die_with_parent(parent_pid)
    claim_gpu(gpu)  # before the cell's first CUDA call: one GPU per worker (audit/devices.py)
    _set_threads(n_threads)
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        cell_fn, job = msg
        out = execute_cell(cell_fn, job)
        try:
            conn.send(out)  # pickled before anything is written: a failure leaves the pipe clean
        except (EOFError, OSError):
            return
        except Exception as e:  # e.g. a row that cannot be pickled
            conn.send(Outcome(job.key, None, f"the cell's outcome could not be sent back: {type(e).__name__}: {e}",
                              traceback.format_exc(), out.wall_s))


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "it stopped answering"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exit code {code}"


class _Worker:
    """One spawned worker process and the pipe to it; ``job`` is what it runs now (None: idle)."""

    def __init__(self, ctx: Any, threads: int, slot: int, gpu: str | None = None) -> None:
        self.slot = slot  # 0..workers-1; a replacement takes the dead worker's slot, and so its GPU
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(
            target=_worker_main, args=(child, threads, os.getpid(), gpu), name="jepa-audit-worker", daemon=True
        )
        self.proc.start()
        child.close()
        self.job: CellJob | None = None
        self.t0 = 0.0

    def stop(self, now: bool) -> None:
        """Ask the worker to exit (idle) or kill it (``now``: it is running a cell nobody will record)."""
        if not now:
            with contextlib.suppress(OSError, ValueError):
                self.conn.send(None)
            self.proc.join(timeout=5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(timeout=5)
        self.conn.close()


# ----------------------------------------------------------------------------------------------------------
# Progress events → files (and, in-process, straight to the display)
# ----------------------------------------------------------------------------------------------------------


class ProgressWriter:
    """The ``progress`` callable given to the cell: ``progress({"step": 40, "total": 60, "loss": 1.2})``.

    Never raises: a full disk or a bad value must not kill a training run over a log line.
    """

    def __init__(
        self, cell_dir: str | Path, key: str, tensorboard: bool = False, listener: Listener | None = None
    ):
        self.dir = Path(cell_dir)
        self.key = key
        self.listener = listener
        self._tensorboard = tensorboard
        self._tb: Any = None
        self._last_write = 0.0
        self._pending: dict[str, Any] | None = None

    def __call__(self, event: dict[str, Any]) -> None:
        try:
            event = {k: (v.item() if hasattr(v, "item") else v) for k, v in dict(event).items()}
            event.setdefault("time", time.time())
            line = json.dumps(event, default=str)
            with open(self.dir / "progress.jsonl", "a") as f:
                f.write(line + "\n")
            self._pending = event
            now = time.monotonic()
            if now - self._last_write >= PROGRESS_EVERY_S or event.get("step") == event.get("total"):
                self._flush()
            if self._tensorboard:
                self._tb_log(event)
            if self.listener is not None:
                self.listener(self.key, event)
        except Exception:  # noqa: S110 - progress is best effort by design
            pass

    def _flush(self) -> None:
        if self._pending is None:
            return
        tmp = self.dir / ".progress.json.tmp"
        tmp.write_text(json.dumps(self._pending, default=str))
        os.replace(tmp, self.dir / "progress.json")  # no fsync: losing the latest step on a crash is fine
        self._pending = None
        self._last_write = time.monotonic()

    def _tb_log(self, event: dict[str, Any]) -> None:
        step, phase = event.get("step"), event.get("phase") or "train"
        if not isinstance(step, int) or phase == "eval":  # eval "steps" count test items, not updates
            return
        if self._tb is None:
            from jepa_audit.audit.tracking import tensorboard_writer

            self._tb = tensorboard_writer(self.dir / "tb")
        for k, v in event.items():
            if k not in ("step", "total", "time") and isinstance(v, (int, float)) and not isinstance(v, bool):
                self._tb.add_scalar(f"{phase}/{k}", v, step)

    def close(self, row: dict[str, Any] | None = None) -> None:
        with contextlib.suppress(Exception):
            self._flush()
        if self._tb is not None:
            with contextlib.suppress(Exception):
                if row:
                    from jepa_audit.audit.tracking import flat_metrics

                    for k, v in flat_metrics(row).items():
                        self._tb.add_scalar(f"final/{k}", v, 0)
                self._tb.close()


def read_progress(cell_dir: Path) -> dict[str, Any] | None:
    """The latest progress event of a running cell, or None (not started, or mid-rename)."""
    try:
        return json.loads((cell_dir / "progress.json").read_text())
    except (OSError, ValueError):
        return None


def _free_memory(failed: bool) -> None:
    """Give memory back before the next cell. A failed cell's traceback holds its frames (and their tensors)
    in reference cycles, so only then is a full collection worth its ~0.3 s; a finished cell's objects go
    by reference counting."""
    if failed:
        gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None:
        with contextlib.suppress(Exception):
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def execute_cell(cell_fn: CellFn, job: CellJob, listener: Listener | None = None) -> Outcome:
    """Run one cell and capture everything: a row on success, the error and traceback on failure."""
    t0 = time.perf_counter()
    progress = ProgressWriter(job.cell_dir, job.key, job.tensorboard, listener)
    row = None
    try:
        from jepa_audit.plugins import load_for_cell

        load_for_cell(job.config, job.plugin_files)  # a spawned or Ray worker imports the driver's plugins
        row = cell_fn(job.config, Path(job.cell_dir), progress)
        if not isinstance(row, dict):
            raise TypeError(f"the cell function returned {type(row).__name__}, expected a dict row")
        return Outcome(job.key, row=row, wall_s=time.perf_counter() - t0)
    except Exception as e:
        return Outcome(
            job.key,
            row=None,
            error=f"{type(e).__name__}: {e}",
            traceback=traceback.format_exc(),
            wall_s=time.perf_counter() - t0,
        )
    finally:
        progress.close(row)
        _free_memory(failed=not isinstance(row, dict))


def _died(job: CellJob, what: str, t0: float) -> Outcome:
    return Outcome(job.key, row=None, error=what, wall_s=time.monotonic() - t0)


# ----------------------------------------------------------------------------------------------------------
# Local: in-process (workers == 1) or a spawn process pool
# ----------------------------------------------------------------------------------------------------------


class LocalExecutor:
    """``workers`` cells side by side on this machine, each with ``cpus // workers`` torch threads.

    ``workers == 1`` runs in-process (no start-up cost, plain tracebacks). Otherwise ``workers`` *spawned*
    processes (forking a parent that may hold torch's thread pools or CUDA state is unsafe), each with its
    own pipe, running one cell at a time. The runner knows which worker runs which cell, so a worker that
    dies (OOM killer, a crash in native code) fails only its own cell; a fresh worker replaces it and the
    other cells run on. Workers die with the runner (:func:`_die_with_parent`).
    """

    name = "local"

    def __init__(self, workers: int = 1, gpus: list[str] | None = None) -> None:
        if isinstance(workers, bool) or int(workers) < 1:
            raise ValueError(f"workers must be a positive integer, got {workers!r}")
        self.workers = int(workers)
        self.gpus = gpus  # one physical GPU id per pool worker slot (devices.pool_gpus), None without CUDA

    def run(
        self,
        jobs: Sequence[CellJob],
        cell_fn: CellFn,
        *,
        on_start: Callable[[str], None] | None = None,
        tick: Callable[[], None] | None = None,
        listener: Listener | None = None,
    ) -> Iterator[Outcome]:
        jobs = list(jobs)
        if not jobs:
            return
        n = min(self.workers, len(jobs))
        threads = threads_per_worker(n)
        if n == 1:
            _set_threads(threads)
            for job in jobs:
                if on_start:
                    on_start(job.key)
                yield execute_cell(cell_fn, job, listener)
            return
        yield from self._run_pool(list(reversed(jobs)), cell_fn, n, threads, on_start, tick)

    def _run_pool(self, queue, cell_fn, n, threads, on_start, tick) -> Iterator[Outcome]:
        """Feed ``queue`` (popped from the end) to ``n`` workers, yielding outcomes as they arrive."""
        ctx = multiprocessing.get_context("spawn")
        workers: list[_Worker] = []
        try:
            while queue or any(w.job for w in workers):
                free = sorted(set(range(n)) - {w.slot for w in workers})
                for w in [w for w in workers if w.job is None] + free:
                    if not queue:
                        break
                    if isinstance(w, int):
                        w = _Worker(ctx, threads, slot=w, gpu=self.gpus[w] if self.gpus else None)
                        workers.append(w)
                    job = queue.pop()
                    try:
                        w.conn.send((cell_fn, job))
                    except OSError:  # the worker is already dead: its sentinel reports it below
                        pass
                    except Exception as e:  # the cell function or config cannot be pickled
                        yield Outcome(job.key, None, f"cannot send the cell to a worker: {type(e).__name__}: {e}",
                                      traceback.format_exc())
                        continue
                    w.job, w.t0 = job, time.monotonic()
                    if on_start:
                        on_start(job.key)
                busy = [w for w in workers if w.job is not None]
                ready = set(wait([w.conn for w in busy] + [w.proc.sentinel for w in busy], PROGRESS_EVERY_S))
                if tick:
                    tick()
                for w in busy:
                    if w.conn not in ready and w.proc.sentinel not in ready:
                        continue
                    job, out = w.job, None
                    with contextlib.suppress(EOFError, OSError):
                        if w.conn.poll():
                            out = w.conn.recv()
                    w.job = None
                    if out is not None:
                        yield out
                        continue
                    w.proc.join(timeout=5)
                    yield _died(
                        job,
                        f"worker process {w.proc.pid} died while running this cell ({_exit_reason(w.proc.exitcode)}; "
                        "e.g. the out-of-memory killer, or a crash in native code); only this cell failed",
                        w.t0,
                    )
                    w.stop(now=True)
                    workers.remove(w)
        finally:
            for w in workers:
                w.stop(now=w.job is not None)


# ----------------------------------------------------------------------------------------------------------
# Ray: cells as tasks, one GPU each when the cluster has GPUs
# ----------------------------------------------------------------------------------------------------------


def _ray_execute(cell_fn: CellFn, job: CellJob) -> Outcome:
    """The Ray task. Writes into the cell directory when this node sees it (same machine or a shared file
    system); otherwise runs in a temporary directory and ships the cell's files back with the outcome."""
    shared = False
    with contextlib.suppress(OSError, ValueError, AttributeError):  # cells/<key>/cell.json names the attempt
        meta = json.loads((Path(job.cell_dir).parent / "cell.json").read_text())
        shared = meta.get("config_hash") == job.hash and meta.get("attempt") == Path(job.cell_dir).name
    if shared:
        return execute_cell(cell_fn, job)
    with tempfile.TemporaryDirectory(prefix=f"jepa-audit-{job.key}-") as tmp:
        local = CellJob(job.key, job.config, tmp, job.hash, job.tensorboard, job.plugin_files)
        out = execute_cell(cell_fn, local)
        out.files = {str(p.relative_to(tmp)): p.read_bytes() for p in Path(tmp).rglob("*") if p.is_file()}
        return out


class RayExecutor:
    """Cells as Ray tasks. Connects to ``RAY_ADDRESS`` when set (a cluster: install jepa-audit on every
    node), else starts a local Ray with ``workers`` CPUs. Each task asks for ``cpus_per_cell`` CPUs and one
    GPU when the cluster has GPUs. Jobs are submitted as slots free up (at most the cluster's capacity in
    flight), so ``on_start`` marks cells that are really starting. Tasks are not retried by Ray: a failure
    is recorded and the next ``audit`` run retries the cell.
    """

    name = "ray"

    def __init__(self, workers: int = 2, cpus_per_cell: int = 1, address: str | None = None) -> None:
        self.workers = max(1, int(workers))
        self.cpus_per_cell = max(1, int(cpus_per_cell))
        self.address = address if address is not None else os.environ.get("RAY_ADDRESS") or None

    def _connect(self) -> bool:
        """Initialise Ray if needed; True when we started it (and so must shut it down)."""
        import ray

        if ray.is_initialized():
            return False
        if self.address:
            ray.init(address=self.address, log_to_driver=False)
        else:
            # workers of a local instance see the driver's import path (tests, editable checkouts)
            path = os.pathsep.join(p for p in sys.path if p)
            ray.init(
                num_cpus=self.workers * self.cpus_per_cell,
                include_dashboard=False,
                log_to_driver=False,
                runtime_env={"env_vars": {"PYTHONPATH": path}},
            )
        return True

    def run(
        self,
        jobs: Sequence[CellJob],
        cell_fn: CellFn,
        *,
        on_start: Callable[[str], None] | None = None,
        tick: Callable[[], None] | None = None,
        listener: Listener | None = None,
    ) -> Iterator[Outcome]:
        jobs = list(jobs)
        if not jobs:
            return
        import ray

        started = self._connect()
        try:
            res = ray.cluster_resources()
            gpus = int(res.get("GPU", 0))
            capacity = gpus if gpus else int(res.get("CPU", 1) // self.cpus_per_cell)
            slots = max(1, capacity if self.address else min(self.workers, max(1, capacity)))
            from jepa_audit.audit.devices import ray_task_options

            # num_gpus/max_calls in the definition, not .options(): only then is a GPU worker single-use
            task = ray.remote(**ray_task_options(gpus, self.cpus_per_cell))(_ray_execute)
            fn_ref = ray.put(cell_fn)
            from jepa_audit.plugins import bundle

            # plugin files travel with each task: a node need not see the driver's file system
            queue = [replace(j, plugin_files=bundle(j.config) if j.config.plugins else None) for j in reversed(jobs)]
            running: dict[Any, tuple[CellJob, float]] = {}
            try:
                while queue or running:
                    while queue and len(running) < slots:
                        job = queue.pop()
                        running[task.remote(fn_ref, job)] = (job, time.monotonic())
                        if on_start:
                            on_start(job.key)
                    done, _ = ray.wait(list(running), num_returns=1, timeout=PROGRESS_EVERY_S)
                    if tick:
                        tick()
                    for ref in done:
                        job, t0 = running.pop(ref)
                        try:
                            out = ray.get(ref)
                        except Exception as e:  # worker crash, OOM kill, node lost
                            out = Outcome(
                                job.key,
                                None,
                                f"ray task failed: {type(e).__name__}: {e}",
                                traceback.format_exc(),
                                time.monotonic() - t0,
                            )
                        if out.files:
                            for rel, data in out.files.items():
                                dest = Path(job.cell_dir) / rel
                                dest.parent.mkdir(parents=True, exist_ok=True)
                                dest.write_bytes(data)
                            out.files = None
                        yield out
            finally:
                for ref in running:
                    with contextlib.suppress(Exception):
                        ray.cancel(ref, force=True)
        finally:
            if started:
                ray.shutdown()


def make_executor(kind: str, workers: int, cfg: Config | None = None) -> LocalExecutor | RayExecutor:
    if kind == "local":
        from jepa_audit.audit.devices import pool_gpus

        return LocalExecutor(workers, gpus=pool_gpus(cfg.model.device, workers) if cfg else None)
    if kind == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise RuntimeError("--executor ray needs Ray: pip install 'jepa-audit[ray]'") from None
        return RayExecutor(workers, cpus_per_cell=cfg.train.threads if cfg else 1)
    raise ValueError(f"unknown executor {kind!r}: expected local or ray")
