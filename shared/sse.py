"""Server-Sent Events on aiohttp: what every streaming route writes the same way.

* ``open_stream(request)`` sends the headers (no caching, no proxy buffering) and a
  ``retry:`` line, so a client knows the stream is open before the first event;
* ``event(name, data, id)`` is one event's text (``data`` is JSON, on one line);
* ``last_event_id(request)`` is the ``Last-Event-ID`` a reconnecting client sends;
* ``Pacer`` says when to send a keep-alive comment (proxies drop silent connections)
  and whether the client has gone.
"""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web

__all__ = ["KEEPALIVE_S", "RETRY_MS", "Pacer", "event", "gone", "last_event_id",
           "open_stream"]

KEEPALIVE_S = 15.0  # a comment after this much silence
RETRY_MS = 2000  # tells an EventSource how long to wait before reconnecting

_encode = json.JSONEncoder(separators=(",", ":")).encode


async def open_stream(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    resp.content_type = "text/event-stream"
    await resp.prepare(request)
    await resp.write(f"retry: {RETRY_MS}\n\n".encode())
    return resp


def event(name: str, data: Any, id: int | str | None = None) -> str:
    head = f"id: {id}\n" if id is not None else ""
    return f"{head}event: {name}\ndata: {_encode(data)}\n\n"


def last_event_id(request: web.Request) -> str:
    return request.headers.get("Last-Event-ID", "").strip()


def gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


class Pacer:
    """Keep-alives for one stream: call ``wrote()`` after each write, ``idle(resp)``
    when there was nothing to send for a while."""

    def __init__(self, keepalive_s: float = KEEPALIVE_S) -> None:
        self.keepalive_s = keepalive_s
        self._last = time.monotonic()

    def wrote(self) -> None:
        self._last = time.monotonic()

    async def idle(self, resp: web.StreamResponse) -> None:
        if time.monotonic() - self._last >= self.keepalive_s:
            await resp.write(b": keep-alive\n\n")
            self.wrote()
