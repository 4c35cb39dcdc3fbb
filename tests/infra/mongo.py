"""A MongoDB stand-in for the Mongo adapters' tests: mongo-java-server (memory backend).

``scripts/setup-infra-mongo.sh`` installs it into ``.cache/mongo/``. The session
fixture ``mongo_url`` starts it on 127.0.0.1 at a free port, waits until it answers
``ping`` (with a deadline) and stops it at the end. When it cannot be started the tests
SKIP with the reason, except when ``CI`` is set: then they FAIL (CI never skips).

``mongo_database`` gives each test a database of its own and drops it afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pymongo import MongoClient
from pymongo.errors import PyMongoError

__all__ = ["connect_to_dead_server", "mongo_database", "mongo_url"]

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "mongo"
START_DEADLINE_S = 60.0  # a JVM on a loaded 2-core machine can take a while


def _unavailable(reason: str) -> None:
    message = f"MongoDB stand-in unavailable: {reason}"
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers_ping(url: str) -> bool:
    client: MongoClient[dict[str, object]] = MongoClient(url, serverSelectionTimeoutMS=500)
    try:
        client.admin.command("ping")
        return True
    except PyMongoError:
        return False
    finally:
        client.close()


def _start(java: str, log_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start the server on a free port; a port taken meanwhile makes it exit: try again."""
    classpath = os.pathsep.join([str(CACHE / "classes"), str(CACHE / "lib" / "*")])
    for _ in range(3):
        port = _free_port()
        url = f"mongodb://127.0.0.1:{port}/"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [java, "-Xmx512m", "-cp", classpath, "Launcher", str(port)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + START_DEADLINE_S
        while proc.poll() is None and time.monotonic() < deadline:
            if _answers_ping(url):  # blocks up to 0.5 s: this is the poll interval
                return proc, url
        _stop(proc)
    _unavailable(f"did not answer ping within {START_DEADLINE_S:g}s; see {log_path}:\n"
                 + log_path.read_text(errors="replace")[-2000:])
    raise AssertionError("unreachable")  # pragma: no cover


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def mongo_url() -> Iterator[str]:
    """The URL of a running stand-in (session scope; shared by every Mongo test)."""
    java = shutil.which("java")
    if java is None:
        _unavailable("no `java` on PATH (scripts/setup-infra-mongo.sh installs it)")
    if not (CACHE / "classes" / "Launcher.class").exists():
        _unavailable(f"{CACHE} is not set up: run scripts/setup-infra-mongo.sh")
    with tempfile.TemporaryDirectory(prefix="cyclone-mongo-") as tmp:
        proc, url = _start(str(java), Path(tmp) / "server.log")
        try:
            yield url
        finally:
            _stop(proc)


@pytest.fixture
def mongo_database(mongo_url: str) -> Iterator[str]:
    """A database name used by this test alone, dropped afterwards."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    yield name
    client: MongoClient[dict[str, object]] = MongoClient(mongo_url, serverSelectionTimeoutMS=5000)
    try:
        client.drop_database(name)
    finally:
        client.close()


_DEAD_SERVER_PROBE = """
import asyncio, json, socket, sys, warnings
warnings.simplefilter("ignore", ResourceWarning)
from importlib import import_module
from shared.errors import StoreError
module, cls = sys.argv[1].rsplit(".", 1)
factory = getattr(import_module(module), cls)
with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
url = f"mongodb://cyclone:s3cret@127.0.0.1:{port}/?authSource=admin"
async def main():
    try:
        store = await factory.connect(url, "cyclone", timeout_s=0.5)
    except StoreError as exc:
        return {"port": port, "error": str(exc), "cause": type(exc.__cause__).__name__}
    await store.close()
    return {"port": port, "error": None}
print(json.dumps(asyncio.run(main())))
"""


def connect_to_dead_server(factory: str) -> dict[str, object]:
    """Run ``<factory>.connect`` on a port nobody listens on, in a child process.

    A child, because PyMongo 4.20 leaks its monitor's socket when a client is closed
    while that monitor is connecting (likely when the server is dead): the
    ResourceWarning would surface at the end of the test session, far from its cause.
    Returns ``{"port", "error" (the StoreError's message or None), "cause"}``. The
    child's 60 s deadline only catches a hang: that the configured 0.5 s bound is the one
    applied shows in the message ("within 0.5s") and the cause (a server selection
    timeout), not in a time measured on a machine that may be loaded.
    """
    done = subprocess.run(
        [sys.executable, "-c", _DEAD_SERVER_PROBE, factory], cwd=ROOT, capture_output=True,
        text=True, timeout=60, check=True,
    )
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result
