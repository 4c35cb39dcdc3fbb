"""The API's Prometheus metrics, computed at scrape time from its read model."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from services.api.readmodel import RunsReadModel
from shared.metrics import FunctionCollector
from shared.projections.runs import RUN_DONE

__all__ = ["api_registry"]

_BUCKETS = (0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)
_STATUSES = ("requested", "running", *sorted(RUN_DONE))


def api_registry(readmodel: RunsReadModel, events_appended: Callable[[], int]) -> CollectorRegistry:
    registry = CollectorRegistry()

    def collect() -> Iterable[Metric]:
        runs = list(readmodel.runs.values())
        by_status = Counter(r.status for r in runs)
        gauge = GaugeMetricFamily("cyclone_runs", "Runs by status", labels=["status"])
        for status in _STATUSES:
            gauge.add_metric([status], by_status.get(status, 0))
        yield gauge
        queued = sum(1 for r in runs for j in r.jobs if j.status == "queued")
        yield GaugeMetricFamily("cyclone_jobs_queued", "Jobs queued, not yet started",
                                value=queued)
        yield _step_durations([s.duration_s for r in runs for j in r.jobs for s in j.steps
                               if s.duration_s is not None])
        yield CounterMetricFamily("cyclone_events_appended", "Events appended by this process",
                                  value=events_appended())

    registry.register(FunctionCollector(collect))
    return registry


def _step_durations(durations: list[float]) -> HistogramMetricFamily:
    counts = [sum(1 for d in durations if d <= bound) for bound in _BUCKETS]
    buckets = [(str(b), c) for b, c in zip(_BUCKETS, counts, strict=True)]
    buckets.append(("+Inf", len(durations)))
    return HistogramMetricFamily("cyclone_step_duration_seconds", "Step durations",
                                 buckets=buckets, sum_value=sum(durations))
