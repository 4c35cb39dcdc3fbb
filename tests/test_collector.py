"""The retention collector end to end on the embedded stores (SQLite events, file logs,
file blobs): a pass removes exactly the logs of the runs a project's rule no longer keeps
and the blobs nothing live names (theirs, evicted cache entries'), records
``RunDataCollected`` in those runs' streams, and leaves the rest alone: a blob shared with
a live cache entry or a newer run, failed runs kept longer, a project without a rule, an
upload no event names yet. A dry run changes nothing; a second pass finds nothing. The
api app runs passes in the background, as the ``gc`` leader, and shows the storage on
``/metrics``."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from cyclone.apps import build_apps
from cyclone.ports import open_ports
from shared import events as ev
from shared.adapters.artifacts.files import FileArtifactStore
from shared.adapters.eventstore.sqlite import SqliteEventStore
from shared.adapters.logstore.files import FileLogStore
from shared.adapters.runviews.memory import MemoryRunViews
from shared.caches import MIB, CacheIndex
from shared.collector import Collector
from shared.config import Settings
from shared.events import NewEvent, run_stream
from shared.ports.artifacts import ArtifactStore, Blob
from shared.ports.eventstore import EventStore
from shared.ports.logstore import LogLine, LogStore
from shared.projections.projects import project_stream
from shared.projections.replay import replay_runs
from shared.runstream import load_run
from tests.support import eventually

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)


def ago(days: float) -> str:
    return (NOW - timedelta(days=days)).isoformat()


async def chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


def digest_of(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


@dataclass
class World:
    store: EventStore
    logs: LogStore
    blobs: ArtifactStore
    limits: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.caches = CacheIndex(self.store, lambda project: self.limits.get(project, MIB))

    async def project(self, name: str, **settings: Any) -> None:
        await self.store.append(project_stream(name), [NewEvent(ev.ProjectRegistered(
            name=name, repo="git://x", **settings))], 0)

    async def put(self, text: str) -> Blob:
        return await self.blobs.put(chunks(text.encode()))

    async def run(self, run_id: str, project: str, ended_days_ago: float,
                  end: ev.Event | None = None, artifacts: tuple[str, ...] = (),
                  report: str = "") -> None:
        """A run that logged two lines and uploaded ``artifacts`` (each its own bytes)."""
        started = ended_days_ago + 0.01
        events = [NewEvent(ev.RunRequested(project=project, trigger="push", branch="main",
                                           commit="abc", pipeline_file=".cyclone.yml",
                                           pipeline="", source="git://x"), ts=ago(started))]
        for name in artifacts:
            blob = await self.put(name)
            events.append(NewEvent(ev.ArtifactUploaded(job="build", name=name,
                                                       digest=blob.digest, size=blob.size,
                                                       files=1), ts=ago(started)))
        if report:
            blob = await self.put(report)
            events.append(NewEvent(ev.TestReportRecorded(
                job="test", tests=1, passed=1, failed=0, errors=0, skipped=0, duration_s=0.1,
                results_digest=blob.digest), ts=ago(started)))
        events.append(NewEvent(end or ev.RunSucceeded(), ts=ago(ended_days_ago)))
        await self.store.append(run_stream(run_id), events, 0)
        await self.logs.append(run_id, [LogLine("build", "make", "stdout", ago(started), t)
                                        for t in ("one", "two")], batch_id=f"{run_id}-1")

    async def collector(self) -> Collector:
        views = MemoryRunViews((await replay_runs(self.store)).runs)
        return Collector(self.store, lambda: views, self.logs, self.blobs, self.caches,
                         clock=lambda: NOW)

    async def stored(self) -> set[str]:
        return {blob.digest async for blob in self.blobs.blobs()}


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    store = await SqliteEventStore.open(tmp_path / "events.db")
    logs, blobs = FileLogStore(tmp_path / "logs"), FileArtifactStore(tmp_path / "artifacts")
    try:
        yield World(store, logs, blobs)
    finally:
        await blobs.close()
        await logs.close()
        await store.close()


async def populate(w: World) -> None:
    await w.project("app", retention={"days": 30})
    await w.project("forever")
    await w.run("old1", "app", 40, artifacts=("old-only", "shared-with-cache"),
                report="old-report")
    await w.run("old2", "app", 35, artifacts=("shared-with-new",))
    await w.run("failed", "app", 40, end=ev.RunFailed(reason="tests"), artifacts=("failed",))
    await w.run("new", "app", 1, artifacts=("shared-with-new", "new-only"))
    await w.run("ancient", "forever", 400, artifacts=("ancient",))
    w.limits["app"] = 20  # bytes: room for one of the two entries below
    await w.caches.save("app", "deps-old", await w.put("evicted-1"), run="old1", job="build")
    await w.caches.save("app", "deps", await w.put("shared-with-cache"), run="new", job="build")
    await w.put("uploaded, its event not written yet")


async def test_a_pass_removes_exactly_what_retention_no_longer_keeps(world: World) -> None:
    await populate(world)
    before = await world.stored()
    progress: list[dict[str, Any]] = []

    async def report(item: dict[str, Any]) -> None:
        progress.append(item)

    summary = await (await world.collector()).collect(progress=report)

    gone = {digest_of(t.encode()) for t in ("old-only", "old-report", "evicted-1")}
    assert await world.stored() == before - gone
    for run_id, lines in (("old1", 0), ("old2", 0), ("failed", 2), ("new", 2), ("ancient", 2)):
        assert await world.logs.count(run_id) == lines, run_id
    old1, old2 = await load_run(world.store, "old1"), await load_run(world.store, "old2")
    assert old1 is not None and old2 is not None
    assert old1.collected == ("artifacts", "logs") and old2.collected == ("artifacts", "logs")
    assert len(old1.artifacts) == 2  # its history is kept: what it uploaded, as it was
    last = (await world.store.read(run_stream("old1")))[-1]
    assert last.type == "RunDataCollected"
    assert last.data == {"what": ["logs", "artifacts"], "reason": "retention: older than 30 days",
                         "freed_bytes": len("old-only") + len("old-report")}
    assert (await world.store.read(run_stream("old2")))[-1].data["freed_bytes"] == 0
    for run_id in ("failed", "new", "ancient"):
        view = await load_run(world.store, run_id)
        assert view is not None and view.collected == (), run_id
    freed = len("old-only") + len("old-report") + len("evicted-1")
    assert (summary.runs, summary.blobs, summary.freed_bytes) == (2, 3, freed)
    assert [p["kind"] for p in progress] == ["plan", "run", "run", "blob", "done"]
    assert [p["run"] for p in progress if p["kind"] == "run"] == ["old1", "old2"]  # oldest 1st
    assert progress[3]["digest"] == digest_of(b"evicted-1")


async def test_a_dry_run_changes_nothing_and_a_second_pass_finds_nothing(world: World) -> None:
    await populate(world)
    before, events = await world.stored(), await world.store.last_position()
    dry = await (await world.collector()).collect(dry_run=True)
    assert (dry.dry_run, dry.runs, dry.blobs) == (True, 2, 3)
    assert await world.stored() == before
    assert await world.store.last_position() == events
    assert await world.logs.count("old1") == 2

    await (await world.collector()).collect()
    after_first = await world.store.last_position()
    again = await (await world.collector()).collect()
    assert (again.runs, again.blobs, again.freed_bytes) == (0, 0, 0)
    assert await world.store.last_position() == after_first


async def test_a_lowered_cache_limit_evicts_and_frees_in_the_same_pass(world: World) -> None:
    await world.project("app")
    for n in range(3):
        await world.caches.save("app", f"k{n}", await world.put(f"cache-{n}"), run="r",
                                job="j")
    world.limits["app"] = len("cache-2")
    progress: list[dict[str, Any]] = []

    async def report(item: dict[str, Any]) -> None:
        progress.append(item)

    summary = await (await world.collector()).collect(progress=report)
    assert summary.evicted == 2 and summary.blobs == 2
    assert await world.stored() == {digest_of(b"cache-2")}
    assert [(p["kind"], p.get("key")) for p in progress[:2]] == [("evicted", "k0"),
                                                                  ("evicted", "k1")]
    assert sorted(await world.caches.entries("app")) == ["k2"]


async def test_the_api_collects_in_the_background_and_shows_the_storage(tmp_path: Path) -> None:
    settings = Settings.from_env({"CYCLONE_HOME": str(tmp_path / "home"),
                                  "CYCLONE_EXECUTOR": "shell", "CYCLONE_GC_INTERVAL_S": "0.05"})
    async with open_ports(settings) as ports:
        w = World(ports.store, ports.logs, ports.artifacts)
        await w.project("app", retention={"runs": 1})
        await w.run("r1", "app", 3, artifacts=("first",))
        await w.run("r2", "app", 2, artifacts=("second",))
        app = build_apps(["api"], settings, ports)["api"]
        async with TestClient(TestServer(app)) as client:
            async def collected() -> bool:
                view = await load_run(ports.store, "r1")
                return view is not None and view.collected == ("artifacts", "logs")

            await eventually(collected, what="r1 collected by a background pass")
            assert await ports.logs.count("r1") == 0 and await ports.logs.count("r2") == 2
            assert await w.stored() == {digest_of(b"second")}
            async with client.get("/metrics") as answer:
                assert "cyclone_artifact_store_bytes" in await answer.text()
