"""Webhook ingestion: signed GitHub push deliveries posted concurrently to ``cyclone up``.

Starts a real ``cyclone up`` (``tests.e2e.server_support.CycloneServer``: embedded
defaults, a fresh CYCLONE_HOME, a free 127.0.0.1 port), a bare Git repository reached
by a ``file://`` URL whose ``.cyclone.yml`` builds only ``main`` (``on: push: branches:
[main]``), and a project on that repository with a known ``hook_secret``. Then, from one
aiohttp session in this process:

1. a few warm-up deliveries (not counted), plus ``--history`` more (a server with a past:
   the read model holds every run the server ever made), and their runs are waited for;
2. the burst: ``--deliveries`` distinct GitHub ``push`` deliveries (the documented
   payload of ``tests/api/hooks/payloads/github/push.json``, signed with
   ``X-Hub-Signature-256``, a unique ``X-GitHub-Delivery`` each), ``--concurrency`` in
   flight at once. Each request's time to its answer is measured (the body is signed
   beforehand: the client spends no HMAC time inside the measurement). Printed: accepted
   deliveries/s over the whole burst (first request sent to last answer received),
   p50 / p99 / max time to 202, and how many answers were not 202 (must be 0);
3. the background drains: every run the burst requested ends (read from ``/metrics``);
4. redeliveries: ``--redeliveries`` of the burst's deliveries posted again, same body
   and delivery id. Each must answer 200 with the run ids of the first answer, and the
   server must append no event at all (``cyclone_events_appended`` unchanged, read after
   the background has drained, so any append would be the redeliveries').

What the server does per delivery (``services/api/webhooks.py``): reads the project's
stream (its secret), checks the HMAC, parses the payload, appends ``DeliveryReceived``
to the delivery's own stream (expect-empty: the dedupe), reads the run's stream (absent),
appends ``RunRequested``, scans the read model for older unfinished runs of the same
branch to cancel (auto-cancel), and only then answers 202. Two appends and two reads of
the SQLite event store, each on its one writer thread (WAL, ``synchronous=NORMAL``).

The load the runs add while the burst is being measured: every accepted push requests a
run, and the embedded services work on it in the same process (one event loop, two
cores shared with this client): the event manager queues its checkout, the worker
manager resolves the pushed commit in its Git mirror (``git`` subprocesses, serialised
per repository) and reads ``.cyclone.yml``, and the event manager ends the run
``skipped`` (the branch is not ``main``): no container is ever started. That is three
more appends per run (5 events per delivery in all: printed), two ``git`` processes, the
pipeline file parsed, the outbox relay, the read model and the notifier. Those
runs end at a lower rate than deliveries are accepted, so most of a burst's runs end
after it (the time is printed): the burst measures ingestion while that backlog grows,
not a steady state. Each push
goes to a branch of its own (``bench/<n>``), so auto-cancel finds nothing to cancel;
``--same-branch`` pushes them all to one branch instead, so each delivery also cancels
the older runs still unfinished (one more read and append per cancelled run).

Auto-cancel scans every run of the read model, so the cost of a delivery grows with the
number of runs the server has ever made: the burst's p50 by quarter shows it, and
``--history N`` measures a server that already made N runs.

Targets (issue 5): >= 500 accepted deliveries/s and p99 time to 202 <= 100 ms.

    python bench/webhooks.py [--deliveries 2000] [--concurrency 32] [--redeliveries 200]
                             [--history 0] [--same-branch] [--drain-timeout 600]

Every process it starts (``cyclone up``) is stopped at the end, on an error, Ctrl-C or
SIGTERM too. The machine's load average is printed: other work on it skews the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests/ is not an installed package

import aiohttp  # noqa: E402

from tests.api.hooks.support import headers_for, payload  # noqa: E402
from tests.e2e.server_support import CycloneServer  # noqa: E402
from tests.git_support import GitHost  # noqa: E402

TARGET_RATE = 500.0  # accepted deliveries per second
TARGET_P99_MS = 100.0
SECRET = "bench-webhook-secret-0123456789"
PROJECT = "bench"
WARMUP = 10
PIPELINE = """\
on:
  push:
    branches: [main]
jobs:
  build:
    image: busybox
    steps:
      - run: ["true"]
