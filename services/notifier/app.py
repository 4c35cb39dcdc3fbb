"""The notifier's aiohttp application: ``create_app(settings, ports) -> web.Application``.

Two consumers of ``cyclone.events`` in the background: the notifications of the
pipeline file's and the project's rules (``Notifier``), and the commit statuses sent
to forges (``CommitStatusReporter``); ``/healthz`` and ``/metrics``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from services.notifier.forge_status import CommitStatusReporter
from services.notifier.service import Notifier
from shared.app import on_cleanup, run_in_background, service_app
from shared.config import Settings
from shared.infra import Ports
from shared.projections.projects import fold_project
from shared.runstream import RunStates
from shared.secrets import open_secret_store
from shared.streamcache import StreamCache

__all__ = ["NOTIFIER", "create_app"]

NOTIFIER = web.AppKey("notifier", Notifier)


def create_app(settings: Settings, ports: Ports) -> web.Application:
    # One view of each run and project for both: they look at the same moments of a run.
    runs, projects = RunStates(ports.store), StreamCache(ports.store, fold_project)
    notifier = Notifier(ports.store, ports.coord, ports.logs, public_url=settings.public_url,
                        settings=settings.notify, me=settings.worker_id, runs=runs,
                        projects=projects)
    reporter = CommitStatusReporter(ports.store, settings.public_url, runs=runs,
                                    projects=projects)
    app = service_app(ports.ready, [notifier.collector()])
    app[NOTIFIER] = notifier
    # Closed once their consumers have stopped: deliveries in flight are cancelled.
    on_cleanup(app, reporter.close)
    on_cleanup(app, notifier.close)

    async def secrets(app: web.Application) -> AsyncIterator[None]:
        # Before the consumers: every message is masked with the secrets' values.
        opened = await open_secret_store(settings.secret_key, settings.home, ports.store)
        notifier.secrets = reporter.secrets = opened
        yield

    app.cleanup_ctx.append(secrets)

    async def report_statuses() -> None:
        await reporter.run(ports.bus)

    async def notify() -> None:
        await notifier.run(ports.bus)

    run_in_background(app, report_statuses, "CommitStatusReporter.run")
    run_in_background(app, notify, "Notifier.run")
    return app
