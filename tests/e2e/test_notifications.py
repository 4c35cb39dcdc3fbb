"""Notifications from a real ``cyclone up``: a failing push mails every address once and
posts once to each chat channel; the push that fixes it says "fixed" once; a channel
that is down or refuses is recorded and holds up nothing; ``cyclone notify test``.

Real parts: the server process, Docker, a git daemon, an SMTP server (aiosmtpd) and
local HTTP servers that check each chat provider's documented body.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.docker_support import TEST_IMAGE
from tests.e2e.server_support import CycloneServer
from tests.e2e.test_webhooks import SECRET, deliver, ended, github_push
from tests.git_support import GitRepo, GitServer
from tests.notifier.chat_server import SECRET as HOOK_KEY
from tests.notifier.chat_server import TOKENS, ChatServer
from tests.notifier.smtp_server import SmtpServer
from tests.support import eventually

DEPLOY_TOKEN = "dt-9f8e7d6c5b4a3928"  # a project secret the failing step prints
ADDRESSES = ["dev@example.com", "ops@example.com", "lead@example.com"]
CHATS = ("slack", "mattermost", "discord", "webhook")

FAILING = r"""
jobs:
  build:
    image: IMAGE
    secrets: [DEPLOY_TOKEN]
    steps:
      - name: compile
        run:
          - printf '\033[31mred boom\033[0m\n'
          - echo "deploying with $DEPLOY_TOKEN"
          - exit 3
""".replace("IMAGE", TEST_IMAGE)
PASSING = f"""
jobs:
  build:
    image: {TEST_IMAGE}
    steps:
      - name: compile
        run: ["echo all good"]
