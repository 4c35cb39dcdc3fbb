"""Cost per event as runs get wide, histories long and queues deep (issue 12).

Every part starts a real ``cyclone up`` (``cluster_support.embedded_mode``: a fresh
CYCLONE_HOME, a free 127.0.0.1 port) with the **shell** executor, so that Docker's cost
is not what is measured, and talks to it over its API like a user would. Projects are
local Git repositories (``git init``, one commit).

* **Wide runs** (``--wide 50,200,500``): one run of a matrix of N one-step ``true`` jobs,
  worker capacity 16 and ``CYCLONE_MAX_PARALLEL_JOBS=16``. Printed per N: the run's wall
  time (trigger to its terminal event's ``ts``) and the ``cyclone up`` process's own CPU
  seconds (``/proc/PID/stat`` utime + stime before and after; its ``true`` children not
  counted) per job. Targets: CPU per job at the largest N <= 1.2x that at the smallest;
  the 500-job run done in under 30 s.
* **Long histories** (``--history 20000``): before the server starts, N finished runs of
  project ``history`` are written straight into its SQLite event store (each run's eight
  events, as a one-job run leaves them, and the branch ledger's entry), not run. Project
  ``fresh`` has none. Then, alternately on each project: a signed GitHub push delivery's
  time to 202, and a manual run's end handling: ``JobFinished`` -> ``RunSucceeded``
  (the event manager) and ``RunSucceeded`` -> the ledger's ``BranchRunEnded`` (the
  notifier). Target: ratio history / fresh <= 1.2 (medians).
* **Deep queues** (``--queue 2000``): that many manual runs of a one-step ``true`` pipeline
  requested at once on a project with ``max_concurrent_runs: 8``. Every 250 ended runs:
  runs ended, runs per minute over the window, and the event manager's handling time
  per event in that window (p50 / p99 from the ``cyclone_eventmanager_handle_seconds``
  histogram's bucket counts, upper bucket bounds). All must end ``success``; a window
  without a run ending in ``--stall`` seconds stops the benchmark as stalled.

    python bench/scale.py [--wide 50,200,500] [--history 20000] [--queue 2000]
                          [--parts wide,history,queue] [--keep]

Every server is stopped at the end, on an error, Ctrl-C or SIGTERM. The machine's load
average is printed: other work on it skews the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
from cluster_support import Target, cpu_s, embedded_mode, workdir
from latency import Client, Run, ts_of
from webhooks import github_push

from services.notifier.service import outcomes_stream
from shared import events as ev
from shared.adapters.eventstore.sqlite import SqliteEventStore
from shared.events import NewEvent, run_stream
from shared.pipeline.plan import JobSpec, Plan, StepSpec
from shared.status import JobStatus, StepStatus
from tests.api.hooks.support import headers_for

CAPACITY = 16
QUEUE_LIMIT = 8  # max_concurrent_runs of the deep-queue project
WINDOW = 250  # runs per deep-queue report line
SECRET = "bench-scale-secret-0123456789"
NO_TOTAL = aiohttp.ClientTimeout(total=None, sock_connect=10)  # runs are followed for long
TARGET_CPU_RATIO = 1.2
TARGET_WIDE_S = 30.0
TARGET_HISTORY_RATIO = 1.2
ONE_STEP = "jobs:\n  one:\n    image: busybox\n    steps:\n      - run: \"true\"\n"


def matrix(jobs: int) -> str:
    """``jobs`` one-step jobs, as matrices of at most 250 (a matrix's limit is 256)."""
    parts = []
    for first in range(0, jobs, 250):
        values = ", ".join(str(n) for n in range(first, min(first + 250, jobs)))
        parts.append(f"  wide{first // 250}:\n    image: busybox\n    matrix:\n"
                     f"      n: [{values}]\n    steps:\n      - run: \"true\"\n")
    return "jobs:\n" + "".join(parts)


def git_repo(path: Path, pipeline: str) -> str:
    """A repository holding ``pipeline``; returns its head commit."""
    path.mkdir(parents=True)
    (path / ".cyclone.yml").write_text(pipeline)
    git = ["git", "-C", str(path), "-c", "user.name=bench", "-c", "user.email=bench@localhost",
           "-c", "commit.gpgsign=false"]
    for command in (["init", "-q", "-b", "main"], ["add", ".cyclone.yml"],
                    ["commit", "-q", "-m", "pipeline"]):
        subprocess.run([*git, *command], check=True, capture_output=True)
    return subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True,
                          text=True).stdout.strip()


