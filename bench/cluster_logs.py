"""Distributed logs: how fast a logserver replica stores a busy run's lines, and how long
a run's log trails the run's end.

Starts Kafka 4.1 (KRaft), etcd, the mongo-java-server stand-in and a ``git daemon`` on
127.0.0.1 (as ``bench/cluster.py`` does), then two replicas of every service and two
workermanagers. The pipeline: two jobs in parallel, each one step printing ``--lines``
numbered lines (default 20,000) as fast as busybox ``seq`` does.

For ``--runs`` runs (default 5), one after the other, a client follows the run's log
over SSE from its start, as a user would, and the benchmark prints per run:

* **trail**: from the run's end (its terminal event's timestamp) to the log stream's
  ``end`` reaching the client: the last line stored and delivered. Target <= 1 s for
  40,000 lines.
* **stored lines/s**: the lines the client received, over the time from its first line
  to its last. The run's lines all go to one logserver replica (they share a Kafka
  key), so this is one replica's storing rate whenever storing is slower than printing
  (``seq`` prints 20,000 lines in a few milliseconds). Target >= 20,000 lines/s.
* which replica stored them (``cyclone_log_lines_stored_total`` on each replica's
  ``/metrics``), and that the stream was complete (no ``missing`` in its end, as many
  lines as the run's events count).

    python bench/cluster_logs.py [--runs 5] [--lines 20000] [--keep]

Needs Docker, the test image and the infrastructure (``make setup-infra``); everything
it starts is stopped at the end. Other work on the machine skews the figures: the
load average is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
from cluster_support import (
    TEST_IMAGE,
    Target,
    check_docker,
    cluster_mode,
    start_git,
    start_infra,
)

TARGET_TRAIL_S = 1.0
TARGET_RATE = 20_000
_STORED = re.compile(r"^cyclone_log_lines_stored_total (\S+)$", re.MULTILINE)
TERMINAL = {"RunSucceeded", "RunFailed", "RunCancelled", "RunErrored"}


def pipeline(lines: int) -> str:
    job = (f"    image: {TEST_IMAGE}\n    steps:\n"
           f"      - name: print\n        run: [\"seq 1 {lines}\"]\n")
    return f"jobs:\n  left:\n{job}  right:\n{job}"


@dataclass
class Measured:
    run_id: str
    lines: int  # received by the client
    expected: int  # what the run's events count
    missing: Any
    trail_s: float
    rate: float
    replicas: dict[str, float]  # logserver URL -> lines it stored during the run


async def stored_counts(http: aiohttp.ClientSession, target: Target) -> dict[str, float]:
    counts = {}
    for url in target.logservers:
        async with http.get(f"{url}/metrics") as resp:
            match = _STORED.search(await resp.text())
        counts[url] = float(match.group(1)) if match else float("nan")
    return counts


async def follow(http: aiohttp.ClientSession, target: Target,
                 run_id: str) -> tuple[int, float, float, float, dict[str, Any]]:
    """(lines, first line's arrival, last line's arrival, end's arrival, end data)."""
    url = f"{target.url}/api/v1/runs/{run_id}/logs"
    count, first, last = 0, 0.0, 0.0
    timeout = aiohttp.ClientTimeout(total=None, sock_read=300)
    async with http.get(url, params={"follow": "1"}, headers=target.headers,
                        timeout=timeout) as resp:
        resp.raise_for_status()
        pending = b""
        # A chunk at a time, split into events: reading line by line would cost this
        # process more CPU than the api replica spends sending (2 cores for everything).
        async for chunk in resp.content.iter_any():
            now = time.time()
            *events, pending = (pending + chunk).split(b"\n\n")
            for event in events:
                if event.startswith(b"id: "):
                    last = now
                    first = first or now
                    count += 1
                elif event.startswith(b"event: end\n"):
                    return count, first, last, now, json.loads(event.split(b"data: ", 1)[1])
    raise SystemExit(f"the log stream of {run_id} ended without an end event")


async def one_run(http: aiohttp.ClientSession, target: Target) -> Measured:
    before = await stored_counts(http, target)
    async with http.post(f"{target.url}/api/v1/projects/bench/runs", json={},
                         headers=target.headers) as resp:
        resp.raise_for_status()
        run_id = str((await resp.json())["id"])
    lines, first, last, end_at, end = await follow(http, target, run_id)
    async with http.get(f"{target.url}/api/v1/runs/{run_id}", headers=target.headers) as resp:
        view = await resp.json()
    async with http.get(f"{target.url}/api/v1/runs/{run_id}/events",
                        headers=target.headers) as resp:
        events = (await resp.json())["events"]
    ended = next(e for e in events if e["type"] in TERMINAL)
    if ended["type"] != "RunSucceeded":
        raise SystemExit(f"run {run_id} did not succeed: {json.dumps(view, indent=1)}")
    after = await stored_counts(http, target)
    run_end = datetime.fromisoformat(ended["ts"]).timestamp()
    return Measured(run_id, lines, int(view["log_lines"]), end.get("missing"),
                    end_at - run_end, lines / max(last - first, 1e-3),
                    {url: after[url] - before[url] for url in after})


async def measure(target: Target, args: argparse.Namespace) -> list[Measured]:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{target.url}/api/v1/projects", headers=target.headers,
                             json={"name": "bench", "repo": args.repo}) as resp:
            resp.raise_for_status()
        await one_run(http, target)  # warm-up: mirrors, images, consumer groups settled
        results = []
        for number in range(1, args.runs + 1):
            m = await one_run(http, target)
            results.append(m)
            stored_by = ", ".join(f"{url.rsplit(':', 1)[-1]}: {n:,.0f}"
                                  for url, n in m.replicas.items())
            print(f"run {number}: {m.lines:,} of {m.expected:,} lines streamed"
                  f"{'' if not m.missing else f', MISSING {m.missing}'}; trail "
                  f"{m.trail_s:.2f} s; {m.rate:,.0f} lines/s; stored by port {stored_by}",
                  flush=True)
        return results


def report(results: list[Measured], lines: int) -> None:
    trails = [m.trail_s for m in results]
    rates = [m.rate for m in results]
    complete = all(m.lines == m.expected and not m.missing for m in results)
    print(f"== {len(results)} runs of 2 jobs x {lines:,} lines, 2 replicas of every service ==")
    print(f"every stream complete: {complete}")
    trail = statistics.median(trails)
    print(f"trail (run end -> log end at the client): median {trail:.2f} s (min "
          f"{min(trails):.2f}, max {max(trails):.2f})  [target <= {TARGET_TRAIL_S} s for "
          f"40,000 lines: {'MET' if trail <= TARGET_TRAIL_S else 'NOT MET'}]")
    print(f"lines stored per second, one replica: median {statistics.median(rates):,.0f} "
          f"(min {min(rates):,.0f}, max {max(rates):,.0f})  [target >= {TARGET_RATE:,}: "
          f"{'MET' if statistics.median(rates) >= TARGET_RATE else 'NOT MET'}]")


@contextlib.contextmanager
def workspace(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="cyclone-cluster-logs-"))
    try:
        yield path
    finally:
        if keep:
            print(f"kept {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--lines", type=int, default=20_000, help="lines per job")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    check_docker()
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)
    with workspace(args.keep) as work, contextlib.ExitStack() as stack:
        infra = start_infra(stack, work)
        args.repo = start_git(stack, work, pipeline(args.lines))
        with cluster_mode(work / "cluster", infra, "cluster_logs", workers=2, capacity=4,
                          replicas=2) as target:
            results = asyncio.run(measure(target, args))
    report(results, args.lines)


if __name__ == "__main__":
    main()
