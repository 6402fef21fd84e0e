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
import hashlib
import json
import math
import os
import secrets
import socket
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jepa_audit.audit.grid import Cell, cell_key

RESULTS = "results.jsonl"
FAILURES = "failures.jsonl"
MANIFEST = "grid.json"
LOCK = ".lock"
CHECKSUM = "row_sha256"
MANIFEST_FORMAT = 1


class StoreError(RuntimeError):
    """A problem with the audit directory, with a message that says what to do."""


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


def os_reason(e: OSError) -> str:
    """The cause of an OS error in words (``No space left on device``), without Python's decoration."""
    return e.strerror or type(e).__name__


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


def row_checksum(row: dict[str, Any]) -> str:
    body = {k: v for k, v in row.items() if k != CHECKSUM}
    blob = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
    return hashlib.sha256(blob).hexdigest()


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


PREDICTIONS_CHECKSUM = "predictions_sha256"


def file_sha256(path: str | Path) -> str | None:
    """sha256 of a file's bytes (hex), or None when it cannot be read (a row's ``predictions_sha256``)."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return None
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    """Make a rename or a new file durable (the directory entry lives in the directory)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


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


def atomic_write_all(files: Mapping[Path, bytes | str], label: str = "") -> None:
    """Write every file to a temporary sibling (fsync'd) first, then rename them all over their paths: a full
    disk or a read-only directory leaves the previous files as they were and no temporary file behind (the
    one home of the project's atomic writes; the report writes its three files through it).

    Raises :class:`StoreError` naming the path and the cause (``label`` names what was written, e.g.
    ``" the report"``)."""
    tmps: dict[Path, Path] = {}
    try:
        for path, data in files.items():
            tmps[path] = tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            try:
                with open(tmp, "wb") as f:
                    f.write(data.encode() if isinstance(data, str) else data)
                    f.flush()
                    os.fsync(f.fileno())
            except OSError as e:
                raise StoreError(f"{path}: cannot write{label} ({os_reason(e)}); nothing was changed") from None
        for path, tmp in tmps.items():
            try:
                os.replace(tmp, path)
            except OSError as e:
                raise StoreError(f"{path}: cannot write{label} ({os_reason(e)})") from None
    finally:
        for tmp in tmps.values():
            with contextlib.suppress(OSError):
                tmp.unlink()
    for parent in {p.parent for p in files}:
        _fsync_dir(parent)


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


TORN = (
    "torn last line (no newline at its end: a write cut short); the cell it was recording, if any, has no row "
    "and runs again"
)


@dataclass
class BadLine:
    """A line of results.jsonl that is not trusted: its 1-based line number, bytes and the reason."""

    line: int
    raw: bytes
    reason: str
    cell: str | None = None

    def describe(self) -> dict[str, Any]:
        return {"line": self.line, "cell": self.cell, "reason": self.reason}


@dataclass
class ResultsFile:
    """What :func:`read_results` found in one results.jsonl.

    ``rows``/``raws``: the trusted rows by cell key, in commit order, with their raw lines (newline
    included). ``bad``: complete lines that failed validation (to be quarantined). ``torn``: a last line
    without its newline that is not a whole new row (to be cut off). ``completed``: the last line lacked
    only its newline and is a whole, valid, new row (its newline is to be restored).
    """

    path: Path
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    raws: dict[str, bytes] = field(default_factory=dict)
    bad: list[BadLine] = field(default_factory=list)
    torn: BadLine | None = None
    completed: bool = False
    complete_bytes: int = 0  # length of the file up to the end of its last complete line

    def excluded(self) -> list[dict[str, Any]]:
        """Every untrusted line (torn one included) as ``{"line", "cell", "reason"}``, in file order."""
        out = [b.describe() for b in self.bad] + ([self.torn.describe()] if self.torn else [])
        return sorted(out, key=lambda d: d["line"])


