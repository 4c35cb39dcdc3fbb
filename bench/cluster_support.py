"""Starting and stopping what ``bench/cluster.py`` measures, outside pytest.

Reuses the test suite's helpers (imported, not copied): ``tests.infra`` for Kafka 4.1
(KRaft, Maven jars), etcd and the mongo-java-server stand-in, ``tests.git_support`` for
a real ``git daemon``, ``tests.e2e.server_support.CycloneServer`` for the embedded
``cyclone up`` and ``tests.e2e.cluster_support`` for the distributed mode
(``start_cluster``: each service a ``cyclone service NAME`` process).

Everything is started inside a ``contextlib.ExitStack`` by the caller, so it is all
stopped again, whatever ends the benchmark (an error, Ctrl-C, SIGTERM).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests/ is not an installed package

import pytest  # noqa: E402

from tests.docker_support import TEST_IMAGE, docker_problem  # noqa: E402
from tests.e2e.cluster_support import start_cluster  # noqa: E402
from tests.e2e.server_support import CycloneServer  # noqa: E402
from tests.git_support import GitServer  # noqa: E402
from tests.infra import mongo  # noqa: E402
from tests.infra.etcd import EtcdServer, EtcdUnavailable  # noqa: E402
from tests.infra.kafka import KafkaBroker, KafkaUnavailable  # noqa: E402

__all__ = ["TEST_IMAGE", "Target", "check_docker", "cluster_mode", "embedded_mode",
           "start_infra", "workdir"]

# The settings every mode gets, so that one worker is the same worker everywhere.
COMMON_ENV = {"CYCLONE_EXECUTOR": "docker", "CYCLONE_LOG_FORMAT": "text",
              "CYCLONE_LOG_LEVEL": "WARNING"}


@dataclass(frozen=True)
class Target:
    """A running Cyclone to measure: its API URL and admin token."""

    url: str
    token: str
    logservers: tuple[str, ...] = ()  # the logserver replicas' URLs (their /metrics)
    pid: int = 0  # the embedded ``cyclone up`` process (its CPU time)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def cpu_s(pid: int) -> float:
    """The process's own CPU seconds (user + system), not its children's."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def workdir(name: str, keep: bool) -> Iterator[Path]:
    """A temporary directory for a benchmark's servers and repositories: removed at the
    end unless ``keep`` (then its path is printed)."""
    work = Path(tempfile.mkdtemp(prefix=f"cyclone-{name}-"))
    try:
        yield work
    finally:
        if keep:
            print(f"kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def check_docker() -> None:
    problem = docker_problem(TEST_IMAGE)
    if problem:
        raise SystemExit(f"Docker is not ready: {problem}\n(run scripts/setup-docker.sh "
                         "and scripts/build-test-images.sh)")


def start_infra(stack: contextlib.ExitStack, work: Path) -> dict[str, str]:
    """Kafka, etcd and the Mongo stand-in on 127.0.0.1, stopped when ``stack`` closes.
    Returns the URLs: ``kafka``, ``etcd``, ``mongo``."""
    # The broker helper polls until Kafka answers; aiokafka logs each refused connection.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        kafka = KafkaBroker(work / "kafka")
        stack.callback(kafka.stop)
        kafka.start()
        etcd = EtcdServer(work / "etcd-data", work / "etcd.log")
        stack.callback(etcd.stop)
        etcd.start()
        java = shutil.which("java")
        if java is None:
            raise SystemExit("no `java` on PATH: run scripts/setup-infra-mongo.sh")
        proc, mongo_url = mongo._start(java, work / "mongo.log")
        stack.callback(mongo._stop, proc)
    except (KafkaUnavailable, EtcdUnavailable) as exc:
        raise SystemExit(f"infrastructure unavailable: {exc} (make setup-infra)") from exc
    except pytest.skip.Exception as exc:  # the Mongo helper reports by skipping
        raise SystemExit(f"infrastructure unavailable: {exc.msg}") from exc
    return {"kafka": kafka.url, "etcd": etcd.url, "mongo": mongo_url}


def start_git(stack: contextlib.ExitStack, work: Path, pipeline: str) -> str:
    """A ``git daemon`` serving one repository holding ``pipeline``; returns its URL."""
    server = GitServer(work / "git")
    stack.callback(server.stop)
    repo = server.create("bench")
    repo.commit({".cyclone.yml": pipeline}, message="bench pipeline")
    return repo.url


@contextlib.contextmanager
def embedded_mode(home: Path, capacity: int, start_timeout: float = 60.0,
                  **env: str) -> Iterator[Target]:
    """``cyclone up`` with a fresh CYCLONE_HOME and one worker of ``capacity`` jobs (``env``
    on top of the common settings); its output goes to ``home/output.log``."""
    server = CycloneServer(home)
    server.env.update(COMMON_ENV)
    server.env.update(env)
    server.env["CYCLONE_WORKER_CAPACITY"] = str(capacity)
    try:
        server.start(start_timeout)
        _drain(server, home / "output.log")
        assert server.proc is not None
        yield Target(server.url, server.token, pid=server.proc.pid)
    finally:
        server.stop()


def _drain(server: CycloneServer, path: Path) -> None:
    """Copy the server's output to a file: nobody else reads its pipe, and a full pipe
    would block the server."""
    assert server.proc is not None and server.proc.stdout is not None
    fd = server.proc.stdout.fileno()

    def copy() -> None:
        with path.open("ab") as out, contextlib.suppress(OSError, ValueError):
            while chunk := os.read(fd, 65536):  # EOF when the server exits
                out.write(chunk)

    threading.Thread(target=copy, name="cyclone-up-output", daemon=True).start()


@contextlib.contextmanager
def cluster_mode(home: Path, infra: dict[str, str], database: str, workers: int,
                 capacity: int, replicas: int = 1) -> Iterator[Target]:
    """One process of each service and ``workers`` workermanagers (``w1``...), on a Mongo
    database of their own; each workermanager runs up to ``capacity`` jobs. (What a
    workermanager creates in Docker is labelled with its id *and* its home, so our
    ``w1`` and a test cluster's ``w1`` on the same Docker daemon leave each other alone.)"""
    store = f"{infra['mongo'].rstrip('/')}/{database}"
    urls = {"CYCLONE_BUS": infra["kafka"], "CYCLONE_COORD": infra["etcd"],
            "CYCLONE_STORE": store, "CYCLONE_LOG_STORE": store}
    cluster = start_cluster(home, urls, workers=workers, replicas=replicas, **COMMON_ENV,
                            CYCLONE_WORKER_CAPACITY=str(capacity))
    try:
        yield Target(cluster.api.url, cluster.token,
                     tuple(s.url for s in cluster.of("logserver")))
    finally:
        cluster.stop()
