"""Workspace files through the Docker API: reads are ``GET /containers/{id}/archive`` of a
container that mounts the run's workspace (the executor's never-started helper, or a step's
exited container), writes are ``PUT`` of a tar into the helper (``put_archive``)."""

from __future__ import annotations

import io
import posixpath
from collections.abc import AsyncIterator, Sequence

import aiodocker
from aiodocker.exceptions import DockerError

from shared.adapters.executor.source import CHUNK
from shared.adapters.executor.workspace_files import OUTPUT_LIMIT, bases, read_file_member
from shared.ports.executor import WORKSPACE

__all__ = ["archive", "read_output", "sources"]

_TAR_SLACK = 64 * 1024  # tar headers around a file's bytes


async def archive(docker: aiodocker.Docker, container: str, path: str,
                  ) -> AsyncIterator[bytes]:
    """The tar Docker makes of ``path`` in the container (member names relative to the
    path's directory); nothing when the path does not exist."""
    try:
        async with docker._query(f"containers/{container}/archive", timeout=None,
                                 params={"path": path}) as response:
            async for chunk in response.content.iter_chunked(CHUNK):
                yield chunk
    except DockerError as exc:
        if exc.status != 404:
            raise


async def sources(docker: aiodocker.Docker, container: str, patterns: Sequence[str],
                  ) -> AsyncIterator[tuple[str, AsyncIterator[bytes]]]:
    """For ``workspace_files.select``: the archive of each base the patterns need, with
    the workspace directory its member names are relative to."""
    for base in bases(patterns):
        path = posixpath.join(WORKSPACE, base) if base else f"{WORKSPACE}/."
        yield posixpath.dirname(base), archive(docker, container, path)


async def read_output(docker: aiodocker.Docker, container: str, path: str) -> bytes:
    """What a step wrote to its ``$CYCLONE_OUTPUT`` file (read from its exited container),
    at most ``OUTPUT_LIMIT`` bytes; b"" when it wrote none."""
    data = bytearray()
    async for chunk in archive(docker, container, path):
        data += chunk
        if len(data) > OUTPUT_LIMIT + _TAR_SLACK:
            break
    if not data:
        return b""
    return read_file_member(io.BytesIO(bytes(data)), OUTPUT_LIMIT)
