"""A real S3-compatible server for the tests: versitygw, serving a POSIX directory.

* ``S3Server(data_dir, log_path)``: one versitygw process on 127.0.0.1 at a free port,
  its buckets the folders of ``data_dir`` (an object ``k/e/y`` of bucket ``b`` is the
  file ``data_dir/b/k/e/y``, so a test may change stored bytes below S3). ``start()``
  waits (with a deadline) until its health path answers; ``stop(kill=False)`` ends it
  (``kill``: SIGKILL, a crash).
* ``s3_server`` (session fixture): the shared server.
* ``s3_bucket`` (function fixture): a bucket of the test's own (``S3Bucket``: its name,
  its ``s3://`` URL and its folder), emptied and removed afterwards.

The binary comes from ``scripts/setup-infra-s3.sh`` (``go install``, into
``.cache/versitygw/bin``). When it is missing or cannot start, the tests are SKIPPED with
a loud reason, but FAIL when the ``CI`` variable is set: CI never passes by silently
skipping.

Register in a test module with ``from tests.infra.s3 import s3_bucket, s3_server``.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

__all__ = ["BINARY", "S3Bucket", "S3Server", "S3Unavailable", "s3_bucket", "s3_server"]

ROOT = Path(__file__).resolve().parents[2]
BINARY = ROOT / ".cache" / "versitygw" / "bin" / "versitygw"
SETUP_HINT = "run scripts/setup-infra-s3.sh"
START_TIMEOUT = 30.0  # generous: a loaded 2-core CI machine
STOP_TIMEOUT = 10.0
HEALTH = "/health"


class S3Unavailable(Exception):
    """versitygw is not installed or did not come up; the message says why."""


def unavailable(reason: str) -> NoReturn:
    """Skip the test loudly, or fail it when ``CI`` is set."""
    message = f"S3 SERVER UNAVAILABLE, S3 tests not run: {reason}"
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI is set: not skipping)")
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class S3Server:
    """One versitygw process; see the module docstring."""

    def __init__(self, data_dir: Path, log_path: Path) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.port = 0
        # Made up per server: the single account versitygw serves.
        self.access_key = "cyclone-test"
        self.secret_key = secrets.token_urlsafe(24)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, bucket: str) -> str:
        """The ``s3://`` URL of ``bucket`` on this server, as Cyclone is configured."""
        return (f"s3://{self.access_key}:{self.secret_key}@127.0.0.1:{self.port}/{bucket}"
                "?tls=0&region=us-east-1")

    @asynccontextmanager
    async def client(self) -> AsyncIterator[S3Client]:
        """A client of the server's own (for tests that look below the store)."""
        async with get_session().create_client(
                "s3", endpoint_url=self.endpoint, region_name="us-east-1",
                aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
                config=AioConfig(s3={"addressing_style": "path"})) as client:
            yield client

    def start(self) -> None:
        """Start on a free port (another one if it was taken meanwhile) and wait until it
        answers; ``S3Unavailable`` if it cannot."""
        if not os.access(BINARY, os.X_OK):
            raise S3Unavailable(f"{BINARY} is not installed ({SETUP_HINT})")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        problem = ""
        for _ in range(3):
            self.port = _free_port()
            try:
                self._launch()
                return
            except S3Unavailable as exc:
                problem = str(exc)
                self.stop(kill=True)
        raise S3Unavailable(problem)

    def stop(self, kill: bool = False) -> None:
        """End the process (SIGTERM, which waits for open connections; SIGKILL with
        ``kill``, a crash, or when it lingers); safe twice."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        if kill:
            process.kill()
        else:
            process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT)

    def _launch(self) -> None:
        # The keys go in the environment, not the command line (which `ps` shows).
        env = {**os.environ, "ROOT_ACCESS_KEY_ID": self.access_key,
               "ROOT_SECRET_ACCESS_KEY": self.secret_key}
        command = [str(BINARY), "--port", f"127.0.0.1:{self.port}", "--health", HEALTH,
                   "--quiet", "posix", str(self.data_dir)]
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + START_TIMEOUT
        while not _healthy(self.endpoint + HEALTH):
            if self._process.poll() is not None:
                raise S3Unavailable(f"versitygw exited at start-up:\n{self._log_tail()}")
            if time.monotonic() > deadline:
                raise S3Unavailable(f"versitygw not answering after {START_TIMEOUT}s:\n"
                                    f"{self._log_tail()}")
            time.sleep(0.05)  # polling interval of the deadline loop above

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return "(no log)"


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except (OSError, ValueError):  # refused, reset, timeout, HTTP error
        return False


@dataclass(frozen=True)
class S3Bucket:
    server: S3Server
    name: str

    @property
    def url(self) -> str:
        return self.server.url(self.name)

    @property
    def folder(self) -> Path:
        """Where versitygw keeps the bucket's objects (one file an object)."""
        return self.server.data_dir / self.name


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """The session's shared server; skipped (failed under CI) when it cannot start."""
    tmp = tmp_path_factory.mktemp("s3")
    server = S3Server(tmp / "data", tmp / "versitygw.log")
    try:
        server.start()
    except S3Unavailable as exc:
        unavailable(str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def s3_bucket(s3_server: S3Server) -> AsyncIterator[S3Bucket]:
    """A new bucket for this test alone; emptied and removed afterwards."""
    bucket = S3Bucket(s3_server, f"test-{secrets.token_hex(8)}")
    async with s3_server.client() as client:
        await client.create_bucket(Bucket=bucket.name)
        yield bucket
        await _remove(client, bucket.name)


async def _remove(client: S3Client, bucket: str) -> None:
    uploads = await client.list_multipart_uploads(Bucket=bucket)
    for upload in uploads.get("Uploads", []):
        await client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"],
                                            UploadId=upload["UploadId"])
    async for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            await client.delete_object(Bucket=bucket, Key=item["Key"])
    await client.delete_bucket(Bucket=bucket)
