"""Stopping background tasks."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

__all__ = ["cancel_and_wait"]

log = logging.getLogger(__name__)


async def cancel_and_wait(*tasks: asyncio.Future[Any] | None) -> None:
    """Cancel ``tasks`` (``None`` ones are skipped) and wait until every one has ended.

    Nothing a task ended with is raised here (a clean-up must get to its end): a task
    that had ended before is left as it is, for the caller to read its result; an error
    one raised while it was being stopped is logged. The caller's own cancellation is
    raised: unlike ``with suppress(CancelledError): await task``, which swallows it.
    """
    running = [task for task in tasks if task is not None and not task.done()]
    for task in running:
        task.cancel()
    for result in await asyncio.gather(*running, return_exceptions=True):
        if isinstance(result, Exception):
            log.warning("a task ended with an error as it was stopped",
                        extra={"error": repr(result)})
