"""Distributed mode against embedded: trigger -> first step container, and runs per minute.

Starts Kafka 4.1 (KRaft), etcd, the mongo-java-server stand-in and a ``git daemon`` once,
on 127.0.0.1, then measures three modes, each with a fresh CYCLONE_HOME (and, for the
clusters, a fresh Mongo database):

* ``embedded``: ``cyclone up`` (one process, in-memory bus, one worker);
* ``1 worker``: one ``cyclone service`` process each of api, eventmanager, logserver,
  notifier, and one workermanager;
* ``2 workers``: the same with two workermanagers (one Kafka consumer group).

Every worker runs up to ``--capacity`` jobs at once (CYCLONE_WORKER_CAPACITY, the same
in every mode) with the Docker executor; the project sets no concurrency limit. The one
project's pipeline is one job, one step ``sleep ${NAP:-0}``, in the test busybox image.

(a) Latency: ``--runs`` sequential trivial runs (NAP unset: ``sleep 0``), each triggered
    with ``POST /api/v1/projects/bench/runs`` when the previous has ended. Measured from
    the client's clock just before the POST to the moment **Docker** started the run's
    first step container: the ``start`` event of the container labelled
    ``io.cyclone.role=step`` and ``io.cyclone.run=<id>`` (``timeNano``, the daemon's
    clock; same host, same clock). This is more faithful than the ``StepStarted``
    event's ``ts``, which a worker records before it creates the container. The median
    time from the trigger to each of the run's events is printed too, to show where the
    time goes. Warm-up runs (until every worker has run a job) are not counted.
(b) Throughput: ``--burst`` runs with ``NAP=--sleep`` triggered at once; runs per minute
    = burst / (last run's ``finished_at`` - the first trigger). Steps sleep so that
    the limit is the workers' capacity, not the 2-core machine: two workers should give
    about twice the runs per minute of one. Each job also costs ~1-2 s of Docker work
    (network, volume, sandbox, container) that does load the machine, hence a sleep
    long next to it. Jobs go to the worker that owns their Kafka partition (key: run
    id), so the split between two workers is uneven by chance: it is printed.

Targets: latency p50 <= 300 ms; 2 workers >= 1.6x 1 worker on runs per minute.

    python bench/cluster.py [--runs 20] [--burst 16] [--sleep 5] [--capacity 2] [--quick]
                            [--modes embedded,1,2] [--keep] [--timeline]

Needs Docker (scripts/setup-docker.sh), the test image (scripts/build-test-images.sh)
and the infrastructure (make setup-infra). Every process it starts is stopped at the end,
on an error, Ctrl-C or SIGTERM too. The machine's load average is printed: other work on
the machine skews the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

import aiodocker
import aiohttp
from cluster_support import (
    TEST_IMAGE,
    Target,
    check_docker,
    cluster_mode,
    embedded_mode,
    start_git,
    start_infra,
)

PIPELINE = f"""jobs:
  bench:
    image: {TEST_IMAGE}
    steps:
      - name: work
        run: ["sleep ${{NAP:-0}}"]
