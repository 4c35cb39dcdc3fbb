"""The notifier: tells people when a run starts, ends or gets fixed, by email and chat.

It consumes ``cyclone.events`` (consumer group ``notifier``, many messages at once,
in order per run: ``shared.consume``). For ``RunPlanned`` ("started") and each run
end it reads the run and its project, and the rules that apply: the project's
``notify`` setting and the run's pipeline file's ``notify:``
(``shared.pipeline.notify``). Each rule whose ``when`` matches gives one
notification per channel, delivered by ``delivery.Deliverer``: exactly once in
effect, recorded in the run's stream, never blocking the run nor another channel
(see ``delivery`` for the guarantee and its one gap).

``fixed`` and ``changed`` need the previous outcome on the run's branch: the notifier
keeps a ledger per branch (stream ``outcomes-<project>/<branch>``, ``BranchRunEnded``)
of the successful and failed runs in the order their ends were handled. Appends
use the stream's expected seq, so replicas agree on one order.

``cyclone notify test PROJECT`` appends ``NotificationTestRequested`` to a stream of
its own; the notifier that gets it lists the project's channels there
(``NotificationTestStarted``) and records one outcome per channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, Metric

from services.notifier.chat import ChatSender
from services.notifier.delivery import Deliverer, Notification, recorded_keys
from services.notifier.email import EmailSender
from services.notifier.message import (
    TAIL_LINES,
    SendError,
    Summary,
    clean_tail,
    failed_step,
    masked,
    summarize,
)
from shared import events as ev
from shared.config import NotifySettings, SmtpSettings
from shared.consume import consume
from shared.errors import ConcurrencyConflict, StoreError
from shared.events import NewEvent, RecordedEvent, decode, is_run_stream, run_stream
from shared.logging import secret_variable
from shared.metrics import FunctionCollector
from shared.pipeline.notify import Channel, NotifyRule, UnsetVariable, due_reason, outcome_of
from shared.ports.bus import TOPIC_EVENTS, Bus, Message
from shared.ports.coordination import Coordinator
from shared.ports.eventstore import EventStore
from shared.ports.logstore import LogStore
from shared.projections.projects import ProjectView, fold_project, project_stream
from shared.projections.runs import RunView, fold, run_id_of
from shared.runstream import RunStates, append_to_stream
from shared.secrets import SecretStore
from shared.streamcache import StreamCache
from shared.wire import decode_event

__all__ = ["GROUP", "Notifier", "outcomes_stream"]

log = logging.getLogger(__name__)

GROUP = "notifier"
_MOMENTS = {ev.RunPlanned.TYPE: "started", ev.RunSucceeded.TYPE: "ended",
            ev.RunFailed.TYPE: "ended", ev.RunErrored.TYPE: "ended",
            ev.RunCancelled.TYPE: "ended"}  # a skipped run tells nobody anything
LEDGER_TAIL = 8  # ledger entries read to find a run's predecessor (more: the whole ledger;
# each is decoded, and runs mostly end in order: a run's entry goes last)
_TEST_ATTEMPTS = 2  # someone is waiting at the terminal for the answer


def outcomes_stream(project: str, branch: str) -> str:
    return f"outcomes-{project}/{branch}"


@dataclass(frozen=True)
class _Payload:
    summary: Summary
    templates: dict[str, str] = field(default_factory=dict)
    problem: str = ""  # a channel that cannot be sent to (an unset ${VAR})


class Notifier:
    """See the module docstring. ``public_url`` is where users reach the API (links)."""

    def __init__(self, store: EventStore, coord: Coordinator, logs: LogStore, *,
                 public_url: str, settings: NotifySettings, me: str,
                 claim_ttl: float = 10.0, tail_wait_s: float = 5.0,
                 concurrency: int = 32, runs: RunStates | None = None,
                 projects: StreamCache[ProjectView] | None = None) -> None:
        self.store = store
        self.logs = logs
        # Each run comes by twice (planned, ended): its view is read on from the first
        # (``runs`` and ``projects``: views shared with the commit-status reporter).
        self.runs = runs or RunStates(store)
        self.projects = projects or StreamCache(store, fold_project)
        self.public_url = public_url.rstrip("/")
        self.smtp = settings.smtp
        self.email = EmailSender(settings.smtp)
        self.chat = ChatSender()
        self.deliverer = Deliverer(store, coord, self._send, me=me, attempts=settings.attempts,
                                   first_delay=settings.first_delay_s,
                                   max_delay=settings.max_delay_s, claim_ttl=claim_ttl)
        self.tail_wait_s = tail_wait_s
        self.concurrency = concurrency
        self.secrets: SecretStore | None = None  # their values are masked in every message

    async def run(self, bus: Bus, group: str = GROUP) -> None:
        """Consume ``cyclone.events`` until the bus closes."""
        await consume(bus, TOPIC_EVENTS, group, self.handle, concurrency=self.concurrency)

    def collector(self) -> FunctionCollector:
        """``cyclone_notifications_total{outcome="sent"|"failed"}``: what this process
        delivered (a channel given up on counts as failed)."""
        def collect() -> Iterable[Metric]:
            counter = CounterMetricFamily("cyclone_notifications",
                                          "Notifications this process delivered, by outcome",
                                          labels=["outcome"])
            counter.add_metric(["sent"], self.deliverer.sent)
            counter.add_metric(["failed"], self.deliverer.failed)
            yield counter
        return FunctionCollector(collect)

    async def close(self) -> None:
        await self.deliverer.close()
        await self.chat.close()

    async def handle(self, message: Message) -> None:
        recorded = decode_event(message.value)
        if recorded.type == ev.NotificationTestRequested.TYPE:
            await self.test(recorded.stream)
            return
        moment = _MOMENTS.get(recorded.type)
        if moment is not None and is_run_stream(recorded.stream):
            await self.notify_run(run_id_of(recorded.stream), moment)

    # --- runs ---------------------------------------------------------------------------

    async def notify_run(self, run_id: str, moment: str) -> None:
        """Send what the rules say ``moment`` ("started" or "ended") of the run is worth."""
        run = await self.runs.load(run_id)
        if run is None or not run.project or run.done != (moment == "ended"):
            return  # not a project's run; or it has ended already: "started" is stale
        project = await self.projects.load(project_stream(run.project))
        if project is None or project.deleted:
            return
        previous = await self._previous_outcome(run) if moment == "ended" else None
        rules = (*project.notify, *_file_rules(run))
        due = [(rule, reason) for rule in rules
               if (reason := due_reason(rule, moment, run.status, run.branch, previous))]
        if not due:
            return
        done = recorded_keys(await self.store.read(run_stream(run_id)))
        pending = [(rule, reason, channel) for rule, reason in due for channel in rule.channels
                   if _key(run.id, moment, rule, channel) not in done]
        if not pending:
            return
        secrets = _secrets(project, rules, self.smtp)
        if self.secrets is not None:
            secrets.update((await self.secrets.values(run.project)).values())
        tail = await self._log_tail(run, secrets) if moment == "ended" else []
        url = f"{self.public_url}/api/v1/runs/{run.id}"
        notes = []
        for rule, reason, channel in pending:
            key = _key(run.id, moment, rule, channel)
            summary = masked(summarize(run, key=key, moment=moment, reason=reason, url=url,
                                       log_tail=tail), secrets)
            notes.append(_note(run_stream(run.id), key, rule, channel, moment, reason,
                               summary, project))
        await asyncio.gather(*(self.deliverer.deliver(note) for note in notes))

    async def _previous_outcome(self, run: RunView) -> str | None:
        """The outcome of the run before ``run`` in its branch's ledger (adding ``run``).

        Only the ledger's recent end is read (``LEDGER_TAIL`` entries): a branch with
        10,000 ended runs costs what one with ten does. A run whose entry is further
        back than that (redelivered very late) reads the whole ledger."""
        outcome = outcome_of(run.status)
        if outcome not in ("success", "failure"):
            return None  # only "always" can match, and it needs no history
        stream = outcomes_stream(run.project, run.branch)
        # The entry's id is the run's: the store refuses a second one, wherever it is.
        entry = NewEvent(ev.BranchRunEnded(run.id, outcome),
                         id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{stream}/{run.id}")))
        for _ in range(50):  # replicas recording other runs' ends meanwhile: read again
            tail = await self.store.read_last(stream, LEDGER_TAIL)
            ledger = _ledger(tail)
            ids = [e.run_id for e in ledger]
            whole = not tail or tail[0].seq == 1  # the tail is the whole ledger
            if run.id in ids and (ids.index(run.id) or whole):
                return _before(ledger, run.id)
            last = tail[-1].seq if tail else 0
            if run.id not in ids:
                try:
                    await self.store.append(stream, [entry], last)
                    return ledger[-1].outcome if ledger else None
                except ConcurrencyConflict:
                    if await self._last_seq(stream) != last:
                        continue  # another run's entry came first: decide again
            # Recorded further back than the tail (a very late redelivery): read it all.
            return _before(_ledger(await self.store.read(stream)), run.id)
        raise StoreError(f"{stream}: gave up after 50 concurrent-append conflicts")

    async def _last_seq(self, stream: str) -> int:
        last = await self.store.read_last(stream, 1)
        return last[0].seq if last else 0

    async def _log_tail(self, run: RunView, secrets: set[str]) -> list[str]:
        """The last lines of the run's first failed step, cleaned and masked."""
        step = failed_step(run)
        if step is None:
            return []
        with contextlib.suppress(TimeoutError):  # lines still on their way: use what is in
            await asyncio.wait_for(self._logs_stored(run), self.tail_wait_s)
        lines: deque[str] = deque(maxlen=TAIL_LINES)
        async for stored in self.logs.read(run.id):
            if (stored.line.job, stored.line.step) == (step.job, step.step):
                lines.append(stored.line.text)
        return clean_tail(lines, secrets)

    async def _logs_stored(self, run: RunView) -> None:
        while await self.logs.count(run.id) < run.log_lines:  # noqa: ASYNC110
            await asyncio.sleep(0.1)  # polling the store: it has no change feed

    # --- sending ------------------------------------------------------------------------

    async def _send(self, note: Notification) -> None:
        payload = note.payload
        assert isinstance(payload, _Payload)
        if payload.problem:
            raise SendError(payload.problem, retry=False)
        if note.send_to.kind == "email":
            await self.email.send(note.send_to.target, payload.summary, payload.templates)
        else:
            await self.chat.send(note.send_to, payload.summary)

    # --- notification tests ---------------------------------------------------------------

    async def test(self, stream: str) -> None:
        """Send a test message to every channel of the project a test stream names."""
        events = await self.store.read(stream)
        if not events:
            return
        request = decode(events[0])
        if not isinstance(request, ev.NotificationTestRequested):
            return
        project = fold_project(await self.store.read(project_stream(request.project)))
        if project is None or project.deleted:
            project = ProjectView(name=request.project)
        channels = await self._all_channels(project)
        await self._list_test(stream, channels)
        done = recorded_keys(await self.store.read(stream))
        url = f"{self.public_url}/api/v1/projects/{project.name}"
        notes = []
        for rule, channel in channels:
            key = f"{stream}/test/{rule.id}/{channel.id}"
            if key in done:
                continue
            summary = Summary(key=key, moment="test", reason="test", run_id="",
                              project=project.name, status="test", url=url,
                              branch=project.default_branch)
            notes.append(_note(stream, key, rule, channel, "test", "test", summary, project))
        await asyncio.gather(*(self.deliverer.deliver(note, _TEST_ATTEMPTS) for note in notes))

    async def _all_channels(self, project: ProjectView) -> list[tuple[NotifyRule, Channel]]:
        """Each channel once: the project's rules, then its default branch's file's (as
        the latest run that ended there had them)."""
        rules = list(project.notify)
        ledger = await self.store.read(outcomes_stream(project.name, project.default_branch))
        if ledger:
            last = decode(ledger[-1])
            if isinstance(last, ev.BranchRunEnded):
                latest = fold(await self.store.read(run_stream(last.run_id)))
                rules.extend(_file_rules(latest) if latest else ())
        seen: set[str] = set()
        channels = []
        for rule in rules:
            for channel in rule.channels:
                if channel.id not in seen:
                    seen.add(channel.id)
                    channels.append((rule, channel))
        return channels

    async def _list_test(self, stream: str, channels: list[tuple[NotifyRule, Channel]]) -> None:
        listed = [{**channel.to_json(), "rule": rule.id} for rule, channel in channels]

        def start(events: list[RecordedEvent]) -> list[ev.Event]:
            started = any(r.type == ev.NotificationTestStarted.TYPE for r in events)
            return [] if started else [ev.NotificationTestStarted(tuple(listed))]

        await append_to_stream(self.store, stream, start)


