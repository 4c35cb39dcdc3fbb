"""Queued jobs offered again when a worker that can run them registers.

Workers read ``cyclone.jobs`` in one consumer group per label set, a pool
(``services/workermanager/service.py``): a pool that cannot run a job moves past it, so a
job no live worker can run stays queued in the store (and says why,
``shared.projections.waiting``). A worker that can run it may register later, in a new
pool whose group starts at the earliest message the bus still holds, which may no longer
be that job's: the embedded bus trims what every live group has committed, Kafka's
retention drops old messages. So when a worker registers (its key appears under
``cyclone/workers/``), the event manager publishes again to ``cyclone.jobs`` the
``JobQueued`` of every job it knows queued with ``runs-on:`` labels that worker has. The
message is the recorded event itself, as if the bus delivered it again: the claim
protocol runs it once, and a worker that finds it started or ended drops it.

Every job the new worker can run is offered, not only those no other live worker could
run: two workers with new label sets that register at once would each see the other as
able to run it, and neither would offer it. The cost is a message per queued labelled job
the worker can run, at each registration (a worker's start, or a lease it lost).

Which jobs: ``QueuedWithLabels``, this replica's index of the queued jobs with labels,
kept from the run states it decides on and the replay at its start. A run handled only by
a replica that has died since is still found by a new pool on Kafka, whose group reads
from the earliest message retained.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from shared import events as ev
from shared.events import decode, run_stream
from shared.ports.bus import TOPIC_JOBS, Bus
from shared.ports.eventstore import EventStore
from shared.projections.runs import RunView
from shared.runstream import RunStates
from shared.status import JobStatus
from shared.wire import encode_event
from shared.workers import WorkerInfo

__all__ = ["QueuedWithLabels", "Reoffers"]

log = logging.getLogger(__name__)

JobKey = tuple[str, str]  # (run id, job name)


class QueuedWithLabels:
    """The queued jobs that ask for labels, as the run states noted say (pure)."""

    def __init__(self) -> None:
        self._labels: dict[JobKey, tuple[str, ...]] = {}

    def note(self, run: RunView) -> None:
        """Take the run's current state: its queued labelled jobs in, the others out."""
        for job in run.jobs:
            labels = run.runs_on(job.name)
            if labels and not run.done and job.status == JobStatus.QUEUED:
                self._labels[(run.id, job.name)] = labels
            else:
                self._labels.pop((run.id, job.name), None)

    def runnable_by(self, worker: WorkerInfo) -> list[JobKey]:
        """The jobs ``worker`` has every label of, oldest run first."""
        return sorted(key for key, labels in self._labels.items() if worker.can_run(labels))

    def __len__(self) -> int:
        return len(self._labels)


class Reoffers:
    def __init__(self, store: EventStore, bus: Bus, runs: RunStates) -> None:
        self.store = store
        self.bus = bus
        self.runs = runs
        self.queued = QueuedWithLabels()

    def note(self, runs: Iterable[RunView]) -> None:
        for run in runs:
            self.queued.note(run)

    async def offer_to(self, workers: Sequence[WorkerInfo]) -> int:
        """Publish again, once each, the queued jobs one of ``workers`` can run; returns
        how many."""
        offered = 0
        for run_id, job in sorted({key for w in workers for key in self.queued.runnable_by(w)}):
            run = await self.runs.load(run_id)
            if run is not None:
                self.queued.note(run)  # it may have started or ended since
            view = run.job(job) if run is not None else None
            if run is None or run.done or view is None or view.status != JobStatus.QUEUED:
                continue
            queued = await self._last_queued(run_id, job)
            if queued is not None:
                await self.bus.publish(TOPIC_JOBS, run_id, encode_event(queued))
                offered += 1
        if offered:
            log.info("queued jobs offered again to new workers",
                     extra={"workers": [w.id for w in workers], "jobs": offered})
        return offered

    async def _last_queued(self, run_id: str, job: str) -> ev.RecordedEvent | None:
        last = None
        for recorded in await self.store.read(run_stream(run_id)):
            if recorded.type == ev.JobQueued.TYPE:
                event = decode(recorded)
                if isinstance(event, ev.JobQueued) and event.job == job:
                    last = recorded
        return last
