"""A project's max_concurrent_runs holds across event manager replicas, on the in-process
coordinator and on a real etcd (two replicas, one store, one coordination service)."""

from __future__ import annotations

import asyncio
import itertools

from services.eventmanager.admission import Admissions
from services.eventmanager.service import EventManager, abandon_run
from shared.events import TERMINAL_RUN_EVENTS
from shared.keys import slot_key
from tests.eventmanager.support import Replicas, connect, replicas, worker_reports
from tests.infra.etcd import etcd_server, etcd_url
from tests.support import eventually

__all__ = ["connect", "etcd_server", "etcd_url", "replicas"]  # fixtures, registered by import

_ENDS = frozenset(t.TYPE for t in TERMINAL_RUN_EVENTS)
_STARTS = frozenset({"CheckoutQueued", "RunPlanned"})


async def finish(replicas: Replicas, manager: EventManager, run_id: str) -> str:
    """Take an admitted run to its end, as its replica and a worker would; its status."""
    await manager.advance(run_id)  # handles RunPlanned: queues the job
    await worker_reports(replicas, run_id)
    ended = await manager.advance(run_id)  # handles JobFinished: ends the run
    assert ended is not None
    return ended.status


async def busy_spans(replicas: Replicas, runs: list[str]) -> list[tuple[int, int]]:
    """Per run, the store positions of its first start and of its end, by start."""
    spans = []
    for run_id in runs:
        events = await replicas.events(run_id)
        start = next(e.position for e in events if e.type in _STARTS)
        end = next(e.position for e in events if e.type in _ENDS)
        spans.append((start, end))
    return sorted(spans)


async def test_runs_arriving_at_two_replicas_run_one_at_a_time_oldest_first(
    replicas: Replicas,
) -> None:
    a = await replicas.manager(running=True)
    b = await replicas.manager(running=True)
    project = await replicas.project(limit=1)
    runs = [await replicas.request(project) for _ in range(4)]
    owner = {run_id: (a, b)[i % 2] for i, run_id in enumerate(runs)}  # split by partition
    await asyncio.gather(*(owner[r].advance(r) for r in runs))  # all requested at once

    async def the_one_running() -> str | None:
        active = await replicas.active(runs)
        assert len(active) <= 1, f"runs running at once: {active}"
        return active[0] if active else None

    order: list[str] = []
    for _ in runs:
        # The other replica's watch may be the one letting the next run in: not at once.
        running = str(await eventually(the_one_running, what="a run starts"))
        order.append(running)
        # Ending it on its replica frees the slot; the oldest waiting run goes in.
        assert await finish(replicas, owner[running], running) == "success"

    assert sorted(order) == sorted(runs)
    assert order[1:] == sorted(order[1:]), "after the first, the oldest waiting run goes first"
    spans = await busy_spans(replicas, runs)
    assert all(prev[1] < nxt[0] for prev, nxt in itertools.pairwise(spans)), spans


async def test_a_run_waiting_at_one_replica_goes_in_when_another_replica_frees_a_slot(
    replicas: Replicas,
) -> None:
    a = await replicas.manager()  # no watches: it will not wake anyone up itself
    b = await replicas.manager(running=True)
    project = await replicas.project(limit=1)
    first, second = await replicas.request(project), await replicas.request(project)
    await a.advance(first)
    await b.advance(second)
    assert await replicas.active([first, second]) == [first]

    await a.advance(first)
    await worker_reports(replicas, first)
    # A ends the run and frees its slot, but (as if it died right after) wakes no one:
    # B's watch of the slots lets B's waiting run in.
    ended = await a.advance(first, wake=False)
    assert ended is not None and ended.status == "success"
    await eventually(lambda: replicas.active([second]), what="the waiting run starts")
    assert await finish(replicas, b, second) == "success"


async def test_a_slot_taken_by_a_replica_that_died_before_starting_the_run_is_kept(
    replicas: Replicas,
) -> None:
    project = await replicas.project(limit=1)
    first, second = await replicas.request(project), await replicas.request(project)
    dead = Admissions((await replicas.manager()).coord)
    # The dying replica took the slot for `first`, then crashed before its first append.
    assert await dead.admit(await replicas.state(first), 1) == "admitted"
    assert await replicas.active([first]) == []

    heir = await replicas.manager()
    await heir.advance(second)  # the slot counts although its run has not started
    assert await replicas.active([first, second]) == []
    await heir.advance(first)  # the redelivered request reaches the new owner: it goes on
    assert await replicas.active([first, second]) == [first]
    assert await finish(replicas, heir, first) == "success"
    assert await replicas.active([second]) == [second]


async def test_start_up_frees_the_slot_of_a_run_that_ended_without_giving_it_back(
    replicas: Replicas,
) -> None:
    a = await replicas.manager()
    project = await replicas.project(limit=1)
    first, second = await replicas.request(project), await replicas.request(project)
    await a.advance(first)
    await a.advance(second)
    # The run ends, and its replica crashes before releasing the slot.
    assert await abandon_run(replicas.store, first, "crashed")
    assert await replicas.active([second]) == []

    restarted = await replicas.manager()
    await restarted.load()
    assert await replicas.active([second]) == [second]
    assert await finish(replicas, restarted, second) == "success"


async def test_a_started_run_that_holds_no_slot_still_counts(replicas: Replicas) -> None:
    a = await replicas.manager()
    project = await replicas.project(limit=1)
    first, second = await replicas.request(project), await replicas.request(project)
    await a.advance(first)
    # A store from before slots, or the embedded coordinator after a restart: the run is
    # running but the coordination service knows nothing of it.
    assert await a.coord.delete(slot_key(project, 0))

    restarted = await replicas.manager()
    await restarted.load()
    await restarted.advance(second)
    assert await replicas.active([first, second]) == [first]
    assert await finish(replicas, restarted, first) == "success"
    assert await replicas.active([second]) == [second]


async def test_waiting_runs_left_behind_while_no_replica_watched_go_in_at_start(
    replicas: Replicas,
) -> None:
    a = await replicas.manager()
    project = await replicas.project(limit=1)
    first, second = await replicas.request(project), await replicas.request(project)
    await a.advance(first)
    await a.advance(second)
    await a.advance(first)
    await worker_reports(replicas, first)
    await a.advance(first, wake=False)  # freed the slot, died before waking anyone
    assert await replicas.active([second]) == []

    await replicas.manager(running=True, catch_up_at_start=True)
    await eventually(lambda: replicas.active([second]), what="the waiting run starts")


async def test_a_project_without_a_limit_takes_no_slot(replicas: Replicas) -> None:
    a = await replicas.manager()
    project = await replicas.project(limit=0)
    runs = [await replicas.request(project) for _ in range(3)]
    for run_id in runs:
        await a.advance(run_id)
    assert sorted(await replicas.active(runs)) == sorted(runs)
    assert await a.coord.get_prefix(slot_key(project, 0).rpartition("/")[0]) == {}
