"""A real Kafka for the tests: one single-node KRaft broker per session, plus private ones.

* ``KafkaBroker(work_dir)``: one Kafka 4 process (broker and controller in one, KRaft)
  on 127.0.0.1 with free ports, its log dir and ``broker.log`` under ``work_dir``.
  ``start()`` formats the storage (first time only) and waits, with a deadline, until a
  client fetches the cluster's metadata; ``stop(kill=False)`` ends it (SIGTERM: a
  controlled shutdown, or SIGKILL with ``kill=True``: a crash); ``restart(kill=False)``
  stops it and starts it again on the same ports and log dir, so the data and the URL
  survive. ``url`` is ``kafka://127.0.0.1:P``. The methods block for seconds: from an
  async test call them with ``await asyncio.to_thread(broker.restart)``.
* ``kafka_broker`` (session fixture): the shared broker; ``kafka_url`` its URL.
* ``private_kafka`` (function fixture): a broker of the test's own, for chaos tests
  (restart, kill) that must not disturb the others. A JVM start costs a few seconds.

The broker's jars come from ``scripts/setup-infra-kafka.sh`` (Maven Central, into
``.cache/kafka/libs``). When they or Java are missing, or the broker cannot start, the
tests are SKIPPED with a loud reason, but FAIL when the ``CI`` variable is set: CI
never passes by silently skipping.

Register in a test module with
``from tests.infra.kafka import kafka_broker, kafka_url, private_kafka``.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest
from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]
from aiokafka.errors import KafkaError  # type: ignore[import-untyped]

__all__ = [
    "KafkaBroker",
    "KafkaUnavailable",
    "kafka_broker",
    "kafka_url",
    "private_kafka",
    "unavailable",
]

ROOT = Path(__file__).resolve().parents[2]
LIBS = ROOT / ".cache" / "kafka" / "libs"
LOG_CONFIG = ROOT / "deploy" / "infra" / "kafka" / "log4j2.properties"
SETUP_HINT = "run scripts/setup-infra-kafka.sh"
START_TIMEOUT = 60.0  # generous: a JVM on a loaded 2-core CI machine
STOP_TIMEOUT = 20.0
# Small heap, serial GC and the C1 compiler only: a test broker starts faster this way
# and stays light on a 2-core machine; it never carries enough load to need more.
JVM_OPTIONS = ["-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
               "-Djava.awt.headless=true"]


class KafkaUnavailable(Exception):
    """Kafka is not installed or did not come up; the message says why."""


def unavailable(reason: str) -> NoReturn:
    """Skip the test loudly, or fail it when ``CI`` is set."""
    message = f"Kafka unavailable: {reason}"
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI is set: not skipping)")
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _properties(port: int, controller_port: int, log_dir: Path) -> str:
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(log_dir),
        "num.partitions": "4",
        # The adapter creates its topics; auto-creation would hide a bug there.
        "auto.create.topics.enable": "false",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "4",  # default 50: slow first group join
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        # A group's first member gets its partitions at once (default: waits 3 s).
        "group.initial.rebalance.delay.ms": "0",
        "num.network.threads": "2",
        "num.io.threads": "2",
        "background.threads": "2",
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


async def _metadata_ready(bootstrap: str) -> bool:
    """Whether a client can connect and fetch the cluster's metadata, with a broker in it."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
    try:
        await admin.start()
        cluster = await admin.describe_cluster()
        return bool(cluster["brokers"])
    except (TimeoutError, KafkaError, OSError):
        return False
    finally:
        await admin.close()


def _check_ready(bootstrap: str) -> bool:
    # Its own thread and loop: callable from sync fixtures and from async tests alike.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(_metadata_ready(bootstrap))).result()