"""
STAGES = ("RunRequested", "CheckoutQueued", "RunSourceResolved", "RunPlanned", "JobQueued",
          "JobStarted", "StepStarted")
DONE = frozenset({"success", "failure", "cancelled", "errored"})
MAX_WARMUP = 12
RUN_TIMEOUT_S = 120
POLL_S = 0.05  # how often a run's status is polled while waiting for it to end


@dataclass
class Mode:
    name: str
    workers: int  # 0: embedded


@dataclass
class Result:
    mode: Mode
    latencies: list[float] = field(default_factory=list)  # seconds
    stages: dict[str, list[float]] = field(default_factory=dict)  # event -> offsets (s)
    warmups: int = 0
    burst: int = 0
    burst_s: float = 0.0
    jobs_per_worker: Counter[str] = field(default_factory=Counter)
    job_s: list[float] = field(default_factory=list)  # JobStarted -> JobFinished, burst
    timeline: list[tuple[str, dict[str, float]]] = field(default_factory=list)  # --timeline
    failed: list[str] = field(default_factory=list)  # "run id: status reason"

    @property
    def runs_per_minute(self) -> float:
        return self.burst / self.burst_s * 60 if self.burst_s else 0.0


# --- Docker's view: when each run's first step container started -------------------------


class StepStarts:
    """Follows Docker's container ``start`` events of Cyclone step containers."""

    def __init__(self) -> None:
        self.at: dict[str, float] = {}  # run id -> epoch seconds of its first step start
        self._seen: dict[str, asyncio.Event] = {}
        self._docker = aiodocker.Docker()
        filters = {"type": ["container"], "event": ["start"],
                   "label": ["io.cyclone.role=step"]}
        self._events = self._docker.events.subscribe(  # type: ignore[no-untyped-call]
            filters=json.dumps(filters))
        self._task = asyncio.create_task(self._follow())

    async def connected(self) -> None:
        """Return once Docker has answered the events request: later starts are seen.
        (aiodocker says so only through ``json_stream``, hence the bounded poll.)"""
        for _ in range(1000):  # 10 s
            if self._docker.events.json_stream is not None:
                return
            await asyncio.sleep(0.01)
        raise SystemExit("Docker did not answer the events request within 10 s")

    async def _follow(self) -> None:
        while (event := await self._events.get()) is not None:
            run_id = event.get("Actor", {}).get("Attributes", {}).get("io.cyclone.run")
            if run_id and run_id not in self.at:
                self.at[run_id] = int(event["timeNano"]) / 1e9
                self._event(run_id).set()

    def _event(self, run_id: str) -> asyncio.Event:
        return self._seen.setdefault(run_id, asyncio.Event())

    async def wait(self, run_id: str) -> float:
        await self._event(run_id).wait()
        return self.at[run_id]

    async def close(self) -> None:
        await self._docker.events.stop()  # type: ignore[no-untyped-call]
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._docker.close()


# --- talking to the API ---------------------------------------------------------------------


def epoch(ts: str) -> float:
    return datetime.fromisoformat(ts).timestamp()


async def create_project(http: aiohttp.ClientSession, repo: str) -> None:
    body = {"name": "bench", "repo": repo, "max_concurrent_runs": 0}  # 0: no limit
    async with http.post("/api/v1/projects", json=body) as response:
        if response.status != 201:
            raise SystemExit(f"creating the project failed: {await response.text()}")


async def trigger(http: aiohttp.ClientSession, params: dict[str, str]) -> str:
    async with http.post("/api/v1/projects/bench/runs", json={"params": params}) as response:
        if response.status != 202:
            raise SystemExit(f"triggering a run failed: {await response.text()}")
        return str((await response.json())["id"])


async def run_view(http: aiohttp.ClientSession, run_id: str) -> dict[str, Any] | None:
    async with http.get(f"/api/v1/runs/{run_id}") as response:
        if response.status == 404:  # the read model has not seen it yet
            return None
        response.raise_for_status()
        view: dict[str, Any] = await response.json()
        return view


async def wait_ended(http: aiohttp.ClientSession, run_id: str) -> dict[str, Any]:
    while True:
        view = await run_view(http, run_id)
        if view is not None and view["status"] in DONE:
            return view
        await asyncio.sleep(POLL_S)


async def wait_all_ended(http: aiohttp.ClientSession, ids: list[str]) -> None:
    pending = set(ids)
    while pending:
        async with http.get("/api/v1/runs", params={"project": "bench",
                                                    "limit": "500"}) as response:
            response.raise_for_status()
            runs = (await response.json())["runs"]
        pending -= {r["id"] for r in runs if r["status"] in DONE}
        await asyncio.sleep(0.2)


async def event_offsets(http: aiohttp.ClientSession, run_id: str,
                        triggered: float) -> dict[str, float]:
    """Seconds from the trigger to the first event of each type in the run's stream."""
    async with http.get(f"/api/v1/runs/{run_id}/events") as response:
        response.raise_for_status()
        events = (await response.json())["events"]
    offsets: dict[str, float] = {}
    for event in events:
        offsets.setdefault(event["type"], epoch(event["ts"]) - triggered)
    return offsets


