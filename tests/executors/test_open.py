"""Picking an executor by name and availability (``open_executor``)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

import shared.adapters.executor as executors
from shared.adapters.executor import DockerExecutor, ShellExecutor, open_executor
from shared.errors import ConfigError, ExecutorUnavailable

NO_DAEMON = "unix:///nonexistent/docker.sock"


def test_the_public_surface() -> None:
    assert set(executors.__all__) == {"KINDS", "DockerExecutor", "ShellExecutor",
                                      "open_executor"}


async def test_auto_falls_back_to_the_shell_and_says_what_that_means(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("DOCKER_HOST", NO_DAEMON)
    with caplog.at_level(logging.WARNING):
        executor = await open_executor("auto", tmp_path)
    await executor.close()
    assert isinstance(executor, ShellExecutor)
    assert executor.name == "shell"
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "host shell without isolation" in warning
    assert "services are unavailable" in warning


async def test_docker_insists_on_a_daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", NO_DAEMON)
    with pytest.raises(ExecutorUnavailable, match="cannot reach the Docker daemon"):
        await open_executor("docker", tmp_path)


@pytest.mark.usefixtures("docker_ready")
async def test_auto_uses_a_reachable_daemon(tmp_path: Path) -> None:
    executor = await open_executor("auto", tmp_path)
    await executor.close()
    assert isinstance(executor, DockerExecutor)
    assert executor.supports_services


async def test_shell_never_touches_docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "tcp://192.0.2.1:2375")  # would hang if contacted
    executor = await open_executor("shell", tmp_path)
    await executor.close()
    assert isinstance(executor, ShellExecutor)


async def test_an_unknown_kind_names_the_choices(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="auto, docker, shell"):
        await open_executor("kubernetes", tmp_path)
