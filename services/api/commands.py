"""What the API writes: run requests and cancel requests, only ever as appended events."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from shared import events as ev
from shared.errors import CycloneError
from shared.events import NewEvent, run_stream
from shared.ports.eventstore import EventStore
from shared.projections.runs import RunView
from shared.runstream import append_to_run, new_run_id

__all__ = ["JobNotAwaitingApproval", "NotAwaitingApproval", "RunNotFound", "decide_job",
           "record_request", "request_cancel", "request_run"]


class RunNotFound(CycloneError):
    pass


async def request_run(
    store: EventStore, *, project: str, trigger: str, branch: str, commit: str,
    pipeline_file: str, pipeline: str, source: str, params: Mapping[str, str] | None = None,
    requested_by: str = "", run_id: str | None = None, source_kind: str = "dir",
    forge_event: Mapping[str, Any] | None = None, approval: str = "",
    secrets_withheld: str = "", includes: Sequence[Mapping[str, Any]] = (),
    overrides: Sequence[str] = (),
) -> str:
    """Record a new run; the event manager plans it from this event alone (``includes``:
    the files its pipeline includes, ``IncludedFile.to_data`` of each; ``overrides``: the
    keys of its pipeline file set for it, ``--set``)."""
    event = ev.RunRequested(
        project=project, trigger=trigger, branch=branch, commit=commit,
        pipeline_file=pipeline_file, pipeline=pipeline, source=source,
        params=dict(params or {}), requested_by=requested_by, source_kind=source_kind,
        forge_event=dict(forge_event or {}), approval=approval,
        secrets_withheld=secrets_withheld, includes=tuple(includes),
        overrides=tuple(overrides),
    )
    return await record_request(store, event, run_id)


async def record_request(store: EventStore, event: ev.RunRequested,
                         run_id: str | None = None) -> str:
    """Start the stream of a new run (``run_id`` or a new one) with ``event``."""
    run_id = run_id or new_run_id()
    await store.append(run_stream(run_id), [NewEvent(event)], expected_seq=0)
    return run_id


class NotAwaitingApproval(CycloneError):
    """The run waits for no approval (any more)."""


async def approve_run(store: EventStore, run_id: str, by: str, secrets: bool) -> RunView:
    """Let a run that waits for approval go on (with its secrets, or without)."""

    def approve(run: RunView | None) -> list[ev.Event]:
        if run is None:
            raise RunNotFound(f"no run {run_id!r}")
        if not run.awaiting_approval or run.done or run.cancel_requested:
            raise NotAwaitingApproval(f"run {run_id!r} waits for no approval ({run.status})")
        return [ev.RunApproved(by=by, secrets=secrets)]

    result = await append_to_run(store, run_id, approve)
    assert result.run is not None
    return result.run


async def request_cancel(store: EventStore, run_id: str, reason: str = "",
                         requested_by: str = "") -> RunView:
    """Ask for a run to be cancelled; a no-op for a run already ended or being cancelled."""

    def cancel(run: RunView | None) -> list[ev.Event]:
        if run is None:
            raise RunNotFound(f"no run {run_id!r}")
        if run.done or run.cancel_requested:
            return []
        return [ev.RunCancelRequested(reason=reason, requested_by=requested_by)]

    result = await append_to_run(store, run_id, cancel)
    assert result.run is not None
    return result.run


class JobNotAwaitingApproval(CycloneError):
    """The job waits for no approval (any more, or never did)."""


async def decide_job(store: EventStore, run_id: str, job: str, by: str, approve: bool,
                     note: str = "") -> RunView:
    """Approve (or reject) a job that waits for approval, once: the first decision wins."""

    def decision(run: RunView | None) -> list[ev.Event]:
        if run is None:
            raise RunNotFound(f"no run {run_id!r}")
        view = run.job(job)
        if view is None:
            raise JobNotAwaitingApproval(f"run {run_id!r} has no job {job!r}")
        if not view.waiting_for_approval or run.done or run.cancel_requested:
            raise JobNotAwaitingApproval(f"job {job!r} of run {run_id!r} waits for no "
                                         f"approval ({view.status})")
        if approve:
            return [ev.JobApproved(job=job, by=by, comment=note)]
        return [ev.JobRejected(job=job, by=by, reason=note)]

    result = await append_to_run(store, run_id, decision)
    assert result.run is not None
    return result.run
