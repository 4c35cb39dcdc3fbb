"""``Ports``: the port adapters one Cyclone process runs on, as one typed bundle.

Every service's app factory takes one (``create_app(settings, ports)``); the
composition root opens it once per process (``cyclone.ports.open_ports``): the
embedded defaults (SQLite, the in-process bus and coordinator, files) or the
distributed adapters (MongoDB and its GridFS, Kafka, etcd), chosen by the settings. Above the
bundle the code is the same in both modes; the few differences that follow from
sharing the infrastructure with other processes are read from ``distributed``.

``RunScope`` says which runs this process answers for. Distributed: every run (the
outbox relay and the scheduler run in one replica at a time, as leaders). Embedded:
``cyclone up`` answers for every run of its home but those of ``cyclone run``
processes, which answer for the runs they start, while they live.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from shared.events import RecordedEvent
from shared.outbox import NotifyingStore
from shared.ports.artifacts import ArtifactStore
from shared.ports.bus import Bus
from shared.ports.coordination import Coordinator
from shared.ports.logstore import LogStore
from shared.ports.runviews import RunViews
from shared.projections.replay import SharedReplay

__all__ = ["EVERY_RUN", "Ports", "RunScope"]


class RunScope(Protocol):
    """Which runs' events this process publishes (the outbox relay's filter); ``server``:
    it answers for every run but other processes' own (it schedules, notifies, keeps
    the relay's checkpoint), else only for the runs it starts itself."""

    @property
    def server(self) -> bool: ...

    def publishes(self, recorded: RecordedEvent) -> bool: ...


class _EveryRun:
    server = True

    def publishes(self, recorded: RecordedEvent) -> bool:
        return True


EVERY_RUN: RunScope = _EveryRun()


@dataclass(frozen=True)
class Ports:
    store: NotifyingStore  # the event store; its appends wake the relay in this process
    bus: Bus
    coord: Coordinator
    logs: LogStore
    artifacts: ArtifactStore  # artifacts, caches and test reports: content-addressed blobs
    scope: RunScope
    # The api's alone, so opened by it (and closed by it): the distributed views live in
    # MongoDB beside the events; the embedded ones are folded from the store at start.
    open_run_views: Callable[[], Awaitable[RunViews]]
    ready: Callable[[], Awaitable[object]]  # raises when a server behind a port is away
    # Shared with other processes (Kafka, etcd, MongoDB): appends and claims of other
    # processes are seen, a stopping worker hands its jobs to the others.
    distributed: bool
    # Every run folded from the store, once for all who need it at start (forgotten once
    # the process has started)
    replay: SharedReplay
