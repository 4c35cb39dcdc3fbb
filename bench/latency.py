"""Run latency and throughput of a real ``cyclone up``, against plain ``docker run``.

For each executor (``docker``, ``shell``; ``--executor`` picks one) this starts
``cyclone up`` (``python -m cyclone.cli up``) with a fresh temporary CYCLONE_HOME, a
free 127.0.0.1 port, ``CYCLONE_WORKER_CAPACITY=8`` and ``CYCLONE_MAX_PARALLEL_JOBS=8``,
reads the admin token it prints on its first start, and registers two projects over
the API, each a local Git repository (``git init``, ``.cyclone.yml``, one commit;
``max_concurrent_runs`` 0, no limit): one job on ``cyclone-test/busybox:latest`` with
(a) one step ``true``, (b) ten steps ``true``. One warm-up run of each (the first
checkout clones the repository into the server's mirror, the first Docker run builds
helper images), then ``--rounds`` rounds. In each round, with the docker executor, plain
``docker run --rm cyclone-test/busybox:latest true`` is timed once and ten times in
sequence (the same machine state as the runs beside it), then each pipeline is
triggered (``POST /api/v1/projects/{name}/runs``) and its events are followed
(``GET /api/v1/runs/{id}/events?follow=1``, Server-Sent Events) to the stream's end.

Times are measured from the client's ``time.time()`` just before the POST to the ``ts``
of the run's own recorded events (the server's clock; same machine): trigger -> first
``StepStarted`` and trigger -> the run's terminal event (which must be ``RunSucceeded``:
anything else stops the benchmark). Printed per case: median (min, max). Where the time
goes, as medians per phase: POST -> ``RunRequested``, ``RunRequested`` -> ``JobStarted``
(checkout, planning, queueing), ``JobStarted`` -> first ``StepStarted`` (the job's
preparation: workspace, container), first ``StepStarted`` -> last ``StepFinished``,
last ``StepFinished`` -> the terminal event (the job's and run's ending), and terminal
event -> ``event: end`` seen by the client.

Bursts (``--bursts``): 8 one-step runs triggered at once, each followed on its own event
stream concurrently; runs per minute = 8 / (last terminal ``ts`` - first POST) x 60; the
median over the bursts is printed. Each burst also prints when its runs' first
``JobStarted``, ``StepStarted`` and ``RunSucceeded`` came (seconds after its first POST,
sorted): whether the 8 runs overlapped or went one after another.

Targets: Docker one-step done <= 1.3 x one ``docker run``; Docker ten steps done <= 0.7 x
ten ``docker run``; Docker burst >= 212 runs/min (2 x 106); shell burst >= 1,500 runs/min.

    python bench/latency.py [--rounds 5] [--bursts 3] [--executor both|docker|shell]
                            [--keep] [--timeout 300]

``--keep`` keeps the temporary directory (each server's home and output, the Git
repositories) and prints where it is. Every server is stopped with SIGTERM at the end,
on an error, Ctrl-C or SIGTERM too. The machine's load average is printed: other work
on it skews the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
from cluster_support import Target, cpu_s, embedded_mode, workdir

from shared.adapters.executor.docker_convert import LABEL_RUN

IMAGE = "cyclone-test/busybox:latest"
CAPACITY = 8  # CYCLONE_WORKER_CAPACITY and CYCLONE_MAX_PARALLEL_JOBS
BURST = 8
TEN = 10
TERMINAL = frozenset({"RunSucceeded", "RunFailed", "RunCancelled", "RunErrored",
                      "RunSkipped"})
TARGET_ONE_RATIO = 1.3
TARGET_TEN_RATIO = 0.7
TARGET_BURST = {"docker": 212.0, "shell": 1500.0}  # runs/min


# --- the projects -------------------------------------------------------------------------


def pipeline(steps: int) -> str:
    body = "\n".join(f"      - name: s{i}\n        run: \"true\"" for i in range(1, steps + 1))
    return f"jobs:\n  bench:\n    image: {IMAGE}\n    steps:\n{body}\n"


def git_repo(path: Path, steps: int) -> None:
    path.mkdir(parents=True)
    (path / ".cyclone.yml").write_text(pipeline(steps))
    git = ["git", "-C", str(path), "-c", "user.name=bench", "-c", "user.email=bench@localhost",
           "-c", "commit.gpgsign=false"]
    for command in (["init", "-q", "-b", "main"], ["add", ".cyclone.yml"],
                    ["commit", "-q", "-m", f"{steps} step(s)"]):
        subprocess.run([*git, *command], check=True, capture_output=True)


@dataclass(frozen=True)
class Project:
    name: str
    repo: Path
    steps: int


# --- one run, followed over SSE ------------------------------------------------------------


def ts_of(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(event["ts"])).timestamp()


@dataclass
class Run:
    id: str
    triggered: float  # the client's time.time() just before the POST
    events: list[dict[str, Any]] = field(default_factory=list)
    end_seen: float = 0.0  # the client's time.time() at ``event: end``
    end_status: str = ""

    def first(self, type_: str) -> float:
        return next(ts_of(e) for e in self.events if e["type"] == type_)

    def last(self, type_: str) -> float:
        return next(ts_of(e) for e in reversed(self.events) if e["type"] == type_)

    @property
    def terminal(self) -> dict[str, Any]:
        return next(e for e in self.events if e["type"] in TERMINAL)

    @property
    def done(self) -> float:
        return ts_of(self.terminal)

    def check(self) -> None:
        """Fails loudly unless the run succeeded."""
        terminal = next((e for e in self.events if e["type"] in TERMINAL), None)
        if terminal is not None and terminal["type"] == "RunSucceeded":
            return
        shown = "\n".join(f"  {e['seq']:>3} {e['type']} {json.dumps(e['data'])[:300]}"
                          for e in self.events)
        raise SystemExit(f"run {self.id} did not succeed (end: {self.end_status or 'none'}, "
                         f"terminal event: {terminal['type'] if terminal else 'none'}):\n"
                         f"{shown}")

    def phases(self) -> dict[str, float]:
        requested = self.first("RunRequested")
        job = self.first("JobStarted")
        first_step = self.first("StepStarted")
        last_step = self.last("StepFinished")
        return {"POST -> RunRequested": requested - self.triggered,
                "RunRequested -> JobStarted": job - requested,
                "JobStarted -> first StepStarted": first_step - job,
                "first StepStarted -> last StepFinished": last_step - first_step,
                "last StepFinished -> terminal event": self.done - last_step,
                "terminal event -> client saw end": self.end_seen - self.done}


class Client:
    def __init__(self, http: aiohttp.ClientSession, server: Target, timeout: float) -> None:
        self.http = http
        self.server = server
        self.timeout = timeout

    async def create_project(self, project: Project) -> None:
        body = {"name": project.name, "repo": str(project.repo), "max_concurrent_runs": 0}
        async with self.http.post(f"{self.server.url}/api/v1/projects", json=body,
                                  headers=self.server.headers) as resp:
            if resp.status != 201:
                raise SystemExit(f"creating project {project.name}: {resp.status} "
                                 f"{await resp.text()}")

    async def trigger(self, project: Project) -> Run:
        url = f"{self.server.url}/api/v1/projects/{project.name}/runs"
        triggered = time.time()
        async with self.http.post(url, json={}, headers=self.server.headers) as resp:
            if resp.status != 202:
                raise SystemExit(f"triggering {project.name}: {resp.status} "
                                 f"{await resp.text()}")
            answer = await resp.json()
        return Run(str(answer["id"]), triggered)

    async def follow(self, run: Run) -> Run:
        """Read the run's event stream to its end (bounded by ``timeout``)."""
        try:
            await asyncio.wait_for(self._follow(run), self.timeout)
        except TimeoutError:
            raise SystemExit(f"run {run.id}: no end of its event stream within "
                             f"{self.timeout:.0f} s; last events: "
                             f"{[e['type'] for e in run.events[-5:]]}") from None
        return run

    async def _follow(self, run: Run) -> None:
        url = f"{self.server.url}/api/v1/runs/{run.id}/events"
        while True:  # the read model knows a new run a few ms after the POST's answer
            resp = await self.http.get(url, params={"follow": "1"}, headers=self.server.headers)
            if resp.status != 404:
                break
            resp.release()
            await asyncio.sleep(0.01)
        if resp.status != 200:
            raise SystemExit(f"following run {run.id}: {resp.status} {await resp.text()}")
        async with resp:
            name, data = "", ""
            async for raw in resp.content:
                line = raw.decode().rstrip("\r\n")
                if line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    data = line[5:].strip()
                elif line == "" and data:
                    if name == "event":
                        run.events.append(json.loads(data))
                    elif name == "end":
                        run.end_seen = time.time()
                        run.end_status = str(json.loads(data).get("status", ""))
                        return
                    name, data = "", ""
        raise SystemExit(f"run {run.id}: its event stream closed without an end event")

    async def run(self, project: Project) -> Run:
        run = await self.follow(await self.trigger(project))
        run.check()
        return run


