"""The notifier's decisions, against a real SMTP server and chat endpoints: which run
moments notify whom (started, failure, fixed, changed, always, branches), rules from
the project and the pipeline file, an unset ``${VAR}``, template overrides,
redeliveries and skipped runs.

Real parts: SQLite event store, file log store, in-memory coordinator, aiosmtpd,
the chat server that checks each provider's documented body.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from services.notifier.service import Notifier
from shared import events as ev
from shared.adapters.coordination.memory import MemoryCoordinator
from shared.adapters.eventstore.sqlite import SqliteEventStore
from shared.adapters.logstore.files import FileLogStore
from shared.config import NotifySettings, SmtpSettings
from shared.events import NewEvent, RecordedEvent, decode, run_stream
from shared.pipeline.compile import notify_rules
from shared.pipeline.notify import Channel, NotifyRule
from shared.pipeline.plan import JobSpec, Plan, StepSpec
from shared.pipeline.schema import NotifyRuleModel
from shared.ports.bus import TOPIC_EVENTS, Message
from shared.projections.projects import project_stream
from shared.wire import encode_event
from tests.notifier.chat_server import SECRET, ChatServer
from tests.notifier.smtp_server import SmtpServer

_runs = itertools.count(1)
_offsets = itertools.count(1)


@dataclass
class World:
    store: SqliteEventStore
    notifier: Notifier
    smtp: SmtpServer
    chat: ChatServer

    async def project(self, rules: list[dict[str, Any]], **fields: Any) -> None:
        """Register project "demo" with ``rules`` as its ``notify`` setting (as the API
        takes them)."""
        compiled = notify_rules([NotifyRuleModel.model_validate(r) for r in rules], "project")
        await self.store.append(project_stream("demo"), [NewEvent(ev.ProjectRegistered(
            name="demo", repo="git://x", notify=tuple(r.to_data() for r in compiled), **fields))], 0)

    async def run(self, end: ev.Event | None, branch: str = "main",
                  file_rules: tuple[NotifyRule, ...] = ()) -> str:
        """A run of ``branch`` planned (and ended by ``end``), each event handed to the
        notifier as the bus would; returns the run id."""
        run_id = f"run{next(_runs):04d}"
        plan = Plan(".cyclone.yml", (JobSpec(name="build", image="alpine",
                                             steps=(StepSpec(name="make", image="alpine"),)),),
                    notify=file_rules)
        await self.append(run_id, ev.RunRequested(
            project="demo", trigger="push", branch=branch, commit=branch,
            pipeline_file=".cyclone.yml", pipeline="", source="git://x", source_kind="git"))
        await self.append(run_id, ev.RunSourceResolved(
            commit="a" * 40, branch=branch, pipeline_file=".cyclone.yml", pipeline=""))
        await self.deliver(*await self.append(run_id, ev.RunPlanned(plan=plan)))
        if end is not None:
            await self.deliver(*await self.append(run_id, end))
        return run_id

    async def append(self, run_id: str, event: ev.Event) -> list[RecordedEvent]:
        stream = run_stream(run_id)
        return await self.store.append(stream, [NewEvent(event)],
                                       len(await self.store.read(stream)))

    async def deliver(self, *recorded: RecordedEvent) -> None:
        for r in recorded:
            await self.notifier.handle(Message(TOPIC_EVENTS, r.stream, encode_event(r), 0,
                                               next(_offsets)))

    async def outcomes(self, run_id: str) -> list[ev.NotificationSent | ev.NotificationFailed]:
        return [e for r in await self.store.read(run_stream(run_id))
                if isinstance(e := decode(r), ev.NotificationSent | ev.NotificationFailed)]

    def mails(self) -> list[tuple[str, str]]:
        """(address, subject) of every mail received."""
        return [(r.rcpt_tos[0], str(r.message["Subject"])) for r in self.smtp.received]


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    store = await SqliteEventStore.open(tmp_path / "events.db")
    logs = FileLogStore(tmp_path / "logs")
    coord = MemoryCoordinator()
    async with SmtpServer() as smtp, ChatServer() as chat:
        settings = NotifySettings(SmtpSettings(host="127.0.0.1", port=smtp.port),
                                  attempts=2, first_delay_s=0.01, max_delay_s=0.02)
        notifier = Notifier(store, coord, logs, public_url="https://ci.example.org",
                            settings=settings, me="n1", tail_wait_s=0.5)
        yield World(store, notifier, smtp, chat)
        await notifier.close()
    await coord.close()
    await logs.close()
    await store.close()


FAILED = ev.RunFailed(reason="job build failed")
OK = ev.RunSucceeded()


async def test_started_is_told_when_the_run_is_planned_and_never_for_an_ended_run(
        world: World) -> None:
    await world.project([{"name": "live", "when": ["started"], "email": ["dev@example.com"],
                          "slack": world.chat.url("slack")}])
    run_id = await world.run(None)
    assert [s for _, s in world.mails()] == [f"[Cyclone] demo: run {run_id} started on main"]
    [post] = world.chat.of("slack")
    assert "started" in post.body["text"]

    ended = await world.run(OK)  # its RunPlanned is handed over again after it ended
    await world.deliver(*(await world.store.read(run_stream(ended)))[2:3])
    assert len(world.mails()) == 2  # once, when it was planned; not for the stale copy


async def test_changed_and_fixed_follow_the_branch_history(world: World) -> None:
    await world.project([
        {"name": "changes", "when": ["changed"], "email": ["watch@example.com"]},
        {"name": "default", "email": ["dev@example.com"]},  # failure, fixed
    ])
    first_ok = await world.run(OK)  # a first run has changed nothing
    assert world.mails() == []
    broke = await world.run(FAILED)
    feature = await world.run(FAILED, branch="feature/x")  # another branch's history
    still = await world.run(FAILED)
    fixed = await world.run(OK)
    told = sorted((s.split(" run ")[1], a) for a, s in world.mails())
    assert told == sorted((what, address) for address, what in [
        ("watch@example.com", f"{broke} failed on main"),  # changed
        ("dev@example.com", f"{broke} failed on main"),
        ("dev@example.com", f"{feature} failed on feature/x"),
        ("dev@example.com", f"{still} failed on main"),  # failure again: not "changed"
        ("watch@example.com", f"{fixed} succeeded on main"),
        ("dev@example.com", f"{fixed} was fixed on main"),
    ])
    assert first_ok not in str(told)


async def test_branches_limit_a_rule(world: World) -> None:
    await world.project([{"branches": ["main", "release/*"], "email": ["dev@example.com"]}])
    await world.run(FAILED, branch="feature/x")
    released = await world.run(FAILED, branch="release/1.2")
    assert [s for _, s in world.mails()] == [
        f"[Cyclone] demo: run {released} failed on release/1.2"]


async def test_the_pipeline_files_rules_add_to_the_projects(world: World) -> None:
    await world.project([{"name": "team", "email": ["dev@example.com"]}])
    file_rule = NotifyRule("ops", (Channel("email", "ops@example.com"),
                                   Channel("discord", world.chat.url("discord"))),
                           source="file")
    run_id = await world.run(FAILED, file_rules=(file_rule,))
    assert sorted(a for a, _ in world.mails()) == ["dev@example.com", "ops@example.com"]
    assert len(world.chat.of("discord")) == 1
    rules = sorted({o.rule for o in await world.outcomes(run_id)})
    assert rules == ["file:ops", "project:team"]


async def test_an_unset_variable_fails_its_channel_only_and_says_which(world: World) -> None:
    await world.project([{"email": ["dev@example.com"], "slack": "${SLACK_URL}"}])
    run_id = await world.run(FAILED)
    by_kind = {o.channel.split(":")[0]: o for o in await world.outcomes(run_id)}
    assert isinstance(by_kind["email"], ev.NotificationSent)
    failed = by_kind["slack"]
    assert isinstance(failed, ev.NotificationFailed)
    assert "${SLACK_URL}" in failed.error and failed.attempts == 1
    assert failed.target == "${SLACK_URL}"


async def test_a_projects_templates_replace_the_shipped_ones(world: World) -> None:
    await world.project([{"email": ["dev@example.com"]}],
                        email_templates={"subject": "CI {{ project }}/{{ branch }}: {{ status }}",
                                         "text": "Run {{ run_id }} is {{ status }}.\n"})
    run_id = await world.run(FAILED)
    [mail] = world.smtp.received
    assert mail.message["Subject"] == "CI demo/main: failure"
    plain = mail.message.get_body(("plain",))
    assert plain is not None and plain.get_content().strip() == f"Run {run_id} is failure."
    assert mail.message.get_body(("html",)) is not None  # the shipped HTML part still


async def test_a_redelivered_end_sends_nothing_again(world: World) -> None:
    await world.project([{"email": ["dev@example.com"],
                          "webhook": {"url": world.chat.url("webhook"), "secret": SECRET}}])
    run_id = await world.run(FAILED)
    events = await world.store.read(run_stream(run_id))
    ended = [r for r in events if r.type == ev.RunFailed.TYPE]
    await world.deliver(*ended, *ended)
    assert len(world.smtp.received) == 1 and len(world.chat.of("webhook")) == 1
    assert len(await world.outcomes(run_id)) == 2


async def test_cancelled_runs_tell_only_always_and_skipped_runs_nobody(world: World) -> None:
    await world.project([{"name": "failures", "email": ["dev@example.com"]},
                         {"name": "all", "when": ["always"], "email": ["log@example.com"]}])
    cancelled = await world.run(ev.RunCancelled(reason="cancelled by a user"))
    await world.run(ev.RunSkipped(reason="the on: rules do not start it"))
    assert world.mails() == [("log@example.com",
                              f"[Cyclone] demo: run {cancelled} was cancelled on main")]


async def test_an_smtp_server_that_refuses_then_accepts_gets_the_mail_on_a_retry(
        world: World) -> None:
    await world.project([{"email": ["dev@example.com"]}])
    world.smtp.data_replies.append("451 4.3.0 mailbox busy, try again later")
    run_id = await world.run(FAILED)
    [sent] = await world.outcomes(run_id)
    assert isinstance(sent, ev.NotificationSent) and sent.attempt == 2
    assert [a for a, _ in world.mails()] == ["dev@example.com"]