class KafkaBroker:
    """One single-node KRaft broker process; see the module docstring."""

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.log_dir = work_dir / "data"
        self.log_path = work_dir / "broker.log"
        self.config_path = work_dir / "server.properties"
        self.port = 0
        self.controller_port = 0
        self.start_seconds = 0.0  # how long the last start took (reported by the tests)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"kafka://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Format a fresh log dir on new free ports and start; ``KafkaUnavailable`` if it
        cannot (retrying with other ports if one was taken meanwhile)."""
        java = self._java()
        problem = ""
        for _ in range(3):
            self.port, self.controller_port = _free_port(), _free_port()
            shutil.rmtree(self.log_dir, ignore_errors=True)
            self.work_dir.mkdir(parents=True, exist_ok=True)
            self.config_path.write_text(_properties(self.port, self.controller_port,
                                                    self.log_dir))
            self._format(java)
            try:
                self._launch(java)
                return
            except KafkaUnavailable as exc:
                problem = str(exc)
        raise KafkaUnavailable(problem)

    def stop(self, kill: bool = False) -> None:
        """End the process (SIGKILL with ``kill``, a crash); safe when not running."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT)

    def restart(self, kill: bool = False, down_s: float = 0.0) -> None:
        """Stop, stay down ``down_s`` seconds (an outage of that length), then start again
        on the same ports and log dir (the data survives)."""
        self.stop(kill=kill)
        time.sleep(down_s)  # the outage itself, not a wait for anything
        self._launch(self._java())

    # --- internals -------------------------------------------------------------------

    def _java(self) -> str:
        java = shutil.which("java")
        if java is None:
            raise KafkaUnavailable(f"java is not installed ({SETUP_HINT})")
        if not any(LIBS.glob("kafka_2.13-*.jar")):
            raise KafkaUnavailable(f"the Kafka jars are missing in {LIBS} ({SETUP_HINT})")
        return java

    def _command(self, java: str, main: str, *args: str) -> list[str]:
        return [java, *JVM_OPTIONS, f"-Dlog4j2.configurationFile={LOG_CONFIG}",
                "-cp", f"{LIBS}/*", main, *args]

    def _format(self, java: str) -> None:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        # One id in 32 starts with "-": given as "-t ID", the tool's parser took it for an
        # option ("expected one argument"), so the id is attached to its option.
        result = subprocess.run(
            self._command(java, "kafka.tools.StorageTool", "format",
                          f"--cluster-id={cluster_id}", "-c", str(self.config_path)),
            capture_output=True, timeout=START_TIMEOUT, check=False)
        if result.returncode != 0:
            output = (result.stdout + result.stderr).decode(errors="replace")
            raise KafkaUnavailable(f"formatting the log dir failed:\n{output[-3000:]}")

    def _launch(self, java: str) -> None:
        started = time.monotonic()
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self._command(java, "kafka.Kafka", str(self.config_path)),
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        deadline = started + START_TIMEOUT
        while not _check_ready(f"127.0.0.1:{self.port}"):
            if not self.running or time.monotonic() > deadline:
                why = "exited" if not self.running else f"not ready after {START_TIMEOUT}s"
                self.stop(kill=True)
                raise KafkaUnavailable(f"the broker {why}; end of {self.log_path}:\n"
                                       f"{self._log_tail()}")
            time.sleep(0.1)  # poll interval of the readiness check, under a deadline
        self.start_seconds = time.monotonic() - started

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return "(no log)"


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """The session's shared broker; skipped (failed under CI) when it cannot start."""
    broker = KafkaBroker(tmp_path_factory.mktemp("kafka"))
    try:
        broker.start()
    except KafkaUnavailable as exc:
        unavailable(str(exc))
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafka_url(kafka_broker: KafkaBroker) -> str:
    return kafka_broker.url


@pytest.fixture
def private_kafka(tmp_path: Path) -> Iterator[KafkaBroker]:
    """A broker of the test's own, stopped after it."""
    broker = KafkaBroker(tmp_path / "kafka")
    try:
        broker.start()
    except KafkaUnavailable as exc:
        unavailable(str(exc))
    try:
        yield broker
    finally:
        broker.stop()
