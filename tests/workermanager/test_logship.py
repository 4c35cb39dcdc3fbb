"""The worker's end of the log pipeline without a runtime: ``StepLog`` (the per-step log
limit) in front of ``LogShipper.sink`` (batches on the bus, backpressure)."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from services.workermanager.jobs import StepLog
from services.workermanager.logship import LogShipper
from shared.config import StepLogLimit
from shared.ports.bus import TOPIC_LOGS
from shared.ports.logstore import LogLine
from shared.wire import decode_log_batch
from tests.support import HANG_S, eventually

TS = "2024-05-01T12:00:00.000000+00:00"


class Bus:
    """Keeps what is published; ``gate`` cleared holds every publish back."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, str, list[LogLine]]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def publish(self, topic: str, key: str, value: bytes) -> None:
        assert topic == TOPIC_LOGS
        await self.gate.wait()
        self.batches.append(decode_log_batch(value))

    def lines(self) -> list[LogLine]:
        return [line for _, _, lines in self.batches for line in lines]


async def test_lines_are_shipped_in_order_with_job_step_and_attempt() -> None:
    bus = Bus()
    shipper = LogShipper(bus, "r1", max_lines=4, attempt=3)  # type: ignore[arg-type]
    build, test = shipper.sink("build", "compile"), shipper.sink("build", "test")
    for n in range(10):
        await (build if n < 5 else test)("stdout" if n % 2 else "stderr", TS, f"line {n}")
    await shipper.close()

    assert bus.lines() == [
        LogLine("build", "compile" if n < 5 else "test", "stdout" if n % 2 else "stderr",
                TS, f"line {n}", attempt=3)
        for n in range(10)
    ]
    assert [len(lines) for _, _, lines in bus.batches] == [4, 4, 2]
    assert len({batch for _, batch, _ in bus.batches}) == 3
    assert shipper.shipped == 10


async def test_a_line_that_fills_the_buffer_waits_for_the_bus() -> None:
    bus = Bus()
    shipper = LogShipper(bus, "r1", max_lines=3, linger_s=3600)  # type: ignore[arg-type]
    sink = shipper.sink("build", "test")
    bus.gate.clear()  # the bus is down
    await sink("stdout", TS, "a")  # joins the buffer: returns at once
    await sink("stdout", TS, "b")
    third = asyncio.ensure_future(sink("stdout", TS, "c"))
    await asyncio.sleep(0.05)
    assert not third.done()  # held back: backpressure on the step's output

    bus.gate.set()
    await asyncio.wait_for(third, HANG_S)
    assert [line.text for line in bus.lines()] == ["a", "b", "c"]
    await shipper.close()


async def test_lines_within_the_linger_go_out_together() -> None:
    bus = Bus()
    shipper = LogShipper(bus, "r1", linger_s=0.01)  # type: ignore[arg-type]
    sink = shipper.sink("build", "test")
    for n in range(5):
        await sink("stdout", TS, str(n))
    # The linger's batch, however late a loaded machine runs it (a fixed sleep could end
    # before the flush it started had run).
    await eventually(lambda: bus.batches, what="the linger's batch")
    assert [[line.text for line in lines] for _, _, lines in bus.batches] == [
        ["0", "1", "2", "3", "4"]]
    await shipper.close()


async def test_the_step_log_limit_cuts_once_and_counts_the_rest() -> None:
    bus = Bus()
    shipper = LogShipper(bus, "r1")  # type: ignore[arg-type]
    step_log = StepLog(shipper.sink("build", "test"), StepLogLimit(max_lines=3))
    for n in range(10):
        await step_log("stdout", TS, f"line {n}")
    await shipper.close()

    texts = [line.text for line in bus.lines()]
    assert texts[:3] == ["line 0", "line 1", "line 2"]
    assert len(texts) == 4 and texts[3].startswith("cyclone: log limit reached (3 lines")
    assert bus.lines()[3].stream == "stderr"
    cut = step_log.truncated("build", "test", attempt=1)
    assert cut is not None
    assert (cut.kept_lines, cut.kept_bytes, cut.dropped_lines, cut.dropped_bytes) == (
        3, 3 * len("line 0\n"), 7, 7 * len("line 0\n"))


async def test_the_step_log_limit_counts_bytes_as_utf8() -> None:
    bus = Bus()
    shipper = LogShipper(bus, "r1")  # type: ignore[arg-type]
    step_log = StepLog(shipper.sink("build", "test"), StepLogLimit(max_bytes=10))
    await step_log("stdout", TS, "ü€")  # 5 bytes and a newline
    await step_log("stdout", TS, "abcd")  # 5 more: 11 > 10
    await shipper.close()

    assert bus.lines()[0].text == "ü€"
    cut = step_log.truncated("build", "test", attempt=1)
    assert cut is not None and (cut.kept_bytes, cut.dropped_bytes) == (6, 5)
    assert StepLog(shipper.sink("b", "s"), StepLogLimit()).truncated("b", "s", 1) is None


class SizeCheckingBus(Bus):
    """Refuses what Kafka would: a message over its default limit (~1 MB)."""

    async def publish(self, topic: str, key: str, value: bytes) -> None:
        assert len(value) <= 1_000_000, f"a {len(value)}-byte message: Kafka refuses it"
        await super().publish(topic, key, value)


async def test_a_batch_too_big_for_one_message_goes_out_in_several() -> None:
    bus = SizeCheckingBus()
    # Control characters are escaped as \u00XX: 6 bytes each in the message.
    shipper = LogShipper(bus, "r1", max_lines=500, max_chars=10_000_000,  # type: ignore[arg-type]
                         linger_s=3600)
    sink = shipper.sink("build", "test")
    texts = [f"{n:03} " + "\x01" * 30_000 for n in range(100)]  # ~18 MB of JSON
    for text in texts:
        await sink("stdout", TS, text)
    await shipper.close()

    assert [line.text for line in bus.lines()] == texts
    assert len(bus.batches) > 18
    assert len({batch for _, batch, _ in bus.batches}) == len(bus.batches)
    assert shipper.shipped == 100


LIMITS = st.builds(StepLogLimit, max_lines=st.integers(1, 12), max_bytes=st.integers(1, 120))
CHUNKS = st.lists(st.lists(st.text(max_size=8), min_size=1, max_size=6), max_size=6)


@settings(max_examples=200, deadline=None)
@given(limit=LIMITS, chunks=CHUNKS)
async def test_a_chunk_of_lines_at_once_is_limited_and_shipped_as_line_by_line(
        limit: StepLogLimit, chunks: list[list[str]]) -> None:
    """What an executor hands over as one chunk (``many``) ends as the same lines, the
    same cut and the same counts as the lines one by one."""
    outcomes = []
    for at_once in (False, True):
        bus = Bus()
        shipper = LogShipper(bus, "r1", attempt=2)  # type: ignore[arg-type]
        step_log = StepLog(shipper.sink("build", "test"), limit)
        for chunk in chunks:
            if at_once:
                await step_log.many("stdout", TS, list(chunk))
            else:
                for text in chunk:
                    await step_log("stdout", TS, text)
        await shipper.close()
        cut = step_log.truncated("build", "test", attempt=2)
        # the cut's own line has the time it was cut at: compare what the step printed
        lines = [(line.job, line.step, line.stream, line.text, line.attempt)
                 for line in bus.lines()]
        outcomes.append((lines, cut and (cut.kept_lines, cut.kept_bytes, cut.dropped_lines,
                                         cut.dropped_bytes)))
    assert outcomes[0] == outcomes[1]
