"""Distributed mode at scale and under fire: two replicas of every service as OS
processes, many runs of a pipeline with parallel jobs, and (chaos) a random replica
SIGKILLed during each run, Kafka restarted mid-run, etcd restarted mid-run.

What must hold every time (``check_run``):

* every run succeeds, and its events have contiguous seq numbers;
* every numbered line of a job's final attempt is in the run's log exactly once,
  and no line of any attempt twice (the outage tests print tens of thousands of lines
  a step, so an outage falls in the middle of a step's output);
* no step ran twice: each step counts its executions from inside the container
  (an HTTP call to a counter the test serves) -- once per attempt, and a job has
  a second attempt only when its worker was lost.
"""

from __future__ import annotations

import asyncio
import collections
import json
import random
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.docker_support import TEST_IMAGE
from tests.e2e.cluster_support import (
    Cluster,
    Service,
    infra_urls,
    start_cluster,
)
from tests.git_support import GitServer, unused_port
from tests.infra.etcd import EtcdServer
from tests.infra.kafka import KafkaBroker
from tests.support import HANG_S, eventually

LINES = 10  # numbered lines per step
BIG_LINES = 10_000  # ... in the outage tests: 20,000 a job
LEASE_S = 3  # workers' lease TTL: a killed worker's jobs are queued again after this
ENDED = ("success", "failure", "cancelled", "errored")


