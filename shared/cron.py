"""Standard five-field cron lines, evaluated in UTC at minute resolution.

``parse(line)`` reads ``minute hour day-of-month month day-of-week``:

* each field is ``*`` or a comma list of ``N``, ``A-B``, ``*/S``, ``A-B/S`` and
  ``N/S`` (from N to the field's maximum, every S);
* month accepts ``jan``-``dec`` and day-of-week ``sun``-``sat`` (any case);
  day-of-week 0 and 7 are both Sunday, and a range may end at ``sun`` (``fri-sun``);
* the day rule of Vixie cron: when day-of-month and day-of-week are both
  restricted, a day matches if *either* matches; a field that begins with ``*``
  (``*`` or ``*/2``) does not count as restricted, so then both must match;
* the aliases ``@yearly`` (``@annually``), ``@monthly``, ``@weekly``, ``@daily``
  (``@midnight``) and ``@hourly``.

A line that can never fire (``0 0 30 feb *``) is refused at parse time, so
``Cron.next_after`` always finds a time. Errors are ``CronError`` (a
``ValueError``) whose message names the field and the value, e.g.
``hour: '25' is out of range 0-23``.

Times: an aware datetime is converted to UTC; a naive one is taken to be UTC.
Results are aware UTC datetimes with zero seconds.
"""

from __future__ import annotations

import bisect
import calendar
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

__all__ = ["FIELDS", "Cron", "CronError", "parse"]

FIELDS = ("minute", "hour", "day-of-month", "month", "day-of-week")
_BOUNDS = {"minute": (0, 59), "hour": (0, 23), "day-of-month": (1, 31), "month": (1, 12),
           "day-of-week": (0, 7)}
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_NAMES = {"month": {n: i for i, n in enumerate(_MONTHS, 1)},
          "day-of-week": {n: i for i, n in enumerate(_DAYS)}}
_ALIASES = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
            "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
            "@hourly": "0 * * * *"}
# the longest a possible line waits: February 29th on a given weekday, across a
# century year that is not leap, is well inside one 400-year Gregorian cycle
_SEARCH_YEARS = 400


class CronError(ValueError):
    """A cron line that cannot be read. ``field`` is one of ``FIELDS`` or "" for the whole
    line; ``value`` is the offending text."""

    def __init__(self, message: str, field: str = "", value: str = "") -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.value = value


@dataclass(frozen=True)
class Cron:
    """A parsed cron line: the set of values each field allows."""

    line: str  # as written (stripped)
    minutes: tuple[int, ...]  # sorted
    hours: tuple[int, ...]
    days: frozenset[int]  # 1-31
    months: frozenset[int]  # 1-12
    weekdays: frozenset[int]  # 0-6, 0 = Sunday
    days_star: bool  # day-of-month began with "*": not restricted for the OR rule
    weekdays_star: bool

    def __str__(self) -> str:
        return self.line

    def matches(self, t: datetime) -> bool:
        """Whether the line fires in the minute of ``t``."""
        t = _utc(t)
        return (t.minute in self.minutes and t.hour in self.hours
                and t.month in self.months and self._day_matches(t.date()))

    def next_after(self, t: datetime) -> datetime:
        """The first fire time strictly after ``t`` (the next whole minute or later)."""
        start = _utc(t).replace(second=0, microsecond=0) + timedelta(minutes=1)
        day, hour, minute = start.date(), start.hour, start.minute
        last_year = day.year + _SEARCH_YEARS
        try:
            while day.year <= last_year:
                if day.month not in self.months:
                    day, hour, minute = _next_month(day), 0, 0
                    continue
                if self._day_matches(day):
                    found = self._time_on(hour, minute)
                    if found is not None:
                        return datetime(day.year, day.month, day.day, *found, tzinfo=UTC)
                day, hour, minute = day + timedelta(days=1), 0, 0
        except (OverflowError, ValueError):
            pass  # ran past year 9999 (date arithmetic overflows, date() refuses year 10000)
        raise ValueError(f"cron line '{self.line}' does not fire after {t.isoformat()}")

    def fires_between(self, a: datetime, b: datetime) -> Iterator[datetime]:
        """Every fire time ``f`` with ``a < f <= b``, in order (lazily)."""
        end = _utc(b)
        t = self.next_after(a)
        while t <= end:
            yield t
            t = self.next_after(t)

    def _day_matches(self, day: date) -> bool:
        in_month = day.day in self.days
        in_week = day.isoweekday() % 7 in self.weekdays
        if self.days_star or self.weekdays_star:
            return in_month and in_week
        return in_month or in_week

    def _time_on(self, hour: int, minute: int) -> tuple[int, int] | None:
        """The first allowed (hour, minute) at or after ``hour:minute`` on an allowed day."""
        i = bisect.bisect_left(self.hours, hour)
        if i < len(self.hours) and self.hours[i] == hour:
            j = bisect.bisect_left(self.minutes, minute)
            if j < len(self.minutes):
                return hour, self.minutes[j]
            i += 1
        if i < len(self.hours):
            return self.hours[i], self.minutes[0]
        return None


