"""Real container registries for the image tests (Distribution 2.8, Debian's
``docker-registry``), each on a free port of 127.0.0.1 with filesystem storage in the
session's tmp directory. Docker treats registries on 127.0.0.0/8 as insecure (plain
HTTP) by default, so the daemon needs no configuration to push to and pull from them.

* ``RegistryServer(root, username="", password="")``: one registry process; with a
  username, only that user (htpasswd, bcrypt) may pull or push. ``start()`` waits (with
  a deadline) until ``/v2/`` answers; ``stop()`` ends it, safe twice. ``host`` is
  ``127.0.0.1:PORT`` as image references name it, ``auth`` the ``RegistryAuth`` to give
  the executor (None without a user), ``manifest_digest(repo, tag)`` what the registry
  says the tag's manifest is (``Docker-Content-Digest``).
* ``registry`` (session fixture): a registry without auth; ``auth_registry`` (session
  fixture): one with ``AUTH_USER`` / ``AUTH_PASSWORD``. Tests use unique repository
  names, so one of each per session is enough.

The binaries come from ``scripts/setup-infra-registry.sh``. When they are missing or the
registry cannot start, the tests are SKIPPED with a loud reason, but FAIL when the
``CI`` variable is set: CI never passes by silently skipping.

Register in a test module with
``from tests.registry_support import auth_registry, registry`` (and list them in its
``__all__``).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.ports.executor import RegistryAuth

__all__ = [
    "AUTH_PASSWORD",
    "AUTH_USER",
    "MANIFEST_V2",
    "RegistryServer",
    "RegistryUnavailable",
    "auth_registry",
    "registry",
]

SETUP_HINT = "run scripts/setup-infra-registry.sh"
START_TIMEOUT = 30.0  # generous: a loaded 2-core CI machine
STOP_TIMEOUT = 10.0
AUTH_USER = "cyclone-ci"
AUTH_PASSWORD = "s3cret-" + secrets.token_hex(8)  # unique: a test can look for it in logs
MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"


class RegistryUnavailable(Exception):
    """The registry is not installed or did not answer; the message says why."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RegistryServer:
    """One registry process; see the module docstring."""

    def __init__(self, root: Path, username: str = "", password: str = "") -> None:
        self.root = root
        self.username = username
        self.password = password
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def auth(self) -> RegistryAuth | None:
        return RegistryAuth(self.username, self.password) if self.username else None

    @property
    def log_path(self) -> Path:
        return self.root / "registry.log"

    def start(self) -> None:
        """Start on a free port (retrying if it was taken meanwhile) and wait until
        ``/v2/`` answers; ``RegistryUnavailable`` if it cannot."""
        for binary in ("docker-registry", "htpasswd"):
            if shutil.which(binary) is None:
                raise RegistryUnavailable(f"{binary} is not installed ({SETUP_HINT})")
        self.root.mkdir(parents=True, exist_ok=True)
        if self.username:
            subprocess.run(["htpasswd", "-Bbc", str(self.root / "htpasswd"), self.username,
                            self.password], check=True, capture_output=True)
        problem = ""
        for _ in range(3):
            self.port = _free_port()
            try:
                self._launch()
                return
            except RegistryUnavailable as exc:
                problem = str(exc)
                self.stop()
        raise RegistryUnavailable(problem)

    def stop(self) -> None:
        """End the process; safe twice."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STOP_TIMEOUT)

    def _launch(self) -> None:
        config: dict[str, object] = {
            "version": 0.1,
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(self.root / "data")},
                        "delete": {"enabled": True}},
            "http": {"addr": self.host, "secret": secrets.token_hex(16)},
        }
        if self.username:
            config["auth"] = {"htpasswd": {"realm": "cyclone-test",
                                           "path": str(self.root / "htpasswd")}}
        config_path = self.root / "config.yml"
        config_path.write_text(json.dumps(config))  # JSON is YAML
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                ["docker-registry", "serve", str(config_path)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        self._wait_answering()

    def _wait_answering(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self._process is None or self._process.poll() is not None:
                raise RegistryUnavailable(f"the registry exited at start-up:\n{self._log_tail()}")
            if _answers(f"http://{self.host}/v2/"):
                return
            if time.monotonic() > deadline:
                raise RegistryUnavailable(
                    f"the registry did not answer after {START_TIMEOUT}s:\n{self._log_tail()}")
            time.sleep(0.05)  # polling interval of the deadline loop above

    def _log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def manifest_digest(self, repository: str, tag: str) -> str:
        """The digest the registry gives the manifest of ``repository:tag`` (the path
        without the host), as ``docker pull`` would resolve it."""
        request = urllib.request.Request(
            f"http://{self.host}/v2/{repository}/manifests/{tag}", method="HEAD",
            headers={"Accept": MANIFEST_V2, **self._basic_auth()})
        with urllib.request.urlopen(request, timeout=30) as response:
            return str(response.headers["Docker-Content-Digest"])

    def tags(self, repository: str) -> list[str]:
        """The repository's tags, as the registry lists them."""
        request = urllib.request.Request(f"http://{self.host}/v2/{repository}/tags/list",
                                         headers=self._basic_auth())
        with urllib.request.urlopen(request, timeout=30) as response:
            return sorted(json.load(response).get("tags") or [])

    def _basic_auth(self) -> dict[str, str]:
        if not self.username:
            return {}
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}


def _answers(url: str) -> bool:
    """Whether the registry's API answers at all (200, or 401 when it wants a login)."""
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except urllib.error.HTTPError as exc:
        return exc.code == 401
    except OSError:  # refused, reset, timeout
        return False


def _started(root: Path, username: str = "", password: str = "") -> RegistryServer:
    """A running registry in ``root``, or the test skipped (locally) / failed (in CI)."""
    server = RegistryServer(root, username, password)
    try:
        server.start()
    except RegistryUnavailable as exc:
        message = f"REGISTRY UNAVAILABLE, registry tests not run: {exc}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return server


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """The session's registry without auth."""
    server = _started(tmp_path_factory.mktemp("registry"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """The session's registry that only ``AUTH_USER`` with ``AUTH_PASSWORD`` may use."""
    server = _started(tmp_path_factory.mktemp("auth-registry"), AUTH_USER, AUTH_PASSWORD)
    yield server
    server.stop()
