"""Chat notifications reach Slack, Mattermost, Discord and a generic webhook as each
documents its incoming webhooks (checked by ``ChatServer``); a refusal says why and
whether trying again may help, and never shows the webhook's token or secret."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import aiohttp
import pytest

from services.notifier.chat import ChatSender, chat_request
from services.notifier.message import FailedStep, JobLine, SendError, Summary
from shared.pipeline.notify import Channel
from tests.git_support import unused_port
from tests.notifier.chat_server import KINDS, PATHS, SECRET, TOKENS, ChatServer

CHAT = ("slack", "mattermost", "discord")
RUN_URL = "https://ci.example.org/api/v1/runs/01HRUN7"
SHA = "3f786850e387550fdab836ed7e6dc881de23001b"
LAST = "make: *** [all] Error 2"
FAILED = Summary(
    key="01HRUN7/ended/project:team/slack:0a1b2c", moment="ended", reason="failure",
    run_id="01HRUN7", project="api", status="failure", url=RUN_URL, branch="main",
    commit=SHA, author="alice", message="Add the parser", trigger="push", duration_s=65.4,
    created_at="2024-05-01T10:00:00.000000+00:00",
    finished_at="2024-05-01T10:01:05.400000+00:00", detail="job test failed",
    jobs=(JobLine("build", "success", 12.0), JobLine("test", "failure", 50.2, "step unit failed"),
          JobLine("deploy", "skipped", None, "needs failed: test")),
    failed_step=FailedStep("test", "unit", "failure", 2),
    log_tail=(*(f"collecting tests {i}" for i in range(30)), "FAILED test_parse", LAST))
SUCCEEDED = replace(FAILED, status="success", reason="fixed", detail="", failed_step=None,
                    log_tail=(), jobs=tuple(replace(j, status="success", reason="")
                                            for j in FAILED.jobs))
STARTED = replace(FAILED, moment="started", reason="started", status="running", detail="",
                  duration_s=None, finished_at="", failed_step=None, log_tail=(),
                  jobs=tuple(JobLine(j.name, "queued") for j in FAILED.jobs))
TEST = Summary(key="test/api/1", moment="test", reason="test", run_id="", project="api",
               status="test", url="https://ci.example.org/api/v1/projects/api")


def everything(value: Any) -> str:
    """Every string (and number) of a JSON body, joined: what a reader could see."""
    if isinstance(value, dict):
        return "\n".join(everything(v) for v in value.values())
    if isinstance(value, list):
        return "\n".join(everything(v) for v in value)
    return str(value)


def colour_of(kind: str, body: dict[str, Any]) -> str:
    if kind == "discord":
        return f"#{body['embeds'][0]['color']:06x}"
    return str(body["attachments"][0]["color"])


def body_of(kind: str, summary: Summary) -> dict[str, Any]:
    request = chat_request(Channel(kind, "https://chat.example.org/hooks/x"), summary)
    parsed: dict[str, Any] = json.loads(request.body)
    return parsed


@pytest.fixture
async def server() -> AsyncIterator[ChatServer]:
    async with ChatServer() as started:
        yield started


@pytest.fixture
async def sender() -> AsyncIterator[ChatSender]:
    made = ChatSender(request_timeout=5.0)
    yield made
    await made.close()


async def refusal(sender: ChatSender, channel: Channel, summary: Summary = FAILED) -> SendError:
    with pytest.raises(SendError) as caught:
        await sender.send(channel, summary)
    return caught.value


@pytest.mark.parametrize("kind", CHAT)
async def test_a_failure_reaches_each_chat_with_its_link_colour_jobs_and_log_tail(
        server: ChatServer, sender: ChatSender, kind: str) -> None:
    await sender.send(server.channel(kind), FAILED)

    assert server.problems == []
    [got] = server.of(kind)
    text = everything(got.body)
    for expected in (FAILED.headline, RUN_URL, "job test failed", "3f786850e3", "alice",
                     "1m 05s", "Add the parser", "build", "deploy", "step unit failed",
                     "exit 2", "FAILED test_parse", LAST):
        assert expected in text, expected
    assert colour_of(kind, got.body) == "#d40e0d"


@pytest.mark.parametrize("kind", CHAT)
@pytest.mark.parametrize(("summary", "says"), [
    (SUCCEEDED, "api: run 01HRUN7 was fixed on main"),
    (STARTED, "api: run 01HRUN7 started on main"),
    (TEST, "api: a test notification from Cyclone"),
], ids=["fixed", "started", "test"])
async def test_fixed_started_and_test_messages_are_accepted_and_read_sensibly(
        server: ChatServer, sender: ChatSender, kind: str, summary: Summary, says: str) -> None:
    await sender.send(server.channel(kind), summary)

    assert server.problems == []
    text = everything(server.of(kind)[0].body)
    assert says in text
    assert "Failed step" not in text and LAST not in text
    if summary is TEST:
        assert "This is a test" in text
    else:
        assert RUN_URL in text
        assert ("⏳ queued" if summary is STARTED else "✅ success") in text


@pytest.mark.parametrize("kind", CHAT)
def test_failure_and_success_have_different_colours(kind: str) -> None:
    failed, fixed, started = (colour_of(kind, body_of(kind, s))
                              for s in (FAILED, SUCCEEDED, STARTED))
    assert failed == "#d40e0d"
    assert fixed == "#2eb886"
    assert started not in (failed, fixed)


async def test_the_generic_webhook_is_the_summary_signed_with_its_key(
        server: ChatServer, sender: ChatSender) -> None:
    await sender.send(server.channel("webhook"), FAILED)

    assert server.problems == []
    [got] = server.of("webhook")
    expected = hmac.new(SECRET.encode(), got.raw, hashlib.sha256).hexdigest()
    assert got.headers["X-Cyclone-Signature-256"] == f"sha256={expected}"
    assert got.headers["Idempotency-Key"] == FAILED.key
    assert got.headers["X-Cyclone-Event"] == "run.failure"
    assert got.headers["User-Agent"] == "Cyclone-CI"
    assert got.body == json.loads(json.dumps(FAILED.to_json()))


async def test_the_generic_webhook_without_a_secret_is_unsigned(sender: ChatSender) -> None:
    async with ChatServer(secret="") as server:
        await sender.send(Channel("webhook", server.url("webhook")), SUCCEEDED)
        assert server.problems == []
        [got] = server.of("webhook")
        assert "X-Cyclone-Signature-256" not in got.headers
        assert got.headers["Idempotency-Key"] == SUCCEEDED.key
        assert got.headers["X-Cyclone-Event"] == "run.fixed"


async def test_a_second_generic_channel_under_the_receivers_path_may_be_unsigned(
        server: ChatServer, sender: ChatSender) -> None:
    await sender.send(Channel("webhook", server.url("webhook") + "/audit"), STARTED)

    assert server.problems == []
    [got] = server.of("webhook")
    assert got.path == PATHS["webhook"] + "/audit"
    assert got.headers["X-Cyclone-Event"] == "run.started"
    assert "X-Cyclone-Signature-256" not in got.headers


async def test_a_body_signed_with_another_key_is_refused_for_good(
        server: ChatServer, sender: ChatSender) -> None:
    channel = Channel("webhook", server.url("webhook"), secret="not-the-receivers-key")
    error = await refusal(sender, channel)

    assert not error.retry
    assert error.reason.startswith("HTTP 422")
    assert server.problems == ["webhook: X-Cyclone-Signature-256 does not match the body"]
    assert server.of("webhook") == []


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("status", [503, 429])
async def test_a_busy_or_failing_receiver_may_pass_so_it_is_retried(
        server: ChatServer, sender: ChatSender, kind: str, status: int) -> None:
    server.script(kind, [status])
    error = await refusal(sender, server.channel(kind))

    assert error.retry
    assert error.reason.startswith(f"HTTP {status}")
    if status == 429:
        assert "retry after" in error.reason
    assert server.of(kind) == []
    await sender.send(server.channel(kind), FAILED)  # the script is used up: accepted
    assert len(server.of(kind)) == 1
    assert len(server.attempts) == 2
    assert server.problems == []


@pytest.mark.parametrize(("kind", "status", "says"), [
    ("slack", 400, "invalid_payload"),
    ("slack", 410, "channel_is_archived"),
    ("mattermost", 400, "Unable to parse incoming data"),
    ("discord", 400, "Invalid Form Body (embeds.0.title: Must be 256 or fewer in length.)"),
    ("discord", 404, "Unknown Webhook"),
    ("webhook", 400, "receiver says 400"),
])
async def test_a_refusal_is_final_and_says_the_providers_message(
        server: ChatServer, sender: ChatSender, kind: str, status: int, says: str) -> None:
    server.script(kind, [status])
    error = await refusal(sender, server.channel(kind))

    assert not error.retry
    assert error.reason == f"HTTP {status}: {says}"


async def test_an_unknown_slack_hook_is_final(server: ChatServer, sender: ChatSender) -> None:
    wrong = "W" * 24
    error = await refusal(sender, Channel("slack", f"{server.base}/slack/services/T1/B1/{wrong}"))

    assert not error.retry
    assert error.reason == "HTTP 404: no_service"


async def test_a_closed_port_may_pass_later(sender: ChatSender) -> None:
    url = f"http://127.0.0.1:{unused_port()}{PATHS['slack']}"
    error = await refusal(sender, Channel("slack", url))

    assert error.retry
    assert TOKENS["slack"] not in error.reason


async def test_an_answer_that_does_not_come_in_time_may_pass(server: ChatServer) -> None:
    server.hold = asyncio.Event()
    impatient = ChatSender(request_timeout=0.3)
    try:
        error = await refusal(impatient, server.channel("discord"))
    finally:
        await impatient.close()
    assert error.retry
    assert error.reason == "no answer within 0.3s"


async def test_no_reason_shows_the_webhook_url_its_token_or_the_secret(
        server: ChatServer, sender: ChatSender) -> None:
    reasons = []
    for kind in KINDS:  # receivers that echo the path (and the key) they were sent
        server.script(kind, [401])
        reasons.append((await refusal(sender, server.channel(kind))).reason)
    assert all("***" in reason for reason in reasons)  # the echo was there, and masked
    for kind in KINDS:  # unreachable
        url = f"http://127.0.0.1:{unused_port()}{PATHS[kind]}"
        reasons.append((await refusal(sender, Channel(kind, url, secret=SECRET))).reason)
    reasons.append((await refusal(sender, Channel("slack", f"ftp://x{PATHS['slack']}"))).reason)

    assert reasons[-1] == "the channel's URL is not an http(s) URL"
    for reason in reasons:
        assert len(reason) <= 300
        for secret in (*TOKENS.values(), *PATHS.values(), SECRET):
            assert secret not in reason, reason
    request = chat_request(server.channel("slack"), FAILED)
    assert TOKENS["slack"] not in repr(request)


def long_summary() -> Summary:
    """200 lines of 400 characters of log and 40 jobs with long names: over every limit."""
    jobs = tuple(JobLine(f"job-{i:02d}-" + "n" * 300, "failure" if i == 35 else "success",
                         float(i), "step boom failed: " + "r" * 300 if i == 35 else "")
                 for i in range(40))
    tail = (*(f"line {i}: " + "x" * 400 for i in range(199)), f"{LAST} " + "y" * 400)
    return replace(FAILED, jobs=jobs, log_tail=tail, message="m" * 5000, author="a" * 500)


@pytest.mark.parametrize("kind", CHAT)
async def test_long_log_tails_and_many_jobs_are_cut_to_each_limit(
        server: ChatServer, sender: ChatSender, kind: str) -> None:
    await sender.send(server.channel(kind), long_summary())

    assert server.problems == []  # the server checks each documented limit
    text = everything(server.of(kind)[0].body)
    assert LAST in text  # the end of the log: what explains the failure
    assert "line 198: xxx" in text
    assert "line 0: " not in text and "earlier lines" in text
    assert "job-35-" in text  # the failed job is shown, though beyond the limit
    assert "more" in text


@pytest.mark.parametrize("kind", CHAT)
async def test_user_text_can_neither_ping_everyone_nor_break_the_markup(
        server: ChatServer, sender: ChatSender, kind: str) -> None:
    tricky = replace(FAILED, branch="feat/<b>&c", author="<!channel> @everyone",
                     message="@channel look ``` here", project="api<x>",
                     log_tail=("<!here> & ```", "@all done"))
    await sender.send(server.channel(kind), tricky)

    assert server.problems == []  # escaping, mentions and code fences are checked
    text = everything(server.of(kind)[0].body)
    assert ("&lt;!channel&gt;" if kind == "slack" else "<!channel>") in text


async def test_the_checking_server_refuses_what_the_docs_forbid(server: ChatServer) -> None:
    broken = {
        "slack": {"text": "a < b", "attachments": [{"color": "red", "blocks": [
            {"type": "section", "text": {"type": "markdown", "text": "x" * 3001}}]}]},
        "mattermost": {"attachments": [{"color": "#fff", "text": "```open"}]},
        "discord": {"username": "Discord bot", "embeds": [{
            "color": "#d40e0d", "title": "t" * 300, "timestamp": "yesterday",
            "fields": [{"name": "a", "value": ""}] * 26}]},
        "webhook": {**FAILED.to_json(), "event": "run.success"},
    }
    async with aiohttp.ClientSession() as session:
        for kind, body in broken.items():
            async with session.post(server.url(kind), json=body) as response:
                assert response.status == 422, kind
    problems = "\n".join(server.problems)
    for expected in ("slack: text: unescaped <", "slack: attachments[0].color",
                     "slack: attachments[0].blocks[0].text.type",
                     "mattermost: attachments[0].fallback", "mattermost: attachments[0].color",
                     "mattermost: attachments[0].text: a code block is not closed",
                     "discord: username", "discord: embeds[0].color", "discord: embeds[0].title",
                     "discord: embeds[0].timestamp", "discord: embeds[0].fields",
                     "webhook: X-Cyclone-Event", "webhook: Idempotency-Key",
                     "webhook: X-Cyclone-Signature-256 missing"):
        assert expected in problems, expected


def test_email_is_not_a_chat_channel() -> None:
    with pytest.raises(ValueError, match="not a chat channel"):
        chat_request(Channel("email", "dev@example.org"), FAILED)
