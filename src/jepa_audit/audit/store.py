"""The results store of one audit directory: finished rows, failures, the grid manifest and the lock.

Layout (``DIR`` is ``--out``)::

    DIR/results.jsonl      one line per *finished* cell (DESIGN.md row + "cell" + "row_sha256"), the index
    DIR/failures.jsonl     one line per failed attempt (status "failed", error, traceback tail); history only
    DIR/grid.json          manifest: every cell key ever run here → its config hash
    DIR/config.yaml        the resolved config of the latest run (the grid; cells have their own)
    DIR/.lock              "pid host" of the runner that owns the directory (flock-ed while it runs)
    DIR/cells/<key>/       config.yaml, cell.json (names the current attempt), error.txt (last failure)
    DIR/cells/<key>/<attempt>/   what the cell writes: predictions.jsonl (run_cell), progress.jsonl (train
                           log), progress.json (latest step, polled by the display), tb/

Commit protocol: a row is appended to ``results.jsonl`` only when its cell has finished, as one ``write``
of one line on an ``O_APPEND`` descriptor followed by ``fsync``. The line carries ``row_sha256``, the
sha256 of the row's canonical JSON without that key, so a line torn by a kill (or a disk that lost the
tail) is recognised on the next open and cut away; rows before it are never rewritten in a way that changes
their bytes. The append is the single commit point: a cell is done iff its line is in ``results.jsonl``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import os
import secrets
import socket
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from jepa_audit.audit.grid import Cell

# the row format and the strict reader live below report (results_file.py); re-exported: audit.store's API
from jepa_audit.results_file import (  # noqa: F401
    CHECKSUM,
    LOCK,
    MANIFEST,
    PREDICTIONS_CHECKSUM,
    RESULTS,
    StoreError,
    _fsync_dir,
    _row_key,
    atomic_write_all,
    clean_temporaries,
    file_sha256,
    load_results,
    lock_holder,
    manifest_hashes,
    os_reason,
    parse_lock_text,
    pid_alive,
    read_results,
    row_checksum,
)

FAILURES = "failures.jsonl"
MANIFEST_FORMAT = 1


class StoreLockedError(StoreError):
    """Another runner owns the directory."""


class StoreNotice(UserWarning):
    """Something the store repaired or took over on open (a torn line cut, a stale lock): printed as one
    line by the runner, never as a Python warning with a source line."""


@contextlib.contextmanager
def notes(say: Callable[[str], None]) -> Iterator[None]:
    """Within the block, the store's notices (:class:`StoreNotice`: a torn line cut, a stale lock taken over)
    go to ``say`` as one plain ``note: ...`` line each, never as a Python warning with a source line."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", StoreNotice)
        try:
            yield
        finally:
            for w in caught:
                if issubclass(w.category, StoreNotice):
                    say(f"note: {w.message}")
                else:
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


class RowMismatchError(StoreError):
    """A cell function returned a row whose identity fields are not its cell's (a bug in the cell function)."""


class GridChangedError(StoreError):
    """The config changed for cells that already have results here (use ``--force`` to replace them)."""


# ----------------------------------------------------------------------------------------------------------
# Rows: canonical JSON, checksums, durable appends
# ----------------------------------------------------------------------------------------------------------