"""
_METRIC = re.compile(r'^(cyclone_runs\{status="(\w+)"\}|cyclone_events_appended_total|'
                     r'cyclone_events_appended) ([0-9.e+]+)$', re.M)


@dataclass(frozen=True)
class Delivery:
    id: str
    body: bytes
    headers: dict[str, str]


@dataclass
class Pass:
    """The answers to one pass of deliveries, in the order they were given."""

    elapsed_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    answers: list[Any] = field(default_factory=list)

    def count(self, status: int) -> int:
        return sum(1 for s in self.statuses if s == status)

    def percentile_ms(self, q: float) -> float:
        ordered = sorted(self.latencies_s)
        return ordered[min(int(len(ordered) * q), len(ordered) - 1)] * 1000

    def rate(self, status: int) -> float:
        return self.count(status) / max(self.elapsed_s, 1e-9)


# --- the deliveries ---------------------------------------------------------------------


def github_push(repo_url: str, branch: str, sha: str) -> bytes:
    """GitHub's documented push payload, pushing ``sha`` to ``branch`` of ``repo_url``."""
    data = payload("github/push.json")
    data["ref"] = f"refs/heads/{branch}"
    data["after"] = data["head_commit"]["id"] = sha
    data["commits"] = [{**data["commits"][-1], "id": sha}]
    data["repository"]["clone_url"] = repo_url
    return json.dumps(data).encode()


def make_deliveries(count: int, repo_url: str, sha: str, same_branch: bool,
                    prefix: str) -> list[Delivery]:
    made = []
    for n in range(count):
        body = github_push(repo_url, "bench" if same_branch else f"bench/{prefix}{n}", sha)
        delivery = str(uuid.uuid4())  # GitHub's delivery ids are GUIDs
        made.append(Delivery(delivery, body, headers_for("github", "push", body, SECRET,
                                                         delivery)))
    return made


# --- the server ---------------------------------------------------------------------------


class OutputDrain(threading.Thread):
    """Reads the server's output after start-up, so a full pipe never blocks it; keeps
    the last lines for a failure message."""

    def __init__(self, server: CycloneServer) -> None:
        super().__init__(daemon=True, name="server-output")
        assert server.proc is not None and server.proc.stdout is not None
        self.fd = server.proc.stdout.fileno()
        self.tail: collections.deque[str] = collections.deque(maxlen=40)

    def run(self) -> None:
        pending = ""
        with contextlib.suppress(OSError):
            while chunk := os.read(self.fd, 65536):
                *lines, pending = (pending + chunk.decode(errors="replace")).split("\n")
                self.tail.extend(lines)
        if pending:
            self.tail.append(pending)


def stop_server(server: CycloneServer, drain: OutputDrain | None) -> None:
    """SIGTERM (then SIGKILL after 30 s); the drain sees EOF before the pipe is closed."""
    proc = server.proc
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if drain is not None:
        drain.join(timeout=10)
    server.stop()  # closes the pipe; the process is gone already


def memory_mb(pid: int) -> tuple[float, float]:
    """The process's resident set now (VmRSS) and at its peak (VmHWM), in MB."""
    values = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
    return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)


# --- the client ---------------------------------------------------------------------------


async def create_project(http: aiohttp.ClientSession, server: CycloneServer,
                         repo_url: str) -> None:
    body = {"name": PROJECT, "repo": repo_url, "hook_secret": SECRET}
    async with http.post(f"{server.url}/api/v1/projects", json=body,
                         headers=server.headers) as response:
        if response.status != 201:
            raise SystemExit(f"creating the project: {response.status} {await response.text()}")


async def post_all(http: aiohttp.ClientSession, url: str, deliveries: list[Delivery],
                   concurrency: int) -> Pass:
    """Post every delivery, ``concurrency`` in flight; each one's time to its answer."""
    result = Pass(latencies_s=[0.0] * len(deliveries), statuses=[0] * len(deliveries),
                  answers=[None] * len(deliveries))
    queue = iter(range(len(deliveries)))

    async def worker() -> None:
        for n in queue:  # one shared iterator: each index is taken by one worker
            delivery = deliveries[n]
            sent = time.perf_counter()
            async with http.post(url, data=delivery.body, headers=delivery.headers) as resp:
                answer = await resp.read()
            result.latencies_s[n] = time.perf_counter() - sent
            result.statuses[n] = resp.status
            result.answers[n] = json.loads(answer) if answer else None

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.elapsed_s = time.perf_counter() - started
    return result


