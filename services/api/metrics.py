"""The API's Prometheus metrics about runs, from its read model (``RunsReadModel.stats``:
computed at scrape time from views held in this process, refreshed every few seconds
from a shared view store).

The queue of jobs waiting for workers, by the label set they ask for (``runs-on:``,
``labels=""`` for none), is the signal for an autoscaler of workers:
``cyclone_jobs_queued{labels}`` and ``cyclone_jobs_oldest_wait_seconds{labels}``. Every
api replica reads the same view store (MongoDB in distributed mode), so all of them
export the same figures (each within ``STATS_REFRESH_S``): scrape any, or all and take
the maximum; the event manager exports none of them."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from services.api.readmodel import Queue, RunsReadModel
from shared.metrics import FunctionCollector
from shared.ports.runviews import DurationHistogram
from shared.status import RUN_DONE

__all__ = ["api_collector"]

_STATUSES = ("requested", "running", *sorted(RUN_DONE))


def api_collector(readmodel: RunsReadModel,
                  events_appended: Callable[[], int]) -> FunctionCollector:
    def collect() -> Iterable[Metric]:
        stats = readmodel.stats()
        gauge = GaugeMetricFamily("cyclone_runs", "Runs by status", labels=["status"])
        for status in _STATUSES:
            gauge.add_metric([status], stats.by_status.get(status, 0))
        yield gauge
        yield from _queues(stats.queues, time.time())
        yield _step_durations(stats.steps)
        yield CounterMetricFamily("cyclone_events_appended", "Events appended by this process",
                                  value=events_appended())

    return FunctionCollector(collect)


def _queues(queues: dict[str, Queue], now: float) -> Iterable[Metric]:
    depth = GaugeMetricFamily("cyclone_jobs_queued", "Jobs queued for a worker, not yet "
                              "started, by the worker labels they ask for (runs-on)",
                              labels=["labels"])
    waited = GaugeMetricFamily("cyclone_jobs_oldest_wait_seconds", "How long the job queued "
                               "longest has waited for a worker, by the labels it asks for",
                               labels=["labels"])
    # Jobs asking no labels are always shown (0 when none wait): a query never comes back
    # empty while Cyclone runs.
    for labels, queue in sorted({"": Queue(0, None), **queues}.items()):
        depth.add_metric([labels], queue.jobs)
        waited.add_metric([labels], max(0.0, now - queue.oldest) if queue.oldest else 0.0)
    yield depth
    yield waited


def _step_durations(steps: DurationHistogram) -> HistogramMetricFamily:
    buckets = [(str(b), c) for b, c in zip(steps.bounds, steps.le, strict=True)]
    buckets.append(("+Inf", steps.count))
    return HistogramMetricFamily("cyclone_step_duration_seconds", "Step durations",
                                 buckets=buckets, sum_value=steps.total)
