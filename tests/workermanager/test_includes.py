"""A project's pipeline includes a file of another project's repository at a tag: the
run's plan has its jobs, as they were at the tag, and the run records what it included,
so that planning it again needs neither repository. ``cyclone run`` reads the same from
its directory and the projects registered in its home.

Real parts: two repositories behind a ``git daemon``, the SQLite event store, the worker's
source resolver (Git mirrors, the shell executor filling the workspace) and the event
manager planning the run.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cyclone.includes import resolve_here
from services.api.commands import record_request, request_run
from services.eventmanager.service import EventManager
from services.workermanager.host import Host
from services.workermanager.source_resolver import SourceResolver
from shared import events as ev
from shared.adapters.bus.memory import MemoryBus
from shared.adapters.coordination.memory import MemoryCoordinator
from shared.adapters.eventstore.sqlite import SqliteEventStore
from shared.adapters.executor.shell import ShellExecutor
from shared.config import Settings
from shared.events import NewEvent, decode, run_stream
from shared.pipeline import load
from shared.pipeline.include import included_files
from shared.pipeline.plan import Plan
from shared.projections.projects import fold_project, project_stream
from shared.runstream import RunStates
from tests.git_support import GitRepo, GitServer

COMMON_V1 = """\
jobs:
  common:
    image: busybox
    steps: [{run: echo common v1}]
"""
COMMON_V2 = """\
jobs:
  common:
    image: busybox
    steps: [{run: echo common v2}]
  extra:
    image: busybox
    steps: [{run: echo extra}]
"""
APP = """\
include:
  - ci/lint.yml
  - {project: shared, ref: v1.0, file: ci/common.yml}
jobs:
  build:
    image: busybox
    needs: [common]
    steps: [{run: make}]
"""
LINT = "jobs:\n  lint:\n    image: busybox\n    steps: [{run: ruff check}]\n"


@dataclass
class Cyclone:
    """The parts of a server that take a Git run from its request to its plan."""

    store: SqliteEventStore
    manager: EventManager
    resolver: SourceResolver

    async def register(self, name: str, repo: GitRepo) -> None:
        await self.store.append(project_stream(name), [NewEvent(ev.ProjectRegistered(
            name=name, repo=repo.url))], 0)

    async def run(self, project: str) -> list[ev.Event]:
        """A manual run of ``project``'s main branch, up to its plan (or its end)."""
        view = fold_project(await self.store.read(project_stream(project)))
        assert view is not None
        run_id = await record_request(self.store, view.run_requested(
            trigger="manual", branch="main", requested_by="test"))
        await self.manager.advance(run_id)  # its checkout is queued
        await self.resolver.resolve(run_id)
        await self.manager.advance(run_id)
        return await self.events(run_id)

    async def events(self, run_id: str) -> list[ev.Event]:
        return [e for r in await self.store.read(run_stream(run_id)) if (e := decode(r))]


@pytest.fixture
async def cyclone(tmp_path: Path) -> AsyncIterator[Cyclone]:
    store = await SqliteEventStore.open(tmp_path / "store.db")
    bus, coord = MemoryBus(), MemoryCoordinator()
    shell = ShellExecutor(tmp_path / "runs")
    host = Host(shell, tmp_path / "git-cache")
    manager = EventManager(store, bus, coord, max_parallel_jobs=4)
    resolver = SourceResolver(RunStates(store), bus, tmp_path / "git-cache", host)
    try:
        yield Cyclone(store, manager, resolver)
    finally:
        await host.destroy_all()
        await shell.close()
        await bus.close()
        await coord.close()
        await store.close()


def planned(events: list[ev.Event]) -> Plan:
    plans = [e.plan for e in events if isinstance(e, ev.RunPlanned)]
    assert plans, [e for e in events if isinstance(e, ev.RunErrored)]
    return plans[0]


def resolved(events: list[ev.Event]) -> ev.RunSourceResolved:
    return next(e for e in events if isinstance(e, ev.RunSourceResolved))


def errored(events: list[ev.Event]) -> str:
    return next(e.reason for e in events if isinstance(e, ev.RunErrored))


def commands(plan: Plan) -> dict[str, tuple[str, ...]]:
    return {job.name: job.steps[0].commands for job in plan.jobs}


