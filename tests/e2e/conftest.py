"""Fixtures for driving the real ``cyclone`` CLI as a subprocess, as a user would."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.docker_support import TEST_IMAGE

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

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(self.command(*args), cwd=self.dir, env=self.env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=1)


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
