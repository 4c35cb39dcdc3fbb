"""The API's Prometheus metrics about runs, from its read model (``RunsReadModel.stats``:
computed at scrape time from views held in this process, refreshed every few seconds
from a shared view store)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from services.api.readmodel import RunsReadModel
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
        yield GaugeMetricFamily("cyclone_jobs_queued", "Jobs queued, not yet started",
                                value=stats.jobs_queued)
        yield _step_durations(stats.steps)
        yield CounterMetricFamily("cyclone_events_appended", "Events appended by this process",
                                  value=events_appended())

    return FunctionCollector(collect)


def _step_durations(steps: DurationHistogram) -> HistogramMetricFamily:
    buckets = [(str(b), c) for b, c in zip(steps.bounds, steps.le, strict=True)]
    buckets.append(("+Inf", steps.count))
    return HistogramMetricFamily("cyclone_step_duration_seconds", "Step durations",
                                 buckets=buckets, sum_value=steps.total)
