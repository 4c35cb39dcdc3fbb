"""The audit trail beyond the store contract: what the verifier reads from harder
evidence (events predating the chain, renumbered rows, re-hashed events, a stream gone
whole), the checkpoints, the provenance of pushed images, and both through the API and
``cyclone audit verify`` / ``cyclone provenance``."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from cyclone.apps import build_apps
from cyclone.ports import open_ports
from shared import events as ev
from shared.adapters.eventstore.sqlite import SqliteEventStore
from shared.audit import GENESIS, recorded_hash
from shared.audit_checkpoints import write_checkpoint
from shared.audit_verify import FindingKind, Head, latest_heads, verify_store, verify_stream
from shared.config import Settings
from shared.events import NewEvent, RecordedEvent, run_stream
from shared.pipeline.plan import BuildSpec, JobSpec, Plan, StepSpec
from shared.projections.provenance import PREDICATE_TYPE, of_image, provenance
from shared.status import JobStatus
from tests.api import support
from tests.support import HANG_S, eventually

ROOT = Path(__file__).resolve().parents[1]


def chain(stream: str, count: int, first: int = 1, prev: str = GENESIS) -> list[RecordedEvent]:
    """``count`` chained JobQueued events, as a store would record them."""
    made: list[RecordedEvent] = []
    for seq in range(first, first + count):
        event = RecordedEvent(id=f"{stream}-{seq}", stream=stream, seq=seq, type="JobQueued",
                              version=1, ts="2026-01-01T00:00:00+00:00", data={"job": f"j{seq}"},
                              meta={}, position=seq, prev_hash=prev)
        made.append(dataclasses.replace(event, hash=recorded_hash(event)))
        prev = made[-1].hash
    return made


def rehashed(event: RecordedEvent, **changes: Any) -> RecordedEvent:
    """``event`` changed and its hash recomputed: what a forger who knows the encoding does."""
    changed = dataclasses.replace(event, **changes)
    return dataclasses.replace(changed, hash=recorded_hash(changed))


def kinds(found: list[Any]) -> list[tuple[FindingKind, int, int]]:
    return [(f.kind, f.seq, f.last_seq or f.seq) for f in found]


# --- the verifier, on evidence the contract tests do not make -------------------------


def test_events_from_before_the_chain_are_unchained_not_tampered() -> None:
    legacy = [dataclasses.replace(e, hash="", prev_hash="") for e in chain("run-a", 2)]
    stream = legacy + chain("run-a", 2, first=3)

    found = verify_stream("run-a", stream)

    assert kinds(found) == [(FindingKind.UNCHAINED, 1, 2)]
    assert not found[0].tampering
    assert "before the audit chain" in str(found[0])


def test_a_removed_event_with_the_rest_renumbered_is_one_removal() -> None:
    stream = chain("run-a", 6)
    renumbered = [stream[0], stream[1], *(dataclasses.replace(e, seq=e.seq - 1)
                                          for e in stream[3:])]

    assert kinds(verify_stream("run-a", renumbered)) == [(FindingKind.REMOVED, 3, 3)]


def test_an_event_moved_far_away_is_reordered() -> None:
    stream = chain("run-a", 4)
    moved = [stream[0], stream[1], stream[3], dataclasses.replace(stream[2], seq=10**9)]

    found = verify_stream("run-a", moved)

    assert kinds(found) == [(FindingKind.REORDERED, 10**9, 10**9)]
    assert found[0].detail == "stored as seq 1000000000, chained as seq 3"


def test_an_edited_event_with_its_hash_recomputed_is_found_by_the_next_link() -> None:
    stream = chain("run-a", 4)
    stream[1] = rehashed(stream[1], data={"job": "forged"})

    found = verify_stream("run-a", stream)

    assert kinds(found) == [(FindingKind.EDITED, 2, 2)]
    assert "the next event does not link to it" in found[0].detail


def test_a_chain_rewritten_to_its_end_is_found_by_the_checkpoint_head() -> None:
    stream = chain("run-a", 3)
    head = Head(seq=3, hash=stream[2].hash, checkpoint=7)
    forged = [stream[0], rehashed(stream[1], data={"job": "forged"})]
    forged.append(rehashed(stream[2], prev_hash=forged[1].hash))

    assert verify_stream("run-a", forged) == []  # the chain alone cannot tell
    found = verify_stream("run-a", forged, head)
    assert kinds(found) == [(FindingKind.EDITED, 3, 3)]
    assert "checkpoint 7 recorded another hash" in found[0].detail


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteEventStore]:
    store = await SqliteEventStore.open(tmp_path / "events.db")
    yield store
    await store.close()


async def test_checkpoints_name_only_the_streams_changed_since_the_last(
        store: SqliteEventStore) -> None:
    assert await write_checkpoint(store) is None  # nothing to anchor
    a = await store.append("run-a", [NewEvent(ev.JobQueued(job="x"))] * 1, 0)
    await store.append("run-b", [NewEvent(ev.JobQueued(job="y"))], 0)

    first = await write_checkpoint(store)
    assert first is not None and set(first.heads) == {"run-a", "run-b"}
    assert first.heads["run-a"] == {"seq": 1, "hash": a[0].hash}
    assert await write_checkpoint(store) is None
    b = await store.append("run-b", [NewEvent(ev.JobQueued(job="z"))], 1)
    second = await write_checkpoint(store)
    assert second is not None and dict(second.heads) == {"run-b": {"seq": 2, "hash": b[0].hash}}
    heads = await latest_heads(store)
    assert (heads["run-a"].seq, heads["run-b"].seq, heads["run-b"].checkpoint) == (1, 2, 2)


async def test_a_stream_removed_whole_is_found_by_verifying_all(
        store: SqliteEventStore, tmp_path: Path) -> None:
    await store.append("run-gone", [NewEvent(ev.JobQueued(job=j)) for j in "abc"], 0)
    await store.append("run-kept", [NewEvent(ev.JobQueued(job="k"))], 0)
    await write_checkpoint(store)
    with sqlite3.connect(tmp_path / "events.db") as conn:
        conn.execute("DELETE FROM events WHERE stream = 'run-gone'")

    report = await verify_store(store)

    assert [(f.stream, *k) for f, k in zip(report.findings, kinds(report.findings),
                                            strict=True)] == [
        ("run-gone", FindingKind.REMOVED, 1, 3)]
    assert report.streams == 3  # the audit stream, run-kept, and run-gone from the checkpoint


async def test_the_api_anchors_new_events_in_checkpoints(tmp_path: Path) -> None:
    settings = Settings.from_env({"CYCLONE_HOME": str(tmp_path / "home"),
                                  "CYCLONE_EXECUTOR": "shell",
                                  "CYCLONE_AUDIT_CHECKPOINT_S": "0.05"})
    async with open_ports(settings) as ports:
        app = build_apps(["api"], settings, ports)["api"]
        async with TestClient(TestServer(app)):
            written = await ports.store.append("run-late", [NewEvent(ev.JobQueued(job="x"))], 0)

            async def anchored() -> Head | None:
                return (await latest_heads(ports.store)).get("run-late")

            head = await eventually(anchored, what="run-late in a checkpoint")
            assert (head.seq, head.hash) == (1, written[0].hash)


# --- provenance ------------------------------------------------------------------------

PIPELINE = "jobs:\n  image:\n    steps:\n      - name: build\n        build: {push: true}\n"
BUILD = StepSpec(name="build", image="", build=BuildSpec(dockerfile="docker/Dockerfile",
                                                         tags=("reg.example/app:1",), push=True))


async def built_run(store: SqliteEventStore, run_id: str) -> list[RecordedEvent]:
    include = {"project": "shared", "ref": "main", "file": "ci/common.yml", "commit": "c0ffee",
               "content": "x", "sha256": "ab" * 32, "error": ""}
    events = [
        ev.RunRequested(project="demo", trigger="push", branch="main", commit="main",
                        pipeline_file=".cyclone.yml", pipeline="old", source="https://g/demo.git",
                        params={"LEVEL": "3"}, source_kind="git"),
        ev.RunSourceResolved(commit="1234abcd", branch="main", pipeline_file=".cyclone.yml",
                             pipeline=PIPELINE, includes=(include,)),
        ev.RunPlanned(plan=Plan(".cyclone.yml", (JobSpec(name="image", image="",
                                                         steps=(BUILD,)),))),
        ev.JobStarted(job="image", worker="worker-7", executor="docker"),
        ev.ImagePushed(job="image", step="build", name="build", repository="reg.example/app",
                       tags=("reg.example/app:1",), digest="sha256:" + "d" * 64),
        ev.JobFinished(job="image", status=JobStatus.SUCCESS, duration_s=3.0),
        ev.RunSucceeded(),
    ]
    return await store.append(run_stream(run_id), [NewEvent(e) for e in events], 0)


async def test_provenance_of_a_pushed_image_says_how_it_was_built(
        store: SqliteEventStore) -> None:
    events = await built_run(store, "r1")

    [statement] = provenance("r1", events)

    assert statement["predicateType"] == PREDICATE_TYPE
    assert statement["subject"] == [{"name": "reg.example/app", "digest": {"sha256": "d" * 64},
                                     "annotations": {"tags": ["reg.example/app:1"],
                                                     "name": "build"}}]
    build = statement["predicate"]["buildDefinition"]
    params = build["externalParameters"]
    assert params["pipeline"]["file"] == ".cyclone.yml"
    assert params["pipeline"]["sha256"] == hashlib.sha256(PIPELINE.encode()).hexdigest()
    assert (params["commit"], params["branch"], params["params"]) == (
        "1234abcd", "main", {"LEVEL": "3"})
    assert params["build"]["dockerfile"] == "docker/Dockerfile"
    assert build["resolvedDependencies"] == [
        {"uri": "git+https://g/demo.git@1234abcd", "digest": {"gitCommit": "1234abcd"}},
        {"name": "ci/common.yml", "uri": "cyclone:shared/ci/common.yml@c0ffee",
         "digest": {"sha256": "ab" * 32}}]
    details = statement["predicate"]["runDetails"]
    assert details["builder"]["id"] == "urn:cyclone:worker:worker-7"
    assert details["metadata"] == {"invocationId": "r1", "startedOn": events[0].ts,
                                   "finishedOn": events[-1].ts}
    assert details["byproducts"] == [{"name": "audit-head", "digest": {"sha256": events[-1].hash},
                                      "annotations": {"stream": "run-r1", "seq": 7}}]
    assert of_image([statement], "reg.example/app") == [statement]
    with pytest.raises(LookupError, match="it pushed: build"):
        of_image([statement], "other")


# --- through the API and the CLI ----------------------------------------------------------


async def cyclone(*args: str, home: Path) -> tuple[int, str, str]:
    env = {**os.environ, "CYCLONE_HOME": str(home), "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cyclone.cli", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), HANG_S)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_cyclone_audit_verify_local_exit_codes_and_findings(tmp_path: Path) -> None:
    store = await SqliteEventStore.open(tmp_path / "events.db")  # $CYCLONE_HOME/events.db
    try:
        await built_run(store, "r1")
    finally:
        await store.close()

    code, out, err = await cyclone("audit", "verify", "r1", "--local", home=tmp_path)
    assert (code, out) == (0, "no tampering found in 1 streams, 7 events\n"), err
    code, out, err = await cyclone("audit", "verify", "--local", home=tmp_path)
    assert code == 2 and "give a RUN or --all" in err
    code, out, err = await cyclone("audit", "verify", "nope", "--local", home=tmp_path)
    assert code == 1 and "no run 'nope'" in err

    with sqlite3.connect(tmp_path / "events.db") as conn:
        conn.execute("UPDATE events SET data = replace(data, 'worker-7', 'worker-x')"
                     " WHERE type = 'JobStarted'")
    code, out, err = await cyclone("audit", "verify", "--all", "--local", home=tmp_path)
    assert code == 1, err
    assert out.splitlines() == [
        "run-r1 seq 4 JobStarted: EDITED (its content does not match its hash)",
        "TAMPERED: 1 findings in 1 streams, 7 events"]
    code, out, err = await cyclone("provenance", "r1", "--image", "build", "--local",
                                   home=tmp_path)
    assert code == 0, err
    assert json.loads(out)["subject"][0]["digest"] == {"sha256": "d" * 64}


async def test_the_api_verifies_a_run_and_serves_its_provenance(tmp_path: Path) -> None:
    async with support.serving(tmp_path, support.Api) as api:
        await built_run(api.store, "r1")
        body, _ = await api.call("GET", "/api/v1/runs/r1/provenance", 200)
        assert [s["subject"][0]["name"] for s in body["statements"]] == ["reg.example/app"]
        body, _ = await api.call("GET", "/api/v1/runs/r1/provenance?image=other", 404)
        assert "no image 'other' was pushed by the run (it pushed: build)" in body["detail"]
        await api.call("GET", "/api/v1/runs/nope/provenance", 404)
        assert await verified(api, run="r1") == [
            {"kind": "done", "streams": 1, "events": 7, "findings": 0, "tampered": False}]

        with sqlite3.connect(tmp_path / "events.db") as conn:
            conn.execute("DELETE FROM events WHERE stream = 'run-r1' AND seq = 5")

        lines = await verified(api, all="1")
        assert [line["finding"] for line in lines if line["kind"] == "finding"] == [
            {"kind": "removed", "stream": "run-r1", "seq": 5, "last_seq": 5, "type": "",
             "detail": "missing from the chain"}]
        assert lines[-1]["tampered"] is True
        body, _ = await api.call("GET", "/api/v1/audit/verify", 400)
        assert "run=ID" in body["detail"]
        await api.call("GET", "/api/v1/audit/verify?run=nope", 404)
        server = str(api.client.make_url("")).rstrip("/")
        token = api.headers["Authorization"].removeprefix("Bearer ")
        code, out, err = await cyclone("audit", "verify", "r1", "--server", server,
                                       "--token", token, home=tmp_path / "client")
        assert code == 1, err
        assert out.splitlines() == ["run-r1 seq 5: REMOVED (missing from the chain)",
                                    "TAMPERED: 1 findings in 1 streams, 6 events"]


async def verified(api: support.Api, **query: str) -> list[dict[str, Any]]:
    async with api.client.get("/api/v1/audit/verify", params=query,
                              headers=api.headers) as response:
        assert response.status == 200
        return [json.loads(line) for line in (await response.text()).splitlines()]
