"""A real ``cyclone up`` in a subprocess, on a free 127.0.0.1 port, for end-to-end tests."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.git_support import unused_port

__all__ = ["CycloneServer", "server_fixture"]

_TOKEN = re.compile(r"CYCLONE_TOKEN=(cyc_[A-Za-z0-9_-]+)")


class CycloneServer:
    """``cyclone up`` with its own CYCLONE_HOME; can be killed (-9) and started again."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.port = unused_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = ""
        self.output = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self.env = {**os.environ, "CYCLONE_HOME": str(home),
                    "CYCLONE_LISTEN": f"127.0.0.1:{self.port}", "CYCLONE_SERVER": self.url,
                    "CYCLONE_LOG_FORMAT": "text"}
        self.env.pop("CYCLONE_TOKEN", None)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def start(self, timeout: float = 60.0) -> None:
        self.output = ""
        self.proc = subprocess.Popen([sys.executable, "-m", "cyclone.cli", "up"],
                                     env=self.env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        self.read_until("Cyclone is serving", timeout)
        if not self.token:  # the first start prints the admin token once
            self.read_until("CYCLONE_TOKEN=cyc_", 10)
            self.read_until("\n", 10, after=self.output.index("CYCLONE_TOKEN="))
            match = _TOKEN.search(self.output)
            assert match, self.output
            self.token = match.group(1)
            self.env["CYCLONE_TOKEN"] = self.token

    def read_until(self, needle: str, timeout: float, after: int = 0) -> None:
        """Read the server's output until ``needle`` appears (past offset ``after``)."""
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while needle not in self.output[after:]:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"server did not print {needle!r}:\n{self.output}"
            if select.select([fd], [], [], remaining)[0]:
                chunk = os.read(fd, 65536)
                assert chunk, f"server exited before printing {needle!r}:\n{self.output}"
                self.output += chunk.decode(errors="replace")

    def kill(self) -> None:
        """SIGKILL: the crash the recovery rules are about."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)
            self._close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._close()

    def _close(self) -> None:
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None


@pytest.fixture(name="server")
def server_fixture(tmp_path: Path, docker_ready: None) -> Iterator[CycloneServer]:
    server = CycloneServer(tmp_path / "cyclone-home")
    server.start()
    try:
        yield server
    finally:
        server.stop()