# --- measurements ---------------------------------------------------------------------------


async def docker_runs(count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        proc = await asyncio.create_subprocess_exec(
            "docker", "run", "--rm", IMAGE, "true",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"docker run failed ({proc.returncode}): {out.decode()}")
    return time.perf_counter() - started


async def docker_burst() -> tuple[float, float]:
    """``BURST`` plain ``docker run --rm`` at once: what this Docker daemon itself manages,
    in runs per minute (the ceiling for any Docker executor on this machine), and the
    daemon's CPU seconds a run."""
    started, cpu = time.perf_counter(), daemon_cpu_s()
    procs = [await asyncio.create_subprocess_exec(
        "docker", "run", "--rm", IMAGE, "true", stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL) for _ in range(BURST)]
    if any([await proc.wait() for proc in procs]):
        raise SystemExit("a parallel docker run failed")
    return BURST / (time.perf_counter() - started) * 60, (daemon_cpu_s() - cpu) / BURST


def daemon_cpu_s() -> float:
    """The CPU seconds of this machine's Docker daemon (dockerd and containerd) so far."""
    total = 0.0
    for comm in Path("/proc").glob("[0-9]*/comm"):
        with contextlib.suppress(OSError):  # a process that has just gone
            if comm.read_text().strip() in ("dockerd", "containerd"):
                total += cpu_s(int(comm.parent.name))
    return total


async def containers_removed(timeout_s: float = 60.0) -> None:
    """Until no container of Cyclone's is left: its runs' containers are removed in the
    background, after their steps (or runs) end."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        listed = await asyncio.create_subprocess_exec(
            "docker", "ps", "-aq", "--filter", f"label={LABEL_RUN}",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        out, _ = await listed.communicate()
        if not out.strip():
            return
        await asyncio.sleep(0.05)


@dataclass
class Burst:
    rate: float  # runs per minute
    elapsed: float  # seconds from the first POST to the last terminal event
    cpu: float  # the server's CPU seconds a run
    daemon_cpu: float  # the Docker daemon's CPU seconds a run, removals included
    runs: list[Run]


async def burst(client: Client, project: Project, pid: int, docker: bool) -> Burst:
    """``BURST`` runs triggered at once and followed concurrently."""
    async def one() -> Run:
        return await client.run(project)

    cpu, daemon = cpu_s(pid), daemon_cpu_s()
    runs = await asyncio.gather(*(one() for _ in range(BURST)))
    elapsed = max(r.done for r in runs) - min(r.triggered for r in runs)
    cpu = (cpu_s(pid) - cpu) / BURST
    if docker:
        await containers_removed()
    return Burst(BURST / elapsed * 60, elapsed, cpu, (daemon_cpu_s() - daemon) / BURST, runs)


def offsets(runs: list[Run], type_: str) -> str:
    """When each run had its first ``type_`` event, in seconds after the burst's first
    POST, in order."""
    start = min(r.triggered for r in runs)
    return " ".join(f"{t - start:.2f}" for t in sorted(r.first(type_) for r in runs))


@dataclass
class Results:
    executor: str
    first_step: dict[int, list[float]] = field(default_factory=lambda: {1: [], TEN: []})
    done: dict[int, list[float]] = field(default_factory=lambda: {1: [], TEN: []})
    phases: dict[int, list[dict[str, float]]] = field(default_factory=lambda: {1: [], TEN: []})
    docker: dict[int, list[float]] = field(default_factory=lambda: {1: [], TEN: []})
    ratios: dict[int, list[float]] = field(default_factory=lambda: {1: [], TEN: []})
    bursts: list[float] = field(default_factory=list)
    burst_cpu: list[float] = field(default_factory=list)  # the server's CPU s a run
    daemon_cpu: list[tuple[float, float]] = field(default_factory=list)  # Cyclone's, docker's
    docker_bursts: list[float] = field(default_factory=list)  # plain docker run, same burst


def spread(values: list[float], unit: str = " s", digits: int = 2) -> str:
    return (f"median {statistics.median(values):.{digits}f}{unit} "
            f"(min {min(values):.{digits}f}, max {max(values):.{digits}f})")


def verdict(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


async def measure(server: Target, executor: str, projects: dict[int, Project],
                  args: argparse.Namespace) -> Results:
    results = Results(executor)
    docker = executor == "docker"
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        client = Client(http, server, args.timeout)
        for project in projects.values():
            await client.create_project(project)
        warm = [await client.run(p) for p in projects.values()]
        print("warm-up: " + ", ".join(f"{p.steps} step(s) done in {r.done - r.triggered:.2f} s"
                                      for p, r in zip(projects.values(), warm, strict=True)),
              flush=True)
        for round_no in range(1, args.rounds + 1):
            parts = []
            if docker:
                for count in (1, TEN):
                    results.docker[count].append(await docker_runs(count))
                parts.append(f"docker run x1 {results.docker[1][-1]:.2f} s, "
                             f"x{TEN} {results.docker[TEN][-1]:.2f} s")
            for steps, project in projects.items():
                run = await client.run(project)
                results.first_step[steps].append(run.first("StepStarted") - run.triggered)
                results.done[steps].append(run.done - run.triggered)
                results.phases[steps].append(run.phases())
                part = (f"{steps} step(s): first step {results.first_step[steps][-1]:.2f} s, "
                        f"done {results.done[steps][-1]:.2f} s")
                if docker:
                    ratio = results.done[steps][-1] / results.docker[steps][-1]
                    results.ratios[steps].append(ratio)
                    part += f" (ratio {ratio:.2f})"
                parts.append(part)
            print(f"round {round_no}: " + "; ".join(parts), flush=True)
        for burst_no in range(1, args.bursts + 1):
            done = await burst(client, projects[1], server.pid, docker)
            results.bursts.append(done.rate)
            results.burst_cpu.append(done.cpu)
            print(f"burst {burst_no}: {BURST} one-step runs done {done.elapsed:.2f} s after "
                  f"the first POST = {done.rate:,.0f} runs/min; server CPU "
                  f"{done.cpu * 1000:.0f} ms a run", flush=True)
            for type_ in ("JobStarted", "StepStarted", "RunSucceeded"):
                print(f"  {type_ + ' at':<15} {offsets(done.runs, type_)} s", flush=True)
            if docker:
                plain, plain_cpu = await docker_burst()
                results.docker_bursts.append(plain)
                results.daemon_cpu.append((done.daemon_cpu, plain_cpu))
                print(f"  the same burst of plain docker run: {plain:,.0f} runs/min; Docker "
                      f"daemon CPU a run: {done.daemon_cpu * 1000:.0f} ms for Cyclone's, "
                      f"{plain_cpu * 1000:.0f} ms for docker run's", flush=True)
    return results


def report(results: Results) -> None:
    ex = results.executor
    print(f"-- {ex} executor, {len(results.done[1])} rounds --")
    for steps in (1, TEN):
        print(f"{steps:>2} step(s): trigger -> first StepStarted "
              f"{spread(results.first_step[steps])}")
        print(f"{'':>11} trigger -> RunSucceeded  {spread(results.done[steps])}")
    if ex == "docker":
        for steps in (1, TEN):
            print(f"docker run --rm x{steps}: {spread(results.docker[steps])}")
        for steps, target in ((1, TARGET_ONE_RATIO), (TEN, TARGET_TEN_RATIO)):
            ratio = statistics.median(results.ratios[steps])
            print(f"ratio {steps} step(s) done / {steps} docker run(s): median {ratio:.2f} "
                  f"(min {min(results.ratios[steps]):.2f}, max {max(results.ratios[steps]):.2f})"
                  f"  [target <= {target}: {verdict(ratio <= target)}]")
    print("where the time goes (median seconds):  1 step | 10 steps")
    for phase in results.phases[1][0]:
        medians = [statistics.median(p[phase] for p in results.phases[steps])
                   for steps in (1, TEN)]
        print(f"  {phase:<40} {medians[0]:6.3f} | {medians[1]:6.3f}")
    if results.bursts:
        rate = statistics.median(results.bursts)
        target = TARGET_BURST[ex]
        print(f"burst of {BURST}: {spread(results.bursts, ' runs/min', 0)}"
              f"  [target >= {target:,.0f}: {verdict(rate >= target)}]")
        print(f"  server CPU a run in the bursts (its own, not its children's): "
              f"{spread([c * 1000 for c in results.burst_cpu], ' ms', 0)}")
    if results.docker_bursts:
        print(f"burst of {BURST} plain docker run --rm: "
              f"{spread(results.docker_bursts, ' runs/min', 0)} (this daemon's own ceiling)")
        for k, whose in enumerate(("Cyclone's runs", "docker run")):
            print(f"  Docker daemon CPU a run, {whose}: "
                  f"{spread([c[k] * 1000 for c in results.daemon_cpu], ' ms', 0)}")


def summary(all_results: list[Results]) -> None:
    print("== targets ==")
    for results in all_results:
        ex = results.executor
        if ex == "docker":
            for steps, target in ((1, TARGET_ONE_RATIO), (TEN, TARGET_TEN_RATIO)):
                ratio = statistics.median(results.ratios[steps])
                print(f"docker {steps} step(s) done / {steps} docker run(s): {ratio:.2f}"
                      f"  [<= {target}: {verdict(ratio <= target)}]")
        if results.bursts:
            rate = statistics.median(results.bursts)
            print(f"{ex} burst: {rate:,.0f} runs/min  [>= {TARGET_BURST[ex]:,.0f}: "
                  f"{verdict(rate >= TARGET_BURST[ex])}]")


# --- main ------------------------------------------------------------------------------------


def options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--bursts", type=int, default=3)
    parser.add_argument("--executor", choices=["both", "docker", "shell"], default="both")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary directory (servers' homes and output)")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds a run may take before the benchmark gives up")
    args = parser.parse_args()
    if args.rounds < 1 or args.bursts < 0:
        parser.error("--rounds must be at least 1, --bursts at least 0")
    return args


def main() -> None:
    args = options()
    # SIGTERM stops the benchmark the way Ctrl-C does; SIGINT's handler is set too, since
    # a shell's `&` starts a job with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))
    executors = ["docker", "shell"] if args.executor == "both" else [args.executor]
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; image {IMAGE}; "
          f"{args.rounds} rounds, {args.bursts} bursts of {BURST}", flush=True)
    all_results = []
    try:
        with workdir("latency", args.keep) as work:
            projects = {steps: Project(f"latency-{steps}", work / "repos" / f"s{steps}", steps)
                        for steps in (1, TEN)}
            for project in projects.values():
                git_repo(project.repo, project.steps)
            for executor in executors:
                home = work / f"home-{executor}"
                with embedded_mode(home, CAPACITY, CYCLONE_EXECUTOR=executor,
                                   CYCLONE_MAX_PARALLEL_JOBS=str(CAPACITY)) as server:
                    print(f"== {executor} executor: cyclone up on {server.url} ==", flush=True)
                    try:
                        results = asyncio.run(measure(server, executor, projects, args))
                    except (Exception, SystemExit):
                        print(f"server output (last lines):\n{_tail(home / 'output.log')}",
                              file=sys.stderr)
                        raise
                report(results)
                all_results.append(results)
            summary(all_results)
    except KeyboardInterrupt:
        print("interrupted; every server started was stopped", file=sys.stderr)
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