"""


@pytest.fixture
async def smtp() -> AsyncIterator[SmtpServer]:
    async with SmtpServer() as server:
        yield server


@pytest.fixture
async def chat() -> AsyncIterator[ChatServer]:
    async with ChatServer() as server:
        yield server


@pytest.fixture
def notifying_server(tmp_path: Path, docker_ready: None, smtp: SmtpServer
                     ) -> Iterator[CycloneServer]:
    server = CycloneServer(tmp_path / "cyclone-home")
    server.env.update({"CYCLONE_SMTP_HOST": "127.0.0.1", "CYCLONE_SMTP_PORT": str(smtp.port),
                       "CYCLONE_SMTP_FROM": "ci@cyclone.test", "CYCLONE_NOTIFY_RETRY_S": "0.2",
                       "CYCLONE_NOTIFY_RETRY_MAX_S": "0.5"})
    server.start()
    try:
        yield server
    finally:
        server.stop()


def rules(chat: ChatServer, **extra: Any) -> list[dict[str, Any]]:
    return [{"name": "team", "email": ADDRESSES, "slack": "${SLACK_URL}",
             "mattermost": chat.url("mattermost"), "discord": chat.url("discord"),
             "webhook": {"url": chat.url("webhook"), "secret": HOOK_KEY}, **extra},
            # tells the test that the notifier has handled a run's end, whatever it was
            {"name": "audit", "when": ["always"], "webhook": chat.url("webhook") + "/audit"}]


async def add_project(http: aiohttp.ClientSession, server: CycloneServer, repo: GitRepo,
                      notify: list[dict[str, Any]], chat: ChatServer) -> None:
    body = {"name": "demo", "repo": repo.url, "hook_secret": SECRET,
            "env": {"SLACK_URL": chat.url("slack")},
            "notify": notify}
    async with http.post(f"{server.url}/api/v1/projects", headers=server.headers,
                         json=body) as response:
        assert response.status == 201, await response.text()
        shown = await response.text()
    async with http.put(f"{server.url}/api/v1/projects/demo/secrets/DEPLOY_TOKEN",
                        headers=server.headers, json={"value": DEPLOY_TOKEN}) as response:
        assert response.status == 200, await response.text()
    for kind in ("mattermost", "discord", "webhook"):  # chat URLs carry tokens
        assert TOKENS[kind] not in shown
    assert HOOK_KEY not in shown


async def push(http: aiohttp.ClientSession, server: CycloneServer, repo: GitRepo,
               pipeline: str, delivery: str) -> dict[str, Any]:
    sha = repo.commit({".cyclone.yml": pipeline}, message=f"commit {delivery}")
    status, answer = await deliver(http, server, github_push(repo, "main", sha), delivery)
    assert status == 202, answer
    run: dict[str, Any] = await ended(http, server, answer["runs"][0])
    return run


def audited(chat: ChatServer) -> list[str]:
    """The run ids the "always" rule has been told about."""
    return [r.body["run_id"] for r in chat.of("webhook") if r.path.endswith("/audit")]


def team_posts(chat: ChatServer, kind: str) -> list[Any]:
    return [r for r in chat.of(kind) if not r.path.endswith("/audit")]


async def run_events(http: aiohttp.ClientSession, server: CycloneServer,
                     run_id: str) -> list[dict[str, Any]]:
    async with http.get(f"{server.url}/api/v1/runs/{run_id}/events",
                        headers=server.headers) as response:
        events: list[dict[str, Any]] = (await response.json())["events"]
    return events


async def all_sent(http: aiohttp.ClientSession, server: CycloneServer,
                   run_id: str) -> list[dict[str, Any]]:
    """The run's ``NotificationSent`` records, once there is one per channel of
    ``rules``. The notifier delivers to every channel at once and records each after
    its delivery: only then have the SMTP and chat servers surely got all of them (the
    audit hook, or the mails, can arrive before a chat post)."""
    expected = len(ADDRESSES) + len(CHATS) + 1  # + the audit webhook

    async def recorded() -> list[dict[str, Any]] | None:
        events = await run_events(http, server, run_id)
        sent = [e for e in events if e["type"] == "NotificationSent"]
        return sent if len(sent) >= expected else None

    found: list[dict[str, Any]] = await eventually(
        recorded, what=f"{expected} notifications of {run_id} recorded")
    assert len(found) == expected, found
    return found


async def test_a_failure_mails_everyone_once_and_the_fix_says_fixed_once(
    notifying_server: CycloneServer, git_server: GitServer, smtp: SmtpServer, chat: ChatServer,
) -> None:
    server, repo = notifying_server, git_server.create("demo")
    async with aiohttp.ClientSession() as http:
        await add_project(http, server, repo, rules(chat), chat)
        failed = await push(http, server, repo, FAILING, "d-1")
        assert failed["status"] == "failure"
        await all_sent(http, server, failed["id"])
        assert audited(chat) == [failed["id"]]
        assert sorted(r.rcpt_tos[0] for r in smtp.received) == sorted(ADDRESSES)
        assert all(len(r.rcpt_tos) == 1 for r in smtp.received)
        for mail in (r.message for r in smtp.received):
            assert "demo" in mail["Subject"] and "failed" in mail["Subject"]
            plain, rich = mail.get_body(("plain",)), mail.get_body(("html",))
            assert plain is not None and rich is not None
            text, html = plain.get_content(), rich.get_content()
            for part in (text, html):
                assert "red boom" in part  # the failing step's log tail
                assert "\x1b" not in part  # without its colour codes
                assert failed["commit"][:10] in part and "build" in part
                assert f"/api/v1/runs/{failed['id']}" in part
            raw = mail.as_string()
            assert DEPLOY_TOKEN not in raw and "deploying with ***" in text
        for kind in CHATS:
            [post] = team_posts(chat, kind)
            assert failed["id"] in str(post.body), (kind, post.body)
        assert chat.problems == []

        fixed = await push(http, server, repo, PASSING, "d-2")
        assert fixed["status"] == "success"
        await all_sent(http, server, fixed["id"])
        assert audited(chat) == [failed["id"], fixed["id"]]
        assert len(smtp.received) == 6
        for mail in (r.message for r in smtp.received[3:]):
            assert "fixed" in mail["Subject"]
        for kind in CHATS:
            assert len(team_posts(chat, kind)) == 2, kind
        [hook] = [p for p in team_posts(chat, "webhook") if p.body["run_id"] == fixed["id"]]
        assert hook.body["event"] == "run.fixed"

        again = await push(http, server, repo, PASSING + "\n# again\n", "d-3")
        await eventually(lambda: len(audited(chat)) == 3, what="the third run audited")
        assert again["status"] == "success"
        assert len(smtp.received) == 6  # a success after a success: nobody is told
        assert all(len(team_posts(chat, kind)) == 2 for kind in CHATS)
        sent = 2 * (len(ADDRESSES) + len(CHATS)) + 3  # + the audit hook, once per run

        async def counted() -> bool:
            async with http.get(f"{server.url}/metrics") as response:
                metrics = await response.text()
            return f'cyclone_notifications_total{{outcome="sent"}} {sent}.0' in metrics

        await eventually(counted, what=f"{sent} notifications counted as sent")


async def test_channels_that_are_down_or_refuse_are_recorded_and_hold_up_nothing(
    notifying_server: CycloneServer, git_server: GitServer, smtp: SmtpServer, chat: ChatServer,
) -> None:
    server, repo = notifying_server, git_server.create("demo")
    chat.script("discord", [404])  # a deleted Discord webhook: refused for good
    chat.script("slack", [503, 503])  # Slack has a bad minute, then takes it
    smtp.rcpt_replies.append("550 5.1.1 no such user")  # the first address is refused
    async with aiohttp.ClientSession() as http:
        await add_project(http, server, repo, rules(chat), chat)
        failed = await push(http, server, repo, FAILING, "d-1")

        async def outcomes() -> dict[str, dict[str, Any]] | None:
            events = await run_events(http, server, failed["id"])
            found = {e["data"]["channel"]: e for e in events
                     if e["type"] in ("NotificationSent", "NotificationFailed")}
            return found if len(found) == len(ADDRESSES) + len(CHATS) + 1 else None

        found = await eventually(outcomes, what="an outcome recorded for every channel")
        assert audited(chat) == [failed["id"]]
    discord = next(e for c, e in found.items() if c.startswith("discord:"))
    assert discord["type"] == "NotificationFailed" and "404" in discord["data"]["error"]
    assert TOKENS["discord"] not in str(discord)
    slack = next(e for c, e in found.items() if c.startswith("slack:"))
    assert (slack["type"], slack["data"]["attempt"]) == ("NotificationSent", 3)
    mails = [e for c, e in found.items() if c.startswith("email:")]
    assert sorted(e["type"] for e in mails) == ["NotificationFailed"] + ["NotificationSent"] * 2
    assert len(smtp.received) == 2
    assert len(team_posts(chat, "slack")) == 1  # the two 503s were not taken


def notify_test(server: CycloneServer, project: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cyclone.cli", "notify", "test", project],
                          env=server.env, capture_output=True, text=True, timeout=120)


async def test_notify_test_messages_every_channel_and_reports_each(
    notifying_server: CycloneServer, git_server: GitServer, smtp: SmtpServer, chat: ChatServer,
) -> None:
    server, repo = notifying_server, git_server.create("demo")
    async with aiohttp.ClientSession() as http:
        await add_project(http, server, repo, rules(chat), chat)
    done = await asyncio.to_thread(notify_test, server, "demo")
    assert done.returncode == 0, done.stdout + done.stderr
    oks = [line for line in done.stdout.splitlines() if line.startswith("ok")]
    assert len(oks) == len(ADDRESSES) + len(CHATS) + 1, done.stdout
    assert sorted(r.rcpt_tos[0] for r in smtp.received) == sorted(ADDRESSES)
    assert all("test" in r.message["Subject"] for r in smtp.received)
    assert chat.problems == []
    for kind in ("mattermost", "discord"):
        assert TOKENS[kind] not in done.stdout

    chat.script("discord", [404])
    failing = await asyncio.to_thread(notify_test, server, "demo")
    assert failing.returncode == 1
    [line] = [x for x in failing.stdout.splitlines() if "FAILED" in x]
    assert "discord" in line and "404" in line
