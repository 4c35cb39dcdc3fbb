"""Docker for the test suite: whether a daemon is there, the test image, and what a run
left behind.

* ``docker_ready`` (session fixture): the daemon answers and ``TEST_IMAGE`` exists
  (built by ``scripts/build-test-images.sh`` when absent). Without a daemon the test is
  SKIPPED with a loud reason locally, and FAILS when the ``CI`` variable is set, so CI
  never passes by silently skipping. Use it with
  ``pytestmark = pytest.mark.usefixtures("docker_ready")``; a conftest makes it visible
  with ``from tests.docker_support import docker_ready`` or
  ``pytest_plugins = ["tests.docker_support"]``.
* ``cyclone_leftovers(run_id)`` / ``await cyclone_leftovers_async(run_id)``: the
  containers, networks and volumes labelled with that run, as ``"kind name"`` strings,
  so a test can assert that nothing is left. The plain function works in sync and in
  async tests (it talks to Docker on its own thread).
* ``AT_THE_GATE`` / ``open_gate(run_id)`` / ``await open_gate_async(run_id)``: a step
  command that waits until the file ``gate`` exists in its workspace, and what makes
  it there (run in the run's step containers). A test that checks something *while* a
  step runs holds the step at its gate rather than betting on a sleep being long
  enough on a loaded machine.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import subprocess
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import aiodocker
import aiohttp
import pytest
from aiodocker.execs import Exec

from tests.support import HANG_S, eventually

__all__ = [
    "AT_THE_GATE",
    "LABEL_RUN",
    "TEST_IMAGE",
    "cyclone_leftovers",
    "cyclone_leftovers_async",
    "docker_available",
    "docker_problem",
    "docker_ready",
    "open_gate",
    "open_gate_async",
]

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[1]
TEST_IMAGE = "cyclone-test/busybox:latest"
LABEL_RUN = "io.cyclone.run"
SETUP_HINT = "run scripts/setup-docker.sh and scripts/build-test-images.sh"
# Bounded (~300 s), so a step whose test failed before opening the gate, and whose
# runner was killed, ends by itself as the tests' "sleep 300" steps do.
AT_THE_GATE = "for i in $(seq 1 3000); do [ -e gate ] && break; sleep 0.1; done"


def _in_own_loop(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to its end on a private thread and event loop (callable from
    sync code and from inside a running loop alike)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


async def _problem_async(image: str | None) -> str | None:
    try:
        docker = aiodocker.Docker()
    except ValueError as exc:
        return f"no Docker daemon configured ({exc})"
    try:
        async with asyncio.timeout(HANG_S):  # a busy daemon is slow, not absent
            await docker.version()
            if image is not None:
                await docker.images.inspect(image)
    except aiodocker.DockerError as exc:
        if exc.status == 404:
            return f"image {image} is missing"
        return f"Docker daemon not usable: {exc.message}"
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        return f"Docker daemon at {docker.docker_host} not reachable: {exc!r}"
    finally:
        await docker.close()
    return None


def docker_problem(image: str | None = None) -> str | None:
    """Why Docker (and ``image``, if given) cannot be used, or None when it can."""
    return _in_own_loop(lambda: _problem_async(image))


def docker_available() -> bool:
    return docker_problem() is None


def _unusable(reason: str) -> None:
    message = f"DOCKER TESTS NOT RUN: {reason}; {SETUP_HINT}"
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI is set: Docker tests must not be skipped)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def docker_ready() -> None:
    """A reachable daemon with ``TEST_IMAGE``; skip (fail under CI) otherwise."""
    problem = docker_problem()
    if problem is None and docker_problem(TEST_IMAGE) is not None:
        built = subprocess.run([str(ROOT / "scripts" / "build-test-images.sh")],
                               capture_output=True, text=True, check=False)
        problem = docker_problem(TEST_IMAGE)
        if problem is not None:
            problem += f" and scripts/build-test-images.sh failed: {built.stderr.strip()}"
    if problem is not None:
        _unusable(problem)


async def cyclone_leftovers_async(run_id: str) -> list[str]:
    """Every container, network and volume labelled ``io.cyclone.run=<run_id>``."""
    selector = {"label": [f"{LABEL_RUN}={run_id}"]}
    async with aiodocker.Docker() as docker:
        found = [f"container {c['Names'][0].lstrip('/')}" for c in await docker.containers.list(
            all=True, filters=json.dumps(selector))]
        found += [f"network {n['Name']}" for n in await docker.networks.list(filters=selector)]
        volumes = await docker.volumes.list(filters=selector)  # type: ignore[no-untyped-call]
        found += [f"volume {v['Name']}" for v in volumes["Volumes"] or []]
    return sorted(found)


def cyclone_leftovers(run_id: str) -> list[str]:
    """``cyclone_leftovers_async`` for sync code (and usable from async tests too)."""
    return _in_own_loop(lambda: cyclone_leftovers_async(run_id))


async def open_gate_async(run_id: str) -> None:
    """Make the file ``gate`` in the workspace of each running step of ``run_id`` (its
    working directory): what a step running ``AT_THE_GATE`` waits for."""
    selector = {"label": [f"{LABEL_RUN}={run_id}", "io.cyclone.role=step"],
                "status": ["running"]}
    async with aiodocker.Docker() as docker:
        steps = await docker.containers.list(filters=json.dumps(selector))
        assert steps, f"run {run_id} has no running step to open a gate for"
        for step in steps:
            touch = await step.exec(["touch", "gate"], stdout=False, stderr=False)
            await touch.start(detach=True)

            async def ended(touch: Exec = touch) -> dict[str, Any] | None:
                state: dict[str, Any] = await touch.inspect()
                return state if state["ExitCode"] is not None else None

            state = await eventually(ended, what=f"the gate of step {step.id} opened")
            assert state["ExitCode"] == 0, f"could not open the gate of {step.id}: {state}"


def open_gate(run_id: str) -> None:
    """``open_gate_async`` for sync code."""
    _in_own_loop(lambda: open_gate_async(run_id))
