"""A typed asyncio client of the Cyclone HTTP API (``/api/v1``), one method per endpoint.

Errors (the only exceptions a method raises on purpose):

    CycloneError
    └── ClientError(status, error, detail)   the server answered 4xx/5xx: its JSON body's
        │                                    ``error`` code and ``detail`` text
        └── ConnectionFailed (status 0)      no HTTP answer: the server cannot be reached
                                             (``error="unreachable"``), the connection
                                             dropped mid-stream (``"disconnected"``), or the
                                             server URL is malformed (``"invalid_url"``)

Every JSON object is returned as the server sent it (``dict[str, Any]``); the CLI prints
it as is under ``--json``. Streaming methods (``log_lines``, ``follow_logs``) are async
generators that hold a response open: iterate them inside ``contextlib.aclosing`` so an
early exit releases the connection at once. Use the client as an async context manager;
it owns one ``aiohttp.ClientSession``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import quote

import aiohttp
from yarl import URL

from shared.errors import CycloneError

__all__ = ["DEFAULT_SERVER", "ClientError", "ConnectionFailed", "CycloneClient", "SseEvent"]

DEFAULT_SERVER = "http://127.0.0.1:8080"
Json = dict[str, Any]

_CALL_TIMEOUT = aiohttp.ClientTimeout(total=60, sock_connect=10)
# A live log stream may be quiet for as long as a step prints nothing: no read timeout.
_STREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=None)


class ClientError(CycloneError):
    """The server refused or failed a request: HTTP ``status``, its ``error`` code and
    ``detail`` text (``str(exc)`` is the detail, which is what people should read)."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail


class ConnectionFailed(ClientError):
    """No HTTP answer at all (status 0); ``error`` says why: unreachable, disconnected,
    invalid_url."""

    def __init__(self, error: str, detail: str) -> None:
        super().__init__(0, error, detail)


@dataclass(frozen=True)
class SseEvent:
    """One Server-Sent Event: ``event`` type (default ``message``), ``id`` or None, and
    ``data`` (multi-line data joined with newlines)."""

    event: str
    data: str
    id: str | None


