"""A notification test (``cyclone notify test``) as a pure fold over its stream."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from shared import events as ev
from shared.events import RecordedEvent, decode

__all__ = ["NotificationTestView", "fold_notification_test"]


@dataclass(frozen=True)
class NotificationTestView:
    id: str
    project: str
    requested_at: str
    listed: bool = False  # a notifier has taken the request and listed the channels
    channels: tuple[Mapping[str, Any], ...] = ()  # Channel.to_json + rule, status, error
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # by channel id

    @property
    def done(self) -> bool:
        return self.listed and all(c["id"] in self.results for c in self.channels)

    def to_json(self) -> dict[str, Any]:
        channels = [{**c, **self.results.get(c["id"], {"status": "pending"})}
                    for c in self.channels]
        return {"id": self.id, "project": self.project, "requested_at": self.requested_at,
                "listed": self.listed, "done": self.done, "channels": channels}


def fold_notification_test(test_id: str,
                           events: Iterable[RecordedEvent]) -> NotificationTestView | None:
    view: NotificationTestView | None = None
    for recorded in events:
        event = decode(recorded)
        if isinstance(event, ev.NotificationTestRequested):
            view = NotificationTestView(test_id, event.project, recorded.ts)
        elif view is None:
            continue
        elif isinstance(event, ev.NotificationTestStarted):
            view = replace(view, listed=True, channels=tuple(event.channels))
        elif isinstance(event, ev.NotificationSent):
            view.results[event.channel] = {"status": "sent", "attempt": event.attempt}
        elif isinstance(event, ev.NotificationFailed):
            view.results[event.channel] = {"status": "failed", "error": event.error,
                                           "attempts": event.attempts}
    return view
