"""Retention through the API: a project's ``retention`` and ``cache_limit_mb`` (shown,
changed, bad values refused with a 400 naming the field, the limit an admin's), ``POST
/api/v1/gc`` streaming a pass's progress (and ``cyclone gc`` printing it), and the storage
figures on ``/metrics``."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from services.api.app import build_app
from services.api.context import ApiContext
from services.api.readmodel import RunsReadModel
from shared import events as ev
from shared.adapters.artifacts.files import FileArtifactStore
from shared.adapters.eventstore.sqlite import SqliteEventStore
from shared.adapters.logstore.files import FileLogStore
from shared.caches import MIB, CacheIndex
from shared.collector import Collector, StorageUse
from shared.events import NewEvent, run_stream
from shared.ports.logstore import LogLine
from tests.api import support

REPO = "https://example.com/demo.git"
OLD = "2000-01-01T00:00:00+00:00"  # a run that ended long ago


class Storage(support.Api):
    logs: FileLogStore
    blobs: FileArtifactStore
    ctx: ApiContext

    async def old_run(self, run_id: str, project: str, artifact: bytes) -> str:
        async def chunks() -> AsyncIterator[bytes]:
            yield artifact

        blob = await self.blobs.put(chunks())
        await self.store.append(run_stream(run_id), [NewEvent(e, ts=OLD) for e in (
            ev.RunRequested(project=project, trigger="push", branch="main", commit="abc",
                            pipeline_file=".cyclone.yml", pipeline="", source=REPO),
            ev.ArtifactUploaded(job="build", name="dist", digest=blob.digest, size=blob.size,
                                files=1),
            ev.RunSucceeded())], 0)
        await self.logs.append(run_id, [LogLine("build", "make", "stdout", OLD, "hello")],
                               batch_id="b1")
        return blob.digest


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Storage]:
    store = await SqliteEventStore.open(tmp_path / "events.db")
    logs, blobs = FileLogStore(tmp_path / "logs"), FileArtifactStore(tmp_path / "artifacts")
    ctx = ApiContext(store=store, readmodel=RunsReadModel(store=store))
    caches = CacheIndex(store, lambda project: 64 * MIB)
    ctx.gc = Collector(store, lambda: ctx.readmodel.views, logs, blobs, caches)
    ctx.storage = StorageUse(store, blobs, caches, ctx.gc)
    _, admin = await ctx.tokens.create("admin", admin=True)
    client: TestClient[Any, Any] = TestClient(TestServer(build_app(ctx)))
    await client.start_server()
    api = Storage(client, store, admin)
    api.logs, api.blobs, api.ctx = logs, blobs, ctx
    try:
        yield api
    finally:
        await client.close()
        await blobs.close()
        await logs.close()
        await store.close()


async def maintainer(api: Storage) -> Storage:
    """The same server with a token of no user: a maintainer of every project, no admin."""
    answer, _ = await api.call("POST", "/api/v1/tokens", 201, {"name": "dev"})
    other = Storage(api.client, api.store, answer["token"])
    return other


async def test_a_project_keeps_everything_until_its_retention_is_set(api: Storage) -> None:
    created, _ = await api.call("POST", "/api/v1/projects", 201, {"name": "demo", "repo": REPO})
    assert (created["retention"], created["cache_limit_mb"]) == ({}, 0)
    dev = await maintainer(api)
    shown, _ = await dev.call("PATCH", "/api/v1/projects/demo", 200,
                              {"retention": {"days": 30, "runs": 10}})
    assert shown["retention"] == {"days": 30, "runs": 10}
    shown, _ = await dev.call("PATCH", "/api/v1/projects/demo", 200,
                              {"retention": {"days": 7, "failed_days": 0}})
    assert shown["retention"] == {"days": 7, "failed_days": 0}  # the whole block replaced
    shown, _ = await dev.call("PATCH", "/api/v1/projects/demo", 200, {"retention": {}})
    assert shown["retention"] == {}
    created, _ = await api.call("POST", "/api/v1/projects", 201, {
        "name": "other", "repo": REPO, "retention": {"runs": 5}, "cache_limit_mb": 256})
    assert (created["retention"], created["cache_limit_mb"]) == ({"runs": 5}, 256)


@pytest.mark.parametrize(("body", "problem"), [
    ({"retention": {"days": -1}}, "retention.days"),
    ({"retention": {"days": "30"}}, "retention.days"),
    ({"retention": {"weeks": 2}}, "retention.weeks: unknown field"),
    ({"retention": {"runs": 1.5}}, "retention.runs"),
    ({"retention": [30]}, "retention"),
    ({"cache_limit_mb": -5}, "cache_limit_mb"),
    ({"cache_limit_mb": True}, "cache_limit_mb"),
])
async def test_bad_storage_settings_are_refused_naming_the_field(
        api: Storage, body: dict[str, Any], problem: str) -> None:
    await api.call("POST", "/api/v1/projects", 201, {"name": "demo", "repo": REPO})
    answer, _ = await api.call("PATCH", "/api/v1/projects/demo", 400, body)
    assert problem in answer["detail"]
    await api.call("POST", "/api/v1/projects", 400, {"name": "new", "repo": REPO, **body})


async def test_only_an_admin_sets_a_project_s_cache_limit(api: Storage) -> None:
    await api.call("POST", "/api/v1/projects", 201, {"name": "demo", "repo": REPO})
    dev = await maintainer(api)
    answer, _ = await dev.call("PATCH", "/api/v1/projects/demo", 403, {"cache_limit_mb": 4096})
    assert "cache_limit_mb" in answer["detail"]
    shown, _ = await api.call("PATCH", "/api/v1/projects/demo", 200, {"cache_limit_mb": 4096})
    assert shown["cache_limit_mb"] == 4096


async def gc(api: Storage, body: Any = None) -> list[dict[str, Any]]:
    async with api.client.post("/api/v1/gc", json=body, headers=api.headers) as answer:
        assert answer.status == 200, await answer.text()
        assert answer.headers["Content-Type"] == "application/x-ndjson"
        return [json.loads(line) for line in (await answer.text()).splitlines()]


async def test_gc_streams_what_it_removes_and_dry_run_removes_nothing(api: Storage) -> None:
    await api.call("POST", "/api/v1/projects", 201,
                   {"name": "demo", "repo": REPO, "retention": {"days": 30}})
    digest = await api.old_run("r1", "demo", b"old bytes")
    api.ctx.readmodel = await RunsReadModel.rebuild(api.store)

    dry = await gc(api, {"dry_run": True})
    assert [p["kind"] for p in dry] == ["plan", "run", "done"]
    assert dry[-1]["dry_run"] is True and await api.blobs.stat(digest) is not None
    assert await api.logs.count("r1") == 1

    done = await gc(api)  # no body: a real pass
    assert [p["kind"] for p in done] == ["plan", "run", "done"]
    assert done[1] == {"kind": "run", "run": "r1", "project": "demo",
                       "what": ["logs", "artifacts"], "reason": "retention: older than 30 days",
                       "freed_bytes": len(b"old bytes")}
    assert done[-1]["runs"] == 1 and done[-1]["blobs"] == 1
    assert await api.blobs.stat(digest) is None and await api.logs.count("r1") == 0
    shown, _ = await api.call("GET", "/api/v1/projects/demo", 200)
    assert shown["retention"] == {"days": 30}


async def test_cyclone_gc_prints_each_removal_and_the_totals(api: Storage) -> None:
    await api.call("POST", "/api/v1/projects", 201, {"name": "demo", "repo": REPO})
    await api.old_run("r1", "demo", b"old bytes")
    api.ctx.readmodel = await RunsReadModel.rebuild(api.store)
    server = str(api.client.make_url("")).rstrip("/")
    token = api.headers["Authorization"].removeprefix("Bearer ")

    async def cyclone(*args: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cyclone.cli", *args, "--server", server, "--token", token,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    code, out, err = await cyclone("project", "update", "demo", "--retention-days", "30",
                                   "--retention-runs", "0")
    assert code == 0, err
    shown = {line.split("  ")[0]: line.split("  ")[-1].strip() for line in out.splitlines()}
    assert shown["retention"] == "30 days or failed runs 60 days"
    code, out, err = await cyclone("gc", "--dry-run")
    assert code == 0, err
    assert "run r1 (demo): logs, artifacts would be removed, retention: older than 30 days" in out
    assert "(dry run: nothing was removed)" in out
    code, out, err = await cyclone("gc")
    assert code == 0, err
    assert out.splitlines()[0] == "1 runs and 1 blobs (9 B) to collect"
    assert "1 runs collected, 1 blobs deleted, 9 B freed, 0 cache entries evicted" in out


async def test_metrics_show_the_artifact_store_and_each_project_s_caches(api: Storage) -> None:
    await api.old_run("r1", "demo", b"x" * 1000)
    caches = CacheIndex(api.store, lambda project: 64 * MIB)

    async def chunks() -> AsyncIterator[bytes]:
        yield b"y" * 500

    await caches.save("demo", "deps", await api.blobs.put(chunks()), run="r1", job="build")
    assert api.ctx.storage is not None
    await api.ctx.storage.refresh()
    async with api.client.get("/metrics") as answer:
        text = await answer.text()
    assert "cyclone_artifact_store_bytes 1500.0" in text
    assert 'cyclone_cache_bytes{project="demo"} 500.0' in text
    assert 'cyclone_cache_entries{project="demo"} 1.0' in text
    assert "cyclone_gc_freed_bytes_total 0.0" in text