def parse(line: str) -> Cron:
    """Read a cron line; raise ``CronError`` naming the field and value when it is bad."""
    text = line.strip()
    expanded = _ALIASES.get(text.lower(), text)
    if expanded.startswith("@"):
        raise CronError(f"unknown alias '{text}' (expected one of: {', '.join(_ALIASES)})",
                        value=text)
    parts = expanded.split()
    if not parts:
        raise CronError("the cron line is empty", value=text)
    if len(parts) != len(FIELDS):
        raise CronError(f"expected 5 fields ({' '.join(FIELDS)}), got {len(parts)}", value=text)
    minute, hour, dom, month, dow = (_field(name, part) for name, part in zip(FIELDS, parts,
                                                                               strict=True))
    cron = Cron(line=text, minutes=tuple(sorted(minute)), hours=tuple(sorted(hour)),
                days=frozenset(dom), months=frozenset(month),
                weekdays=frozenset(d % 7 for d in dow),
                days_star=parts[2].startswith("*"), weekdays_star=parts[4].startswith("*"))
    _check_possible(cron, parts)
    return cron


def _field(name: str, text: str) -> set[int]:
    values: set[int] = set()
    for item in text.split(","):
        if not item:
            raise CronError(f"empty list item in '{text}'", name, text)
        values |= _item(name, item)
    return values


def _item(name: str, item: str) -> set[int]:
    low, high = _BOUNDS[name]
    body, slash, step_text = item.partition("/")
    step = 1
    if slash:
        if not step_text.isdigit() or int(step_text) < 1:
            raise CronError(f"step '{step_text}' must be a whole number >= 1", name, item)
        step = int(step_text)
    if body == "*":
        start, end = low, high
    elif "-" in body:
        first, _, last = body.partition("-")
        start, end = _value(name, first, item), _value(name, last, item, range_end=True)
        if start > end:
            raise CronError(f"range '{body}' runs backwards", name, item)
    else:
        start = _value(name, body, item)
        end = high if slash else start  # "5/15": from 5 to the maximum, every 15
    return set(range(start, end + 1, step))


def _value(name: str, text: str, item: str, range_end: bool = False) -> int:
    names = _NAMES.get(name, {})
    if text.lower() in names:
        number = names[text.lower()]
        # "fri-sun": Sunday ends a range as 7
        return 7 if range_end and name == "day-of-week" and number == 0 else number
    if not text.isdigit():
        what = f"'{text}'" if text else "an empty value"
        hint = ""
        if name == "month":
            hint = " (use 1-12 or jan-dec)"
        elif name == "day-of-week":
            hint = " (use 0-7 or sun-sat)"
        raise CronError(f"{what} is not a number{hint}", name, item)
    low, high = _BOUNDS[name]
    number = int(text)
    if not low <= number <= high:
        raise CronError(f"'{text}' is out of range {low}-{high}", name, item)
    return number


def _check_possible(cron: Cron, parts: list[str]) -> None:
    """Refuse a line whose day-of-month never occurs in its months (it would never fire).

    Only the AND case can be impossible: with the OR rule the weekdays always come."""
    if not (cron.days_star or cron.weekdays_star):
        return
    longest = max(29 if m == 2 else calendar.monthrange(2001, m)[1] for m in cron.months)
    if min(cron.days) > longest:
        raise CronError(f"'{parts[2]}' never occurs in month '{parts[3]}'", "day-of-month",
                        parts[2])


def _next_month(day: date) -> date:
    return date(day.year + 1, 1, 1) if day.month == 12 else date(day.year, day.month + 1, 1)


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