def pipeline(counter_port: int, pause: str = "0.5", lines: int = LINES) -> str:
    """Two parallel jobs and one after both; each step reports its execution, then
    prints numbered lines (tagged with job, step and attempt) around a pause."""
    step = """
      - name: @STEP@
        run:
          - |
            gw=$(ip route | awk '/default/ {print $3}')
            wget -q -O - "http://$gw:@PORT@/hit/$CYCLONE_RUN_ID/$CYCLONE_JOB/$CYCLONE_STEP/$CYCLONE_JOB_ATTEMPT" >/dev/null
            for i in $(seq 1 @HALF@); do echo "n $CYCLONE_JOB $CYCLONE_STEP $CYCLONE_JOB_ATTEMPT $i"; done
            sleep @PAUSE@
            for i in $(seq @HALF1@ @LINES@); do echo "n $CYCLONE_JOB $CYCLONE_STEP $CYCLONE_JOB_ATTEMPT $i"; done
"""
    steps = "".join(step.replace("@STEP@", name) for name in ("first", "second"))
    job = f"    image: {TEST_IMAGE}\n    steps:{steps}"
    text = (f"jobs:\n  left:\n{job}  right:\n{job}"
            f"  join:\n    needs: [left, right]\n{job}")
    for name, value in (("PORT", counter_port), ("HALF", lines // 2),
                        ("HALF1", lines // 2 + 1), ("LINES", lines), ("PAUSE", pause)):
        text = text.replace(f"@{name}@", str(value))
    return text


@dataclass
class Counter:
    """Counts step executions, as reported from inside the steps' containers."""

    port: int = field(default_factory=unused_port)
    hits: collections.Counter[tuple[str, str, str, int]] = field(
        default_factory=collections.Counter)

    async def hit(self, request: web.Request) -> web.Response:
        m = request.match_info
        self.hits[(m["run"], m["job"], m["step"], int(m["attempt"]))] += 1
        return web.Response(text="ok")


@pytest.fixture
async def counter() -> AsyncIterator[Counter]:
    counting = Counter()
    app = web.Application()
    app.add_routes([web.get("/hit/{run}/{job}/{step}/{attempt}", counting.hit)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", counting.port).start()  # containers reach the host
    try:
        yield counting
    finally:
        await runner.cleanup()


class Client:
    """The test's view of the API: any live api replica will do (one may be dead)."""

    def __init__(self, cluster: Cluster, http: aiohttp.ClientSession) -> None:
        self.cluster = cluster
        self.http = http

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """Ask each api replica in turn until one answers (for up to 60 s: both may be
        restarting after a kill)."""
        problems: list[str] = []

        async def answer() -> Any:
            for service in self.cluster.of("api"):
                try:
                    async with self.http.request(method, f"{service.url}{path}",
                                                 headers=service.headers,
                                                 **kwargs) as response:
                        if response.status >= 500:
                            problems.append(f"{response.status}: {await response.text()}")
                            continue
                        assert response.status < 400, await response.text()
                        if response.content_type == "application/json":
                            return [await response.json()]
                        return [await response.text()]
                except aiohttp.ClientConnectionError as exc:
                    problems.append(str(exc))  # that replica is down: ask another
            return None

        found = await eventually(answer, timeout=60, interval=0.2,
                                 what=f"an api replica answers {method} {path}")
        return found[0]

    async def run(self, run_id: str) -> Any:
        return await self.call("GET", f"/api/v1/runs/{run_id}")

    async def trigger(self, project: str) -> str:
        return str((await self.call("POST", f"/api/v1/projects/{project}/runs", json={}))["id"])


async def create_project(client: Client, git_server: GitServer, counter: Counter,
                         pause: str = "0.5", lines: int = LINES) -> str:
    name = f"scale-{counter.port}"  # the tests share a cluster: a project each
    repo = git_server.create(name)
    repo.commit({".cyclone.yml": pipeline(counter.port, pause, lines)})
    await client.call("POST", "/api/v1/projects", json={"name": name, "repo": repo.url})
    return name


async def wait_ended(client: Client, run_ids: list[str], timeout: float) -> dict[str, Any]:
    ended: dict[str, Any] = {}

    async def all_ended() -> bool:
        for run_id in run_ids:
            if run_id not in ended:
                run = await client.run(run_id)
                if run["status"] in ENDED:
                    ended[run_id] = run
        return len(ended) == len(run_ids)

    try:
        await eventually(all_ended, timeout=timeout, interval=0.5,
                         what=f"{len(run_ids)} runs end")
    except AssertionError as exc:
        stuck = {run_id: [_said(e) for e in (await client.call(
            "GET", f"/api/v1/runs/{run_id}/events"))["events"]]
            for run_id in run_ids if run_id not in ended}
        raise AssertionError(f"{exc}; {len(stuck)} did not, their events: {stuck}") from None
    return ended


def _said(event: dict[str, Any]) -> str:
    """``JobStarted(left#2 w1)``: an event's type with its job, attempt and worker."""
    data = event["data"]
    details = " ".join(str(d) for d in (
        data.get("job", "") + (f"#{data['attempt']}" if "attempt" in data else ""),
        data.get("worker", ""), data.get("step", "")) if d)
    return f"{event['type']}({details})" if details else event["type"]


async def check_run(client: Client, counter: Counter, run: Any, lines: int = LINES) -> None:
    """The invariants of the module docstring, for one ended run."""
    run_id = run["id"]
    if run["status"] != "success":
        log = await client.call("GET", f"/api/v1/runs/{run_id}/logs")
        raise AssertionError(f"{json.dumps(run, indent=1)}\nlog:\n{log}")
    events = (await client.call("GET", f"/api/v1/runs/{run_id}/events"))["events"]
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(seqs) + 1)), seqs
    numbered = await _numbered_lines(client, run_id, run, lines)
    for job in run["jobs"]:
        final = job["attempt"]
        requeued = sum(1 for e in events if e["type"] == "JobQueued"
                       and e["data"]["job"] == job["name"])
        assert final == requeued, (job, "an attempt per time the job was queued")
        for step in ("first", "second"):
            for attempt in range(1, final + 1):
                executions = counter.hits[(run_id, job["name"], step, attempt)]
                assert executions <= 1, (run_id, job["name"], step, attempt, executions)
            assert counter.hits[(run_id, job["name"], step, final)] == 1, (run_id, job, step)
            shown = [i for (j, s, a, i) in numbered if (j, s, a) == (job["name"], step, final)]
            assert shown == list(range(1, lines + 1)), (run_id, job["name"], step,
                                                        _gaps(shown, lines))
    doubled = [line for line, n in collections.Counter(numbered).items() if n > 1]
    assert not doubled, (run_id, doubled[:20])


def _gaps(shown: list[int], lines: int) -> str:
    missing = sorted(set(range(1, lines + 1)) - set(shown))
    return f"{len(shown)} shown, {len(missing)} missing (first {missing[:5]})"


async def _numbered_lines(client: Client, run_id: str, run: Any, lines: int = LINES,
                          ) -> list[tuple[str, str, int, int]]:
    """(job, step, attempt, number) of every numbered line in the run's log, in order.

    The log may trail the run's end by a moment (lines are stored by the log servers,
    the end by the event manager): wait until the final attempts' lines are all there.
    """
    expected = len(run["jobs"]) * 2 * lines

    async def complete() -> list[tuple[str, str, int, int]] | None:
        text = await client.call("GET", f"/api/v1/runs/{run_id}/logs")
        found = []
        for raw in str(text).splitlines():
            parts = json.loads(raw)["text"].split()
            if len(parts) == 5 and parts[0] == "n":
                found.append((parts[1], parts[2], int(parts[3]), int(parts[4])))
        finals = {j["name"]: j["attempt"] for j in run["jobs"]}
        last = sum(1 for (job, _, attempt, _) in found if finals.get(job) == attempt)
        progress.append(last)
        return found if last >= expected else None

    progress: list[int] = []
    try:
        return await eventually(complete, timeout=60, interval=0.5,
                                what=f"run {run_id}'s log has every line")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {progress[-1:]} of {expected} final-attempt lines "
                             f"(earlier: {progress[:3]}...)") from None


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory, kafka_url: str, etcd_url: str,
                   mongo_url: str, docker_ready: None) -> Iterator[Cluster]:
    """One cluster for this module's tests (each has projects and runs of its own): a
    cluster of ten replicas takes ~30 s to start, once instead of five times."""
    running = start_cluster(tmp_path_factory.mktemp("cluster"),
                            infra_urls(kafka_url, etcd_url, mongo_url), workers=2, replicas=2,
                            CYCLONE_WORKER_LEASE_S=str(LEASE_S), CYCLONE_WORKER_CAPACITY="4")
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def cluster(shared_cluster: Cluster) -> Cluster:
    """The module's cluster with every replica up: one a test killed and did not start
    again (it failed half-way) is started before the next test."""
    for service in shared_cluster.services.values():
        if not service.alive:
            service.start(timeout=HANG_S * 3)
    return shared_cluster


async def test_twenty_runs_on_two_replicas_of_every_service(
    cluster: Cluster, git_server: GitServer, counter: Counter,
) -> None:
    async with aiohttp.ClientSession() as http:
        client = Client(cluster, http)
        project = await create_project(client, git_server, counter)
        run_ids = await asyncio.gather(*(client.trigger(project) for _ in range(20)))
        runs = await wait_ended(client, list(run_ids), timeout=240)
        for run in runs.values():
            await check_run(client, counter, run)
            assert all(job["attempt"] == 1 for job in run["jobs"]), run
        workers = {job["worker"] for run in runs.values() for job in run["jobs"]}
        assert workers == {"w1", "w2"}, "both workermanagers took jobs"


async def test_a_random_replica_killed_during_each_run(
    cluster: Cluster, git_server: GitServer, counter: Counter,
) -> None:
    seed = random.randrange(1 << 30)
    chooser = random.Random(seed)
    print(f"chaos seed {seed}")
    async with aiohttp.ClientSession() as http:
        client = Client(cluster, http)
        project = await create_project(client, git_server, counter, pause="1")
        run_ids: list[str] = []
        killed: list[str] = []
        restarts: dict[str, asyncio.Task[None]] = {}  # replica -> its restart
        for _ in range(20):
            run_id = await client.trigger(project)
            run_ids.append(run_id)
            await _running(client, run_id)
            starting = [r for r, task in restarts.items() if not task.done()]
            victim = await _pick_victim(cluster, chooser, client, run_id, exclude=starting)
            if victim is None:  # every service has a replica starting again
                print(f"run {run_id}: no replica to kill")
                continue
            killed.append(victim.replica)
            print(f"run {run_id}: killing {victim.replica}")
            victim.kill()
            if victim.name == "workermanager":
                await _requeued_in_time(client, run_id, victim.replica)
            restarts[victim.replica] = asyncio.create_task(asyncio.to_thread(victim.start))
        await asyncio.gather(*restarts.values())
        runs = await wait_ended(client, run_ids, timeout=240)
        for run in runs.values():
            await check_run(client, counter, run)
    print(f"killed, in order: {killed}")
    assert len(killed) >= 5, "too few replicas were killed to say anything"


async def _running(client: Client, run_id: str) -> None:
    """Wait until the run runs a job; if it does not, fail with its history."""
    try:
        # Only a hang fails this: a killed replica's partitions move twice (away after
        # Kafka's session timeout, back when it is started again), on a loaded machine.
        await eventually(lambda: _has_running_job(client, run_id), timeout=HANG_S * 2,
                         what=f"run {run_id} runs a job")
    except AssertionError as exc:
        events = (await client.call("GET", f"/api/v1/runs/{run_id}/events"))["events"]
        raise AssertionError(f"{exc}; its events: {[_said(e) for e in events]}") from None


async def _has_running_job(client: Client, run_id: str) -> bool:
    return any(job["status"] == "running" for job in (await client.run(run_id))["jobs"])


async def _requeued_in_time(client: Client, run_id: str, worker: str) -> None:
    """The jobs the dead worker ran are queued again within its lease TTL + 10 s."""
    lost = [j["name"] for j in (await client.run(run_id))["jobs"]
            if j["status"] == "running" and j["worker"] == worker]

    async def requeued() -> bool:
        events = (await client.call("GET", f"/api/v1/runs/{run_id}/events"))["events"]
        queued = collections.Counter(e["data"]["job"] for e in events
                                     if e["type"] == "JobQueued")
        return all(queued[job] >= 2 for job in lost)

    await eventually(requeued, timeout=LEASE_S + 10, interval=0.2,
                     what=f"{lost} of run {run_id} queued again after {worker} died")


async def _pick_victim(cluster: Cluster, chooser: random.Random, client: Client,
                       run_id: str, exclude: list[str]) -> Service | None:
    """A random live replica (not one still starting again) whose service keeps another
    one up (None: there is none now): a service with none left would stall the next run
    until a restart finishes, however long that takes on a loaded machine (whole outages
    have tests of their own). A workermanager is the one running the run's job, so that
    its death costs this run a job (re-queueing)."""
    up = [s for s in cluster.services.values() if s.alive and s.replica not in exclude]
    live = [s for s in up if sum(1 for other in up if other.name == s.name) > 1]
    if not live:
        return None
    victim = chooser.choice(live)
    if victim.name == "workermanager":
        jobs = (await client.run(run_id))["jobs"]
        running = [j["worker"] for j in jobs if j["status"] == "running"]
        if running and running[0] in {s.replica for s in live}:
            victim = cluster[running[0]]
    return victim


async def _outage_mid_run(client: Client, counter: Counter, project: str,
                          restart: Any, runs: int = 3, lines: int = LINES) -> None:
    run_ids = [await client.trigger(project) for _ in range(runs)]
    await _running(client, run_ids[0])
    follower = asyncio.create_task(follow_log(client, run_ids[0]))
    started = time.monotonic()
    await asyncio.to_thread(restart)
    print(f"outage and restart took {time.monotonic() - started:.1f} s")
    more = [await client.trigger(project) for _ in range(2)]  # triggered after the return
    ended = await wait_ended(client, run_ids + more, timeout=300)
    for run in ended.values():
        await check_run(client, counter, run, lines)
    # Someone followed the first run's log live through the outage: the stream ended
    # with the run, complete, and with exactly the stored lines.
    end, streamed = await asyncio.wait_for(follower, timeout=120)
    assert end == {"status": "success"}, end
    stored = str(await client.call("GET", f"/api/v1/runs/{run_ids[0]}/logs")).splitlines()
    assert streamed == len(stored)


async def follow_log(client: Client, run_id: str) -> tuple[dict[str, Any], int]:
    """Follow a run's log over SSE, reconnecting (with Last-Event-ID) to any live api
    replica when a stream breaks; (the end event's data, lines received)."""
    last, received = "", 0
    while True:
        for service in client.cluster.of("api"):
            headers = {**service.headers, **({"Last-Event-ID": last} if last else {})}
            try:
                async with client.http.get(f"{service.url}/api/v1/runs/{run_id}/logs",
                                           params={"follow": "1"}, headers=headers,
                                           timeout=aiohttp.ClientTimeout(total=None)) as resp:
                    event = ""
                    async for raw in resp.content:
                        line = raw.decode().rstrip("\n")
                        if line.startswith("event: "):
                            event = line[7:]
                        elif line.startswith("id: "):
                            last = line[4:]
                        elif line.startswith("data: ") and event == "line":
                            received += 1
                        elif line.startswith("data: ") and event == "end":
                            return json.loads(line[6:]), received
            except (TimeoutError, aiohttp.ClientError):
                pass  # that replica is down or dropped us: another one, from `last`
        await asyncio.sleep(0.5)


async def test_kafka_restarted_mid_run(
    cluster: Cluster, git_server: GitServer, counter: Counter, kafka_broker: KafkaBroker,
) -> None:
    async with aiohttp.ClientSession() as http:
        client = Client(cluster, http)
        project = await create_project(client, git_server, counter, pause="2",
                                       lines=BIG_LINES)
        await _outage_mid_run(client, counter, project,
                              lambda: kafka_broker.restart(kill=True, down_s=3),
                              lines=BIG_LINES)


async def test_a_logserver_killed_mid_step_loses_no_line(
    cluster: Cluster, git_server: GitServer, counter: Counter,
) -> None:
    async with aiohttp.ClientSession() as http:
        client = Client(cluster, http)
        project = await create_project(client, git_server, counter, pause="2",
                                       lines=BIG_LINES)

        def kill_and_restart() -> None:
            victim = cluster.of("logserver")[0]
            victim.kill()
            victim.start()

        await _outage_mid_run(client, counter, project, kill_and_restart, runs=2,
                              lines=BIG_LINES)


async def test_etcd_restarted_mid_run(
    cluster: Cluster, git_server: GitServer, counter: Counter, etcd_server: EtcdServer,
) -> None:
    async with aiohttp.ClientSession() as http:
        client = Client(cluster, http)
        project = await create_project(client, git_server, counter, pause="2")
        # Down longer than the workers' lease TTL: leases outlive the outage (etcd
        # renews them on its return) or expire and the jobs are handed to a worker.
        await _outage_mid_run(client, counter, project,
                              lambda: etcd_server.restart(kill=True, down_s=LEASE_S + 2))
