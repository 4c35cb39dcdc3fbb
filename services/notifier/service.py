"""The notifier: hears every run end on ``cyclone.events`` and tells people about it.

This version records each run's outcome in the structured log; delivery by email
and chat (templates, channels, records as events) is issue #6 and builds on this
consumer.

Once per run end, across replicas: the replicas share one consumer group, so each
run end reaches one of them; a redelivery (a replica died before committing) could
reach another. Before acting, a replica claims ``cyclone/notified/<run>/<outcome>``
in the coordination service (create-if-absent): only the claim's winner notifies.
The claims are bound to a long lease (a day), so they clean themselves up long after
any redelivery could come. Claiming before notifying means a replica that dies
between the two leaves that notification unsent (at most once); issue #6's records
make delivery at least once and exactly once in effect.
"""

from __future__ import annotations

import logging

from shared.consume import consume
from shared.events import TERMINAL_RUN_EVENTS
from shared.keys import notified_key
from shared.ports.bus import TOPIC_EVENTS, Bus, Message
from shared.ports.coordination import Coordinator, Lease
from shared.projections.runs import run_id_of
from shared.wire import decode_event

__all__ = ["CLAIM_TTL_S", "Notifier"]

log = logging.getLogger(__name__)

_TERMINAL = {t.TYPE: t for t in TERMINAL_RUN_EVENTS}
CLAIM_TTL_S = 24 * 3600.0


class Notifier:
    def __init__(self, bus: Bus, coord: Coordinator, group: str = "notifier") -> None:
        self.bus = bus
        self.coord = coord
        self.group = group
        self._lease: Lease | None = None
        self.notified = 0  # notifications this replica sent (a metric, and for tests)

    async def run(self) -> None:
        await consume(self.bus, TOPIC_EVENTS, self.group, self.handle)

    async def handle(self, message: Message) -> None:
        recorded = decode_event(message.value)
        if recorded.type not in _TERMINAL:
            return
        run_id = run_id_of(recorded.stream)
        if not await self._claim(run_id, recorded.type):
            return  # another replica (or an earlier delivery) has notified
        self.notified += 1
        log.info("run ended", extra={"run": run_id, "outcome": recorded.type})

    async def _claim(self, run_id: str, outcome: str) -> bool:
        if self._lease is None:
            self._lease = await self.coord.grant_lease(CLAIM_TTL_S)
        return await self.coord.create(notified_key(run_id, outcome), b"", self._lease)
