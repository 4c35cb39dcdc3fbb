"""Reruns of what failed (``cyclone rerun RUN --failed`` / ``--from JOB``), as pure functions.

A rerun is a new run on the same commit and pipeline content that runs some jobs again
and takes the others' results from the earlier run. Two halves, one for each service:

* ``jobs_to_reuse`` (the api): given the earlier run's view, which jobs keep their result.
  With ``failed``: every job runs again that failed (``JOB_FAILED``), that was skipped
  because something it needs failed, or that never got to run (skipped by a cancel, or
  left pending when its run ended); so does every job that needs one of them,
  transitively. With ``from_job``: that job (a matrix job's name: every expansion of it)
  and everything downstream of it. The rest (jobs that succeeded, or that their ``when``
  skipped) is reused. Refused (``RerunRefused``): a run that has not ended, has no
  plan, has nothing that failed, or whose reused jobs' artifacts retention removed.
* ``reused_jobs`` (the event manager): the ``JobReused`` events that copy those jobs'
  status, outputs and artifacts from the earlier run's view.

What is reused is closed under ``needs``: a reused job's needs are reused too (had one
of them run again, the job would be downstream of it), so reusing them all as the run is
planned leaves no reused job waiting for one that runs.
"""

from __future__ import annotations

from collections.abc import Iterable

from shared import events as ev
from shared.errors import CycloneError
from shared.projections.runs import JobView, RunView
from shared.status import JobStatus

__all__ = ["ArtifactsCollected", "NoPlan", "NothingToRerun", "RerunRefused", "RunNotEnded",
           "UnknownJob", "downstream", "jobs_to_reuse", "reused_jobs"]


class RerunRefused(CycloneError):
    """The earlier run cannot be rerun that way; the message says why."""


class RunNotEnded(RerunRefused):
    pass


class NoPlan(RerunRefused):
    """The run ended before its pipeline was planned: it has no jobs to pick from."""


class NothingToRerun(RerunRefused):
    pass


class UnknownJob(RerunRefused):
    pass


class ArtifactsCollected(RerunRefused):
    """A job to reuse uploaded artifacts that retention has removed since."""


def jobs_to_reuse(run: RunView, *, failed: bool = False, from_job: str = "") -> tuple[str, ...]:
    """The jobs of ``run`` whose results a rerun takes (sorted); raises ``RerunRefused``
    (a subclass saying why) when there is no such rerun. Exactly one of ``failed`` and
    ``from_job`` is given."""
    if not run.done:
        raise RunNotEnded(f"run {run.id!r} has not ended ({run.status}): rerun it once it has")
    if run.plan is None:
        raise NoPlan(f"run {run.id!r} has no jobs: it ended before its pipeline was planned "
                     f"({run.status}); rerun it whole")
    again = downstream(run, _roots(run, failed=failed, from_job=from_job))
    if not again:
        raise NothingToRerun(f"nothing to rerun: no job of run {run.id!r} failed")
    reuse = tuple(sorted(job.name for job in run.jobs if job.name not in again))
    _check_artifacts(run, reuse)
    return reuse


def _roots(run: RunView, *, failed: bool, from_job: str) -> set[str]:
    if failed:
        return {job.name for job in run.jobs if not _passed(run, job)}
    if not from_job:
        raise ValueError("jobs_to_reuse: give failed or from_job")
    named = {job.name for job in run.jobs if _is_named(job.name, from_job)}
    if not named:
        raise UnknownJob(f"run {run.id!r} has no job {from_job!r} "
                         f"(its jobs: {', '.join(job.name for job in run.jobs)})")
    return named


def _passed(run: RunView, job: JobView) -> bool:
    """Succeeded, or skipped by its own ``when`` (decide words that reason "when...": the
    branch or event does not match, or it runs only on failure and nothing failed)."""
    if job.status == JobStatus.SUCCESS:
        return True
    return (job.status == JobStatus.SKIPPED and job.reason.startswith("when")
            and not run.job_failed(job.name))


def _check_artifacts(run: RunView, reuse: tuple[str, ...]) -> None:
    """The jobs that need a reused job get its artifacts: they must still be stored."""
    if "artifacts" not in run.collected:
        return
    lost = sorted({a.job for a in run.artifacts if a.job in reuse})
    if lost:
        raise ArtifactsCollected(f"run {run.id!r}'s artifacts were removed by retention, so "
                                 f"jobs {', '.join(lost)} cannot be reused; rerun it whole")


def _is_named(job: str, name: str) -> bool:
    """``job`` is ``name``, or one expansion of the matrix job ``name`` ("name (k=v)")."""
    return job == name or job.startswith(f"{name} (")


def downstream(run: RunView, roots: Iterable[str]) -> frozenset[str]:
    """``roots`` and every job of ``run`` that needs one of them, transitively."""
    found = set(roots)
    for job in run.jobs:  # in the plan's topological order: needs come first
        if any(need in found for need in job.needs):
            found.add(job.name)
    return frozenset(found)


def reused_jobs(earlier: RunView, names: Iterable[str]) -> list[ev.JobReused]:
    """What a rerun of ``earlier`` records for each job of ``names`` it reuses: the job's
    status, outputs and artifacts there. ``from_run`` is the run where the job really ran
    (``earlier``, or the run ``earlier`` itself took it from), whose logs are the job's.
    A job that did not pass in ``earlier`` (or that it does not have) is left out: it
    runs again."""
    events = []
    for name in names:
        job = earlier.job(name)
        if job is None or job.status not in _REUSABLE:
            continue
        origin = job.reused_from or earlier.id
        artifacts = tuple(
            ev.ArtifactUploaded(job=a.job, name=a.name, digest=a.digest, size=a.size,
                                files=a.files, paths=a.paths).to_data()
            for a in earlier.artifacts if a.job == name)
        events.append(ev.JobReused(job=name, from_run=origin, status=job.status,
                                   outputs=dict(job.outputs), artifacts=artifacts))
    return events


# What a reused job can have ended as (``jobs_to_reuse`` picks only these).
_REUSABLE = frozenset({JobStatus.SUCCESS, JobStatus.SKIPPED})

