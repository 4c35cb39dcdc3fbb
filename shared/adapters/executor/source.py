"""What of a run's source directory goes into its workspace (``RunContext.source_dir``,
the directory ``cyclone run`` was started in), as the tar both executors fill it from.

* In a Git work tree, what the user's repository holds as Git sees it: the tracked files
  and the untracked ones that are not ignored (``git ls-files --cached --others
  --exclude-standard``), so build output, virtualenvs and ``.git`` stay out, as they do
  from a run of a pushed commit (``git archive``). A checked-out submodule or a nested
  repository is taken as Git sees it there. A tracked file deleted from the work tree
  is not there either.
* Anywhere else (not a work tree, or no ``git`` installed): everything.
* In every case, never Cyclone's own state: the ``keep_out`` directories (its home, an
  executor's run directories) are left out. A home inside the directory, copied, would
  hold the run's own workspace, copied into itself until the names grow too long.

Symlinks stay links. The tar is spooled (to disk past ``SPOOL_BYTES``) and complete before
it is handed out, so a source that cannot be read fails before any copy begins.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import tarfile
import tempfile
from collections.abc import AsyncIterator, Collection, Iterator
from pathlib import Path
from typing import IO, cast

from shared.errors import ExecutorError

__all__ = ["CHUNK", "SPOOL_BYTES", "directory_archive", "read_chunks", "source_files",
           "tar_directory"]

CHUNK = 256 * 1024
SPOOL_BYTES = 16 * 1024 * 1024  # archives larger than this go to a temporary file
GIT_TIMEOUT_S = 120.0
# Variables that would point git at another repository than the directory's own (set,
# e.g., when Cyclone runs from a Git hook).
_REPO_VARS = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY",
              "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_NAMESPACE", "GIT_COMMON_DIR")


def source_files(source: Path, keep_out: Collection[Path] = ()) -> list[str]:
    """The paths under ``source`` to copy into a workspace, relative and with ``/``, each
    directory before what it holds."""
    if not source.is_dir():
        raise ExecutorError(f"source directory {str(source)!r} does not exist")
    skip = _inside(source, keep_out)
    listed = _git_files(source)
    if listed is None:
        return list(_walk(source, skip))
    return list(_with_parents(source, [p for p in listed if not _skipped(p, skip)], keep_out))


def tar_directory(source: Path, keep_out: Collection[Path] = ()) -> IO[bytes]:
    """A tar of ``source_files(source, keep_out)``, spooled; close it when done."""
    paths = source_files(source, keep_out)
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)
    try:
        with tarfile.open(fileobj=spool, mode="w") as tar:
            tar.add(source, arcname=".", recursive=False)  # the workspace's own mode
            for path in paths:
                # one deleted since it was listed (the user is still at work) is left out
                with contextlib.suppress(FileNotFoundError):
                    tar.add(source / path, arcname=path, recursive=False)
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    return cast(IO[bytes], spool)


@contextlib.asynccontextmanager
async def directory_archive(source: Path,
                            keep_out: Collection[Path] = ()) -> AsyncIterator[AsyncIterator[bytes]]:
    """``async with directory_archive(source, keep_out) as chunks:`` the tar of what of
    ``source`` goes into a workspace, made (on a thread) before the block is entered."""
    archive = await asyncio.to_thread(tar_directory, source, keep_out)
    try:
        yield read_chunks(archive)
    finally:
        archive.close()


async def read_chunks(file: IO[bytes]) -> AsyncIterator[bytes]:
    while chunk := await asyncio.to_thread(file.read, CHUNK):
        yield chunk


def _git_files(source: Path) -> list[str] | None:
    """What Git sees in ``source`` (paths relative to it); None outside a work tree."""
    env = {k: v for k, v in os.environ.items() if k not in _REPO_VARS}
    env["LC_ALL"] = "C"  # git's messages in English: "not a git repository" is read below
    try:
        done = subprocess.run(
            ["git", "-C", str(source), "ls-files", "-z", "--cached", "--others",
             "--exclude-standard"],
            capture_output=True, env=env, timeout=GIT_TIMEOUT_S, check=False)
    except FileNotFoundError:
        return None  # no git on this host: nothing tells us what the repository holds
    except subprocess.TimeoutExpired as exc:
        raise ExecutorError(f"listing the files of {str(source)!r} with git took over "
                            f"{GIT_TIMEOUT_S:g} s") from exc
    if done.returncode != 0:
        error = done.stderr.decode(errors="replace").strip()
        if "not a git repository" in error or "must be run in a work tree" in error:
            return None
        raise ExecutorError(f"cannot list the files of {str(source)!r} with git: {error}")
    # "--cached" lists each path of a conflicted merge once per stage: the set keeps one
    return sorted({os.fsdecode(p).rstrip("/") for p in done.stdout.split(b"\0") if p})


def _with_parents(source: Path, listed: list[str], keep_out: Collection[Path]) -> Iterator[str]:
    """``listed`` with the directories that hold them first; a listed directory (a
    submodule, a nested repository) with what Git sees in it."""
    seen: set[str] = set()
    for path in listed:
        parts = path.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            if parent not in seen:
                seen.add(parent)
                yield parent
        full = source / path
        if not os.path.lexists(full):
            continue  # tracked, but deleted from the work tree
        if path not in seen:
            seen.add(path)
            yield path
        if full.is_dir() and not full.is_symlink():
            for inner in source_files(full, keep_out):
                if f"{path}/{inner}" not in seen:
                    seen.add(f"{path}/{inner}")
                    yield f"{path}/{inner}"


def _walk(source: Path, skip: Collection[str]) -> Iterator[str]:
    """Everything under ``source`` but ``skip``; links to directories stay links."""
    for root, dirs, files in os.walk(source):  # a link to a directory is not followed
        base = Path(root).relative_to(source).as_posix()
        prefix = "" if base == "." else f"{base}/"
        dirs[:] = sorted(d for d in dirs if not _skipped(prefix + d, skip))
        for name in sorted(dirs + files):
            if not _skipped(prefix + name, skip):
                yield prefix + name


def _inside(source: Path, keep_out: Collection[Path]) -> set[str]:
    """The ``keep_out`` directories that are inside ``source``, relative to it."""
    real = source.resolve()
    inside: set[str] = set()
    for path in keep_out:
        with contextlib.suppress(ValueError):  # not inside: nothing to leave out
            relative = path.resolve().relative_to(real).as_posix()
            if relative != ".":
                inside.add(relative)
    return inside


def _skipped(path: str, skip: Collection[str]) -> bool:
    return any(path == s or path.startswith(f"{s}/") for s in skip)
