"""A project's status badge over real HTTP: runs recorded as events in a SQLite store and
applied to the read model; the SVG read back as XML."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from services.api.app import build_app
from services.api.badge import LOOKS, NO_RUN, badge_svg, text_width
from services.api.commands import request_run
from services.api.context import ApiContext
from services.api.readmodel import RunsReadModel
from shared import events as ev
from shared.adapters.eventstore.sqlite import SqliteEventStore
from shared.events import NewEvent, run_stream
from shared.pipeline.plan import JobSpec, Plan, StepSpec
from shared.status import RunStatus

SVG = "{http://www.w3.org/2000/svg}"
PLAN = Plan(source_file=".cyclone.yml",
            jobs=(JobSpec(name="build", image="img", steps=(StepSpec(name="s", image="img"),)),))
ENDINGS: dict[RunStatus, list[ev.Event]] = {
    RunStatus.REQUESTED: [],
    RunStatus.RUNNING: [ev.RunPlanned(plan=PLAN)],
    RunStatus.SUCCESS: [ev.RunPlanned(plan=PLAN), ev.RunSucceeded()],
    RunStatus.FAILURE: [ev.RunPlanned(plan=PLAN), ev.RunFailed(reason="job failed: build")],
    RunStatus.ERRORED: [ev.RunErrored(reason="invalid pipeline")],
    RunStatus.CANCELLED: [ev.RunCancelled(reason="cancelled")],
    RunStatus.SKIPPED: [ev.RunSkipped(reason="on: push only")],
}


@dataclass
class World:
    client: TestClient[Any, Any]
    store: SqliteEventStore
    readmodel: RunsReadModel
    admin: str

    async def run(self, status: RunStatus, branch: str = "main", project: str = "demo") -> str:
        """A run of ``project`` on ``branch`` that has come to ``status``."""
        run_id = await request_run(self.store, project=project, trigger="push", branch=branch,
                                   commit="c0ffee", pipeline_file=".cyclone.yml", pipeline="",
                                   source="git://x")
        await self.store.append(run_stream(run_id), [NewEvent(e) for e in ENDINGS[status]], 1)
        for recorded in await self.store.read(run_stream(run_id)):
            await self.readmodel.apply(recorded)
        return run_id

    async def badge(self, query: str = "", project: str = "demo",
                    anonymous: bool = False) -> tuple[int, dict[str, str], str]:
        headers = {} if anonymous else {"Authorization": f"Bearer {self.admin}"}
        async with self.client.get(f"/api/v1/projects/{project}/badge.svg{query}",
                                   headers=headers) as resp:
            return resp.status, dict(resp.headers), await resp.text()


@pytest.fixture
async def world(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[World]:
    store = await SqliteEventStore.open(tmp_path / "events.db")
    readmodel = RunsReadModel()
    ctx = ApiContext(store=store, readmodel=readmodel,
                     public_read=getattr(request, "param", False))
    client: TestClient[Any, Any] = TestClient(TestServer(build_app(ctx)))
    await client.start_server()
    _, admin = await ctx.tokens.create("admin", admin=True)
    async with client.post("/api/v1/projects", json={"name": "demo", "repo": "git://x"},
                           headers={"Authorization": f"Bearer {admin}"}) as resp:
        assert resp.status == 201, await resp.text()
    try:
        yield World(client, store, readmodel, admin)
    finally:
        await client.close()
        await store.close()


def said(svg: str) -> tuple[str, list[str]]:
    """The badge's title and its texts, from the SVG parsed as XML."""
    root = ElementTree.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    title = root.find(f"{SVG}title")
    assert title is not None and title.text is not None
    return title.text, [t.text or "" for t in root.iter(f"{SVG}text")]


async def test_the_badge_shows_the_latest_run_of_the_default_branch(world: World) -> None:
    status, headers, body = await world.badge()
    assert status == 200 and said(body)[0] == "cyclone: no runs"
    await world.run(RunStatus.FAILURE)
    await world.run(RunStatus.SUCCESS)
    await world.run(RunStatus.FAILURE, branch="feature")
    status, headers, body = await world.badge()
    assert status == 200
    assert headers["Content-Type"] == "image/svg+xml; charset=utf-8"
    assert headers["Cache-Control"] == "no-cache"
    assert said(body) == ("cyclone: passing", ["cyclone", "cyclone", "passing", "passing"])
    assert 'fill="#4c1"' in body
    assert said((await world.badge("?branch=feature"))[2])[0] == "cyclone: failing"
    assert said((await world.badge("?branch=nowhere"))[2])[0] == "cyclone: no runs"


@pytest.mark.parametrize("status", list(RunStatus))
async def test_every_status_has_its_words_and_colour(world: World, status: RunStatus) -> None:
    await world.run(status)
    _, _, body = await world.badge()
    words, colour = LOOKS[status]
    assert said(body)[0] == f"cyclone: {words}"
    assert f'fill="{colour}"' in body


async def test_an_unknown_project_is_a_json_404(world: World) -> None:
    status, headers, body = await world.badge(project="nope")
    assert status == 404 and headers["Content-Type"].startswith("application/json")
    assert "no project 'nope'" in body


@pytest.mark.parametrize("branch", ["%0A", "x" * 256])
async def test_a_bad_branch_is_a_400(world: World, branch: str) -> None:
    status, _, body = await world.badge(f"?branch={branch}")
    assert status == 400 and "branch:" in body


async def test_anonymous_readers_need_public_reads(world: World) -> None:
    status, _, body = await world.badge(anonymous=True)
    assert status == 401, body


@pytest.mark.parametrize("world", [True], indirect=True)
async def test_with_public_reads_anyone_sees_the_badge(world: World) -> None:
    await world.run(RunStatus.RUNNING)
    status, _, body = await world.badge(anonymous=True)
    assert status == 200 and said(body)[0] == "cyclone: running"


def test_each_half_is_as_wide_as_its_text_and_the_badge_adds_them_up() -> None:
    # as shields.io measures them for its "build | passing" (textLength 27 and 41)
    assert text_width("build") == pytest.approx(27, abs=1)
    assert text_width("passing") == pytest.approx(41, abs=1)
    assert text_width("mmm") > text_width("iii") * 3
    for message, colour in [*LOOKS.values(), NO_RUN, ("<&\"ünï>", "#000")]:
        root = ElementTree.fromstring(badge_svg("cyclone", message, colour))
        halves = root.find(f"{SVG}g")  # the clipped group: grey, colour, gloss
        assert halves is not None
        left, right = (float(r.get("width", 0)) for r in halves.findall(f"{SVG}rect")[:2])
        assert float(root.get("width", 0)) == left + right
        texts = list(root.iter(f"{SVG}text"))
        assert texts[-1].text == message
        for text, box in ((texts[0], left), (texts[-1], right)):
            assert float(text.get("textLength", 0)) + 10 == pytest.approx(box, abs=0.5)