def finite(obj: Any) -> Any:
    """Replace NaN/inf by ``None`` recursively: the stdlib would write invalid JSON (HELM's lesson)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        with contextlib.suppress(Exception):
            return finite(obj.item())
    return obj


def encode_row(row: dict[str, Any]) -> bytes:
    """One checksummed JSON line (the row's own key order kept, checksum last)."""
    body = finite({k: v for k, v in row.items() if k != CHECKSUM})
    body[CHECKSUM] = row_checksum(body)
    return (json.dumps(body, allow_nan=False) + "\n").encode()


def parse_line(raw: bytes) -> dict[str, Any] | None:
    """The row of one complete line, or ``None`` if torn, unparsable or failing its checksum.

    A row without a checksum (hand-written, or from a tool that does not add one) is accepted as is.
    """
    if not raw.endswith(b"\n"):
        return None
    try:
        row = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(row, dict):
        return None
    if CHECKSUM in row and row[CHECKSUM] != row_checksum(row):
        return None
    return row


def append_line(path: Path, data: bytes) -> None:
    """Append ``data`` with one ``write`` on an ``O_APPEND`` descriptor, then fsync; all of it or nothing.

    A write that fails part-way (a full disk takes what fits, then refuses the rest) is cut back to the
    file's length before it, so no fragment of a row is left for the next reader to quarantine. Raises
    :class:`StoreError` naming ``path`` and the cause (full disk, read-only, a directory there)."""
    new = not path.exists()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as e:
        raise StoreError(f"{path}: cannot write ({os_reason(e)})") from None
    try:
        start = os.fstat(fd).st_size  # the directory lock makes this process the only appender
        try:
            n = os.write(fd, data)
            if n != len(data):  # a short write: the rest would be refused; nothing half is kept
                raise OSError(errno.ENOSPC, f"only {n} of {len(data)} bytes written (No space left on device)")
            os.fsync(fd)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
                os.fsync(fd)
            raise StoreError(f"{path}: cannot write ({os_reason(e)}); nothing of this line was kept") from None
    finally:
        os.close(fd)
    if new:
        _fsync_dir(path.parent)


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write to a temporary sibling, fsync, rename over ``path``: readers see old or new, never half.

    On failure the temporary file is removed and :class:`StoreError` names ``path`` and the cause."""
    atomic_write_all({path: data})


def read_jsonl(path: Path) -> tuple[list[tuple[dict[str, Any], bytes]], list[bytes]]:
    """(valid rows with their raw lines, bad raw lines) of a checksummed JSONL file; missing file → empty.

    For the history files (failures.jsonl); results.jsonl is read by :func:`read_results`."""
    if not path.exists():
        return [], []
    good, bad = [], []
    with open(path, "rb") as f:
        for raw in f:
            if not raw.strip():
                continue
            row = parse_line(raw)
            if row is None:
                bad.append(raw)
            else:
                good.append((row, raw))
    return good, bad


# ----------------------------------------------------------------------------------------------------------
# The lock: one runner per directory
# ----------------------------------------------------------------------------------------------------------


def boot_id() -> str | None:
    """This boot's id (Linux ``/proc/sys/kernel/random/boot_id``), or None where there is none."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def process_start(pid: int) -> str | None:
    """When ``pid`` started, in clock ticks since boot (``/proc/<pid>/stat`` field 22), or None: with the boot
    id it tells a live runner from an unrelated process that was given the same pid later."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return None


class DirLock:
    """``DIR/.lock``: an ``flock`` held for the runner's life plus ``pid host boot-id start`` inside as hints.

    The flock is the truth: the kernel releases it when the runner dies (even by SIGKILL), so a free flock
    means no runner holds the directory, whatever pid the file names (that pid may have been given to an
    unrelated process since). The text names the holder in messages and covers file systems where flock is
    a no-op: the lock is refused only when the named pid is alive on this host *and* is the same process
    (same boot id and start time); a lock from another host refuses, since its pid cannot be checked from
    here. Anything else is a stale lock, taken over with one note that says why.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @staticmethod
    def _same_process(text: str, pid: int) -> bool | None:
        """Whether live ``pid`` is the process that wrote ``text`` (boot id and start time agree); None when
        the text carries no such hint (written before it existed, or by hand)."""
        parts = text.split()
        if len(parts) < 4:
            return None
        return parts[2] == boot_id() and parts[3] == process_start(pid)

    def acquire(self) -> None:
        host = socket.gethostname()
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise StoreError(f"{self.path}: cannot open the directory lock ({os_reason(e)})") from None
        try:
            try:
                for wait in (0.02, 0.05, 0.1, 0.2, None):  # `report` peeks with a shared flock for microseconds
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if wait is None:
                            raise
                        time.sleep(wait)
            except BlockingIOError:
                pid, other = parse_lock_text(self.path.read_text(errors="replace"))
                raise StoreLockedError(
                    f"{self.path.parent} is in use by another audit runner (pid {pid} on {other or 'unknown host'}); "
                    f"wait for it to finish or stop it. Lock file: {self.path}"
                ) from None
            raw = os.pread(fd, 256, 0).decode(errors="replace")
            pid, other = parse_lock_text(raw)
            if pid is not None and pid != os.getpid():
                if other not in (None, host):
                    raise StoreLockedError(
                        f"{self.path.parent} is locked by pid {pid} on host {other}, which cannot be checked from "
                        f"{host}; if that runner is gone, delete {self.path} and run again"
                    )
                alive = pid_alive(pid)
                same = self._same_process(raw, pid) if alive else False
                if same:  # the runner that wrote it is running: flock is not honoured here (network file system)
                    raise StoreLockedError(
                        f"{self.path.parent} is in use by another audit runner (pid {pid} on {host}); wait for it "
                        f"to finish or stop it. Lock file: {self.path}"
                    )
                why = (
                    "no longer running" if not alive
                    else "now an unrelated process: its boot id or start time differs from the lock's" if same is False
                    else "alive, but the lock file has no start time to tell whether it is the runner that wrote it"
                )  # fmt: skip
                warnings.warn(
                    f"taking over a stale lock {self.path} left by pid {pid} ({why}); its flock was free, and the "
                    "flock is the truth (the kernel drops it when a runner dies)",
                    StoreNotice,
                    stacklevel=3,
                )
            me = os.getpid()
            text = f"{me} {host} {boot_id() or '-'} {process_start(me) or '-'}\n".encode()
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, text, 0)
                os.fsync(fd)
            except OSError as e:
                raise StoreError(f"{self.path}: cannot write the directory lock ({os_reason(e)})") from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)  # an empty lock file reads as "free" even where flock is a no-op
        with contextlib.suppress(OSError):
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None


