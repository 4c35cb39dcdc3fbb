"""The notifier: hears every run end on ``cyclone.events``.

This version records each run's outcome in the structured log; delivery by email
and chat (templates, channels, exactly-once records) is issue #6 and builds on
this consumer.
"""

from __future__ import annotations

import logging

from shared.consume import consume
from shared.events import TERMINAL_RUN_EVENTS
from shared.ports.bus import TOPIC_EVENTS, Bus, Message
from shared.projections.runs import run_id_of
from shared.wire import decode_event

__all__ = ["Notifier"]

log = logging.getLogger(__name__)

_TERMINAL = {t.TYPE: t for t in TERMINAL_RUN_EVENTS}


class Notifier:
    def __init__(self, bus: Bus, group: str = "notifier") -> None:
        self.bus = bus
        self.group = group

    async def run(self) -> None:
        await consume(self.bus, TOPIC_EVENTS, self.group, self.handle)

    async def handle(self, message: Message) -> None:
        recorded = decode_event(message.value)
        if recorded.type in _TERMINAL:
            log.info("run ended", extra={"run": run_id_of(recorded.stream),
                                         "outcome": recorded.type})
