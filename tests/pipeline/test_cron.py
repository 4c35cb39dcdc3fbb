"""Cron lines: when they fire (UTC, minute resolution) and what a bad line is told."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone
from itertools import islice

import pytest

from shared.cron import CronError, parse


def at(text: str) -> datetime:
    """``"2024-01-31 23:59"`` -> an aware UTC datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def fires(line: str, after: str, count: int) -> list[str]:
    cron = parse(line)
    out, t = [], at(after)
    for _ in range(count):
        t = cron.next_after(t)
        out.append(t.strftime("%Y-%m-%d %H:%M %a"))
    return out


@pytest.mark.parametrize(("line", "after", "expected"), [
    # plain fields, strictly after, rolling over hour, day, month and year
    ("0 3 * * *", "2024-01-31 02:59", ["2024-01-31 03:00 Wed", "2024-02-01 03:00 Thu"]),
    ("0 3 * * *", "2024-01-31 03:00", ["2024-02-01 03:00 Thu", "2024-02-02 03:00 Fri"]),
    ("59 23 31 12 *", "2024-12-31 23:59", ["2025-12-31 23:59 Wed", "2026-12-31 23:59 Thu"]),
    # month ends: the 31st skips the short months, the 30th skips February
    ("0 0 31 * *", "2024-01-31 00:00", ["2024-03-31 00:00 Sun", "2024-05-31 00:00 Fri",
                                       "2024-07-31 00:00 Wed"]),
    ("0 0 30 * *", "2024-01-30 00:00", ["2024-03-30 00:00 Sat", "2024-04-30 00:00 Tue"]),
    # leap years, and 2100, a century that is not one
    ("0 0 29 2 *", "2024-03-01 00:00", ["2028-02-29 00:00 Tue", "2032-02-29 00:00 Sun"]),
    ("0 0 29 feb *", "2096-03-01 00:00", ["2104-02-29 00:00 Fri"]),
    # both day fields restricted: either one (September 2024: the 2nd is a Monday)
    ("0 0 13 * 1", "2024-09-01 00:00", ["2024-09-02 00:00 Mon", "2024-09-09 00:00 Mon",
                                       "2024-09-13 00:00 Fri", "2024-09-16 00:00 Mon"]),
    ("0 0 1-31/10 * mon", "2024-01-01 00:00", ["2024-01-08 00:00 Mon", "2024-01-11 00:00 Thu",
                                              "2024-01-15 00:00 Mon", "2024-01-21 00:00 Sun"]),
    # a day field that begins with "*" is not restricted (Vixie cron): both must match
    ("0 0 */10 * 1", "2024-01-01 00:00", ["2024-03-11 00:00 Mon", "2024-04-01 00:00 Mon"]),
    ("0 0 13 * *", "2024-09-01 00:00", ["2024-09-13 00:00 Fri", "2024-10-13 00:00 Sun"]),
    ("0 0 * * 5", "2024-09-01 00:00", ["2024-09-06 00:00 Fri", "2024-09-13 00:00 Fri"]),
    # steps: on "*", on ranges, from a start value
    ("*/20 * * * *", "2024-01-01 10:41", ["2024-01-01 11:00 Mon", "2024-01-01 11:20 Mon"]),
    ("10-30/7 * * * *", "2024-01-01 10:00", ["2024-01-01 10:10 Mon", "2024-01-01 10:17 Mon",
                                             "2024-01-01 10:24 Mon", "2024-01-01 11:10 Mon"]),
    ("0 9-17/4 * * *", "2024-01-01 09:00", ["2024-01-01 13:00 Mon", "2024-01-01 17:00 Mon",
                                            "2024-01-02 09:00 Tue"]),
    ("5/20 * * * *", "2024-01-01 10:45", ["2024-01-01 11:05 Mon", "2024-01-01 11:25 Mon"]),
    # lists, names in any case, 7 and "sun" as the end of a range
    ("0 0 1 jan,JUL *", "2024-01-01 00:00", ["2024-07-01 00:00 Mon", "2025-01-01 00:00 Wed"]),
    ("30 8 * * Mon-FRI", "2024-01-05 09:00", ["2024-01-08 08:30 Mon"]),
    ("0 0 * * fri-sun", "2024-01-04 00:00", ["2024-01-05 00:00 Fri", "2024-01-06 00:00 Sat",
                                             "2024-01-07 00:00 Sun", "2024-01-12 00:00 Fri"]),
    ("0 0 * * 5-7", "2024-01-04 00:00", ["2024-01-05 00:00 Fri", "2024-01-06 00:00 Sat",
                                         "2024-01-07 00:00 Sun"]),
    ("0 0 * * 7", "2024-01-01 00:00", ["2024-01-07 00:00 Sun"]),
    # aliases
    ("@hourly", "2024-01-01 10:00", ["2024-01-01 11:00 Mon"]),
    ("@daily", "2024-01-01 10:00", ["2024-01-02 00:00 Tue"]),
    ("@midnight", "2024-01-01 10:00", ["2024-01-02 00:00 Tue"]),
    ("@weekly", "2024-01-01 10:00", ["2024-01-07 00:00 Sun"]),
    ("@monthly", "2024-01-31 10:00", ["2024-02-01 00:00 Thu"]),
    ("@yearly", "2024-01-01 00:00", ["2025-01-01 00:00 Wed"]),
    ("@ANNUALLY", "2024-01-01 00:00", ["2025-01-01 00:00 Wed"]),
])
def test_next_after(line: str, after: str, expected: list[str]) -> None:
    assert fires(line, after, len(expected)) == expected


