"""What a notification says, whatever carries it: ``Summary``, built from a run's view.

Every channel (``email.py``, ``chat.py``) turns a ``Summary`` into its own format and
sends it; a send that does not go through raises ``SendError`` saying why and
whether trying again may help.

A run's failing tests (its JUnit reports: ``shared.projections.tests``) are named, at
most ``MAX_FAILING_TESTS`` of them, with how many more failed.

The log tail is the last lines of the first failed step, with terminal escape
sequences removed and every secret the notifier knows of (channel URLs and keys,
the forge token, the webhook secret, project env values whose names look secret)
replaced by ``***`` - a mail is forwarded and archived, so it must hold none.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from typing import Any

from shared import masking
from shared.email_templates import format_duration
from shared.projections.runs import RunView
from shared.projections.tests import run_tests

__all__ = ["MAX_FAILING_TESTS", "TAIL_LINES", "FailedStep", "JobLine", "SendError", "Summary",
           "clean_tail", "failed_step", "failing_tests", "mask", "masked", "summarize"]

TAIL_LINES = 40
MAX_FAILING_TESTS = 20  # named in a notification; the rest are counted
_ANSI = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[@-Z\\-_])")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")

# Per outcome: how the headline says it, and the colour chat messages use.
_SAYS = {"success": "succeeded", "failure": "failed", "errored": "errored",
         "cancelled": "was cancelled", "running": "started", "test": "sent a test message"}
_COLOURS = {"success": "#2eb886", "failure": "#d40e0d", "errored": "#d40e0d",
            "cancelled": "#808080", "running": "#1d9bf0", "test": "#1d9bf0"}


class SendError(Exception):
    """A channel did not take the message: ``reason`` for the record (secret-free),
    ``retry`` whether the cause may pass (a timeout, a 5xx, an SMTP 4xx)."""

    def __init__(self, reason: str, *, retry: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry = retry


@dataclass(frozen=True)
class JobLine:
    name: str
    status: str
    duration_s: float | None = None
    reason: str = ""


@dataclass(frozen=True)
class FailedStep:
    job: str
    step: str
    status: str
    exit_code: int | None = None


@dataclass(frozen=True)
class Summary:
    """One notification of one run. ``key`` is its idempotency key: email sends it as
    the Message-ID, the generic webhook as ``Idempotency-Key``, so a receiver can drop
    the rare second copy (see the notifier's delivery guarantee)."""

    key: str
    moment: str  # started, ended, test
    reason: str  # the rule's "when" that matched: fixed, failure, ..., or "test"
    run_id: str
    project: str
    status: str  # success failure errored cancelled running (started), test
    url: str  # the run in the API
    branch: str = ""
    commit: str = ""
    author: str = ""
    message: str = ""  # the commit's message, first line
    trigger: str = ""
    detail: str = ""  # why the run ended so, in the event manager's words ("job build failed")
    duration_s: float | None = None
    created_at: str = ""
    finished_at: str = ""
    jobs: tuple[JobLine, ...] = ()
    failed_step: FailedStep | None = None
    log_tail: tuple[str, ...] = ()
    failing_tests: tuple[str, ...] = ()  # test ids (with their job when several reported)
    more_failing_tests: int = 0  # failing tests beyond those named

    @property
    def headline(self) -> str:
        """``"api: run 01J… failed on main"``; fixed runs say so."""
        if self.moment == "test":
            return f"{self.project}: a test notification from Cyclone"
        says = "was fixed" if self.reason == "fixed" else _SAYS.get(self.status, self.status)
        where = f" on {self.branch}" if self.branch else ""
        return f"{self.project}: run {self.run_id} {says}{where}"

    @property
    def colour(self) -> str:
        """``#rrggbb`` for the outcome (green, red, grey, blue while running)."""
        return _COLOURS.get(self.status, "#808080")

    @property
    def short_commit(self) -> str:
        return self.commit[:10]

    @property
    def duration(self) -> str:
        """``"1m 05s"``, ``"12s"``, or ``""`` when unknown."""
        return format_duration(self.duration_s)

    def to_json(self) -> dict[str, Any]:
        """The generic webhook's body (see README, "Notifications")."""
        data = asdict(self)
        data["event"] = f"run.{self.reason}"
        data["headline"] = self.headline
        data["jobs"] = [asdict(job) for job in self.jobs]
        data["log_tail"] = list(self.log_tail)
        data["failing_tests"] = list(self.failing_tests)
        return data


def summarize(run: RunView, *, key: str, moment: str, reason: str, url: str,
              log_tail: Iterable[str] = ()) -> Summary:
    """The summary of ``run`` (pure): ``log_tail`` must already be ``clean_tail``'s."""
    forge = run.forge_event or {}
    named, more = failing_tests(run)
    return Summary(
        key=key, moment=moment, reason=reason, run_id=run.id, project=run.project,
        status="running" if moment == "started" else run.status, url=url,
        branch=run.branch, commit=run.commit, author=str(forge.get("author", "")),
        message=str(forge.get("message", "")).split("\n", 1)[0], trigger=run.trigger,
        detail=run.reason.split("\n", 1)[0] if run.done else "",
        duration_s=run.duration_s, created_at=run.created_at, finished_at=run.finished_at,
        jobs=tuple(JobLine(j.name, j.status, j.duration_s, j.reason) for j in run.jobs),
        failed_step=failed_step(run), log_tail=tuple(log_tail), failing_tests=named,
        more_failing_tests=more)


def failed_step(run: RunView) -> FailedStep | None:
    """The first step (in plan order) that failed, timed out or errored."""
    for job in run.jobs:
        for step in job.steps:
            if step.status in ("failure", "timeout", "errored"):
                return FailedStep(job.name, step.name, step.status, step.exit_code)
    return None


def failing_tests(run: RunView) -> tuple[tuple[str, ...], int]:
    """The first ``MAX_FAILING_TESTS`` failing tests of the run's reports, and how many
    more failed (or errored). A test is named by its id, and by its job too when several
    jobs reported (a matrix runs the same tests in each)."""
    tests = run_tests(run)
    several = len(tests.jobs) > 1
    named = tuple(f"{f.id} ({f.job})" if several else f.id
                  for f in tests.failures[:MAX_FAILING_TESTS])
    return named, max(0, tests.failed + tests.errors - len(named))


def clean_tail(lines: Iterable[str], secrets: Iterable[str], keep: int = TAIL_LINES) -> list[str]:
    """The last ``keep`` lines, without escape sequences or control characters, masked."""
    tail = list(lines)[-keep:]
    values = tuple(secrets)
    return [mask(_CONTROL.sub("", _ANSI.sub("", line.rstrip("\r\n"))), values) for line in tail]


def mask(text: str, secrets: Iterable[str]) -> str:
    """``text`` with each secret (of at least 4 characters, and each line of a multi-line
    one) replaced by ``***``."""
    return masking.mask(text, secrets)


def masked(summary: Summary, secrets: Iterable[str]) -> Summary:
    """``summary`` with every secret masked in what people and commands wrote (the commit
    message and author, the reasons, the log tail, the test names): a mail's subject and
    body, a chat message and a webhook's JSON are all made of it."""
    values = tuple(secrets)
    return replace(
        summary, message=mask(summary.message, values), author=mask(summary.author, values),
        detail=mask(summary.detail, values), branch=mask(summary.branch, values),
        jobs=tuple(replace(job, reason=mask(job.reason, values)) for job in summary.jobs),
        log_tail=tuple(mask(line, values) for line in summary.log_tail),
        failing_tests=tuple(mask(name, values) for name in summary.failing_tests))