async def metrics(http: aiohttp.ClientSession, server: CycloneServer) -> dict[str, float]:
    """``cyclone_runs`` by status (keys are the statuses) and ``events_appended``."""
    async with http.get(f"{server.url}/metrics") as response:
        text = await response.text()
    found = {}
    for match in _METRIC.finditer(text):
        found[match.group(2) or "events_appended"] = float(match.group(3))
    return found


async def drain_runs(http: aiohttp.ClientSession, server: CycloneServer, expected: int,
                     limit_s: float) -> tuple[float, dict[str, float]]:
    """Wait until the read model holds ``expected`` runs, none unfinished; returns the
    time it took and the final counts (a deadline-bounded poll)."""
    started = time.monotonic()
    while True:
        counts = await metrics(http, server)
        runs = {k: v for k, v in counts.items() if k != "events_appended"}
        unfinished = runs.get("requested", 0) + runs.get("running", 0)
        if sum(runs.values()) >= expected and unfinished == 0:
            return time.monotonic() - started, runs
        if time.monotonic() - started > limit_s:
            raise TimeoutError(f"runs still unfinished after {limit_s:.0f} s: {runs}")
        await asyncio.sleep(0.25)  # polling interval of a deadline-bounded wait


# --- the benchmark ----------------------------------------------------------------------


async def bench(args: argparse.Namespace, server: CycloneServer, repo_url: str,
                sha: str) -> None:
    assert server.proc is not None
    pid = server.proc.pid
    hook = f"{server.url}/api/v1/hooks/github/{PROJECT}"
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        await create_project(http, server, repo_url)
        earlier = WARMUP + args.history
        warm = await post_all(http, hook, make_deliveries(earlier, repo_url, sha,
                                                          args.same_branch, "w"),
                              args.concurrency)
        if warm.count(202) != earlier:
            raise SystemExit(f"warm-up deliveries answered {collections.Counter(warm.statuses)}"
                             f", e.g. {first_other(warm)}")
        await drain_runs(http, server, earlier, args.drain_timeout)
        deliveries = make_deliveries(args.deliveries, repo_url, sha, args.same_branch, "")
        rss_before = memory_mb(pid)
        appended_before = (await metrics(http, server))["events_appended"]
        print(f"server pid {pid}; {args.deliveries} deliveries of {len(deliveries[0].body)} "
              f"bytes, concurrency {args.concurrency}, "
              f"{'one branch (auto-cancel)' if args.same_branch else 'a branch each'}, "
              f"{earlier} earlier runs; "
              f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)
        burst = await post_all(http, hook, deliveries, args.concurrency)
        rss_burst = memory_mb(pid)
        report_burst(burst)
        drained_s, runs = await drain_runs(http, server, earlier + burst.count(202),
                                           args.drain_timeout)
        rss_drained = memory_mb(pid)
        appended = (await metrics(http, server))["events_appended"] - appended_before
        print(f"background: every run ended {drained_s:.1f} s after the burst "
              f"({burst.elapsed_s + drained_s:.1f} s after it began): "
              + ", ".join(f"{k} {v:.0f}" for k, v in sorted(runs.items()) if v)
              + f"; {appended / max(burst.count(202), 1):.1f} events appended per delivery",
              flush=True)
        await redeliver(http, server, hook, deliveries, burst, args)
        rss_end = memory_mb(pid)
    print(f"server RSS: before the burst {rss_before[0]:.0f} MB, after it "
          f"{rss_burst[0]:.0f} MB, runs drained {rss_drained[0]:.0f} MB, end "
          f"{rss_end[0]:.0f} MB (peak {rss_end[1]:.0f} MB)")


