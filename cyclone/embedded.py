"""The embedded runtime: the services of one machine in this process, on the embedded ports.

``cyclone up`` runs all five (``Embedded.start(settings, own_all_runs=True)``, then serves
the api's app); ``cyclone run`` and ``cyclone replay`` the three a run of their own
needs. The services are the same apps ``cyclone service`` runs one per process
(``cyclone.apps``); what is the embedded mode's alone is here: which process answers
for which run of the home (``cyclone.ownership``), and recovery from a crash. Whatever
was opened is closed again, even when the start fails half-way.

Recovery: before any service starts, runs left unfinished by a process that is gone
end as errored ("interrupted"), but a server takes over the runs that were only queued
and puts their work back on the bus once the services run. The workermanager removes
what ended runs left on the host as it starts.
"""

from __future__ import annotations

import dataclasses
import logging
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

from aiohttp import web

from cyclone.apps import SERVICES, Running, build_apps
from cyclone.ownership import HomeScope, RunOwnership
from cyclone.ports import open_ports
from services.api.context import CONTEXT
from services.api.live import LiveRuns
from services.api.readmodel import RunsReadModel
from services.eventmanager.app import MANAGER
from services.eventmanager.service import EventManager, abandon_run
from services.logserver.app import LOGSERVER
from services.logserver.service import LogServer
from services.notifier.app import NOTIFIER
from services.notifier.service import Notifier
from services.workermanager.app import WORKER
from services.workermanager.service import WorkerManager
from shared.config import Settings
from shared.events import CheckoutQueued, JobQueued, RecordedEvent, run_stream
from shared.infra import Ports
from shared.outbox import NotifyingStore
from shared.ports.bus import TOPIC_JOBS, Bus
from shared.ports.coordination import Coordinator
from shared.ports.executor import Executor
from shared.ports.logstore import LogStore
from shared.projections.runs import RunView
from shared.wire import encode_event

__all__ = ["INTERRUPTED", "RUN_SERVICES", "Embedded"]

log = logging.getLogger(__name__)

INTERRUPTED = "interrupted: the Cyclone process running it stopped before it finished"
RUN_SERVICES = ("logserver", "workermanager", "eventmanager")  # what `cyclone run` needs


@dataclass
class Embedded:
    settings: Settings
    ports: Ports
    scope: HomeScope
    running: Running | None = None
    recovered: list[str] = field(default_factory=list)  # runs ended as interrupted
    resumed: list[RunView] = field(default_factory=list)  # queued runs taken over
    _stack: AsyncExitStack = field(default_factory=AsyncExitStack)

    @classmethod
    async def start(cls, settings: Settings, *, own_all_runs: bool) -> Embedded:
        """Open the ports, recover from a crash, start the services.

        ``own_all_runs``: a server (``cyclone up``) is responsible for every run in
        the store; ``cyclone run`` only for the runs it starts itself.
        """
        stack = AsyncExitStack()
        try:
            return await cls._start(settings, own_all_runs, stack)
        except BaseException:
            await stack.aclose()
            raise

    @classmethod
    async def _start(cls, settings: Settings, own_all: bool, stack: AsyncExitStack) -> Embedded:
        scope = HomeScope(RunOwnership(settings.owners_dir), server=own_all)
        stack.callback(scope.ownership.release_all)
        if own_all:
            scope.claim_server()
        # The one-machine mode: the distributed URLs are `cyclone service`'s.
        embedded = dataclasses.replace(settings, infra=None)
        ports = await stack.enter_async_context(open_ports(embedded, scope))
        runtime = cls(settings=settings, ports=ports, scope=scope, _stack=stack)
        await runtime._recover()
        apps = build_apps(SERVICES if own_all else RUN_SERVICES, embedded, ports)
        runtime.running = await Running.start(apps)
        ports.replay.forget()  # started: nothing else reads every run
        stack.push_async_callback(runtime.running.stop)
        await runtime._resume()
        return runtime

    async def stop(self) -> None:
        await self._stack.aclose()

    # --- recovery --------------------------------------------------------------------

    async def _recover(self) -> None:
        """After a crash: runs that were running end as errored (interrupted); a server
        takes over the runs that were only queued."""
        for run in (await self.ports.replay()).runs.values():
            if run.done or not self.scope.orphaned(run):
                continue
            if self.scope.server and _resumable(run):
                self.resumed.append(run)
            elif await abandon_run(self.store, run.id, INTERRUPTED):
                self.recovered.append(run.id)
                log.warning("run interrupted by an earlier crash; marked errored",
                            extra={"run": run.id})

    async def _resume(self) -> None:
        """Put the taken-over runs' queued work back on the bus and move them on."""
        for run in self.resumed:
            for recorded in await self.store.read(run_stream(run.id)):
                if _still_queued(run, recorded):
                    await self.bus.publish(TOPIC_JOBS, run.id, encode_event(recorded))
            await self.eventmanager.advance(run.id)
            log.warning("resumed a queued run after a restart", extra={"run": run.id})

    # --- the parts, for the CLI and tests ------------------------------------------------

    @property
    def store(self) -> NotifyingStore:
        return self.ports.store

    @property
    def bus(self) -> Bus:
        return self.ports.bus

    @property
    def coord(self) -> Coordinator:
        return self.ports.coord

    @property
    def logs(self) -> LogStore:
        return self.ports.logs

    @property
    def ownership(self) -> RunOwnership:
        return self.scope.ownership

    @property
    def eventmanager(self) -> EventManager:
        return self._app("eventmanager")[MANAGER]

    @property
    def workermanager(self) -> WorkerManager:
        return self._app("workermanager")[WORKER]

    @property
    def executor(self) -> Executor:
        return self.workermanager.executor

    @property
    def logserver(self) -> LogServer:
        return self._app("logserver")[LOGSERVER]

    @property
    def notifier(self) -> Notifier:
        return self._app("notifier")[NOTIFIER]

    @property
    def readmodel(self) -> RunsReadModel:
        return self._app("api")[CONTEXT].readmodel

    @property
    def live(self) -> LiveRuns:
        live = self._app("api")[CONTEXT].live
        assert live is not None  # the api's factory gives it its live tails
        return live

    def _app(self, name: str) -> web.Application:
        assert self.running is not None, "the services have not started"
        return self.running.apps[name]


def _resumable(run: RunView) -> bool:
    """Nothing of it was running: it can simply go on (a checkout is safe to redo)."""
    return run.trigger != "cli" and not any(j.status == "running" for j in run.jobs)


def _still_queued(run: RunView, recorded: RecordedEvent) -> bool:
    if recorded.type == CheckoutQueued.TYPE:
        return run.checkout == "queued"
    if recorded.type == JobQueued.TYPE:
        job = run.job(str(recorded.data.get("job")))
        return job is not None and job.status == "queued"
    return False
