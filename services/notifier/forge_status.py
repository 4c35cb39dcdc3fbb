"""Commit statuses: tell the project's forge when a run starts and how it ended.

``CommitStatusReporter`` consumes ``cyclone.events``. For a run of a project with
forge settings (``ProjectView.forge``) whose commit is known (a full SHA, resolved
by the checkout), ``RunPlanned`` reports ``pending`` (GitLab: ``running``) and the
run's end reports success / failure / error (see ``forges.MOMENTS``), with a link
to the run (``{public_url}/api/v1/runs/{id}``).

Contract:

* ``handle`` never waits on the forge: it reads the store, then sends in a
  background task, so a forge that is down never holds up the consumer nor the run.
* Each send is retried with exponential backoff (``attempts`` in all) on a
  connection error, a timeout, 408, 429 or 5xx; another 4xx is final. The outcome
  is appended to the run's stream: ``CommitStatusReported`` (with the attempt that
  got through) or ``CommitStatusFailed`` (with the last reason).
* Idempotent by (run, state): a state already recorded in the run's stream, or
  being sent by this reporter, is not sent again (a redelivered event posts
  nothing). A ``pending`` not yet through when the run ends is dropped (recorded as
  failed, "superseded") and the end state is sent only after it: the forge never
  ends up showing pending for an ended run. Nor is ``pending`` sent for a run
  that has already ended by the time its ``RunPlanned`` is handled.
* The token is sent in a header only; it never appears in a log line or an event.
* ``close()`` cancels what is still being sent (a status still being retried at
  shutdown is not sent) and closes the HTTP session.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
from yarl import URL

from services.notifier.forges import MOMENTS, Moment, StatusRequest, status_request
from shared import events as ev
from shared.consume import consume
from shared.events import decode, is_run_stream, run_stream
from shared.masking import mask
from shared.ports.bus import TOPIC_EVENTS, Bus, Message
from shared.ports.eventstore import EventStore
from shared.projections.projects import ForgeSettings, ProjectView, fold_project, project_stream
from shared.projections.runs import RunView, run_id_of
from shared.retry import Backoff, retrying
from shared.runstream import RunStates, append_to_run
from shared.secrets import SecretStore
from shared.streamcache import StreamCache
from shared.tasks import cancel_and_wait
from shared.wire import decode_event

__all__ = ["GROUP", "CommitStatusReporter", "SessionFactory"]

log = logging.getLogger(__name__)

GROUP = "notifier-forge-status"  # its own consumer group: it reads every event anyway
SessionFactory = Callable[[], aiohttp.ClientSession]

_FULL_SHA = re.compile(r"^([0-9a-f]{40}|[0-9a-f]{64})$")  # SHA-1 or SHA-256 object names
_RETRYABLE = frozenset({408, 429})
_REASON_MAX = 300


@dataclass
class _Report:
    """One status on its way to the forge."""

    run_id: str
    moment: Moment
    forge: ForgeSettings
    sha: str
    request: StatusRequest
    superseded: asyncio.Event = field(default_factory=asyncio.Event)


class CommitStatusReporter:
    """Sends commit statuses in the background; see the module docstring.

    ``attempts`` sends at most, waiting ``first_delay`` seconds after the first
    failure, doubling up to ``max_delay`` (defaults: 5 attempts over about a minute);
    each request may take ``request_timeout`` seconds.
    """

    def __init__(self, store: EventStore, public_url: str, *,
                 session_factory: SessionFactory | None = None, attempts: int = 5,
                 first_delay: float = 4.0, max_delay: float = 30.0,
                 request_timeout: float = 10.0, runs: RunStates | None = None,
                 projects: StreamCache[ProjectView] | None = None) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.store = store
        # Every run event comes by, and most runs are not a forge project's: the run's
        # and project's views are kept, read on from their last events (``runs`` and
        # ``projects``: views shared with the notifier, which looks at the same moments).
        self.runs = runs or RunStates(store)
        self.projects = projects or StreamCache(store, fold_project)
        self.public_url = public_url.rstrip("/")
        self.attempts = attempts
        self.first_delay = first_delay
        self.max_delay = max_delay
        self._session_factory = session_factory or (lambda: aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=request_timeout)))
        self._session: aiohttp.ClientSession | None = None
        self._sending: dict[str, tuple[_Report, asyncio.Task[None]]] = {}  # by run id
        self.secrets: SecretStore | None = None  # their values are masked in descriptions

    async def run(self, bus: Bus, group: str = GROUP) -> None:
        """Consume ``cyclone.events`` until the bus closes."""
        await consume(bus, TOPIC_EVENTS, group, self.handle)

    async def handle(self, message: Message) -> None:
        recorded = decode_event(message.value)
        moment = MOMENTS.get(recorded.type)
        if moment is None or not is_run_stream(recorded.stream):
            return
        run_id = run_id_of(recorded.stream)
        sending = self._sending.get(run_id)
        if sending is not None and sending[0].moment.state == moment.state:
            return  # a redelivery of what is being sent right now
        report = await self._prepare(run_id, moment)
        if report is None:
            return
        sending = self._sending.get(run_id)  # again: the store was read in between
        if sending is not None and sending[0].moment.state == moment.state:
            return
        before = None
        if sending is not None:
            sending[0].superseded.set()  # a pending still retrying: the end comes after
            before = sending[1]
        task = asyncio.create_task(self._send(report, before),
                                   name=f"commit-status-{run_id}-{moment.state}")
        self._sending[run_id] = (report, task)
        task.add_done_callback(lambda done: self._forget(run_id, done))

    async def idle(self) -> None:
        """Wait until every status being sent is through or given up (for tests)."""
        while self._sending:
            await asyncio.wait([task for _, task in self._sending.values()])

    async def close(self) -> None:
        await cancel_and_wait(*(task for _, task in self._sending.values()))
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- deciding -----------------------------------------------------------------------

    async def _prepare(self, run_id: str, moment: Moment) -> _Report | None:
        """What to send, or ``None``: not a forge project's run, no commit, already done."""
        kept = self.runs.kept(run_id)  # a run's project never changes: no read for it
        if kept is not None and kept.project and await self._forge_of(kept.project) is None:
            return None
        run = await self.runs.load(run_id)
        if run is None or not run.project or run.trigger == "cli":
            return None
        if moment.state == "pending" and run.done:
            return None  # it has ended already: only its end is worth telling
        forge = await self._forge_of(run.project)
        if forge is None:
            return None
        if _recorded(await self.store.read(run_stream(run_id)), moment.state):
            return None
        if not _FULL_SHA.match(run.commit):
            log.info("no commit status: the run's commit is not resolved",
                     extra={"run": run_id, "commit": run.commit})
            return None
        target_url = f"{self.public_url}/api/v1/runs/{run_id}"
        values = await self.secrets.values(run.project) if self.secrets else {}
        request = status_request(forge, run.commit, moment, target_url, run_id,
                                 mask(_reason(run), values.values()))
        return _Report(run_id, moment, forge, run.commit, request)

    async def _forge_of(self, name: str) -> ForgeSettings | None:
        """The forge of project ``name``; None when it has none (or is gone)."""
        project = await self.projects.load(project_stream(name))
        return project.forge if project is not None and not project.deleted else None

    def _forget(self, run_id: str, done: asyncio.Task[None]) -> None:
        sending = self._sending.get(run_id)
        if sending is not None and sending[1] is done:
            del self._sending[run_id]

    # --- sending ------------------------------------------------------------------------

    async def _send(self, report: _Report, before: asyncio.Task[None] | None) -> None:
        if before is not None:
            await asyncio.wait([before])  # the forge must see the states in order
        try:
            await self._record(report, await self._deliver(report))
        except Exception:  # a bug: say so, and let the other statuses go on
            log.exception("commit status: unexpected error", extra=_fields(report))

    async def _deliver(self, report: _Report) -> ev.Event:
        """Send with retries; the event that records the outcome."""
        backoff = Backoff(self.first_delay, self.max_delay)
        reason, tried = "", 0
        while tried < self.attempts:
            if report.superseded.is_set():
                reason = "superseded: the run ended before the forge took this status"
                break
            tried += 1
            reason, retry = await self._attempt(report)
            if not reason:
                log.info("commit status reported", extra=_fields(report, attempt=tried))
                return ev.CommitStatusReported(
                    state=report.moment.state, forge=report.forge.kind, sha=report.sha,
                    target_url=report.request.body["target_url"], attempt=tried,
                    forge_state=report.request.forge_state)
            log.warning("commit status not accepted", extra=_fields(
                report, attempt=tried, error=reason, retry=retry))
            if not retry:
                break
            if tried < self.attempts:
                with contextlib.suppress(TimeoutError):  # woken early when superseded
                    async with asyncio.timeout(backoff.next_delay()):  # wait_for: outbox.py
                        await report.superseded.wait()
        return ev.CommitStatusFailed(state=report.moment.state, forge=report.forge.kind,
                                     sha=report.sha, reason=reason, attempts=tried)

    async def _attempt(self, report: _Report) -> tuple[str, bool]:
        """One POST: ``("", False)`` when accepted, else (why, whether to try again)."""
        if self._session is None:
            self._session = self._session_factory()
        request = report.request
        try:
            async with self._session.post(URL(request.url, encoded=True),
                                          headers=request.headers,
                                          data=json.dumps(request.body)) as response:
                if 200 <= response.status < 300:
                    return "", False
                text = await response.text(errors="replace")
                why = f"HTTP {response.status}: {_message(text)}"
                status = response.status
                return _scrub(why, report.forge.token), status >= 500 or status in _RETRYABLE
        except (aiohttp.ClientError, TimeoutError) as exc:
            why = f"{type(exc).__name__}: {exc}".rstrip(": ")
            return _scrub(why, report.forge.token), True

    async def _record(self, report: _Report, event: ev.Event) -> None:
        # The store may be away a moment (a MongoDB failover): the outcome waits for it.
        await retrying(lambda: append_to_run(self.store, report.run_id, lambda _: [event]),
                       "recording a commit status")


def _recorded(events: list[ev.RecordedEvent], state: str) -> bool:
    """Whether the stream already holds the outcome of sending ``state``."""
    for recorded in events:
        event = decode(recorded)
        if isinstance(event, ev.CommitStatusReported | ev.CommitStatusFailed) \
                and event.state == state:
            return True
    return False


def _reason(run: RunView) -> str:
    return run.reason.splitlines()[0] if run.done and run.reason else ""


def _message(text: str) -> str:
    """The forge's own error message (GitHub, Gitea, GitLab all answer JSON), else text."""
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("message"):
        text = str(body["message"])
    text = " ".join(text.split())
    return text[:_REASON_MAX] or "(no body)"


def _scrub(text: str, token: str) -> str:
    """``text`` without the token: a forge may echo what it was sent."""
    return text.replace(token, "***") if token else text


def _fields(report: _Report, **more: object) -> dict[str, object]:
    return {"run": report.run_id, "state": report.moment.state, "forge": report.forge.kind,
            "repo": report.forge.repo, "sha": report.sha, **more}
