"""Helpers shared by the tests: waiting on a condition with a deadline (never a bare sleep)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar, overload

T = TypeVar("T")


@overload
async def eventually(check: Callable[[], Awaitable[T]], timeout: float = ...,
                     interval: float = ..., what: str = ...) -> T: ...


@overload
async def eventually(check: Callable[[], T], timeout: float = ..., interval: float = ...,
                     what: str = ...) -> T: ...


async def eventually(check: Callable[[], object], timeout: float = 10.0,
                     interval: float = 0.02, what: str = "condition") -> object:
    """Poll ``check`` until it returns a truthy value; fail with ``what`` after ``timeout`` s."""
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