def _why_bad(raw: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """(row, None) for a valid complete line, else (row or None, the reason it is rejected)."""
    try:
        row = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        return None, f"not valid JSON ({str(e).split(':')[0]})"
    if not isinstance(row, dict):
        return None, f"expected a JSON object, got {type(row).__name__}"
    if CHECKSUM not in row:
        return row, (
            f"no {CHECKSUM} (the runner writes one on every row: a row without it was written or edited "
            "by hand, and is not trusted)"
        )
    if row[CHECKSUM] != row_checksum(row):
        return row, f"{CHECKSUM} does not match the row's content (edited or damaged after it was written)"
    return row, _cell_mismatch(row)


def _cell_mismatch(row: dict[str, Any]) -> str | None:
    """Why a row's ``cell`` key disagrees with its own benchmark/method/seed/mode (and, for a calibration run,
    its ``target_dose``), or None when it agrees or names no cell. A row moved under another cell's key by
    an edit that recomputed the checksum is caught here."""
    key = row.get("cell")
    if key is None:
        return None
    own = cell_key(str(row.get("benchmark")), str(row.get("method")), row.get("seed"), str(row.get("mode")))
    if row.get("kind") == "calibration":
        dose = row.get("target_dose")
        own = f"cal__{own}__d{dose:g}" if isinstance(dose, int | float) and not isinstance(dose, bool) else None
    if key != own:
        return f"its cell key {key!r} does not match its own fields (benchmark, method, seed, mode: {own!r})"
    return None


def read_results(path: str | Path, hashes: Mapping[str, str] | None = None) -> ResultsFile:
    """Read and validate ``results.jsonl``: the one reader of the runner (which repairs) and the report.

    A row is trusted when its line is complete, valid JSON, an object, its ``row_sha256`` is present and
    matches, and no other line claims its cell. Rules, wherever a line sits:

    - only a last line *without its newline* is torn (the mark of a kill during an append); a whole valid
      row that lost only its newline counts, and anything else there is ``torn``;
    - every complete line that fails a check is ``bad`` with its reason, the last line included;
    - a second, identical copy of a row is ``bad`` (the first copy stays trusted, so the cell is kept); two
      *different* rows for one cell cannot both be right and neither is trusted: all are ``bad`` and the
      cell runs again;
    - with ``hashes`` (cell key → config hash, the grid's manifest), a row whose ``config_hash`` differs
      from its cell's, or whose cell is not in the manifest, is ``bad``: it comes from another config.

    A missing file reads as empty. Raises :class:`StoreError` naming the path when it cannot be read.
    """
    path = Path(path)
    out = ResultsFile(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return out
    except OSError as e:
        raise StoreError(f"{path}: cannot read the results file ({os_reason(e)})") from None
    pieces = data.split(b"\n")
    last = pieces.pop()  # b"" when the file ends with a newline
    first_line: dict[str, int] = {}
    conflicted: set[str] = set()

    def check(raw: bytes) -> tuple[dict[str, Any] | None, str | None, str | None]:
        row, why = _why_bad(raw)
        key = _row_key(row) if row is not None else None
        if why is None and key is not None:
            if key in conflicted:
                why = f"another line conflicts with it for the same cell (first at line {first_line[key]})"
            elif key in out.rows:
                if row == out.rows[key]:
                    why = f"duplicate of line {first_line[key]} (the cell keeps that row)"
                else:
                    why = f"conflicts with line {first_line[key]}: two different rows for one cell, neither is trusted"
            elif hashes is not None:
                if key not in hashes:
                    why = f"cell {key} is not in this directory's grid ({MANIFEST})"
                elif row.get("config_hash") != hashes[key]:
                    why = (
                        f"config_hash {row.get('config_hash')!r} is not the grid's {hashes[key]!r} for this cell "
                        f"({MANIFEST}): a row from another config"
                    )
        return row, why, key

    offset = 0
    for i, piece in enumerate(pieces, start=1):
        raw = piece + b"\n"
        offset += len(raw)
        if not piece.strip():
            continue
        row, why, key = check(raw)
        if why is None:
            out.rows[key] = row
            out.raws[key] = raw
            first_line[key] = i
            continue
        out.bad.append(BadLine(i, raw, why, key))
        if key is not None and key in out.rows and why.startswith("conflicts"):
            # the first row of a conflicting cell is no longer trusted either
            why_first = f"conflicts with line {i}: two different rows for one cell, neither is trusted"
            out.bad.append(BadLine(first_line[key], out.raws.pop(key), why_first, key))
            del out.rows[key]
            conflicted.add(key)
    out.complete_bytes = offset
    if last.strip():
        row, why, key = check(last + b"\n")
        if why is None:
            out.rows[key] = row
            out.raws[key] = last + b"\n"
            out.completed = True
        else:
            out.torn = BadLine(len(pieces) + 1, last, TORN, key)
    elif last:  # trailing whitespace without a newline: nothing to keep, cut it
        out.torn = BadLine(len(pieces) + 1, last, TORN, None)
    out.bad.sort(key=lambda b: b.line)
    return out


def load_results(out_dir: str | Path) -> list[dict[str, Any]]:
    """The trusted rows of an audit directory, read-only, through :func:`read_results` (no repair), with the
    same strictness as the runner and ``report``: rows of another config than grid.json's are left out."""
    return list(read_results(Path(out_dir) / RESULTS, manifest_hashes(out_dir)).rows.values())


def manifest_hashes(out_dir: str | Path) -> dict[str, str] | None:
    """Cell key → config hash from ``DIR/grid.json``, or None when there is no readable manifest."""
    path = Path(out_dir) / MANIFEST
    try:
        m = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    cells = m.get("cells") if isinstance(m, dict) else None
    if not isinstance(cells, dict):
        return None
    return {k: v["hash"] for k, v in cells.items() if isinstance(v, dict) and isinstance(v.get("hash"), str)}


def _row_key(row: dict[str, Any]) -> str:
    if isinstance(row.get("cell"), str):
        return row["cell"]
    return cell_key(str(row.get("benchmark")), str(row.get("method")), row.get("seed"), str(row.get("mode")))


# ----------------------------------------------------------------------------------------------------------
# The lock: one runner per directory
# ----------------------------------------------------------------------------------------------------------


def pid_alive(pid: int) -> bool:
    """Is ``pid`` a live (non-zombie) process on this host?"""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    try:  # a zombie has exited: it holds nothing
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
        return state not in (b"Z", b"X")
    except (OSError, IndexError):
        return True


def lock_holder(out_dir: str | Path) -> str | None:
    """``"pid N on HOST"`` when another process holds ``DIR/.lock`` (an audit running there), else None.

    The flock is the truth (the kernel drops it when its holder dies); the pid/host text only names it. The
    caller's own lock (the runner writing its report) does not count. Never creates the file."""
    path = Path(out_dir) / LOCK
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pid, host = DirLock._parse(os.pread(fd, 256, 0).decode(errors="replace"))
            if pid == os.getpid() and host in (None, socket.gethostname()):
                return None
            return f"pid {pid} on {host or 'unknown host'}"
        except OSError:
            return None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def clean_temporaries(out_dir: str | Path, names: Iterable[str] | None = None) -> list[Path]:
    """Remove the ``.<name>.<pid>.tmp`` files of :func:`atomic_write_all` that a killed writer left in
    ``out_dir`` (``names``: only those files' temporaries; None: any). A temporary whose pid is still running
    (a report being written now, or this process's own) is kept. Returns what was removed; a file that cannot
    be removed is left (it is never read)."""
    removed = []
    for tmp in Path(out_dir).glob(".*.*.tmp"):
        name, _, pid = tmp.name[1:-4].rpartition(".")
        if not name or (names is not None and name not in names):
            continue
        if pid.isdigit() and (int(pid) == os.getpid() or pid_alive(int(pid))):
            continue
        with contextlib.suppress(OSError):
            tmp.unlink()
            removed.append(tmp)
    return removed


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
    def _parse(text: str) -> tuple[int | None, str | None]:
        parts = text.split()
        try:
            return int(parts[0]), (parts[1] if len(parts) > 1 else None)
        except (IndexError, ValueError):
            return None, None

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
                pid, other = self._parse(self.path.read_text(errors="replace"))
                raise StoreLockedError(
                    f"{self.path.parent} is in use by another audit runner (pid {pid} on {other or 'unknown host'}); "
                    f"wait for it to finish or stop it. Lock file: {self.path}"
                ) from None
            raw = os.pread(fd, 256, 0).decode(errors="replace")
            pid, other = self._parse(raw)
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
