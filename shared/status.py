"""The statuses of runs, jobs and steps: what the state machine moves between.

``StrEnum`` members are their own values ("running" == ``JobStatus.RUNNING``), so events,
views and the API's JSON carry the same strings as ever, while code names a status by
its member and mypy catches a misspelt one.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["JOB_DONE", "JOB_FAILED", "RUN_DONE", "CheckoutState", "JobStatus", "Role",
           "RunStatus", "StepStatus"]


class RunStatus(StrEnum):
    REQUESTED = "requested"  # waiting: for admission, its checkout, its plan
    RUNNING = "running"  # planned: its jobs run
    SUCCESS = "success"
    FAILURE = "failure"
    CANCELLED = "cancelled"
    ERRORED = "errored"
    SKIPPED = "skipped"  # the pipeline's ``on:`` rules start nothing for its trigger


class JobStatus(StrEnum):
    PENDING = "pending"  # its needs have not ended yet, or the run is at its parallel limit
    QUEUED = "queued"  # for a worker
    RUNNING = "running"
    SUCCESS = "success"
    FAILURE = "failure"
    CANCELLED = "cancelled"
    ERRORED = "errored"
    SKIPPED = "skipped"


class StepStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCESS = "success"
    FAILURE = "failure"
    TIMEOUT = "timeout"  # the step's own timeout (the job's timeout fails the job)
    CANCELLED = "cancelled"
    ERRORED = "errored"
    SKIPPED = "skipped"


class CheckoutState(StrEnum):
    NONE = ""  # not needed: the request carried the pipeline file
    QUEUED = "queued"
    DONE = "done"


class Role(StrEnum):
    """A user's role in a project, each one allowing what the one before it does and more
    (``Role.rank``). Global ``admin`` is a flag of the user, not a project role."""

    VIEWER = "viewer"  # reads the project and its runs and logs
    DEVELOPER = "developer"  # ... triggers, cancels and reruns its runs
    MAINTAINER = "maintainer"  # ... changes its settings and secrets, approves runs

    @property
    def rank(self) -> int:
        return _ROLE_ORDER.index(self)


_ROLE_ORDER = (Role.VIEWER, Role.DEVELOPER, Role.MAINTAINER)


RUN_DONE = frozenset({RunStatus.SUCCESS, RunStatus.FAILURE, RunStatus.CANCELLED,
                      RunStatus.ERRORED, RunStatus.SKIPPED})
JOB_DONE = frozenset({JobStatus.SUCCESS, JobStatus.FAILURE, JobStatus.CANCELLED,
                      JobStatus.ERRORED, JobStatus.SKIPPED})
JOB_FAILED = frozenset({JobStatus.FAILURE, JobStatus.CANCELLED, JobStatus.ERRORED})