def report_burst(burst: Pass) -> None:
    accepted = burst.count(202)
    others = collections.Counter(s for s in burst.statuses if s != 202)
    rate, p99 = burst.rate(202), burst.percentile_ms(0.99)
    print(f"burst: {accepted} accepted in {burst.elapsed_s:.2f} s = {rate:,.0f} deliveries/s"
          f"  [target >= {TARGET_RATE:.0f}/s: {'MET' if rate >= TARGET_RATE else 'NOT MET'}]")
    print(f"  time to 202: p50 {burst.percentile_ms(0.5):.1f} ms, p99 {p99:.1f} ms, "
          f"max {max(burst.latencies_s) * 1000:.1f} ms"
          f"  [target p99 <= {TARGET_P99_MS:.0f} ms: "
          f"{'MET' if p99 <= TARGET_P99_MS else 'NOT MET'}]")
    quarters = [burst.latencies_s[k * len(burst.latencies_s) // 4:
                                  (k + 1) * len(burst.latencies_s) // 4] for k in range(4)]
    print("  p50 by quarter of the burst (in sending order): "
          + ", ".join(f"{sorted(q)[len(q) // 2] * 1000:.1f} ms" for q in quarters if q))
    print(f"  not 202: {sum(others.values())}"
          + (f" {dict(others)}, e.g. {first_other(burst)}" if others else " (must be 0)"),
          flush=True)


def first_other(burst: Pass) -> Any:
    return next((a for s, a in zip(burst.statuses, burst.answers, strict=True) if s != 202),
                None)


async def redeliver(http: aiohttp.ClientSession, server: CycloneServer, hook: str,
                    deliveries: list[Delivery], burst: Pass, args: argparse.Namespace) -> None:
    picked = [n for n in range(len(deliveries)) if burst.statuses[n] == 202]
    picked = picked[:: max(len(picked) // max(args.redeliveries, 1), 1)][:args.redeliveries]
    before = await metrics(http, server)
    again = await post_all(http, hook, [deliveries[n] for n in picked], args.concurrency)
    after = await metrics(http, server)
    same_runs = sum(1 for k, n in enumerate(picked)
                    if again.statuses[k] == 200 and again.answers[k].get("redelivery")
                    and again.answers[k]["runs"] == burst.answers[n]["runs"])
    appended = after["events_appended"] - before["events_appended"]
    new_runs = (sum(v for k, v in after.items() if k != "events_appended")
                - sum(v for k, v in before.items() if k != "events_appended"))
    ok = same_runs == len(picked) and appended == 0 and new_runs == 0
    print(f"redeliveries: {len(picked)} posted again in {again.elapsed_s:.2f} s; "
          f"{again.count(200)} answered 200, {same_runs} with the first answer's runs; "
          f"events appended meanwhile {appended:.0f}, new runs {new_runs:.0f}; time to 200: "
          f"p50 {again.percentile_ms(0.5):.1f} ms, p99 {again.percentile_ms(0.99):.1f} ms"
          f"  [{'OK' if ok else 'WRONG'}]", flush=True)


def prepare_repo(work: Path) -> tuple[str, str]:
    """A bare repository whose pipeline builds ``main`` only; its URL and head commit."""
    repo = GitHost(work / "git").create("bench")
    sha = repo.commit({".cyclone.yml": PIPELINE})
    return repo.url, sha


def options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--redeliveries", type=int, default=200)
    parser.add_argument("--history", type=int, default=0,
                        help="runs made (and ended) before the burst: a server with a past")
    parser.add_argument("--same-branch", action="store_true",
                        help="push every delivery to one branch (auto-cancel at work)")
    parser.add_argument("--drain-timeout", type=float, default=600.0,
                        help="seconds to wait for the runs to end")
    args = parser.parse_args()
    if args.deliveries < 1 or args.concurrency < 1 or args.history < 0:
        parser.error("--deliveries and --concurrency must be at least 1, --history >= 0")
    return args


def main() -> None:
    args = options()
    # SIGTERM stops the benchmark the way Ctrl-C does (asyncio.run cancels on SIGINT);
    # SIGINT's handler is set too, since a shell's `&` starts a job with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))
    try:
        with contextlib.ExitStack() as stack:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cyclone-")))
            repo_url, sha = prepare_repo(work)
            server = CycloneServer(work / "home")
            drain: list[OutputDrain] = []
            stack.callback(lambda: stop_server(server, drain[0] if drain else None))
            server.start()
            drain.append(OutputDrain(server))
            drain[0].start()
            try:
                asyncio.run(bench(args, server, repo_url, sha))
            except (Exception, SystemExit):
                print("server output (last lines):\n" + "\n".join(drain[0].tail),
                      file=sys.stderr)
                raise
    except KeyboardInterrupt:
        print("interrupted; everything started was stopped", file=sys.stderr)
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