def worker_of(view: dict[str, Any]) -> str:
    """The worker that ran the run's job: ``w1``, ``w2``, or the embedded worker's id."""
    jobs = view.get("jobs") or [{}]
    return str(jobs[0].get("worker") or "?")


def failure(view: dict[str, Any]) -> str | None:
    if view["status"] == "success":
        return None
    return f"{view['id']}: {view['status']} {view.get('reason', '')}".strip()


# --- the two measurements ---------------------------------------------------------------


async def latency_run(http: aiohttp.ClientSession, starts: StepStarts,
                      result: Result) -> dict[str, Any]:
    """One trivial run, start to end; returns its view after recording its latency."""
    triggered = time.time()
    run_id = await trigger(http, {})
    async with asyncio.timeout(RUN_TIMEOUT_S):
        started = await starts.wait(run_id)
        view = await wait_ended(http, run_id)
    result.latencies.append(started - triggered)
    for stage, offset in (await event_offsets(http, run_id, triggered)).items():
        result.stages.setdefault(stage, []).append(offset)
    result.stages.setdefault("container started", []).append(started - triggered)
    if (problem := failure(view)) is not None:
        result.failed.append(problem)
    return view


async def measure(target: Target, repo: str, mode: Mode, args: argparse.Namespace) -> Result:
    result = Result(mode)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(target.url, headers=target.headers,
                                     timeout=timeout) as http:
        await create_project(http, repo)
        starts = StepStarts()
        try:
            await starts.connected()
            await warm_up(http, starts, result, max(mode.workers, 1))
            for _ in range(args.runs):
                await latency_run(http, starts, result)
            print(f"  latency: {args.runs} runs, p50 {percentile(result.latencies, 50):.0f} ms",
                  flush=True)
            await burst(http, result, args)
            print(f"  throughput: {args.burst} runs of sleep {args.sleep:g} in "
                  f"{result.burst_s:.1f} s", flush=True)
        finally:
            await starts.close()
    return result


async def warm_up(http: aiohttp.ClientSession, starts: StepStarts, result: Result,
                  workers: int) -> None:
    """Trivial runs, not counted, until every worker has run one (its git cache, its
    consumers and Docker's caches are warm), at least two."""
    scratch = Result(result.mode)
    seen: set[str] = set()
    while result.warmups < MAX_WARMUP and (len(seen) < workers or result.warmups < 2):
        view = await latency_run(http, starts, scratch)
        seen.add(worker_of(view))
        result.warmups += 1
    if scratch.failed:
        raise SystemExit(f"warm-up runs failed: {scratch.failed}")


async def burst(http: aiohttp.ClientSession, result: Result, args: argparse.Namespace) -> None:
    params = {"NAP": f"{args.sleep:g}"}
    first = time.time()
    ids = await asyncio.gather(*(trigger(http, params) for _ in range(args.burst)))
    async with asyncio.timeout(RUN_TIMEOUT_S + args.burst * args.sleep):
        await wait_all_ended(http, list(ids))
    views = [v for run_id in ids if (v := await run_view(http, run_id)) is not None]
    result.burst = len(ids)
    result.burst_s = max(epoch(v["finished_at"]) for v in views) - first
    result.jobs_per_worker = Counter(worker_of(v) for v in views)
    result.job_s = [epoch(j["finished_at"]) - epoch(j["started_at"]) for v in views
                    for j in v["jobs"] if j.get("started_at") and j.get("finished_at")]
    result.failed += [p for v in views if (p := failure(v)) is not None]
    if args.timeline:
        result.timeline = [(worker_of(v), await event_offsets(http, v["id"], first))
                           for v in views]


# --- report ---------------------------------------------------------------------------------