class CycloneClient:
    """The API of the Cyclone server at ``server`` (e.g. ``http://127.0.0.1:8080``),
    authenticated with ``token`` (sent as ``Authorization: Bearer``) when given."""

    def __init__(self, server: str = DEFAULT_SERVER, token: str | None = None) -> None:
        self.server = server.rstrip("/")
        url = URL(self.server)
        if url.scheme not in ("http", "https") or not url.host:
            raise ConnectionFailed("invalid_url", f"invalid server URL {server!r}: expected "
                                                  "http://HOST[:PORT] or https://...")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> CycloneClient:
        self._session = aiohttp.ClientSession(headers=self._headers, timeout=_CALL_TIMEOUT)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        """Release the connections; safe twice."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- endpoints -----------------------------------------------------------------------

    async def health(self) -> Json:
        return await self._call("GET", "/healthz")

    async def create_project(self, fields: Mapping[str, Any]) -> Json:
        """``fields``: name, repo and optionally default_branch, pipeline_file, env,
        max_concurrent_runs."""
        return await self._call("POST", "/api/v1/projects", body=fields)

    async def list_projects(self) -> list[Json]:
        return list((await self._call("GET", "/api/v1/projects"))["projects"])

    async def get_project(self, name: str) -> Json:
        return await self._call("GET", f"/api/v1/projects/{_seg(name)}")

    async def update_project(self, name: str, fields: Mapping[str, Any]) -> Json:
        return await self._call("PATCH", f"/api/v1/projects/{_seg(name)}", body=fields)

    async def delete_project(self, name: str) -> None:
        await self._call("DELETE", f"/api/v1/projects/{_seg(name)}")

    async def list_secrets(self, project: str | None) -> list[Json]:
        """The secrets of ``project`` (None: the global ones): names and dates."""
        return list((await self._call("GET", _secrets_path(project)))["secrets"])

    async def set_secret(self, project: str | None, name: str, value: str) -> Json:
        return await self._call("PUT", f"{_secrets_path(project)}/{_seg(name)}",
                                body={"value": value})

    async def remove_secret(self, project: str | None, name: str) -> None:
        await self._call("DELETE", f"{_secrets_path(project)}/{_seg(name)}")

    async def test_notifications(self, project: str) -> Json:
        """Ask the notifier to message every channel of ``project``: ``{"id", "url"}``."""
        return await self._call("POST", f"/api/v1/projects/{_seg(project)}/notifications/test")

    async def notification_test(self, test_id: str) -> Json:
        """A notification test and each channel's outcome so far (``status``: pending, sent,
        failed)."""
        return await self._call("GET", f"/api/v1/notifications/tests/{_seg(test_id)}")

    async def trigger(self, project: str, ref: str | None = None, commit: str | None = None,
                      params: Mapping[str, str] | None = None,
                      overrides: Sequence[str] = ()) -> Json:
        """Start a run (``overrides``: keys of its pipeline file set, ``PATH=VALUE``);
        returns ``{"id", "url"}``."""
        body: Json = {k: v for k, v in (("ref", ref), ("commit", commit)) if v is not None}
        if params:
            body["params"] = dict(params)
        if overrides:
            body["overrides"] = list(overrides)
        return await self._call("POST", f"/api/v1/projects/{_seg(project)}/runs", body=body)

    async def list_runs(self, project: str | None = None, status: str | None = None,
                        branch: str | None = None, limit: int | None = None,
                        cursor: str | None = None) -> Json:
        """One page, newest first: ``{"runs": [...], "next": cursor or None}``."""
        query = {"project": project, "status": status, "branch": branch,
                 "limit": None if limit is None else str(limit), "cursor": cursor}
        return await self._call("GET", "/api/v1/runs", query=query)

    async def get_run(self, run_id: str) -> Json:
        return await self._call("GET", f"/api/v1/runs/{_seg(run_id)}")

    async def cancel_run(self, run_id: str) -> Json:
        return await self._call("POST", f"/api/v1/runs/{_seg(run_id)}/cancel")

    async def approve_run(self, run_id: str, secrets: bool = False) -> Json:
        return await self._call("POST", f"/api/v1/runs/{_seg(run_id)}/approve",
                                body={"secrets": secrets})

    async def reject_run(self, run_id: str) -> Json:
        return await self._call("POST", f"/api/v1/runs/{_seg(run_id)}/reject")

    async def decide_job(self, run_id: str, job: str, approve: bool, comment: str = "") -> Json:
        verb = "approve" if approve else "reject"
        return await self._call("POST", f"/api/v1/runs/{_seg(run_id)}/jobs/{_seg(job)}/{verb}",
                                body={"comment": comment})

    async def deployments(self, project: str, environment: str | None = None) -> list[Json]:
        """The project's deployments (to ``environment``), newest first."""
        query = {"environment": environment} if environment else None
        answer = await self._call("GET", f"/api/v1/projects/{_seg(project)}/deployments",
                                  query=query)
        return list(answer["deployments"])

    async def rollback(self, project: str, environment: str) -> Json:
        return await self._call("POST", f"/api/v1/projects/{_seg(project)}/environments/"
                                        f"{_seg(environment)}/rollback")

    async def run_tests(self, run_id: str) -> Json:
        """The run's test reports summed over its jobs, flaky failures marked."""
        return await self._call("GET", f"/api/v1/runs/{_seg(run_id)}/tests")

    async def rerun(self, run_id: str, *, failed: bool = False,
                    from_job: str | None = None) -> Json:
        """Start a new run like ``run_id``; returns ``{"id", "url"}`` of the new one.
        ``failed``: only its failed jobs and what needs them run again; ``from_job``: that
        job and what is downstream of it; the other jobs' results are taken from it."""
        body: Json | None = None
        if failed:
            body = {"failed": True}
        elif from_job is not None:
            body = {"from_job": from_job}
        return await self._call("POST", f"/api/v1/runs/{_seg(run_id)}/rerun", body=body)

    async def artifacts(self, run_id: str) -> Json:
        return await self._call("GET", f"/api/v1/runs/{_seg(run_id)}/artifacts")

    async def download_artifact(self, run_id: str, job: str,
                                name: str) -> AsyncGenerator[bytes, None]:
        """The artifact's tar, in chunks as they arrive (``ConnectionFailed`` when the
        server cuts it short: a corrupt blob, or a dropped connection)."""
        path = f"/api/v1/runs/{_seg(run_id)}/artifacts/{_seg(job)}/{_seg(name)}"
        async with self._open("GET", path, stream=True) as response:
            try:
                async for chunk in response.content.iter_chunked(1024 * 1024):
                    yield chunk
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise self._dropped(exc) from exc

    async def run_events(self, run_id: str, after: int = 0) -> list[Json]:
        """The run's events with seq > ``after``, in order."""
        query = {"after": str(after)} if after else None
        return list((await self._call("GET", f"/api/v1/runs/{_seg(run_id)}/events",
                                      query=query))["events"])

    async def create_token(self, name: str, user: str | None = None,
                           read_only: bool = False) -> Json:
        """``{"id", "name", "token", "created_at", ...}``: the secret is shown only here.
        ``user``: whose (default: the caller's); ``read_only``: narrowed to reads."""
        body: dict[str, Any] = {"name": name, "read_only": read_only}
        if user is not None:
            body["user"] = user
        return await self._call("POST", "/api/v1/tokens", body=body)

    async def list_tokens(self) -> list[Json]:
        return list((await self._call("GET", "/api/v1/tokens"))["tokens"])

    async def revoke_token(self, token_id: str) -> None:
        await self._call("DELETE", f"/api/v1/tokens/{_seg(token_id)}")

    async def add_user(self, name: str, password: str | None, admin: bool,
                       roles: Mapping[str, str]) -> Json:
        body: dict[str, Any] = {"name": name, "admin": admin, "roles": dict(roles)}
        if password is not None:
            body["password"] = password
        return await self._call("POST", "/api/v1/users", body=body)

    async def list_users(self) -> list[Json]:
        return list((await self._call("GET", "/api/v1/users"))["users"])

    async def change_user(self, name: str, fields: Mapping[str, Any]) -> Json:
        return await self._call("PATCH", f"/api/v1/users/{_seg(name)}", body=fields)

    async def remove_user(self, name: str) -> None:
        await self._call("DELETE", f"/api/v1/users/{_seg(name)}")

    async def set_role(self, project: str, user: str, role: str | None) -> None:
        """``role`` in ``project`` for ``user``; None: no role there any more."""
        path = f"/api/v1/projects/{_seg(project)}/members/{_seg(user)}"
        if role is None:
            await self._call("DELETE", path)
        else:
            await self._call("PUT", path, body={"role": role})

    async def gc(self, dry_run: bool = False) -> AsyncGenerator[Json, None]:
        """A retention pass now (admin): its progress objects as the server streams them
        (``kind``: evicted, plan, run, blob, then done or error)."""
        async with self._open("POST", "/api/v1/gc", body={"dry_run": dry_run},
                              stream=True) as response, \
                contextlib.aclosing(self._lines(response)) as lines:
            async for line in lines:
                if line.strip():
                    yield _decode_object(line, response.status)

    async def audit_verify(self, run_id: str | None) -> AsyncGenerator[Json, None]:
        """Verify the audit chain (admin): of one run, or of every stream (None); the
        objects the server streams (``kind``: progress, finding, then done or error)."""
        query = {"run": run_id} if run_id else {"all": "1"}
        async with self._open("GET", "/api/v1/audit/verify", query=query,
                              stream=True) as response, \
                contextlib.aclosing(self._lines(response)) as lines:
            async for line in lines:
                if line.strip():
                    yield _decode_object(line, response.status)

    async def provenance(self, run_id: str, image: str | None = None) -> Json:
        return await self._call("GET", f"/api/v1/runs/{_seg(run_id)}/provenance",
                                query={"image": image})

    async def log_lines(self, run_id: str, from_index: int = 0) -> AsyncGenerator[Json, None]:
        """The stored log lines ``{"i","job","step","stream","ts","text"}`` from
        ``from_index`` on, as they are read from the ndjson response."""
        query = {"from": str(from_index)} if from_index else None
        async with self._open("GET", f"/api/v1/runs/{_seg(run_id)}/logs", query=query,
                              stream=True) as response, \
                contextlib.aclosing(self._lines(response)) as lines:
            async for line in lines:
                if line.strip():
                    yield _decode_object(line, response.status)

    async def follow_logs(self, run_id: str,
                          last_event_id: str | None = None) -> AsyncGenerator[SseEvent, None]:
        """The live log stream (SSE): ``line`` events whose ``id`` is the line index and
        whose data is a log line object, then one ``end`` event (data ``{"status"}``, and
        ``"missing"`` when the server gave up on lines it could not deliver). With
        ``last_event_id`` the stream resumes after that line. The iterator ends when the
        server closes the stream; a dropped connection raises ``ConnectionFailed``."""
        async with contextlib.aclosing(self._events(f"/api/v1/runs/{_seg(run_id)}/logs",
                                                    last_event_id)) as events:
            async for event in events:
                yield event

    async def follow_events(self, run_id: str,
                            last_event_id: str | None = None) -> AsyncGenerator[SseEvent, None]:
        """The run's events as they are appended (SSE): ``event`` events whose ``id`` is
        the seq and whose data is the recorded event, then one ``end`` (``{"status"}``)
        once the run has ended. Resumes after ``last_event_id`` (a seq)."""
        async with contextlib.aclosing(self._events(f"/api/v1/runs/{_seg(run_id)}/events",
                                                    last_event_id)) as events:
            async for event in events:
                yield event

    async def _events(self, path: str,
                      last_event_id: str | None) -> AsyncGenerator[SseEvent, None]:
        """A Server-Sent Events stream of ``path`` (``?follow=1``), event by event."""
        headers = {"Last-Event-ID": last_event_id} if last_event_id is not None else {}
        async with self._open("GET", path, query={"follow": "1"}, headers=headers,
                              stream=True) as response, \
                contextlib.aclosing(self._lines(response)) as lines:
            event, data, event_id = "message", list[str](), None
            async for line in lines:
                if line == "":  # a blank line dispatches the event being built
                    if data:
                        yield SseEvent(event=event, data="\n".join(data), id=event_id)
                    event, data = "message", []
                    continue
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "event":
                    event = value
                elif name == "data":
                    data.append(value)
                elif name == "id":
                    event_id = value
                # "" (a comment, e.g. a keep-alive) and unknown fields are ignored (SSE spec)

    # --- plumbing ------------------------------------------------------------------------

    async def _call(self, method: str, path: str, body: Mapping[str, Any] | None = None,
                    query: Mapping[str, str | None] | None = None) -> Json:
        async with self._open(method, path, body=body, query=query) as response:
            if response.status == 204:
                return {}
            try:
                text = await response.text()
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise self._dropped(exc) from exc
            return _decode_object(text, response.status)

    @contextlib.asynccontextmanager
    async def _open(self, method: str, path: str, body: Mapping[str, Any] | None = None,
                    query: Mapping[str, str | None] | None = None,
                    headers: Mapping[str, str] | None = None,
                    stream: bool = False,
                    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """The response to one request, 4xx/5xx raised as ``ClientError`` and transport
        failures as ``ConnectionFailed``; released when the block ends. A ``stream`` has
        no overall or read timeout (a live log may be quiet for long)."""
        if self._session is None:
            raise RuntimeError("CycloneClient used outside `async with`")
        params = {k: v for k, v in (query or {}).items() if v is not None}
        try:
            response = await self._session.request(
                method, URL(self.server + path, encoded=True), params=params or None,
                json=None if body is None else dict(body), headers=headers,
                timeout=_STREAM_TIMEOUT if stream else _CALL_TIMEOUT)
        except aiohttp.ClientConnectorError as exc:
            raise self._unreachable(exc) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._dropped(exc) from exc
        try:
            if response.status >= 400:
                raise await _http_error(response)
            yield response
        finally:
            response.release()

    async def _lines(self, response: aiohttp.ClientResponse) -> AsyncGenerator[str, None]:
        """The body's lines without their ``\\n`` / ``\\r\\n``, as they arrive (no line
        length limit, unlike ``StreamReader.readline``)."""
        buffer = b""
        try:
            async for chunk in response.content.iter_any():
                buffer += chunk
                *complete, buffer = buffer.split(b"\n")
                for raw in complete:
                    yield raw.removesuffix(b"\r").decode("utf-8", "replace")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._dropped(exc) from exc
        if buffer:
            yield buffer.removesuffix(b"\r").decode("utf-8", "replace")

    def _unreachable(self, exc: BaseException) -> ConnectionFailed:
        return ConnectionFailed("unreachable", f"cannot reach the Cyclone server at "
                                               f"{self.server}: {_describe(exc)}")

    def _dropped(self, exc: BaseException) -> ConnectionFailed:
        return ConnectionFailed("disconnected", f"connection to the Cyclone server at "
                                                f"{self.server} lost: {_describe(exc)}")


async def _http_error(response: aiohttp.ClientResponse) -> ClientError:
    """The server's ``{"error", "detail"}`` body, or a readable stand-in for a body that is
    not one (e.g. a proxy's HTML page)."""
    try:
        text = await response.text()
    except (aiohttp.ClientError, TimeoutError):
        text = ""
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict) and "detail" in body:
        return ClientError(response.status, str(body.get("error", "")), str(body["detail"]))
    snippet = " ".join(text.split())[:200] or response.reason or ""
    return ClientError(response.status, f"http_{response.status}",
                       f"HTTP {response.status} from the server: {snippet}")


def _decode_object(text: str, status: int) -> Json:
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise ClientError(status, "bad_response",
                          f"the server answered something that is not a JSON object: "
                          f"{text[:200]!r}")
    return value


def _secrets_path(project: str | None) -> str:
    return "/api/v1/secrets" if project is None else f"/api/v1/projects/{_seg(project)}/secrets"


def _seg(value: str) -> str:
    """``value`` as one URL path segment (a ``/`` in a name must not change the route)."""
    return quote(value, safe="")


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
