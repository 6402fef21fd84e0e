"""A Ray cluster started the way a user starts one: ``ray start --head`` and ``ray start --address=...``.

Every node is a ``ray start --block`` process of ours, in its own process group: on exit each gets SIGTERM
(``ray start --block`` then stops the processes it started) and whatever is left of its group is killed
by group id. ``ray stop`` is not used: it ends *every* Ray process of this user on the machine, including
other people's clusters and test runs.

Ray never binds a node to the loopback address (it replaces 127.0.0.1 by the machine's address), so the
nodes listen on the machine's own address; token authentication is on, with a throwaway token written
into the cluster's temporary directory (never ``~/.ray/auth_token``), passed to every node and to the
driver through ``RAY_AUTH_MODE`` / ``RAY_AUTH_TOKEN_PATH``.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STARTED = "Ray runtime started"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(log: Path, proc: subprocess.Popen, timeout: float) -> str:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        text = log.read_text(errors="replace") if log.exists() else ""
        if STARTED in text:
            return text
        if proc.poll() is not None:
            raise RuntimeError(f"ray start exited with {proc.returncode}:\n{text[-3000:]}")
        time.sleep(0.5)
    raise TimeoutError(f"ray start did not report {STARTED!r} within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # ray start --block stops its gcs, raylet, agents
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # our own group only: anything ray left behind
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


@contextlib.contextmanager
def ray_cluster(nodes: int = 2, cpus_per_node: int = 1, timeout: float = 120) -> Iterator[dict[str, str]]:
    """Start a head and ``nodes - 1`` worker nodes on this machine; yield the environment a driver needs
    (``RAY_ADDRESS``, the auth variables, ``PYTHONPATH`` with src/ and tests/ so tasks import the cell
    functions as an installed jepa-audit would)."""
    ray_bin = str(Path(sys.executable).with_name("ray"))
    tmp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # short: Unix socket paths must stay < 108 chars
    token = tmp / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    path = os.pathsep.join([str(REPO / "src"), str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token), "PYTHONPATH": path,
           "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    common = [f"--num-cpus={cpus_per_node}", "--num-gpus=0", "--disable-usage-stats", "--block"]
    procs: list[subprocess.Popen] = []

    def start(args: list[str], name: str) -> str:
        log = tmp / f"{name}.log"
        with open(log, "w") as f:
            procs.append(subprocess.Popen([ray_bin, "start", *args, *common], env=env, stdout=f,
                                          stderr=subprocess.STDOUT, start_new_session=True))
        return _wait_for(log, procs[-1], timeout)

    try:
        port = free_port()
        head = start(["--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={tmp}",
                      f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}"],
                     "head")
        m = re.search(r"ray start --address='([^']+)'", head)
        address = m.group(1) if m else f"127.0.0.1:{port}"
        for i in range(1, nodes):
            start([f"--address={address}", f"--temp-dir={tmp / f'n{i}'}",
                   f"--dashboard-agent-listen-port={free_port()}"], f"node{i}")
        yield {**env, "RAY_ADDRESS": address}
    finally:
        for p in reversed(procs):
            _stop(p)
        shutil.rmtree(tmp, ignore_errors=True)
