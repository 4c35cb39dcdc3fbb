"""Prometheus exposition shared by every service's ``/metrics``.

Each service has its own ``CollectorRegistry`` (several services share one process in
embedded mode) and registers collectors that compute their figures at scrape time
from state the service already keeps, so no counter can drift from the truth.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

__all__ = ["FunctionCollector", "metrics_handler"]


class FunctionCollector(Collector):
    """A collector whose metrics come from a function called at every scrape."""

    def __init__(self, collect: Callable[[], Iterable[Metric]]) -> None:
        self._collect = collect

    def collect(self) -> Iterable[Metric]:
        return self._collect()


def metrics_handler(
    registry: CollectorRegistry,
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def metrics(request: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    return metrics
