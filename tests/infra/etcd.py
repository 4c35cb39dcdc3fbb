"""A real etcd for the tests: one per session, plus private ones for tests that restart it.

* ``EtcdServer(data_dir, log_path)``: one single-member etcd on 127.0.0.1 with free
  client and peer ports. ``start()`` waits (with a deadline) until ``/health`` says
  so; ``stop(kill=False)`` ends it (SIGTERM, or SIGKILL with ``kill=True``: a
  crash); ``restart(kill=False)`` stops it and starts it again on the same data
  dir and ports, so the data and the URL survive. ``url`` is ``etcd://127.0.0.1:P``.
* ``etcd_server`` (session fixture): the shared server; ``etcd_url`` its URL.
* ``private_etcd`` (function fixture): a server of the test's own, for chaos tests
  (restart, kill) that must not disturb the others.

The ``etcd`` binary comes from ``scripts/setup-infra-etcd.sh``. When it is missing
or etcd cannot start, the tests are SKIPPED with a loud reason, but FAIL when the
``CI`` variable is set: CI never passes by silently skipping.

Register in a test module with
``from tests.infra.etcd import etcd_server, etcd_url, private_etcd``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["EtcdServer", "EtcdUnavailable", "etcd_server", "etcd_url", "private_etcd"]

SETUP_HINT = "run scripts/setup-infra-etcd.sh"
START_TIMEOUT = 30.0  # generous: a loaded 2-core CI machine
STOP_TIMEOUT = 10.0


class EtcdUnavailable(Exception):
    """etcd is not installed or did not become healthy; the message says why."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EtcdServer:
    """One single-member etcd process; see the module docstring."""

    def __init__(self, data_dir: Path, log_path: Path) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.client_port = 0
        self.peer_port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"etcd://127.0.0.1:{self.client_port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start on new free ports (retrying if a port was taken meanwhile) and wait
        until healthy; ``EtcdUnavailable`` if it cannot."""
        if shutil.which("etcd") is None:
            raise EtcdUnavailable(f"the etcd binary is not installed ({SETUP_HINT})")
        problem = ""
        for _ in range(3):
            self.client_port, self.peer_port = _free_port(), _free_port()
            try:
                self._launch()
                return
            except EtcdUnavailable as exc:
                problem = str(exc)
                self.stop(kill=True)
        raise EtcdUnavailable(problem)

    def stop(self, kill: bool = False) -> None:
        """End the process (SIGKILL when ``kill``, as in a crash); safe twice."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            if kill:
                process.kill()
            else:
                process.terminate()
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STOP_TIMEOUT)

    def restart(self, kill: bool = False, down_s: float = 0.0) -> None:
        """Stop, stay down ``down_s`` seconds (an outage of that length), then start again
        on the same data dir and ports (same URL, same data)."""
        self.stop(kill=kill)
        time.sleep(down_s)  # the outage itself, not a wait for anything
        self._launch()

    def _launch(self) -> None:
        client = f"http://127.0.0.1:{self.client_port}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        command = [
            "etcd", "--name", "n", "--data-dir", str(self.data_dir),
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"n={peer}",
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        self._wait_healthy(client + "/health")

    def _wait_healthy(self, health_url: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self._process is None or self._process.poll() is not None:
                raise EtcdUnavailable(f"etcd exited at start-up:\n{self._log_tail()}")
            if _healthy(health_url):
                return
            if time.monotonic() > deadline:
                raise EtcdUnavailable(
                    f"etcd not healthy after {START_TIMEOUT}s:\n{self._log_tail()}"
                )
            time.sleep(0.05)  # polling interval of the deadline loop above

    def _log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _healthy(health_url: str) -> bool:
    try:
        with urllib.request.urlopen(health_url, timeout=1) as response:
            return bool(json.load(response).get("health") == "true")
    except (OSError, ValueError):  # refused, reset, timeout, HTTP error, bad JSON
        return False


def _started(tmp: Path) -> EtcdServer:
    """A running server in ``tmp``, or the test skipped (locally) / failed (in CI)."""
    server = EtcdServer(tmp / "data", tmp / "etcd.log")
    try:
        server.start()
    except EtcdUnavailable as exc:
        message = f"ETCD UNAVAILABLE, etcd tests not run: {exc}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return server


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    """The session's shared etcd (do not restart it: use ``private_etcd`` for that)."""
    server = _started(tmp_path_factory.mktemp("etcd"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def etcd_url(etcd_server: EtcdServer) -> str:
    return etcd_server.url


@pytest.fixture
def private_etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    """An etcd of this test's own, free to be restarted or killed."""
    server = _started(tmp_path)
    yield server
    server.stop()
