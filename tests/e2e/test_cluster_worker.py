"""A workermanager process in a cluster: what its crash leaves is reaped when it comes back,
a SIGTERM hands its running job back to the other worker at once, an etcd outage longer
than its lease costs the job's attempt but not the worker, and its log lines go through
a Kafka restart, in order and once."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiodocker
import aiohttp
import pytest

from services.workermanager.appends import append_retrying
from services.workermanager.logship import LogShipper
from shared import events as ev
from shared.adapters.bus.kafka import KafkaBus
from shared.adapters.eventstore.sqlite import SqliteEventStore
from shared.adapters.executor.docker_convert import LABEL_ROLE, LABEL_RUN, LABEL_WORKER
from shared.errors import StoreError
from shared.events import NewEvent, RecordedEvent, utc_now
from shared.ports.bus import TOPIC_LOGS
from shared.runstream import RunStates
from shared.wire import decode_log_batch
from tests.docker_support import AT_THE_GATE, TEST_IMAGE, cyclone_leftovers, open_gate_async
from tests.e2e.cluster_support import (
    Cluster,
    start_cluster,
)
from tests.git_support import GitServer
from tests.infra.etcd import EtcdServer, private_etcd
from tests.infra.kafka import KafkaBroker, private_kafka
from tests.support import HANG_S, eventually

__all__ = ["private_etcd", "private_kafka"]

ENDED = ("success", "failure", "errored", "cancelled")


def pipeline(then: str = "sleep 0") -> str:
    """One job whose first attempt never ends by itself; the next one runs ``then``
    (``AT_THE_GATE``: it waits until the test opens the gate) and ends."""
    return f"""
jobs:
  work:
    image: {TEST_IMAGE}
    steps:
      - run:
          - echo attempt $CYCLONE_JOB_ATTEMPT
          - if [ "$CYCLONE_JOB_ATTEMPT" = 1 ]; then sleep 300; fi
          - {then}
          - echo done working
"""


class Api:
    def __init__(self, http: aiohttp.ClientSession) -> None:
        self.http = http

    async def start_run(self, git_server: GitServer, text: str) -> str:
        repo = git_server.create("demo")
        repo.commit({".cyclone.yml": text})
        async with self.http.post("/api/v1/projects",
                                  json={"name": "demo", "repo": repo.url}) as r:
            assert r.status == 201, await r.text()
        async with self.http.post("/api/v1/projects/demo/runs", json={}) as r:
            assert r.status == 202, await r.text()
            return str((await r.json())["id"])

    async def run(self, run_id: str) -> Any:
        async with self.http.get(f"/api/v1/runs/{run_id}") as response:
            return await response.json()

    async def event_types(self, run_id: str) -> list[str]:
        async with self.http.get(f"/api/v1/runs/{run_id}/events") as response:
            return [e["type"] for e in (await response.json())["events"]]

    async def log_texts(self, run_id: str, *showing: str) -> list[str]:
        """The run's log, once each of the lines ``showing`` is in it: lines are stored
        by the log server and the run's end by the event manager, so a log may trail
        its run's end."""
        async def found() -> list[list[str]] | None:
            async with self.http.get(f"/api/v1/runs/{run_id}/logs") as response:
                texts = [json.loads(x)["text"] for x in (await response.text()).splitlines()]
            return [texts] if all(line in texts for line in showing) else None

        [texts] = await eventually(found, what=f"{showing} in the log of run {run_id}")
        return texts

    async def running_on(self, run_id: str, attempt: int) -> str:
        """The worker running the job's ``attempt``'s step, or ""."""
        job = ((await self.run(run_id))["jobs"] or [{}])[0]
        steps = job.get("steps") or [{}]
        if (job.get("status") == "running" and job.get("attempt") == attempt
                and steps[0].get("status") == "running"):
            return str(job["worker"])
        return ""

    async def ended(self, run_id: str) -> Any:
        run = await self.run(run_id)
        return run if run["status"] in ENDED else None


@pytest.fixture
async def api_of() -> AsyncIterator[Any]:
    sessions: list[aiohttp.ClientSession] = []

    def make(cluster: Cluster) -> Api:
        api = cluster["api"]
        sessions.append(aiohttp.ClientSession(api.url, headers=api.headers))
        return Api(sessions[-1])

    yield make
    for session in sessions:
        await session.close()