def test_seconds_are_dropped_and_the_result_is_strictly_later() -> None:
    cron = parse("0 3 * * *")
    assert cron.next_after(at("2024-01-01 03:00:30")) == at("2024-01-02 03:00")
    assert cron.next_after(at("2024-01-01 02:59:59.999")) == at("2024-01-01 03:00")


def test_times_are_utc_whatever_the_input_zone() -> None:
    cron = parse("0 3 * * *")
    plus_two = datetime(2024, 1, 1, 4, 30, tzinfo=timezone(timedelta(hours=2)))  # 02:30 UTC
    assert cron.next_after(plus_two) == at("2024-01-01 03:00")
    naive = datetime(2024, 1, 1, 2, 30)  # taken as UTC
    result = cron.next_after(naive)
    assert result == at("2024-01-01 03:00") and result.tzinfo == UTC


def test_fires_between_excludes_the_start_and_includes_the_end() -> None:
    cron = parse("*/15 * * * *")
    got = list(cron.fires_between(at("2024-01-01 00:00"), at("2024-01-01 01:00")))
    assert got == [at("2024-01-01 00:15"), at("2024-01-01 00:30"), at("2024-01-01 00:45"),
                   at("2024-01-01 01:00")]
    assert len(list(cron.fires_between(at("2024-01-01 00:00"), at("2024-01-02 00:00")))) == 96
    assert list(cron.fires_between(at("2024-01-01 00:01"), at("2024-01-01 00:14"))) == []
    assert list(cron.fires_between(at("2024-01-01 01:00"), at("2024-01-01 00:00"))) == []


def test_fires_between_a_missed_night_of_downtime() -> None:
    nightly = parse("0 3 * * *")
    got = list(nightly.fires_between(at("2024-02-27 12:00"), at("2024-03-02 02:00")))
    assert got == [at("2024-02-28 03:00"), at("2024-02-29 03:00"), at("2024-03-01 03:00")]


def test_fires_between_is_lazy() -> None:
    every_minute = parse("* * * * *")
    ten_years = every_minute.fires_between(at("2024-01-01 00:00"), at("2034-01-01 00:00"))
    assert list(islice(ten_years, 3)) == [at("2024-01-01 00:01"), at("2024-01-01 00:02"),
                                          at("2024-01-01 00:03")]


def test_matches() -> None:
    cron = parse("30 8 * * 1-5")
    assert cron.matches(at("2024-01-08 08:30:59"))  # a Monday, within the minute
    assert not cron.matches(at("2024-01-07 08:30"))  # a Sunday
    assert not cron.matches(at("2024-01-08 08:31"))