class Api:
    def __init__(self, http: aiohttp.ClientSession, server: Target) -> None:
        self.http = http
        self.server = server
        self.client = Client(http, server, timeout=1800.0)

    async def project(self, name: str, repo: Path, limit: int = 0) -> None:
        body = {"name": name, "repo": str(repo), "max_concurrent_runs": limit,
                "hook_secret": SECRET}
        async with self.http.post(f"{self.server.url}/api/v1/projects", json=body,
                                  headers=self.server.headers) as resp:
            if resp.status != 201:
                raise SystemExit(f"creating project {name}: {resp.status} {await resp.text()}")

    async def trigger(self, project: str) -> str:
        url = f"{self.server.url}/api/v1/projects/{project}/runs"
        async with self.http.post(url, json={}, headers=self.server.headers) as resp:
            if resp.status != 202:
                raise SystemExit(f"triggering {project}: {resp.status} {await resp.text()}")
            return str((await resp.json())["id"])

    async def events(self, run_id: str) -> list[dict[str, Any]]:
        """The run's events up to its end (its event stream, followed)."""
        run = await self.client.follow(Run(run_id, time.time()))
        run.check()
        return run.events

    async def metrics(self) -> str:
        async with self.http.get(f"{self.server.url}/metrics") as resp:
            return await resp.text()


# --- wide runs ----------------------------------------------------------------------------


async def wide(work: Path, sizes: list[int]) -> list[tuple[int, float, float]]:
    results = []
    with embedded_mode(work / "home-wide", CAPACITY, CYCLONE_EXECUTOR="shell",
                       CYCLONE_MAX_PARALLEL_JOBS=str(CAPACITY)) as server:
        async with aiohttp.ClientSession(timeout=NO_TOTAL) as http:
            api = Api(http, server)
            for jobs in [1, *sizes]:  # the first: a warm-up (the first checkout, imports)
                git_repo(work / f"wide-{jobs}", matrix(jobs))
                await api.project(f"wide-{jobs}", work / f"wide-{jobs}")
                before, sent = cpu_s(server.pid), time.time()
                events = await api.events(await api.trigger(f"wide-{jobs}"))
                cpu = cpu_s(server.pid) - before
                wall = ts_of(events[-1]) - sent
                if jobs == 1:
                    continue
                results.append((jobs, wall, cpu / jobs))
                print(f"wide {jobs:>4} jobs: done in {wall:6.1f} s, CPU {cpu:6.1f} s = "
                      f"{cpu / jobs * 1000:6.1f} ms per job", flush=True)
    return results


# --- long histories -----------------------------------------------------------------------


async def write_history(path: Path, project: str, runs: int) -> None:
    """``runs`` finished one-job runs of ``project`` and their ledger entries, written
    straight into the event store (as if they had been run)."""
    store = await SqliteEventStore.open(path)
    plan = Plan(".cyclone.yml", (JobSpec(name="one", image="busybox",
                                         steps=(StepSpec(name="step-1", image="busybox",
                                                         commands=("true",)),)),))
    ledger = outcomes_stream(project, "main")
    try:
        for n in range(runs):
            run_id = f"{n:020x}"
            events = [
                ev.RunRequested(project=project, trigger="manual", branch="main",
                                commit="0" * 40, pipeline_file=".cyclone.yml", pipeline="",
                                source="/nowhere", source_kind="git"),
                ev.RunPlanned(plan=plan), ev.JobQueued(job="one"),
                ev.JobStarted(job="one", worker="bench", executor="shell"),
                ev.StepStarted(job="one", step="step-1", attempt=1),
                ev.StepFinished(job="one", step="step-1", status=StepStatus.SUCCESS, exit_code=0,
                                duration_s=0.01, attempt=1),
                ev.JobFinished(job="one", status=JobStatus.SUCCESS, duration_s=0.02),
                ev.RunSucceeded(),
            ]
            await store.append(run_stream(run_id), [NewEvent(e) for e in events], 0)
            await store.append(ledger, [NewEvent(ev.BranchRunEnded(run_id, "success"))], n)
            if (n + 1) % 5000 == 0:
                print(f"  history: {n + 1:,} runs written", flush=True)
        # Published long ago, as a real history's events were: the server's outbox
        # relay starts after them instead of publishing them all again.
        await store.save_checkpoint("outbox", await store.last_position())
    finally:
        await store.close()


