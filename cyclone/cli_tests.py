"""``cyclone tests RUN``: a run's JUnit reports summed over its jobs.

    run 0193...: 120 tests: 114 passed, 3 failed, 1 error, 2 skipped (4.2s; jobs unit, it)

    JOB   TEST                     FLAKY  MESSAGE
    unit  pkg.test_api.test_login  flaky  AssertionError: 401 != 200
    ...
    SLOWEST  ...

A failing test is marked flaky when it also passed on the run's commit in the same job
(the server judges it: ``GET /api/v1/runs/{id}/tests``). ``--json`` prints the server's
answer. Exit code 0 whatever the tests did: the run's own status says that.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from cyclone.client import CycloneClient
from cyclone.output import duration, first_line, print_json, short, table

__all__ = ["add_test_commands"]

EXIT_OK = 0
Json = dict[str, Any]


def add_test_commands(sub: Any, command: Callable[..., argparse.ArgumentParser]) -> None:
    """``command(parent, name, handler, help)`` adds a client command (cli_client's)."""
    command(sub, "tests", _tests, "a run's test reports: counts, failing tests (flaky "
            "marked), the slowest").add_argument("run")


async def _tests(args: argparse.Namespace, client: CycloneClient) -> int:
    shown = await client.run_tests(args.run)
    if args.json:
        print_json(shown)
        return EXIT_OK
    if not shown["jobs"]:
        print(f"run {shown['run']} has no test reports")
        return EXIT_OK
    print(f"run {shown['run']}: {_counts(shown)} ({duration(shown['duration_s'])}; "
          f"jobs {', '.join(shown['jobs'])})")
    if shown["failures"]:
        print()
        table(["JOB", "TEST", "FLAKY", "MESSAGE"],
              ([f["job"], f["id"], "flaky" if f["flaky"] else "",
                short(first_line(f["message"]))] for f in shown["failures"]))
    if shown["slowest"]:
        print()
        table(["SLOWEST", "JOB", "DURATION"],
              ([s["id"], s["job"], duration(s["duration_s"])] for s in shown["slowest"]))
    _notes(shown)
    return EXIT_OK


def _counts(shown: Json) -> str:
    tests = _plural(shown["tests"], "test")
    parts = [f"{shown['passed']} passed", f"{shown['failed']} failed",
             _plural(shown["errors"], "error"), f"{shown['skipped']} skipped"]
    return f"{tests}: {', '.join(parts)}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _notes(shown: Json) -> None:
    if shown["warnings"] or shown["unreadable"]:
        print()
    for warning in shown["warnings"]:
        print(f"warning: {warning}")
    if shown["unreadable"]:
        print(f"note: the results of run(s) {', '.join(shown['unreadable'])} are gone; "
              "flaky tests were judged without them")
