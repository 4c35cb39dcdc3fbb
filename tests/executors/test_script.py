"""The pieces both executors share, without any executor: lines, names, shielded cleanup."""

from __future__ import annotations

import asyncio

import pytest

from shared.adapters.executor.script import (
    MAX_LINE_BYTES,
    StepOutput,
    check_run_id,
    finish_shielded,
    sanitise,
)
from shared.errors import ExecutorError
from tests.executors.conftest import Logs


async def test_lines_are_assembled_across_chunks_and_keep_their_first_timestamp() -> None:
    logs = Logs()
    output = StepOutput(logs)
    await output.feed("stdout", "2024-01-01T00:00:01+00:00", b"hel")
    await output.feed("stderr", "2024-01-01T00:00:02+00:00", b"oops\r\n")
    await output.feed("stdout", "2024-01-01T00:00:03+00:00", b"lo\nwor")
    await output.feed("stdout", "2024-01-01T00:00:04+00:00", b"ld\n\xff tail")
    await output.flush()
    assert logs.lines == [
        ("stderr", "2024-01-01T00:00:02+00:00", "oops"),
        ("stdout", "2024-01-01T00:00:01+00:00", "hello"),
        ("stdout", "2024-01-01T00:00:03+00:00", "world"),
        ("stdout", "2024-01-01T00:00:04+00:00", "\ufffd tail"),
    ]


async def test_an_endless_line_is_delivered_in_pieces() -> None:
    logs = Logs()
    output = StepOutput(logs)
    await output.feed("stdout", "2024-01-01T00:00:00+00:00", b"x" * (MAX_LINE_BYTES * 2 + 5))
    assert [len(t) for t in logs.texts()] == [MAX_LINE_BYTES, MAX_LINE_BYTES]
    await output.flush()
    assert len(logs.texts()[-1]) == 5


async def test_the_lines_of_one_chunk_take_its_timestamp_except_a_pending_first() -> None:
    logs = Logs()
    output = StepOutput(logs)
    await output.feed("stdout", "2024-01-01T00:00:01+00:00", b"a")
    await output.feed("stdout", "2024-01-01T00:00:02+00:00", b"b\nc\nd\ne")
    await output.feed("stdout", "2024-01-01T00:00:03+00:00", b"\nf\n")
    assert logs.lines == [
        ("stdout", "2024-01-01T00:00:01+00:00", "ab"),
        ("stdout", "2024-01-01T00:00:02+00:00", "c"),
        ("stdout", "2024-01-01T00:00:02+00:00", "d"),
        ("stdout", "2024-01-01T00:00:02+00:00", "e"),
        ("stdout", "2024-01-01T00:00:03+00:00", "f"),
    ]


async def test_one_carriage_return_before_a_newline_goes_even_across_chunks() -> None:
    logs = Logs()
    output = StepOutput(logs)
    ts = "2024-01-01T00:00:01+00:00"
    await output.feed("stdout", ts, b"a\r")
    await output.feed("stdout", ts, b"\nb\r\r\nc\rd\n\r\n")
    assert logs.texts() == ["a", "b\r", "c\rd", ""]


async def test_bytes_that_are_not_utf8_are_replaced_line_by_line() -> None:
    logs = Logs()
    output = StepOutput(logs)
    ts = "2024-01-01T00:00:01+00:00"
    await output.feed("stdout", ts, b"cut \xe2\x82\nthen \xe2\x82\xac\n\xff\xfe\n")
    assert logs.texts() == ["cut \ufffd", "then \u20ac", "\ufffd\ufffd"]


def test_names_are_sanitised_for_docker() -> None:
    assert sanitise("test (python=3.11, os=linux)") == "test_python_3.11_os_linux"
    assert sanitise("((()))") == "x"
    assert len(sanitise("a" * 200)) == 40


@pytest.mark.parametrize("run_id", ["../etc", "a/b", "", "-x", "a b"])
def test_unsafe_run_ids_are_refused(run_id: str) -> None:
    with pytest.raises(ExecutorError, match="invalid run id"):
        check_run_id(run_id)


async def test_a_shielded_cleanup_finishes_before_a_cancel_propagates() -> None:
    started, cleaning, release, cleaned = (asyncio.Event() for _ in range(4))

    async def cleanup() -> None:
        cleaning.set()
        await release.wait()
        cleaned.set()

    async def body() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            await finish_shielded(cleanup())

    task = asyncio.create_task(body())
    await started.wait()
    task.cancel()
    await cleaning.wait()
    task.cancel()  # a second cancel while cleaning up does not cut the cleanup short
    done, _ = await asyncio.wait({task}, timeout=0.1)
    assert not done
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned.is_set()