# ----------------------------------------------------------------------------------------------------------
# The store
# ----------------------------------------------------------------------------------------------------------


class Store:
    """One audit directory. ``Store(dir)`` creates it, takes the lock and loads (and repairs) the results.

    Use as a context manager, or call :meth:`close` to release the lock. With ``lock=False`` the store is
    read-only: nothing is created or repaired (for ``--dry-run`` and for readers such as the report).
    """

    def __init__(self, out_dir: str | Path, *, lock: bool = True) -> None:
        self.dir = Path(out_dir)
        self.results_path = self.dir / RESULTS
        self.failures_path = self.dir / FAILURES
        self.manifest_path = self.dir / MANIFEST
        self._lock = DirLock(self.dir / LOCK)
        self._rows: dict[str, dict[str, Any]] = {}
        self.excluded: list[dict[str, Any]] = []  # untrusted lines of results.jsonl ({"line", "cell", "reason"})
        if lock:
            try:
                self.dir.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise StoreError(f"{self.dir}: cannot create the audit directory ({os_reason(e)})") from None
            self._lock.acquire()
            gone = clean_temporaries(self.dir)  # .config.yaml.<pid>.tmp and the like, left by a kill
            if gone:
                warnings.warn(
                    f"{self.dir}: removed {len(gone)} temporary file(s) a killed writer left "
                    f"({', '.join(p.name for p in gone[:3])}{', ...' if len(gone) > 3 else ''})",
                    StoreNotice,
                    stacklevel=2,
                )
        try:
            self._load(repair=lock)
        except BaseException:
            self.close()
            raise

    # -- lifecycle ---------------------------------------------------------------------------------------
    def close(self) -> None:
        self._lock.release()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _require_lock(self) -> None:
        if not self._lock.held:
            raise StoreError(f"{self.dir}: this store was opened read-only (lock=False)")

    def _load(self, repair: bool) -> None:
        """Read results.jsonl through :func:`read_results`; with ``repair``, fix the file to match.

        A torn last line (no newline: a kill during an append) is cut off by truncating to the end of the
        last complete line, which leaves every earlier byte in place; a whole new row that lost only its
        newline gets it back. Every other untrusted line (bad checksum, not JSON, a duplicate or a
        conflicting row), wherever it sits, goes to ``results.jsonl.corrupt`` and the trusted lines are
        rewritten atomically, byte for byte.
        """
        found = read_results(self.results_path)
        self._rows = found.rows
        self.excluded = found.excluded()
        if not repair:
            return
        if found.completed and not found.bad:
            append_line(self.results_path, b"\n")
        if found.bad:
            bad = b"".join(b.raw for b in found.bad) + (found.torn.raw + b"\n" if found.torn else b"")
            append_line(self.dir / f"{RESULTS}.corrupt", bad)
            atomic_write(self.results_path, b"".join(found.raws.values()))
            why = "; ".join(f"line {b.line}: {b.reason}" for b in found.bad[:3])
            more = f" (and {len(found.bad) - 3} more)" if len(found.bad) > 3 else ""
            warnings.warn(
                f"{self.results_path}: moved {len(found.bad)} corrupt or duplicate line(s) to {RESULTS}.corrupt ({why}{more}); "
                "the other lines are unchanged",
                StoreNotice,
                stacklevel=3,
            )
        elif found.torn:
            append_line(self.dir / f"{RESULTS}.corrupt", found.torn.raw + b"\n")  # quarantined, never deleted
            try:
                with open(self.results_path, "r+b") as f:
                    f.truncate(found.complete_bytes)
                    f.flush()
                    os.fsync(f.fileno())
            except OSError as e:
                raise StoreError(f"{self.results_path}: cannot cut the torn last line ({os_reason(e)})") from None
        if found.torn:
            warnings.warn(
                f"{self.results_path}: moved an incomplete last line ({len(found.torn.raw)} bytes without a newline: "
                f"a write cut short) to {RESULTS}.corrupt; the cell it was recording, if any, has no row and "
                "runs again",
                StoreNotice,
                stacklevel=3,
            )

    # -- finished cells ----------------------------------------------------------------------------------
    def is_done(self, cell: Cell | str) -> bool:
        return (cell if isinstance(cell, str) else cell.key) in self._rows

    def rows(self) -> list[dict[str, Any]]:
        """Finished rows in commit order (each cell once)."""
        return list(self._rows.values())

    def row(self, cell: Cell | str) -> dict[str, Any] | None:
        return self._rows.get(cell if isinstance(cell, str) else cell.key)

    def commit(self, cell: Cell, row: dict[str, Any]) -> dict[str, Any]:
        """Record a finished cell: one fsync-ed, checksummed line. Returns the row as stored.

        The identity fields are filled from ``cell`` when missing and must agree with it when present, so a
        row can never land under the wrong cell. ``config_hash`` is always the grid's hash of the cell (what
        the manifest and resume compare); a different value from the cell function (e.g. hashed after it
        resolved defaults) is kept as ``resolved_config_hash``.
        """
        self._require_lock()
        if self.is_done(cell):
            raise StoreError(f"cell {cell.key} is already recorded in {self.results_path}")
        out = dict(row)
        for k, v in cell.ident().items():
            if k in out and out[k] != v:
                raise RowMismatchError(f"cell {cell.key}: its row says {k}={out[k]!r}, the grid says {v!r}")
            out.setdefault(k, v)
        if out.get("config_hash") not in (None, cell.hash):
            out["resolved_config_hash"] = out["config_hash"]
        out["config_hash"] = cell.hash
        out.setdefault("status", "done")
        out["cell"] = cell.key
        line = encode_row(out)
        append_line(self.results_path, line)
        stored = json.loads(line)
        self._rows[cell.key] = stored
        return stored

    # -- failures -----------------------------------------------------------------------------------------
    def record_failure(
        self, cell: Cell, error: str, tb: str = "", wall_s: float | None = None
    ) -> dict[str, Any]:
        """Append a failed attempt to failures.jsonl and the full traceback to ``cells/<key>/error.txt``.

        Failures never enter results.jsonl, so that file holds finished cells exactly once and a rerun
        retries the failed ones.
        """
        self._require_lock()
        tail = "\n".join(tb.strip().splitlines()[-25:])
        row = {
            **cell.ident(),
            "cell": cell.key,
            "config_hash": cell.hash,
            "status": "failed",
            "error": error,
            "traceback": tail,
            "wall_s": wall_s,
            "time": time.time(),
        }
        d = self.cell_dir(cell)
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"{d}: cannot record the failure of {cell.key} ({os_reason(e)})") from None
        append_line(self.failures_path, encode_row(row))  # the record first: error.txt is the detail
        atomic_write(d / "error.txt", f"{error}\n\n{tb}")
        return row

    def failures(self, outstanding_only: bool = True) -> list[dict[str, Any]]:
        """Failed attempts (latest per cell); with ``outstanding_only``, only cells not finished since."""
        good, _ = read_jsonl(self.failures_path)
        latest: dict[str, dict[str, Any]] = {}
        for row, _raw in good:
            latest[_row_key(row)] = row
        return [r for k, r in latest.items() if not (outstanding_only and k in self._rows)]

    # -- cell directories ------------------------------------------------------------------------------------
    def cell_dir(self, cell: Cell | str) -> Path:
        return self.dir / "cells" / (cell if isinstance(cell, str) else cell.key)

    def prepare_cell(self, cell: Cell) -> Path:
        """Start a new attempt of ``cell``: returns a fresh ``cells/<key>/<attempt>/`` for the cell's files.

        ``cells/<key>/`` gets the cell's config.yaml and a cell.json naming the attempt. Leftovers of
        earlier attempts (partial predictions, old progress) are removed, since nothing there was
        committed. Every attempt has its own directory, so a stale writer of an earlier attempt (a worker
        of a killed runner) can never write into the current one; the committed row points at its
        attempt's predictions.
        """
        import shutil

        from jepa_audit.config import dump_config

        self._require_lock()
        d = self.cell_dir(cell)
        attempt = f"attempt-{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"
        try:
            d.mkdir(parents=True, exist_ok=True)
            for old in d.iterdir():
                if old.is_dir() and not old.is_symlink():
                    shutil.rmtree(old, ignore_errors=True)  # a stale writer may still be adding files there
                else:
                    old.unlink(missing_ok=True)
            atomic_write(d / "config.yaml", dump_config(cell.config))
            atomic_write(
                d / "cell.json",
                json.dumps({**cell.ident(), "cell": cell.key, "config_hash": cell.hash, "attempt": attempt}),
            )
            (d / attempt).mkdir()
        except OSError as e:
            raise StoreError(f"{d}: cannot prepare the cell's directory ({os_reason(e)})") from None
        return d / attempt

    def attempt_dir(self, cell: Cell | str) -> Path | None:
        """``cells/<key>/<attempt>/`` of the cell's latest attempt (from its cell.json), or None."""
        d = self.cell_dir(cell)
        try:
            attempt = json.loads((d / "cell.json").read_text()).get("attempt")
        except (OSError, ValueError, AttributeError):
            return None
        return d / attempt if isinstance(attempt, str) and "/" not in attempt else None

    # -- manifest -------------------------------------------------------------------------------------------
    def read_manifest(self) -> dict[str, Any]:
        if not self.manifest_path.exists():
            return {"format": MANIFEST_FORMAT, "cells": {}}
        try:
            m = json.loads(self.manifest_path.read_text())
        except ValueError as e:
            raise StoreError(f"{self.manifest_path} is not valid JSON ({e}); restore or delete it") from None
        if not isinstance(m, dict) or not isinstance(m.get("cells"), dict):
            raise StoreError(f"{self.manifest_path}: expected {{'cells': {{key: {{'hash': ...}}}}}}")
        return m

    def known_hashes(self) -> dict[str, str]:
        """Cell key → config hash, from the manifest and from the recorded rows (rows win)."""
        known = {k: v.get("hash") for k, v in self.read_manifest()["cells"].items() if isinstance(v, dict)}
        for k, row in self._rows.items():
            if row.get("config_hash"):
                known[k] = row["config_hash"]
        return {k: v for k, v in known.items() if v}

    def check_grid(
        self, cells: Iterable[Cell], force: bool = False, name: str | None = None, stats: dict[str, Any] | None = None
    ) -> list[Cell]:
        """Compare ``cells`` with what this directory has recorded; register them in the manifest.

        A cell whose key is known here with a different config hash would mix two configs in one
        directory: without ``force`` this raises :class:`GridChangedError` naming the cells and hashes.
        With ``force`` their old rows move to ``superseded.jsonl`` and the cells run again. Returns the
        cells that changed. New cells (a grid grown by seeds or methods) are simply added. ``stats``: the
        decision settings declared before the run (config ``stats``: ``sesoi_pp``, ``min_shift_sd``), recorded
        as the manifest's ``stats`` for the report.
        """
        self._require_lock()
        cells = list(cells)
        known = self.known_hashes()
        changed = [c for c in cells if c.key in known and known[c.key] != c.hash]
        if changed and not force:
            shown = "; ".join(f"{c.key}: recorded {known[c.key]}, now {c.hash}" for c in changed[:5])
            more = f" (and {len(changed) - 5} more)" if len(changed) > 5 else ""
            edited = _edited_plugins(self.read_manifest()["cells"], changed)
            raise GridChangedError(
                f"the config changed for {len(changed)} cell(s) already recorded in {self.dir}: {shown}{more}"
                f"{edited}. "
                "Use a new --out directory, or --force to discard those cells' results and run them again."
            )
        if changed:
            self._supersede({c.key for c in changed})
        manifest = self.read_manifest()
        manifest["format"] = MANIFEST_FORMAT
        if name:
            manifest["name"] = name
        if stats is not None:
            manifest["stats"] = stats
        for c in cells:
            manifest["cells"][c.key] = {**c.ident(), "hash": c.hash}
            used = c.config.cell_plugins()
            if used:  # the plugins in the cell's hash, by source: what an edit would change
                manifest["cells"][c.key]["plugins"] = {src: p["sha256"] for src, p in used.items()}
        atomic_write(self.manifest_path, json.dumps(manifest, indent=1, sort_keys=True))
        return changed

    def _supersede(self, keys: set[str]) -> None:
        """Move the rows of ``keys`` out of results.jsonl (atomically), keeping every other line's bytes."""
        found = read_results(self.results_path)  # the file was repaired on open: every line is trusted
        kept = [raw for k, raw in found.raws.items() if k not in keys]
        moved = [raw for k, raw in found.raws.items() if k in keys]
        if moved:
            append_line(self.dir / "superseded.jsonl", b"".join(moved))
        atomic_write(self.results_path, b"".join(kept))
        for k in keys:
            self._rows.pop(k, None)


def _edited_plugins(recorded: dict[str, Any], changed: list[Cell]) -> str:
    """``; plugin P edited (sha256 a → b)`` for plugins whose source differs from grid.json's, else ""."""
    edits: dict[str, tuple[str, str]] = {}
    for c in changed:
        was = (recorded.get(c.key) or {}).get("plugins") or {}
        for src, p in c.config.cell_plugins().items():
            if src in was and was[src] != p["sha256"]:
                edits[src] = (was[src], p["sha256"])
    return "".join(f"; plugin {s} edited (sha256 {a[:12]} → {b[:12]})" for s, (a, b) in edits.items())
