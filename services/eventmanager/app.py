"""The event manager's aiohttp application: ``create_app(settings, ports) -> web.Application``.

In the background: the run state machine (``EventManager.run``: ``cyclone.events``
and the claim and slot watches), and, each in one replica at a time (leaders elected
on the coordinator), the outbox relay, which publishes what the store holds, and the
cron scheduler (``CYCLONE_SCHEDULE_CATCHUP=0`` skips the fires missed while no event
manager ran instead of starting one run for them). A process that answers only for
its own runs (``cyclone run``) relays just those, from where the store is when it
starts, and schedules nothing. ``/healthz`` and ``/metrics``.

Start it after the other services of its process: the relay publishes as soon as it
runs, and a consumer group that joins the in-process bus later may find the messages
every earlier group has committed already dropped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from aiohttp import web

from services.eventmanager.scheduler import Scheduler
from services.eventmanager.service import EventManager
from shared.app import run_in_background, service_app
from shared.config import Settings
from shared.infra import Ports
from shared.leader import run_as_leader
from shared.outbox import OutboxRelay

__all__ = ["MANAGER", "RELAY_POLL_S", "create_app"]

MANAGER = web.AppKey("eventmanager", EventManager)
# Appends happen in other processes, so the relay polls the store (three small queries);
# each hop of a run through the relay costs up to this much latency.
RELAY_POLL_S = 0.02
# In one process the store's appends wake the relay; polling only bounds how late it
# sees what another process appended to a run of this one's (`cyclone cancel`).
_LOCAL_POLL_S = 1.0


def create_app(settings: Settings, ports: Ports) -> web.Application:
    # Catch up at start on what happened while no event manager ran (claims lost, slots
    # freed); only on a coordinator every process shares: an embedded process's own
    # coordinator sees no other process's claims.
    manager = EventManager(ports.store, ports.bus, ports.coord, settings.max_parallel_jobs,
                           catch_up_at_start=ports.distributed, replay=ports.replay)
    app = service_app(ports.ready, [manager.collector()])
    app[MANAGER] = manager

    async def loaded(app: web.Application) -> AsyncIterator[None]:
        await manager.load()  # admission slots and queue in line with the store
        yield

    app.cleanup_ctx.append(loaded)
    run_in_background(app, manager.run, "EventManager.run")
    _relay(app, settings, ports)
    if ports.scope.server:
        # A fire two overlapping leaders both decide is still started once (the
        # scheduler's own concurrency control).
        scheduler = Scheduler(ports.store, catch_up=settings.schedule_catch_up)
        _lead(app, settings, ports, "scheduler", scheduler.run)
    return app


def _relay(app: web.Application, settings: Settings, ports: Ports) -> None:
    server = ports.scope.server
    relay = OutboxRelay(ports.store, ports.bus, checkpoint="outbox" if server else None,
                        owns=ports.scope.publishes,
                        poll_s=RELAY_POLL_S if ports.distributed else _LOCAL_POLL_S)
    if not server:
        async def from_now(app: web.Application) -> AsyncIterator[None]:
            # Only the runs this process starts from now on are its to publish.
            await relay.start_at(await ports.store.last_position())
            yield

        app.cleanup_ctx.append(from_now)
    _lead(app, settings, ports, "outbox", relay.run)


def _lead(app: web.Application, settings: Settings, ports: Ports, role: str,
          work: Callable[[], Coroutine[Any, Any, None]]) -> None:
    async def leading() -> None:
        await run_as_leader(ports.coord, role, settings.worker_id, work)

    run_in_background(app, leading, f"{role} leader")
