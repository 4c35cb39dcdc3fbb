"""A run's watchers take the events the bus brought from its ``Watch``, in seq order and
only without a gap (a gap, or a view ahead of them, sends the stream to the store)."""

from __future__ import annotations

from services.api.live import WATCH_KEPT, Watch
from shared.events import RecordedEvent


def recorded(seq: int) -> RecordedEvent:
    return RecordedEvent(id=f"e{seq}", stream="run-r1", seq=seq, type="StepStarted",
                         version=1, ts="2026-12-05T00:00:00+00:00", data={}, meta={},
                         position=100 + seq)


def test_kept_events_are_taken_in_order_once_and_not_past_a_gap() -> None:
    watch = Watch()
    for seq in (1, 2, 2, 4):  # a redelivered 2; 3 never came on the bus
        watch.keep(recorded(seq))

    assert [r.seq for r in watch.take(0)] == [1, 2]
    assert watch.take(2) == []  # 3 is missing: the caller reads the store for it
    assert [r.seq for r in watch.take(3)] == [4]  # read up to 3 meanwhile
    assert watch.take(4) == [] and watch.recent == {}


def test_what_was_delivered_already_is_forgotten() -> None:
    watch = Watch()
    for seq in range(1, 6):
        watch.keep(recorded(seq))

    assert watch.take(3) == [recorded(4), recorded(5)]  # 1-3 came from the store
    assert watch.recent == {}


def test_a_watch_keeps_the_latest_events_only() -> None:
    watch = Watch()
    for seq in range(1, WATCH_KEPT + 11):
        watch.keep(recorded(seq))

    assert len(watch.recent) == WATCH_KEPT
    assert watch.take(0) == []  # the oldest went: the store is read
    assert len(watch.take(10)) == WATCH_KEPT
