"""Real processes for the kill -9 tests (test_audit_kill, test_audit_calibration, test_audit_store): start a
runner script in its own process group with tests/ importable, wait for what it writes, SIGKILL it (or one of its
workers), and make sure nothing started here outlives the test.

Every wait is a hang guard with a generous limit, never a check on how long something took.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
#: seconds a wait may last before the test fails as hung
HANG_GUARD_S = 60.0


def env() -> dict[str, str]:
    """This environment with tests/ first on PYTHONPATH, so a spawned script can import _fake_cells & co."""
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(TESTS), e.get("PYTHONPATH", "")])
    return e


def complete_lines(path: Path) -> list[bytes]:
    """The newline-terminated lines of ``path`` (a half-written last line left out); [] when it is absent."""
    if not path.exists():
        return []
    return [line for line in path.read_bytes().splitlines(keepends=True) if line.endswith(b"\n")]


def wait_for(cond: Callable[[], bool], timeout: float = HANG_GUARD_S) -> bool:
    """Poll ``cond`` every 50 ms until it holds (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False


def spawn(cmd: list[str], **popen: object) -> subprocess.Popen:
    """``cmd`` in a new session (its own process group: :func:`kill_group` reaches its workers) with
    :func:`env`; ``popen``: further ``subprocess.Popen`` arguments (stdout, stderr, text)."""
    return subprocess.Popen(cmd, env=env(), start_new_session=True, **popen)  # type: ignore[call-overload]


def kill_group(p: subprocess.Popen) -> None:
    """SIGKILL ``p``'s whole process group (the runner and its pool workers); nothing when it is gone."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(p.pid, signal.SIGKILL)


def kill_when(p: subprocess.Popen, cond: Callable[[], bool], timeout: float = HANG_GUARD_S) -> None:
    """SIGKILL ``p``'s process group as soon as ``cond`` holds (mid-grid), then reap ``p``. If ``p`` exits
    first, or ``timeout`` passes, it is only reaped: the caller's check of ``p.returncode`` says what happened."""
    deadline = time.monotonic() + timeout
    while p.poll() is None and time.monotonic() < deadline:
        if cond():
            kill_group(p)
            break
        time.sleep(0.05)
    p.wait()


@contextlib.contextmanager
def running(cmd: list[str], **popen: object) -> Iterator[subprocess.Popen]:
    """:func:`spawn` ``cmd``; its process group is SIGKILLed on the way out, whatever the test did."""
    p = spawn(cmd, **popen)
    try:
        yield p
    finally:
        kill_group(p)


def pid_files(folder: Path, n: int, p: subprocess.Popen | None = None) -> dict[str, int]:
    """{file name: pid} once ``folder`` holds ``n`` non-empty pid files (each cell writes its worker's pid into
    one on start). The test fails when they do not appear within the hang guard, or when ``p`` exits first."""

    def ready() -> bool:
        if p is not None and p.poll() is not None:
            pytest.fail(f"the process exited ({p.returncode}) before its {n} cells started")
        files = list(folder.iterdir()) if folder.exists() else []
        return len(files) == n and all(f.read_text() for f in files)

    if not wait_for(ready):
        pytest.fail(f"the cells did not start: {n} pid files expected in {folder}")
    return {f.name: int(f.read_text()) for f in folder.iterdir()}


@contextlib.contextmanager
def live_process() -> Iterator[subprocess.Popen]:
    """An unrelated live process (a sleeping Python), killed and reaped on the way out."""
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        yield p
    finally:
        p.kill()
        p.wait()


def dead_pid() -> int:
    """The pid of a process that has certainly exited (and been reaped)."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid
