"""Cancel signals: ``watch_cancels(coord, cancel_run)`` calls ``cancel_run(run id)`` for
every cancel signal in the coordination service (``cancel_key``), the ones already
raised first, then each new one as it is put.

The watch outlives etcd blips: when it breaks it is set up again, with backoff, and
the signals raised while it was broken are read first. A run may so be named more
than once; ``cancel_run`` must be safe to call again. It returns when the coordinator
is closed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from shared.errors import CoordinationError
from shared.keys import CANCEL_PREFIX, run_of_cancel_key
from shared.ports.coordination import Coordinator
from shared.retry import Backoff

__all__ = ["watch_cancels"]

log = logging.getLogger(__name__)


async def watch_cancels(coord: Coordinator, cancel_run: Callable[[str], None]) -> None:
    backoff = Backoff()
    while True:
        try:
            watch = coord.watch(CANCEL_PREFIX)
            try:
                for key in await coord.get_prefix(CANCEL_PREFIX):
                    cancel_run(run_of_cancel_key(key))
                backoff.reset()
                async for change in watch:
                    if change.kind == "put":
                        cancel_run(run_of_cancel_key(change.key))
            finally:
                await watch.aclose()
            return  # the coordinator was closed
        except CoordinationError as exc:
            log.warning("cancel watch broken; watching again", extra={"error": str(exc)})
        await backoff.wait()