async def test_another_projects_file_is_included_as_it_is_at_the_tag(
        cyclone: Cyclone, git_server: GitServer) -> None:
    shared = git_server.create("shared")
    tagged = shared.commit({"ci/common.yml": COMMON_V1})
    shared.tag("v1.0", tagged, message="release 1.0")  # annotated: peeled to its commit
    app = git_server.create("app")
    head = app.commit({".cyclone.yml": APP, "ci/lint.yml": LINT})
    await cyclone.register("shared", shared)
    await cyclone.register("app", app)

    first = await cyclone.run("app")
    plan = planned(first)
    assert commands(plan) == {"lint": ("ruff check",), "common": ("echo common v1",),
                              "build": ("make",)}
    assert plan.job("build").needs == ("common",)
    records = included_files(resolved(first).includes)
    assert [(r.display, r.commit, r.error) for r in records] == [
        ("ci/lint.yml", head, ""), ("shared@v1.0:ci/common.yml", tagged, "")]
    assert records[1].content == COMMON_V1 and len(records[1].sha256) == 64

    # The shared file changes after the tag: the app's runs still read it at the tag.
    shared.commit({"ci/common.yml": COMMON_V2})
    assert planned(await cyclone.run("app")) == plan

    # What a run recorded is enough to plan it again (a rerun, a replay): the shared
    # repository is not read, even when it is gone.
    shutil.rmtree(shared.path)
    again = load(resolved(first).pipeline, ".cyclone.yml",
                 includes=included_files(resolved(first).includes)).plan
    assert again == plan
    rerun = await request_run(cyclone.store, project="app", trigger="rerun", branch="main",
                              commit=head, pipeline_file=".cyclone.yml",
                              pipeline=resolved(first).pipeline, source=app.url,
                              source_kind="git", includes=resolved(first).includes)
    await cyclone.manager.advance(rerun)
    assert planned(await cyclone.events(rerun)) == plan
    # A new run has to fetch it, and says which include failed, where.
    reason = errored(await cyclone.run("app"))
    assert reason.startswith("invalid pipeline:\n.cyclone.yml:3: include[1]: cannot include "
                             "shared@v1.0:ci/common.yml: project 'shared': cannot list the "
                             "refs of git://"), reason


async def test_a_branch_is_refused_where_a_tag_or_commit_is_needed(
        cyclone: Cyclone, git_server: GitServer) -> None:
    shared = git_server.create("shared")
    full = shared.commit({"ci/common.yml": COMMON_V1})
    app = git_server.create("app")
    app.commit({".cyclone.yml": APP.replace("v1.0", "main").replace(
        "ci/lint.yml\n", f"{{project: shared, ref: {full}, file: ci/common.yml}}\n")})
    await cyclone.register("shared", shared)
    await cyclone.register("app", app)

    reason = errored(await cyclone.run("app"))
    assert reason == (
        "invalid pipeline:\n"
        ".cyclone.yml:3: include[1]: cannot include shared@main:ci/common.yml: project "
        "'shared': 'main' is a branch, which moves, not a tag: name a tag or a full 40-hex "
        "commit id")


async def test_a_cycle_across_projects_is_rejected_with_its_chain(
        cyclone: Cyclone, git_server: GitServer) -> None:
    shared = git_server.create("shared")
    shared.tag("v1", shared.commit({"ci/b.yml": "include: {project: app, ref: v1, file: "
                                                "ci/a.yml}\n"}))
    app = git_server.create("app")
    app.tag("v1", app.commit({
        ".cyclone.yml": "include: ci/a.yml\njobs:\n  build: {image: busybox, steps: "
                        "[{run: make}]}\n",
        "ci/a.yml": "include: {project: shared, ref: v1, file: ci/b.yml}\n"}))
    await cyclone.register("shared", shared)
    await cyclone.register("app", app)

    reason = errored(await cyclone.run("app"))
    assert reason == (
        "invalid pipeline:\n"
        "app@v1:ci/a.yml:1: include: include cycle: shared@v1:ci/b.yml -> app@v1:ci/a.yml "
        "-> shared@v1:ci/b.yml")


async def test_cyclone_run_reads_its_directory_and_the_projects_of_its_home(
        tmp_path: Path, git_server: GitServer) -> None:
    shared = git_server.create("shared")
    shared.tag("v1.0", shared.commit({"ci/common.yml": COMMON_V1}))
    settings = Settings.from_env({"CYCLONE_HOME": str(tmp_path / "home")})
    settings.home.mkdir()
    store = await SqliteEventStore.open(settings.store_path)
    try:
        await store.append(project_stream("shared"), [NewEvent(ev.ProjectRegistered(
            name="shared", repo=shared.url))], 0)
    finally:
        await store.close()
    source = tmp_path / "src"
    (source / "ci").mkdir(parents=True)
    (source / "ci" / "lint.yml").write_text(LINT)  # never committed: read as it is

    records = await resolve_here(APP, ".cyclone.yml", source, settings)
    assert [(r.display, r.commit, r.error) for r in records] == [
        ("ci/lint.yml", "", ""), ("shared@v1.0:ci/common.yml", shared.head(), "")]
    plan = load(APP, ".cyclone.yml", includes=records).plan
    assert [job.name for job in plan.jobs] == ["lint", "common", "build"]
