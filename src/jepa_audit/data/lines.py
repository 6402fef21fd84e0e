"""Reading a data file line by line, checked: every task's loader reads its text files through :func:`read_lines`,
which names the file and line of anything wrong; :func:`line_limit` lets the preflight refuse a line too long
for the model's context while the data are read."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from pathlib import Path

from jepa_audit.data.examples import DataError

__all__ = ["line_limit", "read_lines"]

#: (max characters per line, why) while the preflight reads the data (:func:`line_limit`); None otherwise
_LINE_LIMIT: contextvars.ContextVar[tuple[int, str] | None] = contextvars.ContextVar("line_limit", default=None)


@contextlib.contextmanager
def line_limit(max_chars: int, why: str) -> Iterator[None]:
    """Within the block, :func:`read_lines` refuses a line longer than ``max_chars`` characters, naming the file
    and line and ``why`` (the model's context): the preflight's check that every line can fit the model."""
    token = _LINE_LIMIT.set((max_chars, why))
    try:
        yield
    finally:
        _LINE_LIMIT.reset(token)


def read_lines(path: Path, what: str = "one entry per line") -> list[str]:
    """The lines of a UTF-8 text file, checked: it exists, can be read, decodes, and has no empty line (nor,
    inside :func:`line_limit`, a line longer than the limit).

    NL-RX files have no trailing newline; one final newline is tolerated, as are CRLF line ends. An unreadable
    file or folder (permissions) is a :class:`DataError` naming the path, like a missing one.
    """
    path = Path(path)
    try:
        if not path.is_file():
            raise DataError(f"{path}: file not found; expected a UTF-8 text file with {what}")
        data = path.read_bytes()
    except OSError as e:
        where = e.filename or path
        raise DataError(f"{where}: cannot read ({e.strerror or type(e).__name__}); expected a readable UTF-8 text file with {what}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataError(
            f"{path}: not valid UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start}, line {line}); "
            f"expected UTF-8 text with {what}"
        ) from None
    if not text:
        raise DataError(f"{path}: file is empty; expected {what}")
    if text.endswith("\n"):
        text = text[:-1]
    lines = [ln[:-1] if ln.endswith("\r") else ln for ln in text.split("\n")]
    limit = _LINE_LIMIT.get()
    for i, ln in enumerate(lines):
        if not ln.strip():
            raise DataError(f"{path}: line {i + 1} is empty; expected {what}, no blank lines")
        if limit is not None and len(ln) > limit[0]:
            raise DataError(f"{path}: line {i + 1} has {len(ln):,} characters, more than can fit {limit[1]}")
    return lines
