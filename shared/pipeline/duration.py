"""Durations as written in pipeline files: seconds, or "90s", "10m", "1h30m", "1.5h"."""

from __future__ import annotations

import math
import re

__all__ = ["format_duration", "parse_duration"]

_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)([hms])")
_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?[hms])+")


def parse_duration(value: object) -> float:
    """Seconds in ``value``, which must be > 0.

    Accepts an int or float (seconds), a numeric string, or a string of
    number+unit parts (h, m, s), each unit at most once, largest first.
    Raises ``ValueError`` with a message meant for the user.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("expected a duration such as 30, \"90s\", \"10m\" or \"1h30m\"")
    seconds = _seconds(value.strip() if isinstance(value, str) else value)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"must be > 0, got {value!r}")
    return seconds


def _seconds(value: int | float | str) -> float:
    if not isinstance(value, str):
        return float(value)
    try:
        return float(value)
    except ValueError:
        pass
    parts = _PART.findall(value)
    units = [unit for _, unit in parts]
    ordered = sorted(set(units), key="hms".index)
    if not _WHOLE.fullmatch(value) or units != ordered:
        raise ValueError(f"invalid duration {value!r} (use seconds or e.g. \"90s\", \"10m\", "
                         "\"1h30m\")")
    return sum(float(number) * _UNITS[unit] for number, unit in parts)


def format_duration(seconds: float) -> str:
    """``5400`` -> ``"1h30m"``, ``90`` -> ``"1m30s"``, ``2.5`` -> ``"2.5s"``: as written in a
    pipeline file (``parse_duration`` reads it back)."""
    whole = int(seconds)
    if whole != seconds or whole < 60:
        return f"{seconds:g}s"
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(hours, "h"), (minutes, "m"), (secs, "s")]
    return "".join(f"{n}{unit}" for n, unit in parts if n)
