"""Real file-system failures for tests: a read-only mount (EROFS) and a full one (ENOSPC).

Both mount a small tmpfs, which needs root (and a kernel that allows it, e.g. not every container):
where that fails the test is skipped, saying why.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def _mount(args: list[str]) -> None:
    res = subprocess.run(["mount", *args], capture_output=True, text=True)
    if res.returncode != 0:
        raise OSError(res.stderr.strip() or f"mount {' '.join(args)} failed")


@contextlib.contextmanager
def tmpfs(where: Path, size: str = "1m") -> Iterator[Path]:
    """A fresh tmpfs of ``size`` mounted at ``where`` (created); unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root: cannot make a real read-only or full file system here")
    where.mkdir(parents=True, exist_ok=True)
    try:
        _mount(["-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)])
    except OSError as e:
        pytest.skip(f"cannot mount a tmpfs here ({e})")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def make_read_only(where: Path) -> None:
    """Remount the tmpfs at ``where`` read-only: writes then fail with EROFS, even for root."""
    _mount(["-o", "remount,ro", str(where)])


def fill(where: Path) -> None:
    """Fill the file system holding ``where`` until a write fails with ENOSPC."""
    fd = os.open(where / ".filler", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        with contextlib.suppress(OSError):
            while os.write(fd, b"\0" * 1024):
                pass
    finally:
        os.close(fd)
