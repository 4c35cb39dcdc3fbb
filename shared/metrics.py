"""Prometheus exposition shared by every service's ``/metrics``.

Each service has its own ``CollectorRegistry`` (several services share one process in
embedded mode) and registers collectors that compute their figures at scrape time
from state the service already keeps, so no counter can drift from the truth.
"""

from __future__ import annotations

import bisect
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["FunctionCollector", "Timings", "metrics_handler"]


class FunctionCollector(Collector):
    """A collector whose metrics come from a function called at every scrape."""

    def __init__(self, collect: Callable[[], Iterable[Metric]]) -> None:
        self._collect = collect

    def collect(self) -> Iterable[Metric]:
        return self._collect()


class Timings:
    """Durations counted into fixed buckets: a Prometheus histogram read at scrape time."""

    BOUNDS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15,
              0.25, 0.5, 1.0, 2.5, 5.0)

    def __init__(self, name: str, documentation: str) -> None:
        self.name = name
        self.documentation = documentation
        self._in_bucket = [0] * (len(self.BOUNDS) + 1)  # the last: above every bound
        self._total = 0.0

    def observe(self, seconds: float) -> None:
        self._in_bucket[bisect.bisect_left(self.BOUNDS, seconds)] += 1
        self._total += seconds

    def metric(self) -> HistogramMetricFamily:
        buckets, below = [], 0
        for bound, count in zip((*map(str, self.BOUNDS), "+Inf"), self._in_bucket,
                                strict=True):
            below += count
            buckets.append((bound, below))
        return HistogramMetricFamily(self.name, self.documentation, buckets=buckets,
                                     sum_value=self._total)


def metrics_handler(
    registry: CollectorRegistry,
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def metrics(request: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    return metrics