async def containers_of(run_id: str, worker: str, role: str = "") -> list[str]:
    """The run's containers created by the worker process ``worker`` (of this cluster:
    the label holds its home too); only those of ``role`` (e.g. "step") when given."""
    wanted = [f"{LABEL_RUN}={run_id}", *([f"{LABEL_ROLE}={role}"] if role else [])]
    async with aiodocker.Docker() as docker:
        found = await docker.containers.list(all=True, filters=json.dumps({"label": wanted}))
    return [c["Names"][0].lstrip("/") for c in found
            if c["Labels"].get(LABEL_WORKER, "").startswith(f"{worker}@")]


async def test_a_worker_started_again_after_a_crash_reaps_what_it_left(
    tmp_path: Path, infra: dict[str, str], git_server: GitServer, api_of: Any,
) -> None:
    cluster = start_cluster(tmp_path, infra, workers=2, CYCLONE_WORKER_LEASE_S="3")
    try:
        api: Api = api_of(cluster)
        # The second attempt waits at its gate: the run is surely still running while
        # the restarted worker reaps, however long that takes on a loaded machine.
        run_id = await api.start_run(git_server, pipeline(AT_THE_GATE))
        first = await eventually(lambda: api.running_on(run_id, 1), timeout=60,
                                 what="the first attempt runs")
        # Its step's container, not only its start: the job prepares the workspace first.
        await eventually(lambda: containers_of(run_id, first, role="step"), timeout=60,
                         what="the first attempt's step container")
        cluster[first].kill()  # SIGKILL: its step container goes on, nobody removes it
        other = "w2" if first == "w1" else "w1"
        await eventually(lambda: api.running_on(run_id, 2),
                         what="the job runs again on the other worker")
        assert await api.running_on(run_id, 2) == other
        assert await containers_of(run_id, first), "the killed worker's step container"

        cluster[first].start()  # the same worker id and home, as a supervisor restarts it
        async def reaped() -> bool:
            return not await containers_of(run_id, first)

        await eventually(reaped, what="the restarted worker removes its leftovers")
        assert (await api.run(run_id))["status"] == "running"  # not the run's own clean-up
        assert run_id in cluster[first].output
        assert await containers_of(run_id, other), "the other worker's attempt is untouched"

        await open_gate_async(run_id)
        done = await eventually(lambda: api.ended(run_id), timeout=120, interval=0.2,
                                what="the run ends on the other worker")
        assert done["status"] == "success", done
        assert done["jobs"][0]["worker"] == other
        await eventually(lambda: not cyclone_leftovers(run_id),
                         what="nothing of the run left on the Docker host")
    finally:
        cluster.stop()


async def test_sigterm_hands_the_running_job_back_at_once(
    tmp_path: Path, infra: dict[str, str], git_server: GitServer, api_of: Any,
) -> None:
    # A lease far longer than the test's patience: a re-queue can only come from the
    # hand-back, not from the lease running out.
    cluster = start_cluster(tmp_path, infra, workers=2, CYCLONE_WORKER_LEASE_S="600",
                            CYCLONE_WORKER_DRAIN_S="1")
    try:
        api: Api = api_of(cluster)
        run_id = await api.start_run(git_server, pipeline())
        first = await eventually(lambda: api.running_on(run_id, 1), timeout=60,
                                 what="the first attempt runs")
        other = "w2" if first == "w1" else "w1"
        await eventually(lambda: containers_of(run_id, first), what="its step container")

        # Its step sleeps 300 s: a worker that ends well before that did not wait for it.
        code = cluster[first].terminate(timeout=120)
        assert code == 0, cluster[first].output
        assert "jobs handed back to the other workers" in cluster[first].output
        assert await containers_of(run_id, first) == []  # killed before the hand-back

        async def queued_again() -> bool:
            return (await api.event_types(run_id)).count("JobQueued") == 2

        await eventually(queued_again, timeout=120, what="the job queued again")
        done = await eventually(lambda: api.ended(run_id), timeout=120, interval=0.2,
                                what="the run ends on the other worker")
        assert done["status"] == "success", done
        job = done["jobs"][0]
        assert (job["worker"], job["attempt"]) == (other, 2)
        types = await api.event_types(run_id)
        # The handed-back attempt reported nothing after its start: no step or job end.
        assert types.count("JobStarted") == 2
        assert types.count("StepFinished") == 1 and types.count("JobFinished") == 1
        await api.log_texts(run_id, f"attempt 2 on worker {other} (the previous worker was lost)",
                            "attempt 2", "done working")
    finally:
        cluster.stop()


@pytest.fixture
def infra_own_etcd(infra: dict[str, str], private_etcd: EtcdServer) -> dict[str, str]:
    return {**infra, "CYCLONE_COORD": private_etcd.url}