async def deliver(api: Api, project: str, repo_url: str, sha: str) -> float:
    body = github_push(repo_url, "main", sha)
    headers = headers_for("github", "push", body, SECRET, os.urandom(8).hex())
    url = f"{api.server.url}/api/v1/hooks/github/{project}"
    sent = time.perf_counter()
    async with api.http.post(url, data=body, headers=headers) as resp:
        if resp.status != 202:
            raise SystemExit(f"delivery to {project}: {resp.status} {await resp.text()}")
    return time.perf_counter() - sent


async def ledger_ts(home: Path, project: str, run_id: str, deadline_s: float = 60) -> float:
    store = await SqliteEventStore.open(home / "events.db")
    try:
        until = time.monotonic() + deadline_s
        while time.monotonic() < until:
            for recorded in await store.read_last(outcomes_stream(project, "main"), 8):
                if recorded.data.get("run_id") == run_id:
                    return datetime_ts(recorded.ts)
            await asyncio.sleep(0.05)  # polling another process's store, bounded
        raise SystemExit(f"no ledger entry for run {run_id} within {deadline_s:.0f} s")
    finally:
        await store.close()


def datetime_ts(iso: str) -> float:
    return ts_of({"ts": iso})


async def history(work: Path, runs: int, rounds: int = 15) -> dict[str, dict[str, float]]:
    home = work / "home-history"
    home.mkdir()
    print(f"history: writing {runs:,} finished runs ...", flush=True)
    await write_history(home / "events.db", "history", runs)
    repo = work / "history-repo"
    sha = git_repo(repo, ONE_STEP)
    started = time.monotonic()
    with embedded_mode(home, CAPACITY, start_timeout=900.0, CYCLONE_EXECUTOR="shell") as server:
        print(f"history: server up {time.monotonic() - started:.1f} s after start", flush=True)
        async with aiohttp.ClientSession(timeout=NO_TOTAL) as http:
            api = Api(http, server)
            for name in ("history", "fresh"):
                await api.project(name, repo)
            found: dict[str, dict[str, list[float]]] = {
                name: {"202": [], "end": [], "ledger": []} for name in ("history", "fresh")}
            for round_no in range(rounds + 1):
                # each goes first in every other round, so that neither project alone
                # pays for going first (e.g. for the other's ledger poll just before)
                for name in ("history", "fresh")[::1 if round_no % 2 else -1]:
                    took = await deliver(api, name, str(repo), sha)
                    run_id = await api.trigger(name)
                    events = await api.events(run_id)
                    finished = next(ts_of(e) for e in events if e["type"] == "JobFinished")
                    ended = next(ts_of(e) for e in events if e["type"] == "RunSucceeded")
                    recorded = await ledger_ts(home, name, run_id)
                    if round_no:  # round 0: a warm-up
                        found[name]["202"].append(took)
                        found[name]["end"].append(ended - finished)
                        found[name]["ledger"].append(recorded - ended)
    medians = {name: {k: statistics.median(v) for k, v in parts.items()}
               for name, parts in found.items()}
    for what, label in (("202", "webhook delivery -> 202"),
                        ("end", "JobFinished -> RunSucceeded (event manager)"),
                        ("ledger", "RunSucceeded -> ledger entry (notifier)")):
        h, f = medians["history"][what], medians["fresh"][what]
        print(f"history {label}: {runs:,} runs {h * 1000:.1f} ms, none {f * 1000:.1f} ms, "
              f"ratio {h / f:.2f}  [<= {TARGET_HISTORY_RATIO}: "
              f"{verdict(h / f <= TARGET_HISTORY_RATIO)}]", flush=True)
    return medians


# --- deep queues ---------------------------------------------------------------------------

_BUCKET = re.compile(r'^cyclone_eventmanager_handle_seconds_bucket\{le="([^"]+)"\} ([0-9.e+]+)$',
                     re.M)
_RUNS = re.compile(r'^cyclone_runs\{status="(\w+)"\} ([0-9.e+]+)$', re.M)


def buckets(text: str) -> list[tuple[float, float]]:
    return [(float(le), float(count)) for le, count in _BUCKET.findall(text)]


def quantile(before: list[tuple[float, float]], after: list[tuple[float, float]],
             q: float) -> float:
    """The upper bound of the bucket holding the ``q`` quantile of what was observed
    between two scrapes of a cumulative histogram."""
    counts = [(le, a - b) for (le, a), (_, b) in zip(after, before, strict=True)]
    total = counts[-1][1]
    for le, below in counts:
        if total and below >= q * total:
            return le
    return float("nan")


