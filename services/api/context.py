"""What the API's handlers share, as typed application state."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from services.api.auth import Tokens
from services.api.readmodel import RunsReadModel
from shared.ports.eventstore import EventStore

__all__ = ["CONTEXT", "ApiContext"]


@dataclass
class ApiContext:
    store: EventStore
    readmodel: RunsReadModel
    tokens: Tokens
    public_read: bool = False
    max_body: int = 25 * 1024 * 1024


CONTEXT = web.AppKey("cyclone", ApiContext)
