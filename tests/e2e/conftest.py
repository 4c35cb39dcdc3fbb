"""Fixtures for driving the real ``cyclone`` CLI as a subprocess, as a user would."""

from __future__ import annotations

import contextlib
import os
import re
import select
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.docker_support import TEST_IMAGE
from tests.e2e.cluster_support import (
    etcd_server,
    etcd_url,
    infra,
    kafka_broker,
    kafka_url,
    mongo_url,
)

# The cluster tests' fixtures (the infrastructure starts only for a test that asks).
__all__ = ["etcd_server", "etcd_url", "infra", "kafka_broker", "kafka_url", "mongo_url"]

RUN_ID = re.compile(r"^run ([0-9a-f]{20}):", re.MULTILINE)


@dataclass
class Project:
    """A directory with a pipeline file, and a private $CYCLONE_HOME."""

    dir: Path
    home: Path
    env: dict[str, str]

    def write(self, text: str, name: str = ".cyclone.yml") -> Path:
        path = self.dir / name
        path.write_text(textwrap.dedent(text).replace("IMAGE", TEST_IMAGE))
        return path

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "cyclone.cli", *args]

    def run(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(*args), cwd=self.dir, env=self.env, text=True,
                              capture_output=True, timeout=timeout, check=False)

    @contextlib.contextmanager
    def start(self, *args: str) -> Iterator[Running]:
        """The CLI running in the background; killed and reaped when the block ends."""
        proc = subprocess.Popen(self.command(*args), cwd=self.dir, env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=0)
        with proc:
            try:
                yield Running(proc)
            finally:
                proc.kill()
                proc.wait()


class Running:
    """A running CLI whose output is read as it is written (no read-ahead buffering, so
    the time a line is seen is the time it was printed)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.output = ""

    def read_until(self, needle: str, timeout: float) -> float:
        """Read until ``needle`` has been printed; returns when it was seen."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        start = len(self.output)
        while needle not in self.output[start:]:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"{needle!r} not printed within {timeout}s:\n{self.output}"
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                chunk = os.read(fd, 65536)
                assert chunk, f"process ended before printing {needle!r}:\n{self.output}"
                self.output += chunk.decode()
        return time.monotonic()

    def finish(self, timeout: float) -> int:
        """Wait for the exit; the rest of the output is added to ``output``."""
        assert self.proc.stdout is not None
        code = self.proc.wait(timeout=timeout)
        self.output += self.proc.stdout.read().decode()
        return code


def run_id_in(output: str) -> str:
    match = RUN_ID.search(output)
    assert match, f"no run id in output:\n{output}"
    return match.group(1)


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    work = tmp_path / "src"
    work.mkdir()
    home = tmp_path / "home"
    env = {**os.environ, "CYCLONE_HOME": str(home), "CYCLONE_LOG_FORMAT": "text"}
    env.pop("CYCLONE_EXECUTOR", None)
    yield Project(dir=work, home=home, env=env)
