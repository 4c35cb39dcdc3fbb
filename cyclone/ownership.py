"""Which process owns a run, across processes sharing one $CYCLONE_HOME.

In embedded mode every ``cyclone run`` or ``cyclone up`` process runs its runs
in-process, so a run whose process died (SIGKILL, power loss) has no one left to
finish it. Each owner holds an exclusive ``flock`` on ``owners/<run id>.lock`` for
as long as it lives; the kernel drops the lock when the process dies, however it
dies. A run that is not finished and whose lock can be taken is an orphan: the
next start marks it interrupted and removes its containers.

``HomeScope`` is what the relay of such a process publishes: the runs it owns.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from shared.errors import ConfigError
from shared.events import RecordedEvent, RunRequested, is_run_stream
from shared.projections.runs import RunView, run_id_of

__all__ = ["HomeScope", "RunOwnership"]


class RunOwnership:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self._held: dict[str, int] = {}  # run id -> fd holding the lock

    def claim(self, run_id: str) -> None:
        fd = os.open(self._path(run_id), os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._held[run_id] = fd

    def owns(self, run_id: str) -> bool:
        return run_id in self._held

    def is_orphan(self, run_id: str) -> bool:
        """True when no live process holds the run (its lock can be taken now)."""
        if run_id in self._held:
            return False
        fd = os.open(self._path(run_id), os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        finally:
            os.close(fd)  # closing drops the lock we may have just taken
        return True

    def release(self, run_id: str) -> None:
        fd = self._held.pop(run_id, None)
        if fd is not None:
            os.close(fd)
        self._path(run_id).unlink(missing_ok=True)

    def release_all(self) -> None:
        for run_id in list(self._held):
            self.release(run_id)

    def _path(self, run_id: str) -> Path:
        return self.directory / f"{run_id}.lock"


class HomeScope:
    """The runs one process of a home answers for (``shared.infra.RunScope``): the
    ``cyclone run`` process that started a run (``trigger == "cli"``, locked by its run
    id), else the server (locked as ``server``). Runs of ``cyclone run`` are never
    published by a server's relay."""

    SERVER = "server"

    def __init__(self, ownership: RunOwnership, server: bool) -> None:
        self.ownership = ownership
        self.server = server
        self._cli_runs: set[str] = set()

    def claim_server(self) -> None:
        try:
            self.ownership.claim(self.SERVER)
        except BlockingIOError:
            raise ConfigError("another `cyclone up` is already serving this CYCLONE_HOME "
                              f"({self.ownership.directory.parent})") from None

    def orphaned(self, run: RunView) -> bool:
        """Whether the run's owner is gone. A server run is, for the server that has just
        taken the server lock (whoever held it is dead); a `cyclone run` leaves them be."""
        if run.trigger != "cli":
            return self.server
        return not self.ownership.owns(run.id) and self.ownership.is_orphan(run.id)

    def publishes(self, recorded: RecordedEvent) -> bool:
        if not is_run_stream(recorded.stream):
            return self.server
        run_id = run_id_of(recorded.stream)
        if recorded.type == RunRequested.TYPE and recorded.data.get("trigger") == "cli":
            self._cli_runs.add(run_id)
        if not self.server:
            return self.ownership.owns(run_id)
        return run_id not in self._cli_runs
