"""Reading a ``text/event-stream`` response in tests, as a browser's EventSource does."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp

__all__ = ["Sse", "sse_events"]


@dataclass(frozen=True)
class Sse:
    """One event (``comment`` for a ``: ...`` line, e.g. a keep-alive)."""

    event: str
    id: str
    data: str

    def json(self) -> Any:
        return json.loads(self.data)


async def sse_events(resp: aiohttp.ClientResponse) -> AsyncIterator[Sse]:
    """The events of the response, comments included; ``id`` is the last one seen."""
    event, last_id, data = "message", "", list[str]()
    async for raw in resp.content:
        line = raw.decode().rstrip("\r\n")
        if line.startswith(":"):
            yield Sse("comment", "", line[1:].strip())
        elif line:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "id":
                last_id = value
            elif name == "data":
                data.append(value)
        elif data:
            yield Sse(event, last_id, "\n".join(data))
            event, data = "message", []
