"""results.jsonl on disk, below both the audit (which writes and repairs it) and the report (which reads it):
the cell key, row checksums, the strict reader and the all-or-none atomic write.

Moved out of ``audit/store.py`` (the store's lock, manifest and commit protocol stay there and build on
this) so that ``report`` reads results without importing ``audit``: the runner writes the report at the end
of an audit, so the report sits below the audit in the layering.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESULTS = "results.jsonl"
MANIFEST = "grid.json"
CHECKSUM = "row_sha256"
LOCK = ".lock"  # the runner's flock; its text: "pid host [boot-id start-time]" (audit/store.py DirLock)


class StoreError(RuntimeError):
    """A problem with the audit directory, with a message that says what to do."""


def os_reason(e: OSError) -> str:
    """The cause of an OS error in words (``No space left on device``), without Python's decoration."""
    return e.strerror or type(e).__name__


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _slug(part: object) -> str:
    """A path-safe, readable piece of a key (method ids such as ``T3-Global`` pass unchanged)."""
    return _UNSAFE.sub("-", str(part)).strip("-") or "x"


def cell_key(benchmark: str, method: str, seed: int, mode: str) -> str:
    """``synth__T1__s82__lora``: readable, unique within a grid, safe as a folder name."""
    return f"{_slug(benchmark)}__{_slug(method)}__s{seed}__{_slug(mode)}"


def row_checksum(row: dict[str, Any]) -> str:
    body = {k: v for k, v in row.items() if k != CHECKSUM}
    blob = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
    return hashlib.sha256(blob).hexdigest()


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
# The directory's lock and leftovers, as a reader sees them (the lock itself is audit/store.py's DirLock)
# ----------------------------------------------------------------------------------------------------------


def parse_lock_text(text: str) -> tuple[int | None, str | None]:
    """(pid, host) from a lock file's text ``"pid host [boot-id start-time]"``; (None, None) when unreadable."""
    parts = text.split()
    try:
        return int(parts[0]), (parts[1] if len(parts) > 1 else None)
    except (IndexError, ValueError):
        return None, None


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
            pid, host = parse_lock_text(os.pread(fd, 256, 0).decode(errors="replace"))
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