async def queue(work: Path, runs: int, stall_s: float) -> list[str]:
    repo = work / "queue-repo"
    git_repo(repo, ONE_STEP)
    lines = []
    with embedded_mode(work / "home-queue", CAPACITY, CYCLONE_EXECUTOR="shell") as server:
        async with aiohttp.ClientSession(timeout=NO_TOTAL) as http:
            api = Api(http, server)
            await api.project("queue", repo, limit=QUEUE_LIMIT)
            await api.events(await api.trigger("queue"))  # warm-up
            scrape = await api.metrics()
            base = float(dict(_RUNS.findall(scrape)).get("success", 0))
            sent = time.monotonic()
            pending = iter(range(runs))

            async def request() -> None:
                for _ in pending:
                    await api.trigger("queue")

            await asyncio.gather(*(request() for _ in range(16)))
            print(f"queue: {runs:,} runs requested in {time.monotonic() - sent:.1f} s",
                  flush=True)
            last_mark, last_t, last_buckets, last_change = 0, sent, buckets(scrape), sent
            ended = 0
            while ended < runs:
                await asyncio.sleep(0.5)  # sampling the server's metrics
                scrape = await api.metrics()
                counts = {k: float(v) for k, v in _RUNS.findall(scrape)}
                done = sum(v for k, v in counts.items() if k not in ("requested", "running"))
                now_ended = int(done - base)  # base: the warm-up, ended before
                if counts.get("failure") or counts.get("errored") or counts.get("cancelled"):
                    raise SystemExit(f"queue: a run did not succeed: {counts}")
                if now_ended > ended:
                    last_change = time.monotonic()
                elif time.monotonic() - last_change > stall_s:
                    raise SystemExit(f"queue: stalled, no run ended for {stall_s:.0f} s "
                                     f"({ended:,} of {runs:,} ended): {counts}")
                ended = now_ended
                if ended >= last_mark + WINDOW or ended >= runs:
                    now, current = time.monotonic(), buckets(scrape)
                    rate = (ended - last_mark) / (now - last_t) * 60
                    line = (f"queue: {ended:>5,} ended, {rate:5.0f} runs/min; event manager "
                            f"per event p50 <= {quantile(last_buckets, current, 0.5) * 1000:.1f}"
                            f" ms, p99 <= {quantile(last_buckets, current, 0.99) * 1000:.1f} ms")
                    print(line, flush=True)
                    lines.append(line)
                    last_mark, last_t, last_buckets = ended, now, current
            total = time.monotonic() - sent
            print(f"queue: all {runs:,} succeeded in {total:.0f} s = "
                  f"{runs / total * 60:.0f} runs/min", flush=True)
    return lines


# --- main ------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


def options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--wide", default="50,200,500", help="matrix sizes, comma-separated")
    parser.add_argument("--history", type=int, default=20000)
    parser.add_argument("--queue", type=int, default=2000)
    parser.add_argument("--parts", default="wide,history,queue")
    parser.add_argument("--stall", type=float, default=120.0,
                        help="seconds without a run ending before the queue counts as stalled")
    parser.add_argument("--keep", action="store_true")
    return parser.parse_args()


async def bench(args: argparse.Namespace, work: Path) -> None:
    parts = set(args.parts.split(","))
    if "wide" in parts:
        results = await wide(work, [int(n) for n in args.wide.split(",")])
        if len(results) > 1:
            (small, _, cpu_small), (large, wall_large, cpu_large) = results[0], results[-1]
            ratio = cpu_large / cpu_small
            print(f"wide: CPU per job at {large} / at {small} = {ratio:.2f}  "
                  f"[<= {TARGET_CPU_RATIO}: {verdict(ratio <= TARGET_CPU_RATIO)}]")
            print(f"wide: {large} jobs done in {wall_large:.1f} s  "
                  f"[< {TARGET_WIDE_S:.0f} s: {verdict(wall_large < TARGET_WIDE_S)}]")
    if "history" in parts:
        await history(work, args.history)
    if "queue" in parts:
        await queue(work, args.queue, args.stall)


def main() -> None:
    args = options()
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    with workdir("scale", args.keep) as work:
        asyncio.run(bench(args, work))
    print(json.dumps({"load_average_after": os.getloadavg()}))


if __name__ == "__main__":
    main()
