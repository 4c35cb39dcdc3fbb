"""What a virtualised log viewer asks of a run's log: a window of it, and where a text is.

A viewer of a million-line log shows a few hundred lines at a time: it asks for the
window it scrolls to (``?from=N&limit=M``: the lines from index N on, at most M, with
the log's stored line count in ``X-Cyclone-Log-Lines`` to size its scrollbar), and
jumps to what a search found (``/logs/search?q=TEXT``: the indices of the lines that
contain it). Both read the store a chunk at a time (``LogServer.chunks``), so memory is a
chunk and the result, never the log; a search stops after ``limit`` matches or
``SCAN_LINES`` lines read and hands back a cursor, ``next``, to go on from.

Matching is case-insensitive (``str.casefold``) and ignores ANSI escape sequences
(colours, cursor moves): ``\\x1b[31merror\\x1b[0m`` is found by "error", as a reader
sees it in a terminal. ``job=`` and ``step=`` keep one job's (one step's) lines; the
store has no index by job, so a filtered window reads past the lines it leaves out.

Every parameter is checked before anything is read; a bad one is a ``ValueError``
naming it (the route answers 400).
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass

from shared.ports.logstore import StoredLine

__all__ = ["MAX_MATCHES", "MAX_QUERY", "MAX_WINDOW", "SCAN_LINES", "LineFilter", "Needle",
           "SearchPage", "Window", "parse_search", "parse_window", "plain", "search"]

MAX_WINDOW = 10_000  # lines one window may ask for
MAX_MATCHES = 1_000  # matches one search answer may hold (default 100)
DEFAULT_MATCHES = 100
MAX_QUERY = 1_000  # characters of a search text
SCAN_LINES = 1_000_000  # lines one search request reads at most: `next` goes on from there
MAX_INDEX = 2**62  # stores keep indexes as 64-bit integers

# CSI (colours, cursor moves), OSC (titles, links: ended by BEL or ESC \), character
# set designations (ESC ( B) and the other two-character escapes: what a terminal would
# not print.
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?"
                   r"|[ -/]+[0-~]|[0-~])")


def plain(text: str) -> str:
    """``text`` without its ANSI escape sequences."""
    return _ANSI.sub("", text) if "\x1b" in text else text


@dataclass(frozen=True)
class LineFilter:
    """The lines of one job (and step); "" keeps every one."""

    job: str = ""
    step: str = ""

    def __bool__(self) -> bool:
        return bool(self.job or self.step)

    def keeps(self, stored: StoredLine) -> bool:
        line = stored.line
        return (not self.job or line.job == self.job) and (not self.step or
                                                           line.step == self.step)


@dataclass(frozen=True)
class Window:
    start: int
    limit: int | None  # None: to the end (the history as before windows)
    only: LineFilter

    async def lines(self, chunks: AsyncIterator[list[StoredLine]],
                    ) -> AsyncGenerator[list[StoredLine], None]:
        """The window's lines of ``chunks`` (read from ``start``), a chunk at a time; stops
        reading once ``limit`` lines are out."""
        left = self.limit
        async for chunk in chunks:
            kept = [s for s in chunk if self.only.keeps(s)] if self.only else chunk
            if left is not None:
                kept = kept[:left]
                left -= len(kept)
            if kept:
                yield kept
            if left == 0:
                return


class Needle:
    """What a search looks for: a text, matched case-insensitively in a line's text
    without its ANSI escapes."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._folded = text.casefold()

    def found_in(self, text: str) -> bool:
        return self._folded in plain(text).casefold()

    def found_in_line(self, stored: StoredLine) -> bool:
        text = stored.line.text
        if "\x1b" in text:
            text = _ANSI.sub("", text)
        return self._folded in text.casefold()


@dataclass(frozen=True)
class SearchPage:
    matches: list[StoredLine]
    next: int | None  # where to go on (``from``); None: the stored log's end was reached
    scanned: int  # lines read


async def search(chunks: AsyncIterator[list[StoredLine]], needle: Needle, only: LineFilter,
                 limit: int, scan_lines: int = SCAN_LINES) -> SearchPage:
    """The lines of ``chunks`` that hold ``needle``, up to ``limit`` of them, reading at
    most about ``scan_lines`` lines (whole chunks)."""
    matches: list[StoredLine] = []
    scanned = 0
    async for chunk in chunks:
        # each line's text is looked at once: one pass over a chunk, no call a line more
        # than matching needs (this loop meets every line of a million-line log)
        kept = [s for s in chunk if only.keeps(s)] if only else chunk
        for stored in filter(needle.found_in_line, kept):
            matches.append(stored)
            if len(matches) == limit:
                return SearchPage(matches, stored.index + 1,
                                  scanned + _position(chunk, stored.index))
        scanned += len(chunk)
        if scanned >= scan_lines:
            return SearchPage(matches, chunk[-1].index + 1, scanned)
    return SearchPage(matches, None, scanned)


def _position(chunk: list[StoredLine], index: int) -> int:
    """How many lines of ``chunk`` come up to and with the line ``index``."""
    return index - chunk[0].index + 1


# --- parameters ------------------------------------------------------------------------


def parse_window(query: Mapping[str, str], start: int) -> Window:
    """The window ``?limit=M&job=J&step=S`` asks for, from ``start`` (``from``, checked by
    the route with ``Last-Event-ID``)."""
    raw = query.get("limit", "")
    limit = _bounded(raw, "limit", 1, MAX_WINDOW) if raw else None
    return Window(start, limit, _filter(query))


def parse_search(query: Mapping[str, str]) -> tuple[Needle, int, int, LineFilter]:
    """``?q=TEXT&from=N&limit=K&job=J&step=S``: the needle, from, limit and filter."""
    text = query.get("q", "")
    if not text:
        raise ValueError("q: required: the text to look for")
    if len(text) > MAX_QUERY:
        raise ValueError(f"q: {len(text)} characters: at most {MAX_QUERY}")
    start = _bounded(query.get("from", "0") or "0", "from", 0, MAX_INDEX)
    limit = _bounded(query.get("limit", "") or str(DEFAULT_MATCHES), "limit", 1, MAX_MATCHES)
    return Needle(text), start, limit, _filter(query)


def _filter(query: Mapping[str, str]) -> LineFilter:
    return LineFilter(job=query.get("job", ""), step=query.get("step", ""))


def _bounded(raw: str, name: str, low: int, high: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r}: expected a whole number from {low} to "
                         f"{high}") from None
    if not low <= value <= high:
        raise ValueError(f"{name}={raw!r}: expected a whole number from {low} to {high}")
    return value