def _note(stream: str, key: str, rule: NotifyRule, channel: Channel, moment: str,
          reason: str, summary: Summary, project: ProjectView) -> Notification:
    problem, send_to = "", channel
    try:
        send_to = channel.resolved(project.env)
    except UnsetVariable as exc:
        problem = f"{channel.kind} channel of rule {rule.id}: {exc}"
    payload = _Payload(summary, dict(project.email_templates), problem)
    return Notification(stream=stream, key=key, rule=rule.id, channel=channel,
                        send_to=send_to, moment=moment, reason=reason, payload=payload)


def _ledger(events: list[RecordedEvent]) -> list[ev.BranchRunEnded]:
    return [e for r in events if isinstance(e := decode(r), ev.BranchRunEnded)]


def _before(ledger: list[ev.BranchRunEnded], run_id: str) -> str | None:
    """The outcome of the entry before ``run_id``'s in the whole ledger."""
    ids = [entry.run_id for entry in ledger]
    at = ids.index(run_id)
    return ledger[at - 1].outcome if at else None


def _key(run_id: str, moment: str, rule: NotifyRule, channel: Channel) -> str:
    return f"{run_id}/{moment}/{rule.id}/{channel.id}"


def _file_rules(run: RunView) -> tuple[NotifyRule, ...]:
    return run.plan.notify if run.plan else ()


def _secrets(project: ProjectView, rules: Iterable[NotifyRule], smtp: SmtpSettings) -> set[str]:
    """Every value a notification must not show."""
    values = {smtp.password, project.hook_secret}
    if project.forge is not None:
        values.add(project.forge.token)
    values.update(v for k, v in project.env.items() if secret_variable(k))
    for rule in rules:
        for channel in rule.channels:
            with contextlib.suppress(UnsetVariable):
                values.update(channel.resolved(project.env).secrets())
    values.discard("")
    return values
