"""The workermanager's aiohttp application: ``create_app(settings, ports) -> web.Application``.

Its cleanup context opens the executor (``CYCLONE_EXECUTOR``), removes what an
earlier life left on the host, and runs the ``WorkerManager`` in the background until
the app is cleaned up. ``/healthz`` and ``/metrics``.

What is left over, and how it stops, depends on whether other workers share the
cluster (``Ports.distributed``):

* distributed: what the executor creates is labelled with this worker, so that its
  next incarnation finds what a crash left (``reap_own``, before any job is taken). The
  id alone may be taken by a worker of another cluster on the same Docker host: its home
  makes the label this worker's. At clean-up (SIGTERM) it drains: running jobs may
  finish for ``CYCLONE_WORKER_DRAIN_S``, the rest go back to the other workers;
* embedded: the worker is the home's only one and its id changes with each process, so
  what runs that have ended left on the host is removed instead (another process of the
  same home may still be running its own runs: those are left alone). At clean-up the
  running jobs are stopped: the next start ends their runs as interrupted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from services.workermanager.service import WorkerManager
from shared.adapters.deployer import Deployers
from shared.adapters.executor import open_executor
from shared.app import BACKGROUND, service_app
from shared.caches import CacheIndex, project_cache_limit
from shared.config import Settings
from shared.infra import Ports
from shared.runstream import load_run
from shared.secrets import open_secret_store
from shared.tasks import cancel_and_wait

__all__ = ["WORKER", "create_app"]

log = logging.getLogger(__name__)

WORKER = web.AppKey("workermanager", WorkerManager)


def create_app(settings: Settings, ports: Ports) -> web.Application:
    app = service_app(ports.ready)

    async def working(app: web.Application) -> AsyncIterator[None]:
        label = f"{settings.worker_id}@{settings.work_dir}" if ports.distributed else ""
        executor = await open_executor(settings.executor, settings.work_dir, worker=label,
                                       keep_out=(settings.home,))
        deployers = Deployers()
        try:
            secrets = await open_secret_store(settings.secret_key, settings.home, ports.store)
            worker = WorkerManager(ports.store, ports.bus, ports.coord, executor,
                                   settings.worker_id, settings.worker_capacity,
                                   git_cache=settings.git_cache_dir,
                                   lease_ttl=settings.worker_lease_s, log_limit=settings.step_log,
                                   secrets=secrets, step_resources=settings.step_resources,
                                   deployer=deployers, artifacts=ports.artifacts,
                                   caches=CacheIndex(ports.store, project_cache_limit(
                                       ports.store, settings.cache_max_mb)),
                                   labels=settings.worker_labels)
            app[WORKER] = worker
            if ports.distributed:
                await worker.reap_own(label)  # this incarnation has created nothing yet
            else:
                await _reap_ended(worker, ports)
            running = asyncio.create_task(worker.run(), name="WorkerManager.run")
            app[BACKGROUND].append(running)
            try:
                yield
            finally:
                # Hand in-flight work back while run()'s lease keep-alive and cancel
                # watch still serve it.
                if ports.distributed and not running.done():
                    await worker.drain(settings.worker_drain_s)
                await cancel_and_wait(running)
                await worker.close()
        finally:
            await deployers.close()
            await executor.close()

    app.cleanup_ctx.append(working)
    return app


async def _reap_ended(worker: WorkerManager, ports: Ports) -> None:
    """Remove what runs that have ended left on this host (after a crash)."""
    over = set()
    for run_id in await worker.executor.leftover_runs():
        run = await load_run(ports.store, run_id)
        if run is not None and run.done:
            over.add(run_id)
    reaped = await worker.reap(over.__contains__)
    if reaped:
        log.warning("removed containers, networks and volumes left by ended runs",
                    extra={"runs": reaped})
