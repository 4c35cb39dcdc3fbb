"""Benchmark of the embedded SQLite event store, in a temporary directory.

    python bench/store.py [--events 10000]

Prints two figures: appends per second (one event per append, each waiting for the
previous one, all to one stream, as a run's event manager does) and read_all
throughput (events per second, paging 1,000 at a time, as a projection rebuild does).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from shared.adapters.eventstore.sqlite import SqliteEventStore
from shared.events import NewEvent, StepFinished
from shared.status import StepStatus

__all__ = ["main"]


async def bench(path: Path, events: int) -> tuple[float, float]:
    """(appends per second, events read per second) for ``events`` events."""
    store = await SqliteEventStore.open(path)
    try:
        started = time.perf_counter()
        for seq in range(events):
            event = StepFinished(job="build", step=f"step-{seq}", status=StepStatus.SUCCESS,
                                 exit_code=0, duration_s=0.25)
            await store.append("run-bench", [NewEvent(event)], expected_seq=seq)
        appended = time.perf_counter() - started

        started, position, read = time.perf_counter(), 0, 0
        while page := await store.read_all(position, limit=1000):
            read += len(page)
            position = page[-1].position
        reading = time.perf_counter() - started
    finally:
        await store.close()
    if read != events:
        raise SystemExit(f"read {read} events, appended {events}")
    return events / appended, read / reading


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cyclone-bench-") as tmp:
        appends, reads = asyncio.run(bench(Path(tmp) / "events.db", args.events))
    print(f"sqlite event store, {args.events} events, one stream")
    print(f"  append (1 event per call): {appends:10,.0f} appends/s")
    print(f"  read_all (pages of 1000):  {reads:10,.0f} events/s")


if __name__ == "__main__":
    main()
