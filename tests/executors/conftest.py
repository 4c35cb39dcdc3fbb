"""Fixtures for the executor tests: each executor (Docker needs ``docker_ready``), a run
with a small source tree that is destroyed afterwards, and a log collector."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest

from shared.adapters.executor import DockerExecutor, ShellExecutor
from shared.pipeline.plan import JobSpec, ServiceSpec, StepSpec
from shared.ports.executor import Executor, RunContext
from tests.docker_support import TEST_IMAGE, docker_ready

__all__ = ["Logs", "docker_ready", "job_of", "step_of"]  # docker_ready: a fixture here


@dataclass
class Logs:
    """An ``on_log`` sink that keeps (stream, ts, text) in arrival order."""

    lines: list[tuple[str, str, str]] = field(default_factory=list)

    async def __call__(self, stream: str, ts: str, text: str) -> None:
        datetime.fromisoformat(ts)  # every line carries an ISO 8601 timestamp
        self.lines.append((stream, ts, text))

    def texts(self, stream: str | None = None) -> list[str]:
        return [text for s, _, text in self.lines if stream is None or s == stream]


def step_of(name: str, *commands: str, timeout_s: float | None = None,
            image: str = TEST_IMAGE, **kwargs: object) -> StepSpec:
    return StepSpec(name=name, image=image, commands=commands, timeout_s=timeout_s,
                    **kwargs)  # type: ignore[arg-type]


def job_of(name: str = "build", *steps: StepSpec,
           services: tuple[ServiceSpec, ...] = ()) -> JobSpec:
    return JobSpec(name=name, image=TEST_IMAGE, steps=steps, services=services)


@pytest.fixture(params=["docker", "shell"])
def executor_kind(request: pytest.FixtureRequest) -> str:
    if request.param == "docker":
        request.getfixturevalue("docker_ready")
    return str(request.param)


@pytest.fixture
async def executor(executor_kind: str, tmp_path: Path) -> AsyncIterator[Executor]:
    opened: Executor = (await DockerExecutor.connect() if executor_kind == "docker"
                        else ShellExecutor(tmp_path / "shell-runs"))
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "hello.txt").write_text("hello from the source\n")
    (src / "sub" / "nested.txt").write_text("nested\n")
    return src


@pytest.fixture
async def run(executor: Executor, source: Path) -> AsyncIterator[RunContext]:
    """A prepared run; destroyed after the test whatever happened."""
    ctx = RunContext(run_id=f"t{uuid.uuid4().hex[:16]}", source_dir=str(source))
    await executor.prepare_run(ctx)
    try:
        yield ctx
    finally:
        await executor.destroy_run(ctx.run_id)

