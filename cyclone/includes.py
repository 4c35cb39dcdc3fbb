"""The includes of a pipeline file read on this machine, for ``cyclone run`` and
``cyclone lint``.

A file of the pipeline's own source is read from its directory (``root``: what
``cyclone run`` copies into the workspace), as it is now, uncommitted changes included;
another project's from the project registered in this Cyclone home (the store ``cyclone
up`` keeps), at its pinned ref, through a Git mirror of its own (a temporary directory:
the workers' mirrors are theirs). The store is opened only when another project's file
is included.
"""

from __future__ import annotations

import asyncio
import tempfile
from contextlib import AsyncExitStack
from pathlib import Path

from cyclone.ports import open_ports
from services.workermanager.checkout import GitCheckout
from services.workermanager.includes import GitIncludes, registered_repos
from shared.config import Settings
from shared.errors import IncludeError
from shared.pipeline.include import Fetch, IncludedFile, Key, resolve

__all__ = ["DirectoryIncludes", "resolve_here"]


class DirectoryIncludes:
    """Reads the run's own files under ``root``; hands other projects' to ``remote``."""

    def __init__(self, root: Path, remote: Fetch) -> None:
        self.root = root
        self.remote = remote

    async def __call__(self, key: Key) -> IncludedFile:
        project, _, file = key
        if project:
            return await self.remote(key)
        return IncludedFile.read(key, "", await asyncio.to_thread(self._read, file))

    def _read(self, file: str) -> str:
        path = self.root / file
        if not path.resolve().is_relative_to(self.root.resolve()):
            raise IncludeError(f"{file} leads out of {self.root} (a symbolic link?)")
        try:
            return path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise IncludeError(f"no file {file} in {self.root}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise IncludeError(f"cannot read {path}: {exc}") from exc


async def resolve_here(text: str, file: str, root: Path,
                       settings: Settings) -> tuple[IncludedFile, ...]:
    """Every file ``text`` (read as ``file``) includes, read from ``root`` and, for other
    projects' files, from the projects registered in ``settings``' home."""
    async with AsyncExitStack() as stack:
        remote: GitIncludes | None = None

        async def from_project(key: Key) -> IncludedFile:
            nonlocal remote
            if remote is None:
                ports = await stack.enter_async_context(open_ports(settings))
                mirrors = Path(stack.enter_context(tempfile.TemporaryDirectory(
                    prefix="cyclone-includes-")))
                remote = GitIncludes(GitCheckout(mirrors), registered_repos(ports.store))
            return await remote(key)

        return await resolve(text, file, DirectoryIncludes(root, from_project))
