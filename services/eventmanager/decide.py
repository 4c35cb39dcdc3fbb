"""The run state machine as a pure function: given a run's state, what happens next.

``decide(run, source, max_parallel_jobs)`` returns the events to append; it reads
no clock, store or bus, so it is tested on plain values and replays the same way.
``source`` is the pipeline file (name, content) recorded so far: in the request
itself (``cyclone run``, a rerun) or by the checkout (``RunSourceResolved``);
``includes``, the files it includes, recorded with it; the run's ``overrides`` (``--set``)
are applied to it.
``secrets``: the secrets the run's project sees, by name (True: implicit, given to
every step); a ``secrets:`` name not among them makes the file invalid.
Rules:

* a run waits while its project is at its ``max_concurrent_runs`` (``admitted``);
* a run whose pipeline file is not known yet gets its checkout queued, once;
* a run whose file is known is planned (compiled from that content for its project's
  ``policy``: privileged containers and host volumes only in a trusted project,
  resources up to its maximum), or errored when the file is invalid, before any
  container starts;
* a rerun's ``reused`` jobs (``JobReused``, made by ``shared.rerun.reused_jobs`` from
  the earlier run) end with the plan, in the same append: they are never queued, and the
  jobs that need them go on as if they had just finished;
* a pending job whose needs have all ended is queued when its ``when`` matches the
  run's branch and trigger and its ``when.status`` matches its needs' outcome
  (failure when any need failed or was skipped because of a failure), else skipped
  with the reason; at most ``max_parallel_jobs`` jobs of a run are queued or running;
* a job with ``approval:`` whose turn has come waits (``JobAwaitingApproval``, with its
  deadline from ``now``) until it is approved, then is queued; past its deadline it
  is rejected (``approval``);
* a cancel request skips every job not yet started; the run ends cancelled once no
  job is running;
* when every job has ended, the run ends: errored if a job errored, failed if a job
  failed, else succeeded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from services.eventmanager import approval
from shared import events as ev
from shared.errors import PipelineError
from shared.pipeline import load, triggers
from shared.pipeline.include import IncludedFile
from shared.pipeline.plan import Plan
from shared.pipeline.resources import Policy
from shared.projections.runs import JobView, RunView, apply_event
from shared.status import JOB_DONE, JobStatus

__all__ = ["decide"]


PipelineSource = tuple[str, str]  # (file name, content)
UNTRUSTED = Policy(trusted=False)  # a run whose project is not known: nothing extra allowed
_ACTIVE = frozenset({JobStatus.QUEUED, JobStatus.RUNNING})


def decide(run: RunView | None, source: PipelineSource | None,
           max_parallel_jobs: int, admitted: bool = True,
           secrets: Mapping[str, bool] | None = None,
           policy: Policy = UNTRUSTED, now: str = "",
           reused: Sequence[ev.JobReused] = (),
           includes: Sequence[IncludedFile] = ()) -> list[ev.Event]:
    if run is None or run.done:
        return []
    if run.plan is None:
        if run.cancel_requested:
            return [ev.RunCancelled(reason="cancelled before it was planned")]
        if run.awaiting_approval:
            return []  # nothing of it runs, not even its checkout, until approved
        if not admitted:
            return []  # the project is at its max_concurrent_runs: wait
        if source is None:
            return [ev.CheckoutQueued()] if not run.checkout else []
        return _plan(source, includes, run, max_parallel_jobs, secrets, policy, now, reused)
    plan = run.plan
    if run.cancel_requested:
        return _cancel(run)
    events: list[ev.Event] = []
    active = sum(1 for j in run.jobs if j.status in _ACTIVE)
    for job in run.jobs:
        if job.status != JobStatus.PENDING:
            continue
        if active >= max_parallel_jobs and job.name in plan.unconditional:
            continue  # it can neither be queued nor skipped now (a wide run's many jobs)
        if not _needs_done(run, job):
            continue
        verdict = _verdict(run, plan, job)
        if verdict is not None:
            skipped = ev.JobSkipped(job=job.name, reason=verdict)
            events.append(skipped)
            run = _assume(run, [skipped])  # the jobs after it that need it see it ended
        elif plan.job(job.name).approval is not None and not job.approved_by:
            events += approval.wait_or_expire(plan.job(job.name), job, now)
        elif active < max_parallel_jobs:
            events.append(ev.JobQueued(job=job.name))
            active += 1
    if events:
        # Skips can unblock dependents and end the run: decide again on the new state.
        return events + decide(_assume(run, events), source, max_parallel_jobs, admitted,
                               now=now)
    return _finish(run)


def _plan(source: PipelineSource, includes: Sequence[IncludedFile], run: RunView,
          max_parallel_jobs: int, secrets: Mapping[str, bool] | None, policy: Policy,
          now: str, reused: Sequence[ev.JobReused]) -> list[ev.Event]:
    file, text = source
    implicit = [name for name, given in (secrets or {}).items() if given]
    try:
        result = load(text, file, policy, secrets=secrets, implicit=implicit,
                      includes=includes, overrides=run.overrides)
    except PipelineError as exc:
        return [ev.RunErrored(reason=f"invalid pipeline:\n{exc}")]
    skip = triggers.refused(result.plan.triggers, run.trigger, run.forge_event)
    if skip:
        return [ev.RunSkipped(reason=skip)]
    planned = ev.RunPlanned(plan=result.plan, warnings=tuple(str(w) for w in result.warnings))
    # The same file gives the same job names; a name this plan lacks all the same is
    # dropped here rather than folded as an event for an unknown job.
    names = {job.name for job in result.plan.jobs}
    first: list[ev.Event] = [planned, *(e for e in reused if e.job in names)]
    # The first jobs are queued with the plan: one append, one round trip less.
    return [*first, *decide(_assume(run, first), source, max_parallel_jobs, now=now)]


def _cancel(run: RunView) -> list[ev.Event]:
    events: list[ev.Event] = [
        ev.JobSkipped(job=j.name, reason="run cancelled")
        for j in run.jobs if j.status in (JobStatus.PENDING, JobStatus.QUEUED)
    ]
    if not any(j.status == JobStatus.RUNNING for j in run.jobs):
        events.append(ev.RunCancelled(reason="cancelled"))
    return events


def _needs_done(run: RunView, job: JobView) -> bool:
    return all((need := run.job(n)) is not None and need.status in JOB_DONE for n in job.needs)


def _verdict(run: RunView, plan: Plan, job: JobView) -> str | None:
    """Why the job must be skipped, or None when it should run. A reason its own ``when``
    gives starts with "when": a rerun of what failed reuses such a skip (shared.rerun)."""
    spec = plan.job(job.name)
    mismatch = spec.when.mismatch(run.branch, run.when_event)
    if mismatch:
        return mismatch
    failed = [n for n in job.needs if run.job_failed(n)]
    outcome = "failure" if failed else "success"
    if spec.when.runs_on(outcome):
        return spec.when.outputs_match(run.outputs_of(job.needs)) or None
    if failed:
        return f"needs failed: {', '.join(failed)}"
    return "when.status: runs only on failure"


def _finish(run: RunView) -> list[ev.Event]:
    if any(j.status not in JOB_DONE for j in run.jobs):
        return []
    errored = [j.name for j in run.jobs if j.status == JobStatus.ERRORED]
    failed = [j.name for j in run.jobs if j.status in (JobStatus.FAILURE, JobStatus.CANCELLED)]
    if errored:
        return [ev.RunErrored(reason=f"job errored: {', '.join(errored)}")]
    if failed:
        return [ev.RunFailed(reason=f"job failed: {', '.join(failed)}")]
    return [ev.RunSucceeded()]


def _assume(run: RunView, events: list[ev.Event]) -> RunView:
    """The state after ``events``, as the projection will fold them."""
    for event in events:
        run = apply_event(run, event, ts="")
    return run
