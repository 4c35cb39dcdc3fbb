"""Why a run, or a job of it, waits: in words, from its view and its project's other runs.

A run can sit at "requested" or a job at "pending" for minutes, and the status alone
does not say whether it waits for a slot of its project, its checkout, a maintainer, the
jobs it needs or a worker. ``why_waiting`` restates what the event manager decides
(``services/eventmanager/decide.py``, ``admission.py``) as one ``Wait`` per waiting thing,
so the UI (and anyone reading ``GET /api/v1/runs/{id}``) can say it in a sentence.

A pure function over views (themselves folded from the events), no clock and no I/O: the
caller passes the project's unfinished runs and limits, and the live workers
(``shared.workers``) when it knows them: a queued job none of them can run (its ``runs-
on:`` labels, or no worker at all) says so instead of "queued for a worker". Admission
is judged from the read model, as the coordinator's slots would say it: a run holds a
slot from the moment it has started (checkout queued, or planned) until it ends;
unstarted runs go in the order of their ids (which sort by creation time).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from shared.projections.runs import JobView, RunView
from shared.status import JOB_DONE, CheckoutState, JobStatus, Role
from shared.workers import WorkerInfo, describe_workers, label_set

__all__ = ["Wait", "WaitKind", "started", "waits_for_admission", "why_waiting"]


class WaitKind(StrEnum):
    # the run, before it is planned
    APPROVAL = "approval"  # a pull request from a fork: a maintainer approves it or not
    SLOTS = "slots"  # its project's max_concurrent_runs are all held (by ``on``)
    QUEUE = "queue"  # slots are free, but older runs of the project (``on``) go first
    ADMISSION = "admission"  # nothing holds it: the event manager is about to take it up
    CHECKOUT = "checkout"  # a worker fetches the commit and the pipeline file
    PLAN = "plan"  # checked out, about to be planned
    CANCEL = "cancel"  # cancel requested: ends once its running jobs (``on``) stop
    # a job of a planned run
    NEEDS = "needs"  # jobs it needs (``on``) have not ended
    JOB_APPROVAL = "job_approval"  # ``approval:``: a user with ``role`` approves it
    PARALLEL = "parallel"  # the run's max parallel jobs are queued or running (``on``)
    READY = "ready"  # nothing holds it: about to be queued
    WORKER = "worker"  # queued: no worker has taken it yet
    NO_WORKER = "no_worker"  # queued: no live worker has its ``labels`` (or none is live)


@dataclass(frozen=True)
class Wait:
    """One waiting thing (the run when ``job`` is "", else that job) and why."""

    kind: WaitKind
    text: str  # the reason, in words
    job: str = ""
    since: str = ""  # ISO 8601 UTC: when the wait began, when the events tell
    on: tuple[str, ...] = ()  # what it waits on: run ids (slots, queue), job names
    role: str = ""  # who may end it (an approval): that role or a higher one
    deadline: str = ""  # ISO 8601 UTC: when an approval's wait ends rejected
    labels: tuple[str, ...] = ()  # a queued job's ``runs-on:``: what its worker needs

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["on"] = list(self.on)
        data["labels"] = list(self.labels)
        if not self.labels:
            del data["labels"]  # said only of a job whose worker needs labels
        return data


def started(run: RunView) -> bool:
    """Whether the run holds a slot of its project: it has started work (its checkout was
    queued, or it was planned) and holds it until it ends (as ``admission.started``)."""
    return bool(run.checkout) or run.plan is not None


def waits_for_admission(run: RunView) -> bool:
    """Whether the run waits for its project to let it start: only then do its project's
    limit and other runs matter (the caller need not read them otherwise)."""
    return not (run.done or started(run) or run.awaiting_approval or run.cancel_requested)


def why_waiting(run: RunView, others: Iterable[RunView] = (), *, max_concurrent_runs: int = 0,
                max_parallel_jobs: int = 0,
                workers: Sequence[WorkerInfo] | None = None) -> list[Wait]:
    """What waits in ``run`` and why: the run itself until it is planned, then each job
    that is pending or queued. ``others``: the project's unfinished runs (``run`` may be
    among them); ``max_concurrent_runs``: the project's (0: no limit);
    ``max_parallel_jobs``: the event manager's per-run limit (0: not known);
    ``workers``: the live workers (None: not known)."""
    if run.done:
        return []
    if run.cancel_requested:
        return [_cancelling(run)]
    if run.plan is None:
        return [_before_plan(run, others, max_concurrent_runs)]
    return [wait for job in run.jobs
            if (wait := _job_wait(run, job, max_parallel_jobs, workers))]


# --- the run ---------------------------------------------------------------------------


def _cancelling(run: RunView) -> Wait:
    running = tuple(j.name for j in run.jobs if j.status == JobStatus.RUNNING)
    if not running:
        return Wait(WaitKind.CANCEL, "cancel requested: it ends as soon as the event manager "
                                     "sees it")
    return Wait(WaitKind.CANCEL, f"cancel requested: it ends once its running jobs have "
                                 f"stopped ({', '.join(running)})", on=running)


def _before_plan(run: RunView, others: Iterable[RunView], limit: int) -> Wait:
    if run.awaiting_approval:
        return Wait(WaitKind.APPROVAL, f"{run.awaiting_approval}: nothing of it runs until a "
                                       f"maintainer of project {run.project!r} approves it "
                                       "(or rejects it)", since=run.created_at,
                    role=Role.MAINTAINER)
    if run.checkout == CheckoutState.QUEUED:
        return Wait(WaitKind.CHECKOUT, "its checkout (the commit and its pipeline file) is "
                                       f"with the workers{_since(run.checkout_queued_at)}",
                    since=run.checkout_queued_at)
    if run.checkout == CheckoutState.DONE:
        return Wait(WaitKind.PLAN, "checked out: its pipeline is about to be planned")
    if limit > 0:
        return _admission(run, list(others), limit)
    return _unheld(run)


def _admission(run: RunView, others: Sequence[RunView], limit: int) -> Wait:
    """A run of a project with ``max_concurrent_runs``: full slots, or older runs first."""
    mine = [r for r in others if r.id != run.id and r.project == run.project and not r.done]
    holders = tuple(r.id for r in mine if started(r))
    project = repr(run.project)
    if len(holders) >= limit:
        return Wait(WaitKind.SLOTS, f"project {project} runs at most {limit} at once "
                                    f"(max_concurrent_runs), and {_runs(holders)} "
                                    f"{'holds' if len(holders) == 1 else 'hold'} "
                                    f"{'it' if limit == 1 else 'them'}: it starts when one "
                                    "ends", since=run.created_at, on=holders)
    free = limit - len(holders)
    ahead = tuple(r.id for r in mine if r.id < run.id and waits_for_admission(r))
    if len(ahead) >= free:
        return Wait(WaitKind.QUEUE, f"{_runs(ahead)} of project {project}, requested "
                                    f"earlier, {'goes' if len(ahead) == 1 else 'go'} first "
                                    f"({free} of its {limit} slots free)",
                    since=run.created_at, on=ahead)
    return _unheld(run)


def _unheld(run: RunView) -> Wait:
    return Wait(WaitKind.ADMISSION, f"requested{_since(run.created_at, 'at')}: nothing "
                                    "holds it; the event manager is about to start it",
                since=run.created_at)


# --- its jobs --------------------------------------------------------------------------


def _job_wait(run: RunView, job: JobView, max_parallel_jobs: int,
              workers: Sequence[WorkerInfo] | None) -> Wait | None:
    if job.status == JobStatus.QUEUED:
        return _queued(run, job, workers)
    if job.status != JobStatus.PENDING:
        return None
    if job.waiting_for_approval:
        return _job_approval(run, job)
    needed = tuple(n for n in job.needs if not _ended(run, n))
    if needed:
        states = ", ".join(f"{n} ({_status(run, n)})" for n in needed)
        return Wait(WaitKind.NEEDS, f"needs {states}, not ended yet", job=job.name, on=needed)
    active = tuple(j.name for j in run.jobs if j.status in (JobStatus.QUEUED, JobStatus.RUNNING))
    if max_parallel_jobs and len(active) >= max_parallel_jobs:
        return Wait(WaitKind.PARALLEL, f"{len(active)} jobs of the run are queued or running, "
                                       f"the most a run may have at once "
                                       f"(CYCLONE_MAX_PARALLEL_JOBS={max_parallel_jobs}): it "
                                       "is queued when one ends", job=job.name, on=active)
    return Wait(WaitKind.READY, "the jobs it needs have ended: it is about to be queued",
                job=job.name)


def _queued(run: RunView, job: JobView, workers: Sequence[WorkerInfo] | None) -> Wait:
    labels = run.runs_on(job.name)
    if workers is not None and not any(w.can_run(labels) for w in workers):
        if not workers:
            text = "queued, but no worker is live to take it: it runs when one starts"
        else:
            text = (f"no live worker has labels {label_set(labels)} (live: "
                    f"{describe_workers(workers)}): it runs when one with them starts")
        return Wait(WaitKind.NO_WORKER, text, job=job.name, since=job.queued_at,
                    labels=labels)
    again = " (again: the worker that had it was lost)" if job.attempt else ""
    wanted = f" with labels {label_set(labels)}" if labels else ""
    return Wait(WaitKind.WORKER, f"queued for a worker{wanted}{_since(job.queued_at)}{again}",
                job=job.name, since=job.queued_at, labels=labels)


def _job_approval(run: RunView, job: JobView) -> Wait:
    role = Role(job.awaiting_approval)
    who = "a maintainer" if role == Role.MAINTAINER else f"a {role} or a maintainer"
    deadline = _clock(job.approval_deadline, day=True)
    until = f"; rejected unless approved by {deadline}" if deadline else ""
    return Wait(WaitKind.JOB_APPROVAL, f"waits for approval: {who} of project {run.project!r} "
                                       f"may approve or reject it{until}", job=job.name,
                role=role, deadline=job.approval_deadline)


def _ended(run: RunView, name: str) -> bool:
    need = run.job(name)
    return need is not None and need.status in JOB_DONE


def _status(run: RunView, name: str) -> str:
    need = run.job(name)
    return str(need.status) if need is not None else "not in the plan"


# --- words -----------------------------------------------------------------------------


def _runs(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
    return f"run{'s' if len(ids) != 1 else ''} {shown}"


def _since(ts: str, word: str = "since") -> str:
    """`` since HH:MM UTC``; "" when the view has no such time (one stored before it did)."""
    clock = _clock(ts)
    return f" {word} {clock}" if clock else ""


def _clock(ts: str, *, day: bool = False) -> str:
    """``ts`` (ISO 8601) as ``HH:MM UTC`` (``YYYY-MM-DD HH:MM UTC`` with ``day``), "" when
    it is none; the UI has the exact time (``since``, ``deadline``) to show in the reader's
    own zone."""
    try:
        when = datetime.fromisoformat(ts)
    except ValueError:
        return ""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC" if day else "%H:%M UTC")
