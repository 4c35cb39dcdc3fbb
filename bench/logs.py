"""Live log streaming: lines/s to one SSE client, line latency, and the server's memory.

Starts the embedded runtime (Docker executor when a daemon is reachable, else the
host shell) with a temporary CYCLONE_HOME, serves ``log_routes`` on 127.0.0.1, requests
a run whose one step prints N lines as fast as it can (busybox ``seq``), and connects
an SSE client (a separate process, so it does not share the server's event loop) as
soon as the run exists. Prints:

* lines/s the client received, from its first line to the end event;
* p50 / p99 latency from each line's ``ts`` (when the worker read it) to its arrival;
* the server process's RSS (VmRSS) at the start, its peak, and at the end.

Then a second client replays the finished log from line 0 (the log server's own
serving rate, with nothing else competing for the process), and the rate at which the
log server stored the lines while the step printed them.

Targets: >= 100,000 lines/s to the client; p50 <= 50 ms at a paced 30,000 lines/s
(``--rate 30000``); RSS flat (it must not grow with the log); every line stored, in
order (``--lines 1000000``).

    python bench/logs.py [--lines 500000] [--rate N] [--big] [--bus-trim]
                         [--executor auto|docker|shell]

* ``--rate N`` prints about N lines/s (a burst every 0.1 s: busybox awk forks a
  ``sleep`` for each pause, too slow for more) instead of as fast as it can:
  line latency is only meaningful when the pipeline keeps up with the printing; a
  step that prints faster than lines are stored builds a queue, and the queue is the
  latency.
* ``--big`` prints ~1 GB instead (1,000,000 lines of ~1 KB) to show how RSS behaves.
* ``--bus-trim`` runs the embedded bus with ``MemoryBus(trim=True)``: by default the
  embedded bus keeps every message it carried (log batches included) in memory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from cyclone import ports
from cyclone.embedded import Embedded
from services.api.commands import request_run
from services.logserver.http import log_routes
from shared.adapters.bus.memory import MemoryBus
from shared.config import Settings
from shared.projections.runs import RunView

IMAGE = "cyclone-test/busybox:latest"
BIG_LINES, BIG_WIDTH = 1_000_000, 1000  # ~1 GB of log
RSS_EVERY_S = 0.1


# --- the server side (this process) ---------------------------------------------------


def step_command(lines: int, width: int, rate: int) -> str:
    if width <= 0 and rate <= 0:
        return f"seq 1 {lines}"
    burst = max(rate // 10, 1)
    if width <= 0:  # paced: a burst of rate/10 lines (`seq`: busybox awk prints ~20,000
        # lines/s at most here), then 0.1 s of rest
        return (f"i=0; while [ $i -lt {lines} ]; do seq $((i + 1)) $((i + {burst})); "
                f"i=$((i + {burst})); sleep 0.1; done")
    # busybox awk: line i is "i xxxx...x" with `width` characters of padding; with a
    # rate, a burst of rate/10 lines then a 0.1 s pause
    pause = f"if (i % {burst} == 0) {{ fflush(); system(\"sleep 0.1\") }}" if rate else ""
    return (f"awk 'BEGIN {{ s = sprintf(\"%{width}s\", \"\"); gsub(/ /, \"x\", s); "
            f"for (i = 1; i <= {lines}; i++) {{ print i, s; {pause} }} }}'")


def pipeline(lines: int, width: int, rate: int) -> str:
    command = json.dumps(step_command(lines, width, rate))
    return (f"jobs:\n  print:\n    image: {IMAGE}\n    steps:\n"
            f"      - name: lines\n        run: [{command}]\n")


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class RssSampler:
    def __init__(self) -> None:
        self.start = rss_mb()
        self.peak = self.start
        self._task = asyncio.create_task(self._sample())

    async def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, rss_mb())
            await asyncio.sleep(RSS_EVERY_S)

    async def stop(self) -> float:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        end = rss_mb()
        self.peak = max(self.peak, end)
        return end


async def serve_logs(runtime: Embedded) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.add_routes(log_routes(runtime.logserver, runtime.live.view))
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


class StoreSampler:
    """How many lines the log store holds, over time: the log server's storing rate."""

    def __init__(self, runtime: Embedded, run_id: str) -> None:
        self.samples: list[tuple[float, int]] = []
        self._task = asyncio.create_task(self._sample(runtime, run_id))

    async def _sample(self, runtime: Embedded, run_id: str) -> None:
        while True:
            self.samples.append((time.monotonic(), await runtime.logs.count(run_id)))
            await asyncio.sleep(RSS_EVERY_S)

    async def stop(self) -> float:
        """Lines stored per second, from the first stored line to the last."""
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        total = self.samples[-1][1]
        first = next(t for t, n in self.samples if n > 0)
        last = next(t for t, n in self.samples if n == total)
        return total / max(last - first, RSS_EVERY_S)


