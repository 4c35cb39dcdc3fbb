"""A Cyclone cluster for tests and benchmarks: each service a ``cyclone service NAME``
OS process, any number of replicas each, on real Kafka, etcd and the Mongo stand-in.

A service's output goes to a file (``<home>/output.log``), never to a pipe nobody
reads: a busy service would block once a pipe's buffer filled.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.git_support import unused_port
from tests.infra.etcd import etcd_server, etcd_url
from tests.infra.kafka import kafka_broker, kafka_url
from tests.infra.mongo import mongo_url
from tests.support import HANG_S

__all__ = ["Cluster", "Service", "etcd_server", "etcd_url", "infra", "infra_urls", "kafka_broker",
           "kafka_url", "mongo_url", "start_cluster"]

_TOKEN = re.compile(r"CYCLONE_TOKEN=(cyc_[A-Za-z0-9_-]+)")


class Service:
    """One ``cyclone service NAME`` process with its own home; can be killed and restarted."""

    def __init__(self, name: str, replica: str, home: Path, env: dict[str, str]) -> None:
        self.name = name
        self.replica = replica  # CYCLONE_WORKER_ID: "w1", "api-2", ...
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        self.output_path = home / "output.log"
        self.port = unused_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = ""
        self.env = {**os.environ, **env, "CYCLONE_HOME": str(home),
                    "CYCLONE_LISTEN": f"127.0.0.1:{self.port}", "CYCLONE_WORKER_ID": replica,
                    "CYCLONE_LOG_FORMAT": "text"}
        self.env.pop("CYCLONE_TOKEN", None)
        self.proc: subprocess.Popen[bytes] | None = None
        self._offset = 0  # where this start's output begins in the file

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def output(self) -> str:
        """What this process printed since its latest start."""
        if not self.output_path.exists():
            return ""
        with self.output_path.open("rb") as f:
            f.seek(self._offset)
            return f.read().decode(errors="replace")

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 60.0) -> None:
        self.launch()
        self.wait_serving(timeout)

    def launch(self) -> None:
        """Start the process; ``wait_serving`` waits until it serves."""
        self._offset = self.output_path.stat().st_size if self.output_path.exists() else 0
        with self.output_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cyclone.cli", "service", self.name],
                env=self.env, stdout=out, stderr=subprocess.STDOUT)

    def wait_serving(self, timeout: float = 60.0) -> None:
        self.wait_for_output(f"cyclone {self.name} is serving", timeout)
        if self.name == "api" and "CYCLONE_TOKEN=" in self.output:
            match = _TOKEN.search(self.output)
            assert match, self.output
            self.token = match.group(1)

    def wait_for_output(self, needle: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.output:
            assert self.alive, f"{self.replica} exited before printing {needle!r}:\n{self.output}"
            assert time.monotonic() < deadline, f"{self.replica} did not print {needle!r}:\n" \
                                                f"{self.output}"
            time.sleep(0.05)  # polling a file another process writes; nothing to wait on

    def kill(self) -> None:
        """SIGKILL: no clean-up, no goodbye."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)
            self.proc = None

    def terminate(self, timeout: float = 60.0, signalled: bool = False) -> int:
        """SIGTERM (unless already ``signalled``: a second one would kill it mid-way), and
        wait for the process to end; returns its exit code."""
        assert self.proc is not None
        if not signalled:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        return code

    def stop(self) -> None:
        if self.alive:
            self.terminate(timeout=30)
        self.proc = None


class Cluster:
    """Replicas by id: ``api``, ``api-2``, ``eventmanager``, ..., workers ``w1``, ``w2``."""

    def __init__(self, services: dict[str, Service]) -> None:
        self.services = services

    def __getitem__(self, replica: str) -> Service:
        return self.services[replica]

    def of(self, name: str) -> list[Service]:
        return [s for s in self.services.values() if s.name == name]

    @property
    def api(self) -> Service:
        """A live api replica (the first)."""
        return next(s for s in self.of("api") if s.alive)

    @property
    def token(self) -> str:
        return next(s.token for s in self.of("api") if s.token)

    def stop(self) -> None:
        """SIGTERM to every replica at once, then wait for each (workers drain their jobs
        for CYCLONE_WORKER_DRAIN_S: stopping one by one would add those up)."""
        running = [s for s in self.services.values() if s.alive]
        for service in running:
            assert service.proc is not None
            service.proc.send_signal(signal.SIGTERM)
        for service in running:
            service.terminate(timeout=30, signalled=True)


def start_cluster(home: Path, infra: dict[str, str], workers: int = 1, replicas: int = 1,
                  names: Sequence[str] = ("api", "eventmanager", "logserver", "notifier"),
                  **env: str) -> Cluster:
    """``replicas`` processes of each service in ``names`` (the first replica of a
    service is called by its name, the next ``name-2``...) and ``workers``
    workermanagers (``w1``, ``w2``...). The api replicas share the admin token."""
    plan = [(name, name if i == 1 else f"{name}-{i}") for name in names
            for i in range(1, replicas + 1)]
    plan += [("workermanager", f"w{i}") for i in range(1, workers + 1)]
    cluster = Cluster({})
    try:
        for name, replica in plan:
            cluster.services[replica] = Service(name, replica, home / replica, {**infra, **env})
        first, *rest = cluster.services.values()
        first.start()  # alone: it creates the admin token the others share
        # The rest start side by side: one by one, ten replicas took ~29 s to set up.
        for service in rest:
            service.launch()
        for service in rest:  # they share the CPU: a loaded machine takes a while
            service.wait_serving(timeout=HANG_S * 3)
    except BaseException:
        cluster.stop()
        raise
    token = cluster.token
    for service in cluster.of("api"):
        service.token = token  # one admin token: the first api replica created it
    return cluster


@pytest.fixture
def infra(kafka_url: str, etcd_url: str, mongo_url: str, docker_ready: None) -> dict[str, str]:
    """The four infrastructure URLs, with a database of the test's own."""
    return infra_urls(kafka_url, etcd_url, mongo_url)


def infra_urls(kafka_url: str, etcd_url: str, mongo_url: str) -> dict[str, str]:
    """The four infrastructure URLs, with a database of its own."""
    database = f"{mongo_url.rstrip('/')}/cluster{uuid.uuid4().hex[:8]}"
    return {"CYCLONE_BUS": kafka_url, "CYCLONE_COORD": etcd_url,
            "CYCLONE_STORE": database, "CYCLONE_LOG_STORE": database}