def test_next_after_agrees_with_a_minute_by_minute_scan() -> None:
    """The search skips months, days and hours; a scan of every minute must agree."""
    rng = random.Random(7)
    lines = ["*/7 */5 * * *", "15 2 */3 * *", "0 0 1-7 * mon", "45 23 * * sun",
             "0 12 15 * fri", "*/30 1-3 28-31 * *", "0 0 31 * *", "59 23 * feb *"]
    for line in lines:
        cron = parse(line)
        for _ in range(5):
            start = at("2023-12-01 00:00") + timedelta(minutes=rng.randrange(60 * 24 * 400))
            expected = start.replace(second=0) + timedelta(minutes=1)
            while not cron.matches(expected):
                expected += timedelta(minutes=1)
            assert cron.next_after(start) == expected, (line, start)


def test_the_line_is_kept_as_written() -> None:
    assert str(parse("  0 3 * * *  ")) == "0 3 * * *"
    assert parse("@daily").line == "@daily"


@pytest.mark.parametrize(("line", "message", "field"), [
    ("", "the cron line is empty", ""),
    ("* * * *", "expected 5 fields (minute hour day-of-month month day-of-week), got 4", ""),
    ("* * * * * *", "expected 5 fields (minute hour day-of-month month day-of-week), got 6",
     ""),
    ("60 * * * *", "minute: '60' is out of range 0-59", "minute"),
    ("0 24 * * *", "hour: '24' is out of range 0-23", "hour"),
    ("0 0 0 * *", "day-of-month: '0' is out of range 1-31", "day-of-month"),
    ("0 0 32 * *", "day-of-month: '32' is out of range 1-31", "day-of-month"),
    ("0 0 * 13 *", "month: '13' is out of range 1-12", "month"),
    ("0 0 * * 8", "day-of-week: '8' is out of range 0-7", "day-of-week"),
    ("0 0 * foo *", "month: 'foo' is not a number (use 1-12 or jan-dec)", "month"),
    ("0 0 * * mun", "day-of-week: 'mun' is not a number (use 0-7 or sun-sat)", "day-of-week"),
    ("0 0 * * jan", "day-of-week: 'jan' is not a number (use 0-7 or sun-sat)", "day-of-week"),
    ("mon * * * *", "minute: 'mon' is not a number", "minute"),
    ("-5 * * * *", "minute: an empty value is not a number", "minute"),
    ("*/0 * * * *", "minute: step '0' must be a whole number >= 1", "minute"),
    ("*/x * * * *", "minute: step 'x' must be a whole number >= 1", "minute"),
    ("5-1 * * * *", "minute: range '5-1' runs backwards", "minute"),
    ("0 0 * * sat-mon", "day-of-week: range 'sat-mon' runs backwards", "day-of-week"),
    ("1,,2 * * * *", "minute: empty list item in '1,,2'", "minute"),
    ("1.5 * * * *", "minute: '1.5' is not a number", "minute"),
    ("0 0 30 2 *", "day-of-month: '30' never occurs in month '2'", "day-of-month"),
    ("0 0 31 apr,jun,sep,nov *", "day-of-month: '31' never occurs in month "
     "'apr,jun,sep,nov'", "day-of-month"),
    ("@reboot", "unknown alias '@reboot' (expected one of: @yearly, @annually, @monthly, "
     "@weekly, @daily, @midnight, @hourly)", ""),
])
def test_bad_lines_name_the_field_and_value(line: str, message: str, field: str) -> None:
    with pytest.raises(CronError) as caught:
        parse(line)
    assert str(caught.value) == message
    assert caught.value.field == field
    assert isinstance(caught.value, ValueError)


def test_an_impossible_day_is_fine_when_the_weekday_can_fire() -> None:
    # both day fields restricted: the OR rule fires on Mondays of February
    assert fires("0 0 30 2 1", "2024-01-31 00:00", 1) == ["2024-02-05 00:00 Mon"]