async def run_client(url: str) -> dict[str, Any]:
    client = await asyncio.create_subprocess_exec(sys.executable, __file__, "--client", url,
                                                  stdout=subprocess.PIPE)
    out, _ = await client.communicate()
    if client.returncode != 0:
        raise SystemExit(f"the SSE client failed (exit {client.returncode})")
    result: dict[str, Any] = json.loads(out)
    return result


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    lines, width = (BIG_LINES, BIG_WIDTH) if args.big else (args.lines, 0)
    if args.bus_trim:  # what Embedded would do with MemoryBus(trim=True)
        ports.MemoryBus = functools.partial(MemoryBus, trim=True)  # type: ignore[attr-defined,assignment]
    with tempfile.TemporaryDirectory(prefix="cyclone-bench-") as tmp:
        source = Path(tmp) / "src"
        source.mkdir()
        settings = Settings.from_env({"CYCLONE_HOME": str(Path(tmp) / "home"),
                                      "CYCLONE_EXECUTOR": args.executor})
        runtime = await Embedded.start(settings, own_all_runs=True)
        try:
            runner, base = await serve_logs(runtime)
            try:
                rss = RssSampler()
                run_id = await request_run(
                    runtime.store, project="bench", trigger="manual", branch="main",
                    commit="", pipeline_file=".cyclone.yml",
                    pipeline=pipeline(lines, width, args.rate), source=str(source))
                stored = StoreSampler(runtime, run_id)
                url = f"{base}/api/v1/runs/{run_id}/logs"
                live = await run_client(url)
                store_rate = await stored.stop()
                replay = await run_client(url)
                rss_end = await rss.stop()
                run = runtime.readmodel.runs[run_id]
            finally:
                await runner.cleanup()
        finally:
            await runtime.stop()
    return {"executor": runtime.executor.name, "expected": lines + 1, "width": width,
            "run": run, "live": live, "replay": replay, "store_rate": store_rate,
            "rss": (rss.start, rss.peak, rss_end), "bus_trim": args.bus_trim}


def report(r: dict[str, Any]) -> None:
    run: RunView = r["run"]
    live, replay = r["live"], r["replay"]
    start, peak, end = r["rss"]
    print(f"executor {r['executor']}; run {run.status} in {run.duration_s or 0:.1f} s; "
          f"{r['expected']:,} lines of ~{r['width'] + 7} bytes "
          f"({r['expected'] / max(run.duration_s or 0, 1e-3):,.0f} lines/s printed)")
    print(f"log server stored the lines at {r['store_rate']:,.0f} lines/s")
    print(f"live SSE client: {live['lines']:,} lines (indices contiguous: {live['contiguous']}), "
          f"{live['bytes'] / 1e6:,.0f} MB, end event {live['end']}")
    print(f"  throughput {live['rate']:,.0f} lines/s ({live['mb_s']:.1f} MB/s), first line to "
          f"end  [target >= 100,000]")
    print(f"  latency ts -> client: p50 {live['p50_ms']:,.1f} ms, p99 {live['p99_ms']:,.1f} ms,"
          f" max {live['max_ms']:,.1f} ms  [target p50 <= 50 ms]")
    print(f"replay SSE client (finished log from line 0): {replay['lines']:,} lines at "
          f"{replay['rate']:,.0f} lines/s ({replay['mb_s']:.1f} MB/s)")
    for name, c in (("live", live), ("replay", replay)):
        print(f"  {name} client's own CPU: {c['cpu_s']:.1f} s over {c['elapsed_s']:.1f} s")
    print(f"server RSS: start {start:.0f} MB, peak {peak:.0f} MB, end {end:.0f} MB"
          f"  [target: flat]{'  (bus trimmed)' if r['bus_trim'] else ''}")


# --- the SSE client (a subprocess) --------------------------------------------------------


async def client(url: str) -> dict[str, Any]:
    timeout = aiohttp.ClientTimeout(total=None, sock_read=120)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        deadline = time.monotonic() + 10
        while True:  # the read model sees a new run a few ms after it is requested
            resp = await session.get(url, params={"follow": "1"})
            if resp.status != 404 or time.monotonic() > deadline:
                break
            resp.release()
            await asyncio.sleep(0.01)
        resp.raise_for_status()
        async with resp:
            return await read_stream(resp)


async def read_stream(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    latencies = array("d")
    count = size = 0
    last_index, contiguous, end = -1, True, ""
    first = last = 0.0
    pending = b""
    async for chunk in resp.content.iter_any():
        now = time.time()
        size += len(chunk)
        *events, pending = (pending + chunk).split(b"\n\n")
        for event in events:
            if event.startswith(b"id: "):
                index = int(event[4:event.index(b"\n")])
                contiguous &= index == last_index + 1
                last_index = index
                at = event.find(b'"ts":"') + 6
                ts = datetime.fromisoformat(event[at:event.index(b'"', at)].decode())
                latencies.append(now - ts.timestamp())
                count += 1
                first = first or now
            elif event.startswith(b"event: end"):
                end = event.split(b"data: ", 1)[1].decode()
        last = now
    ordered = sorted(latencies)
    elapsed = max(last - first, 1e-9)
    return {"lines": count, "bytes": size, "contiguous": contiguous, "end": end,
            "rate": count / elapsed, "mb_s": size / elapsed / 1e6,
            "cpu_s": time.process_time(), "elapsed_s": elapsed,
            "p50_ms": statistics.median(ordered) * 1000 if ordered else 0.0,
            "p99_ms": ordered[int(len(ordered) * 0.99)] * 1000 if ordered else 0.0,
            "max_ms": ordered[-1] * 1000 if ordered else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--lines", type=int, default=500_000)
    parser.add_argument("--rate", type=int, default=0, help="print about this many lines/s")
    parser.add_argument("--big", action="store_true", help="~1 GB of log in long lines")
    parser.add_argument("--bus-trim", action="store_true",
                        help="embedded bus drops messages every group has committed")
    parser.add_argument("--executor", default=os.environ.get("CYCLONE_EXECUTOR", "auto"),
                        choices=["auto", "docker", "shell"])
    parser.add_argument("--client", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        print(json.dumps(asyncio.run(client(args.client))))
        return
    report(asyncio.run(bench(args)))


if __name__ == "__main__":
    main()
