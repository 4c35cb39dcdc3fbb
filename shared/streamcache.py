"""Folds of event streams, kept up to date from the last event each one saw.

A service that reads a stream again and again (a run's, a project's, the tokens') keeps
the stream's fold with the seq it reached and, on the next ``load``, reads and folds only
the events after it: a long history costs its length once, not at every read. Folds are
immutable values, so one handed out stays valid; a fresher one is a ``load`` away. At most
``capacity`` streams are kept; the least recently used is dropped first (and folded again
from the store when it is needed again).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from shared.events import RecordedEvent
from shared.ports.eventstore import EventStore

__all__ = ["Fold", "StreamCache"]

V = TypeVar("V")

# (events after the fold, the fold so far or None) -> the fold after them
Fold = Callable[[Sequence[RecordedEvent], V | None], V | None]


class StreamCache(Generic[V]):
    def __init__(self, store: EventStore, fold: Fold[V], capacity: int = 1024) -> None:
        self.store = store
        self.capacity = capacity
        self._fold = fold
        self._kept: OrderedDict[str, tuple[V | None, int]] = OrderedDict()

    async def load(self, stream: str) -> V | None:
        """The stream's fold as of now (``None`` when the fold of its events is none)."""
        known, seq = self._kept.get(stream, (None, 0))
        new = await self.store.read(stream, seq + 1)
        if not new:
            if stream in self._kept:
                self._kept.move_to_end(stream)
            return known
        view = self._fold(new, known)
        self.keep(stream, view, new[-1].seq)
        return view

    def kept(self, stream: str) -> tuple[V, int] | None:
        """The fold kept of ``stream`` and the seq it reached, without reading the store
        (it may be behind it); None when none is kept (or the fold was none)."""
        view, seq = self._kept.get(stream, (None, 0))
        return None if view is None else (view, seq)

    def keep(self, stream: str, view: V | None, seq: int) -> None:
        """Remember ``view`` as the fold of ``stream`` up to ``seq`` (e.g. after an append
        of one's own, so the next load does not read it back). An older fold never
        replaces a newer one: two loads of one stream may finish in either order."""
        if seq < self._kept.get(stream, (None, 0))[1]:
            return
        self._kept[stream] = (view, seq)
        self._kept.move_to_end(stream)
        while len(self._kept) > self.capacity:
            self._kept.popitem(last=False)

    def forget(self, stream: str) -> None:
        self._kept.pop(stream, None)