def percentile(seconds: list[float], p: float) -> float:
    """Nearest-rank percentile, in ms (with fewer than 100 samples, p99 is the maximum)."""
    if not seconds:
        return math.nan
    ordered = sorted(seconds)
    return ordered[max(math.ceil(p / 100 * len(ordered)) - 1, 0)] * 1000


def report(results: list[Result], args: argparse.Namespace) -> None:
    print(f"\nworker capacity {args.capacity} jobs; latency over {args.runs} sequential "
          f"trivial runs; throughput: {args.burst} runs of `sleep {args.sleep:g}` at once")
    print("(ideal: slots x 60 / sleep; job s: median JobStarted -> JobFinished in the burst; "
          "busy: job time / (slots x burst time))")
    print(f"{'mode':<11} {'p50 ms':>7} {'p99 ms':>7} {'min ms':>7} {'runs/min':>9} "
          f"{'ideal':>6} {'burst s':>8} {'job s':>6} {'busy':>5}  jobs per worker")
    for r in results:
        slots = max(r.mode.workers, 1) * args.capacity
        busy = sum(r.job_s) / (slots * r.burst_s) if r.burst_s else math.nan
        job_s = statistics.median(r.job_s) if r.job_s else math.nan
        workers = ", ".join(f"{w}: {n}" for w, n in sorted(r.jobs_per_worker.items()))
        print(f"{r.mode.name:<11} {percentile(r.latencies, 50):>7.0f} "
              f"{percentile(r.latencies, 99):>7.0f} {min(r.latencies) * 1000:>7.0f} "
              f"{r.runs_per_minute:>9.1f} {slots * 60 / args.sleep:>6.0f} {r.burst_s:>8.1f} "
              f"{job_s:>6.1f} {busy:>5.0%}  {workers}")
    print("\nmedian ms from the trigger to each event of a trivial run (where the time goes):")
    stages = [s for s in (*STAGES, "container started") if any(s in r.stages for r in results)]
    print(f"{'event':<18}" + "".join(f"{r.mode.name:>12}" for r in results))
    for stage in stages:
        cells = [statistics.median(r.stages[stage]) * 1000 if stage in r.stages else math.nan
                 for r in results]
        print(f"{stage:<18}" + "".join(f"{c:>12.0f}" for c in cells))
    for r in results:
        if r.timeline:
            timeline(r)
    verdict(results)


TIMELINE = (("CheckoutQueued", "checkout q"), ("RunSourceResolved", "resolved"),
            ("JobQueued", "job q"), ("JobStarted", "job start"), ("StepStarted", "step start"),
            ("StepFinished", "step end"), ("JobFinished", "job end"),
            ("RunSucceeded", "run end"))


def timeline(r: Result) -> None:
    """Each burst run's events, in seconds from the first trigger, by job start."""
    print(f"\n{r.mode.name}: burst timeline (s from the first trigger)")
    print(f"{'worker':<10}" + "".join(f"{label:>11}" for _, label in TIMELINE))
    for worker, offsets in sorted(r.timeline, key=lambda t: t[1].get("JobStarted", 0)):
        print(f"{worker[:10]:<10}" + "".join(f"{offsets.get(k, math.nan):>11.2f}"
                                             for k, _ in TIMELINE))


def verdict(results: list[Result]) -> None:
    print()
    for r in results:
        p50 = percentile(r.latencies, 50)
        print(f"{r.mode.name}: p50 {p50:.0f} ms {'MET' if p50 <= 300 else 'NOT MET'} "
              "(target <= 300 ms)")
        if r.failed:
            print(f"  {len(r.failed)} runs did not succeed: {r.failed[:5]}")
    by_workers = {r.mode.workers: r for r in results}
    if 1 in by_workers and 2 in by_workers and by_workers[1].runs_per_minute:
        ratio = by_workers[2].runs_per_minute / by_workers[1].runs_per_minute
        print(f"runs/min, 2 workers / 1 worker: {ratio:.2f}x "
              f"{'MET' if ratio >= 1.6 else 'NOT MET'} (target >= 1.6x)")


# --- main -----------------------------------------------------------------------------------


