"""Helpers shared by the tests: waiting on a condition with a deadline (never a bare sleep).

A deadline in a test only catches a hang: the CI machine has 2 cores and is often
loaded, so a test never asserts how fast something happens (that is a benchmark's job,
under ``bench/``). ``HANG_S`` is the deadline for anything that must merely happen;
a test that needs a shorter one says what it is relative to (a step that would
otherwise sleep for 300 s, a lease or back-off far longer than the wait).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar, overload

T = TypeVar("T")

HANG_S = 60.0  # no wait in a test is meant to come near this: past it, something hangs


@overload
async def eventually(check: Callable[[], Awaitable[T | None]], timeout: float = ...,
                     interval: float = ..., what: str = ...) -> T: ...


@overload
async def eventually(check: Callable[[], T | None], timeout: float = ..., interval: float = ...,
                     what: str = ...) -> T: ...


async def eventually(check: Callable[[], object], timeout: float = HANG_S,
                     interval: float = 0.02, what: str = "condition") -> object:
    """Poll ``check`` until it returns a truthy value; fail with ``what`` after ``timeout`` s.

    Wait on the very condition the test asserts next (a record that follows a delivery
    is waited for itself, not the delivery). ``timeout`` only catches a hang."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)
