"""The log server: persists the log lines workers ship on ``cyclone.logs``.

A batch is committed on the bus only after the log store has it, and the store
drops a batch it already has (by batch id), so a crash at any point neither
loses nor doubles a line. Streaming to clients (SSE, websocket) reads the store.
"""

from __future__ import annotations

import logging

from shared.consume import consume
from shared.ports.bus import TOPIC_LOGS, Bus, Message
from shared.ports.logstore import LogStore
from shared.wire import decode_log_batch

__all__ = ["LogServer"]

log = logging.getLogger(__name__)


class LogServer:
    def __init__(self, bus: Bus, logs: LogStore, group: str = "logserver") -> None:
        self.bus = bus
        self.logs = logs
        self.group = group

    async def run(self) -> None:
        await consume(self.bus, TOPIC_LOGS, self.group, self.handle)

    async def handle(self, message: Message) -> None:
        run_id, batch_id, lines = decode_log_batch(message.value)
        await self.logs.append(run_id, lines, batch_id)