async def test_an_etcd_outage_longer_than_the_lease_costs_the_attempt_not_the_worker(
    tmp_path: Path, infra_own_etcd: dict[str, str], private_etcd: EtcdServer,
    git_server: GitServer, api_of: Any,
) -> None:
    cluster = start_cluster(tmp_path, infra_own_etcd, workers=2, CYCLONE_WORKER_LEASE_S="3")
    try:
        api: Api = api_of(cluster)
        run_id = await api.start_run(git_server, pipeline())
        first = await eventually(lambda: api.running_on(run_id, 1), timeout=60,
                                 what="the first attempt runs")
        await eventually(lambda: containers_of(run_id, first), what="its step container")
        await asyncio.to_thread(private_etcd.stop)
        # No refresh for a whole ttl: the worker must take its claims for gone...
        await asyncio.to_thread(cluster[first].wait_for_output, "taking it as lost", HANG_S)
        await asyncio.to_thread(private_etcd.restart)
        # ... so it stops the job without a word, and the job is queued again.
        done = await eventually(lambda: api.ended(run_id), timeout=120, interval=0.2,
                                what="the run ends")
        assert done["status"] == "success", done
        assert done["jobs"][0]["attempt"] == 2
        types = await api.event_types(run_id)
        assert types.count("StepFinished") == 1 and types.count("JobFinished") == 1
        assert cluster["w1"].alive and cluster["w2"].alive  # both rode the outage out
        await api.log_texts(run_id, "attempt 2")
    finally:
        cluster.stop()


async def test_log_lines_go_through_a_kafka_restart_in_order_and_once(
    private_kafka: KafkaBroker,
) -> None:
    run_id = f"t{uuid.uuid4().hex[:16]}"
    bus = await KafkaBus.connect(private_kafka.url)
    try:
        shipper = LogShipper(bus, run_id, max_lines=20)
        sink = shipper.sink("job", "step")
        written = 0

        async def write(upto: int) -> None:
            nonlocal written
            while written < upto:
                written += 1
                await sink("stdout", utc_now(), f"line {written}")

        await write(50)
        await shipper.flush()
        await asyncio.to_thread(private_kafka.stop)
        writer = asyncio.create_task(write(150))
        await eventually(lambda: written >= 70, what="lines written while Kafka is down")
        # The broker is down: the writer is held back once the buffer is full.
        assert not writer.done() and written <= 50 + 2 * 20
        await asyncio.to_thread(private_kafka.restart)
        await asyncio.wait_for(writer, timeout=60)
        await shipper.close()
        assert shipper.shipped == 150

        sub = await bus.subscribe(TOPIC_LOGS, f"check-{run_id}")
        seen: dict[str, list[str]] = {}  # batch id -> its lines (the log server's dedupe)
        try:
            async with asyncio.timeout(60):
                async for message in sub:
                    run, batch, lines = decode_log_batch(message.value)
                    if run == run_id:
                        seen.setdefault(batch, [line.text for line in lines])
                    if sum(map(len, seen.values())) >= 150:
                        break
        finally:
            await sub.close()
        texts = [text for lines in seen.values() for text in lines]
        assert texts == [f"line {i}" for i in range(1, 151)]
    finally:
        await bus.close()


class BlippingStore(SqliteEventStore):
    """A store whose next appends fail after writing (the answer lost on the way back, as
    when MongoDB's connection drops), and whose next reads fail outright."""

    lost_answers = 0
    failing_reads = 0

    async def append(self, stream: str, events: Sequence[NewEvent],
                     expected_seq: int) -> list[RecordedEvent]:
        recorded = await super().append(stream, events, expected_seq)
        if self.lost_answers:
            self.lost_answers -= 1
            raise StoreError("connection closed before the reply")
        return recorded

    async def read(self, stream: str, from_seq: int = 1) -> list[RecordedEvent]:
        if self.failing_reads:
            self.failing_reads -= 1
            raise StoreError("no server available")
        return await super().read(stream, from_seq)


async def test_an_append_whose_answer_was_lost_is_not_written_twice(tmp_path: Path) -> None:
    store = await BlippingStore.open(tmp_path / "events.db")
    assert isinstance(store, BlippingStore)
    try:
        run_id = "r1"
        await append_retrying(RunStates(store), run_id, lambda run: [ev.CheckoutQueued()])
        store.lost_answers, store.failing_reads = 1, 2
        ended = ev.RunErrored(reason="checkout failed")
        result = await append_retrying(RunStates(store), run_id, lambda run: [ended])
        assert [r.seq for r in result.appended] == [2]
        assert store.lost_answers == store.failing_reads == 0  # every blip was met
        types = [r.type for r in await store.read(f"run-{run_id}")]
        assert types == ["CheckoutQueued", "RunErrored"]
    finally:
        await store.close()
