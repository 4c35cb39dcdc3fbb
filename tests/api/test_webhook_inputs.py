"""Webhook inputs a forge or an attacker sends, posted to a real server: each is a 4xx JSON
naming what is wrong, or an event built as for the other forges; never a 500, and a
refused delivery leaves nothing stored."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.api import support
from tests.api.hooks.support import SECRET, SHA, headers_for, load, payload, without

Raw = list[tuple[str, bytes]]


class Api(support.Api):
    async def deliver(self, provider: str, event: str, body: bytes, status: int,
                      delivery: str = "d-1", **extra: str) -> dict[str, Any]:
        headers = {**headers_for(provider, event, body, delivery=delivery), **extra}
        async with self.client.post(f"/api/v1/hooks/{provider}/demo", data=body,
                                    headers=headers) as response:
            text = await response.text()
            assert response.status == status, text
            answer: dict[str, Any] = json.loads(text)
            return answer

    async def raw(self, provider: str, headers: Raw, body: bytes) -> tuple[int, Any, str]:
        """A POST whose header values are written as the bytes given (aiohttp's client
        would refuse some): status, JSON body, whole response text."""
        server = self.client.server
        reader, writer = await asyncio.open_connection(server.host, server.port)
        lines = [f"POST /api/v1/hooks/{provider}/demo HTTP/1.1".encode(), b"Host: x",
                 *(name.encode() + b": " + value for name, value in headers),
                 b"Content-Length: %d" % len(body), b"Connection: close", b"", b""]
        writer.write(b"\r\n".join(lines) + body)
        response = await reader.read()
        writer.close()
        await writer.wait_closed()
        head, _, content = response.partition(b"\r\n\r\n")
        return int(head.split()[1]), json.loads(content), response.decode("utf-8", "replace")

    async def deliveries(self) -> list[dict[str, Any]]:
        shown = (await self.call("GET", "/api/v1/hooks/deliveries", 200))[0]["deliveries"]
        return list(shown)

    async def run(self, run_id: str) -> dict[str, Any]:
        return (await self.call("GET", f"/api/v1/runs/{run_id}", 200))[0]


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with support.serving(tmp_path, Api) as serving:
        await serving.call("POST", "/api/v1/projects", 201, {
            "name": "demo", "repo": "https://git.example.com/demo.git", "hook_secret": SECRET})
        yield serving


def _signed(provider: str, event: str, body: bytes) -> Raw:
    return [(name, value.encode()) for name, value in headers_for(provider, event, body).items()]


def _replace(headers: Raw, name: str, value: bytes) -> Raw:
    return [(n, value if n == name else v) for n, v in headers]


async def _refused(api: Api, status: int, answer: Any, expected: int, *named: str) -> None:
    assert status == expected, answer
    assert set(answer) == {"error", "detail"} and all(n in answer["detail"] for n in named)
    assert await api.deliveries() == []


# -- headers: bytes that are not UTF-8, before and after the secret is checked ----------

PUSH = load("github/push.json")


@pytest.mark.parametrize(("provider", "event", "header", "value", "expected"), [
    ("gitlab", "Push Hook", "X-Gitlab-Token", b"\xff\xfe", 401),  # compared to the secret
    ("github", "push", "X-Hub-Signature-256", b"sha256=\xff" + b"a" * 63, 401),
    ("gitea", "push", "X-Gitea-Signature", b"\xe9" * 64, 401),
    ("generic", "", "X-Cyclone-Signature", b"sha256=\x80", 401),
    ("github", "push", "X-GitHub-Event", b"p\xc3sh", 400),  # read after the signature
    ("gitlab", "Push Hook", "X-Gitlab-Event", b"Push \xff", 400),
    ("gogs", "push", "X-Gogs-Event", b"\xff", 400),
    ("github", "push", "X-GitHub-Delivery", b"\xc0\xaf", 400),  # names the stream
    ("github", "push", "X-GitHub-Delivery", b"d" * 300, 400),
    ("gitlab", "Push Hook", "X-Gitlab-Event-UUID", b"\xff", 400),
])
async def test_a_header_that_is_not_text_is_a_4xx_naming_it(
        api: Api, provider: str, event: str, header: str, value: bytes,
        expected: int) -> None:
    body = load("gitlab/push.json") if provider == "gitlab" else PUSH
    headers = _replace(_signed(provider, event, body), header, value)
    await _refused(api, *(await api.raw(provider, headers, body))[:2], expected, header)


async def test_an_authorization_header_that_is_not_text_is_a_401(api: Api) -> None:
    reader, writer = await asyncio.open_connection(api.client.server.host,
                                                   api.client.server.port)
    writer.write(b"GET /api/v1/runs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\n"
                 b"Connection: close\r\n\r\n")
    response = await reader.read()
    writer.close()
    await writer.wait_closed()
    assert response.startswith(b"HTTP/1.1 401 "), response
    assert b'"invalid or revoked token"' in response


# -- the body: depth, size of numbers, shape ---------------------------------------------

@pytest.mark.parametrize(("body", "named"), [
    (b"[" * 100_000, "nested deeper than 64"),
    (b'{"a": ' * 100_000, "nested deeper than 64"),
    (b'{"event": "push", "a": ' + b"[" * 65 + b"]" * 65 + b"}", "nested deeper than 64"),
    (b'{"event": "push", "n": ' + b"9" * 5000 + b"}", "integer of 5000 digits"),
    (b'{"event": "push", "n": -' + b"1" * 4301 + b"}", "integer of 4301 digits"),
    (b'{"event": NaN}', "NaN"),
    (b'"push"', "not a JSON object (got string)"),
    (b'{"event": "push", "ref": "refs/heads/\\ud800"}', "ref is not valid Unicode"),
    (b'{"event": "push", "a": [{"\\udfff": 1}]}', "a key in a[0] is not valid Unicode"),
])
async def test_a_body_past_the_decoding_limits_is_a_400_saying_which(
        api: Api, body: bytes, named: str) -> None:
    answer = await api.deliver("generic", "", body, 400)
    assert named in answer["detail"], answer
    assert await api.deliveries() == []


@pytest.mark.parametrize(("field", "value", "named"), [
    ("ref", "refs/heads/" + "b" * 250, "ref is not a valid full ref name (refs/...): longer"),
    ("ref", "refs/heads/a\x01b", "ref is not a valid full ref name"),
])
async def test_an_oversize_or_control_character_ref_is_a_400(
        api: Api, field: str, value: str, named: str) -> None:
    data = payload("github/push.json")
    data[field] = value
    answer = await api.deliver("github", "push", json.dumps(data).encode(), 400)
    assert named in answer["detail"], answer


@pytest.mark.parametrize("number", [0, -1, 2**31, 10**30])
@pytest.mark.parametrize(("provider", "fixture", "path"), [
    ("github", "github/pull_request_opened.json", "number"),
    ("gitea", "gitea/pull_request_opened.json", "number"),
    ("gitlab", "gitlab/merge_request_open.json", "object_attributes.iid"),
])
async def test_a_pull_request_number_out_of_range_is_a_400(
        api: Api, provider: str, fixture: str, path: str, number: int) -> None:
    data = payload(fixture)
    *parents, last = path.split(".")
    node = data
    for part in parents:
        node = node[part]
    node[last] = number
    event = {"github": "pull_request", "gitea": "pull_request",
             "gitlab": "Merge Request Hook"}[provider]
    answer = await api.deliver(provider, event, json.dumps(data).encode(), 400)
    assert f"{path} is not a pull request number (1 to 2147483647)" in answer["detail"]


# -- forges: Gogs tags and pull requests, GitLab system hooks ----------------------------

async def test_a_gogs_tag_create_starts_a_tag_run(api: Api) -> None:
    answer = await api.deliver("gogs", "create", load("gogs/create_tag.json"), 202)
    [run_id] = answer["runs"]
    run = await api.run(run_id)
    assert (run["trigger"], run["branch"]) == ("tag", "v1.0.0"), run
    [shown] = await api.deliveries()
    assert (shown["kind"], shown["tag"]) == ("tag", "v1.0.0")


async def test_a_gogs_branch_create_and_a_giteas_tag_create_are_ignored(api: Api) -> None:
    data = payload("gogs/create_tag.json")
    data["ref_type"] = "branch"
    answer = await api.deliver("gogs", "create", json.dumps(data).encode(), 202)
    assert "its push event is the one built" in answer["ignored"]
    # Gitea sends X-Gogs-* too, and a push for the tag: its create is not built twice.
    body = load("gitea/create_tag.json")
    answer = await api.deliver("gogs", "create", body, 202, delivery="d-2",
                               **{"X-Gitea-Event": "create"})
    assert "ignored" in answer


async def test_a_gogs_pull_request_builds_its_pull_ref(api: Api) -> None:
    answer = await api.deliver("gogs", "pull_request",
                               load("gogs/pull_request_opened.json"), 202)
    [run_id] = answer["runs"]
    run = await api.run(run_id)
    # Gogs names no head commit: the run builds the ref Gogs keeps for the pull request.
    assert (run["trigger"], run["branch"], run["commit"]) == (
        "pull_request", "refs/pull/3/head", ""), run
    [shown] = await api.deliveries()
    assert (shown["kind"], shown["branch"]) == ("pull_request", "fix/greeting")


def _system(fixture: str, kind: str) -> bytes:
    data = json.loads(without(payload(fixture), "object_kind"))
    data["event_name"] = kind
    return json.dumps(data).encode()


@pytest.mark.parametrize(("body", "trigger", "branch"), [
    (_system("gitlab/push.json", "push"), "push", "master"),
    (_system("gitlab/tag_push.json", "tag_push"), "tag", "v1.0.0"),
    (load("gitlab/merge_request_open.json"), "pull_request", "ms-viewport"),
])
async def test_a_gitlab_system_hook_starts_runs_like_a_project_hook(
        api: Api, body: bytes, trigger: str, branch: str) -> None:
    answer = await api.deliver("gitlab", "System Hook", body, 202)
    run = await api.run(answer["runs"][0])
    assert (run["trigger"], run["branch"]) == (trigger, branch), run


async def test_a_gitlab_system_hook_of_no_repository_is_acknowledged_and_ignored(
        api: Api) -> None:
    body = json.dumps({"event_name": "user_create", "name": "Jane", "user_id": 41,
                       "created_at": "2012-07-21T07:30:54Z"}).encode()
    answer = await api.deliver("gitlab", "System Hook", body, 202)
    assert answer["ignored"] == ("GitLab system hook event 'user_create' is ignored: only "
                                 "push, tag_push and merge_request start runs")
    answer = await api.deliver("gitlab", "System Hook", b'{"name": "Jane"}', 400,
                               delivery="d-2")
    assert answer["detail"] == ("webhook payload: a system hook names its event in "
                                "object_kind or event_name; the body has neither")


# -- delivery ids -------------------------------------------------------------------------

async def test_a_delivery_id_reused_with_another_body_is_a_409_and_changes_nothing(
        api: Api) -> None:
    first = await api.deliver("github", "push", PUSH, 202)
    again = await api.deliver("github", "push", PUSH, 200)  # a redelivery
    assert (again["redelivery"], again["runs"]) == (True, first["runs"])
    other = PUSH.replace(SHA["second"].encode(), SHA["first"].encode())
    assert other != PUSH
    answer = await api.deliver("github", "push", other, 409)
    assert answer["error"] == "conflict"
    assert "'d-1' was received before with another body" in answer["detail"]
    [shown] = await api.deliveries()
    assert [run["id"] for run in shown["runs"]] == first["runs"]