SUPERVISED = "CYCLONE_BENCH_SUPERVISED"  # set in the child that does the work
MODES = {"embedded": Mode("embedded", 0), "1": Mode("1 worker", 1), "2": Mode("2 workers", 2)}


@contextlib.contextmanager
def workspace(keep: bool) -> Iterator[Path]:
    if keep:
        path = Path(tempfile.mkdtemp(prefix="cyclone-bench-cluster-"))
        print(f"work directory (kept): {path}")
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="cyclone-bench-cluster-") as tmp:
        yield Path(tmp)


def run_modes(args: argparse.Namespace, modes: list[Mode]) -> list[Result]:
    results = []
    with workspace(args.keep) as work, contextlib.ExitStack() as stack:
        started = time.monotonic()
        infra = start_infra(stack, work)
        repo = start_git(stack, work, PIPELINE)
        print(f"infrastructure up in {time.monotonic() - started:.1f} s "
              f"(Kafka {infra['kafka']}, {infra['etcd']}, Mongo {infra['mongo']})", flush=True)
        for index, mode in enumerate(modes):
            started = time.monotonic()
            home = work / f"mode{index}"
            context = (embedded_mode(home, args.capacity) if mode.workers == 0 else
                       cluster_mode(home, infra, f"bench{index}", mode.workers, args.capacity))
            with context as target:
                print(f"{mode.name}: up in {time.monotonic() - started:.1f} s", flush=True)
                results.append(asyncio.run(measure(target, repo, mode, args)))
    return results


def interrupt_once() -> None:
    """The first SIGINT or SIGTERM unwinds the benchmark like Ctrl-C (every ``finally``
    stops what it started); later ones are ignored, so they cannot cut that short."""
    def handler(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def supervise() -> int:
    """Run the benchmark in a session of its own and pass it Ctrl-C and SIGTERM.

    A terminal's Ctrl-C signals its whole foreground process group: the services, etcd
    and the Mongo stand-in would all stop at once, the infrastructure under the
    services' feet, and a workermanager stopping without its store can leave containers
    behind. In a session of its own the benchmark gets the one signal and stops things
    in order: services first, infrastructure last."""
    child = subprocess.Popen([sys.executable, __file__, *sys.argv[1:]],
                             env={**os.environ, SUPERVISED: "1"}, start_new_session=True)

    def forward(signum: int, frame: FrameType | None) -> None:
        child.send_signal(signal.SIGINT)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    return child.wait()


def options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="sequential trivial runs")
    parser.add_argument("--burst", type=int, default=16, help="sleeping runs triggered at once")
    parser.add_argument("--sleep", type=float, default=5.0, help="seconds each burst run sleeps")
    parser.add_argument("--capacity", type=int, default=2, help="jobs per worker at once")
    parser.add_argument("--quick", action="store_true", help="--runs 8 --burst 8 --sleep 2")
    parser.add_argument("--modes", default="embedded,1,2",
                        help="comma-separated, of: embedded, 1, 2 (workermanagers)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    parser.add_argument("--timeline", action="store_true",
                        help="print each burst run's events in time")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.burst, args.sleep = 8, 8, 2.0
    unknown = {m.strip() for m in args.modes.split(",")} - MODES.keys()
    if unknown:
        parser.error(f"--modes: unknown {', '.join(sorted(unknown))} (embedded, 1, 2)")
    return args


def main() -> None:
    args = options()
    if not os.environ.get(SUPERVISED):
        raise SystemExit(supervise())
    modes = [MODES[m.strip()] for m in args.modes.split(",")]
    check_docker()
    interrupt_once()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
          f"({os.cpu_count()} CPUs)", flush=True)
    began = time.monotonic()
    try:
        results = run_modes(args, modes)
    except KeyboardInterrupt:
        print("interrupted; everything started was stopped", file=sys.stderr)
        raise SystemExit(130) from None
    report(results, args)
    print(f"\n(total {time.monotonic() - began:.0f} s; load average after: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())})")


if __name__ == "__main__":
    main()
