"""The executor port's adapters (``shared.ports.executor``): the workermanager's ways of
running steps, picked by name and availability. Their contract suite is
``tests/executors/test_contract.py``, run against both.

* ``docker`` (``DockerExecutor``): containers, a private network and a workspace volume
  per run; services; image builds, pushes and promotions with registry logins, and
  pulls from private registries. Needs a reachable Docker daemon.
* ``shell`` (``ShellExecutor``): the host's ``/bin/sh`` in a per-run directory; no
  isolation, no services, no images. The fallback when Docker is unreachable.

``open_executor("auto", home)`` prefers Docker and falls back to the shell with a
warning; ``"docker"`` insists on Docker (``ExecutorUnavailable`` otherwise); ``"shell"``
never touches Docker.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from pathlib import Path

from shared.adapters.executor.docker import DockerExecutor
from shared.adapters.executor.shell import ShellExecutor
from shared.errors import ConfigError, ExecutorUnavailable
from shared.ports.executor import Executor

__all__ = ["KINDS", "DockerExecutor", "ShellExecutor", "open_executor"]

log = logging.getLogger(__name__)

KINDS = ("auto", "docker", "shell")


async def open_executor(kind: str, home: Path, worker: str = "",
                        keep_out: Collection[Path] = ()) -> Executor:
    """The executor named by ``kind``; the shell executor keeps its run directories in
    ``home``; the Docker one labels what it creates with ``worker`` (when given: a
    label unique to the worker on this host), so ``leftover_runs(worker=...)`` finds
    it. Neither copies ``keep_out`` (Cyclone's home: it may sit inside a directory that
    ``cyclone run`` copies) into a workspace. Close it with ``await executor.close()``."""
    if kind not in KINDS:
        raise ConfigError(f"unknown executor {kind!r}: expected one of {', '.join(KINDS)}")
    if kind == "shell":
        return ShellExecutor(home, keep_out)
    try:
        return await DockerExecutor.connect(worker=worker, keep_out=keep_out)
    except ExecutorUnavailable as exc:
        if kind == "docker":
            raise
        log.warning("no Docker daemon reachable (%s): steps run on the host shell without "
                    "isolation, and services are unavailable", exc)
        return ShellExecutor(home, keep_out)
