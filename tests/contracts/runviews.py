"""The RunViews contract (``shared/ports/runviews.py``), run against every adapter.

Subclass ``RunViewsContract`` as ``Test<Adapter>`` and provide the fixture ``views``:
an open, empty store (closed by the fixture afterwards; ``close`` is idempotent).

The views are real: events folded by ``shared.projections.runs.fold`` after a JSON
round trip of their data, exactly as the API's read model builds them.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator

import pytest

from shared import events as ev
from shared.errors import StoreError
from shared.events import NewEvent, RecordedEvent, run_stream
from shared.pipeline.plan import (
    ApprovalSpec,
    DeploySpec,
    DockerTarget,
    JobSpec,
    Plan,
    RegistryLogin,
    StepSpec,
)
from shared.ports.runviews import DurationHistogram, RunViews
from shared.projections.runs import RunView, fold
from shared.status import JobStatus, Role, StepStatus

__all__ = ["RunViewsContract", "events_of", "run_ids", "view_of"]

PLAN = Plan(source_file=".cyclone.yml", jobs=(
    JobSpec(name="build", image="alpine", env={"GO.FLAGS": "-v", "$HOME": "/root"},
            steps=(StepSpec(name="compile", image="alpine", commands=("make",)),
                   StepSpec(name="test", image="alpine", commands=("make test",)))),
    JobSpec(name="deploy", image="alpine", needs=("build",), environment="production",
            approval=ApprovalSpec(role="maintainer", timeout_s=3600.0),
            steps=(StepSpec(name="push", image="", deploy=DeploySpec(docker=DockerTarget(
                container="web", image="${{ images.web }}", ports=("127.0.0.1:80:80",)))),)),
), registries=(RegistryLogin("reg:5000", "ci", "REG_PW"),))
DIGEST = "sha256:" + "0f" * 32
ENDS: dict[str, list[ev.Event]] = {
    "requested": [],
    "running": [],
    "success": [ev.JobAwaitingApproval(job="deploy", role=Role.MAINTAINER,
                                       environment="production",
                                       deadline="2026-12-04T11:00:00.000000+00:00"),
                ev.JobApproved(job="deploy", by="alice", comment="go"),
                ev.JobQueued(job="deploy"),
                ev.JobStarted(job="deploy", worker="w2", executor="docker"),
                ev.StepStarted(job="deploy", step="push"),
                ev.DeploymentStarted(job="deploy", step="push", environment="production",
                                     target="docker:worker/web", image=f"reg:5000/web@{DIGEST}",
                                     approved_by="alice"),
                ev.DeploymentSucceeded(job="deploy", step="push", environment="production",
                                       target="docker:worker/web",
                                       image=f"reg:5000/web@{DIGEST}", previous="reg:5000/web:1"),
                ev.StepFinished(job="deploy", step="push", status=StepStatus.SUCCESS, exit_code=0,
                                duration_s=12.5),
                ev.JobFinished(job="deploy", status=JobStatus.SUCCESS, duration_s=13.0),
                ev.RunSucceeded()],
    "failure": [ev.JobSkipped(job="deploy", reason="build failed"), ev.RunFailed("build")],
    "cancelled": [ev.RunCancelRequested(reason="stop", requested_by="token:ci"),
                  ev.RunCancelled("stop")],
}


def run_ids(count: int, start: int = 0x18F0000000) -> list[str]:
    """``count`` run ids in creation order (the shape of ``shared.runstream.new_run_id``)."""
    return [f"{start + n:012x}{n:08x}" for n in range(count)]


def events_of(run_id: str, project: str = "web", branch: str = "main",
              status: str = "success", trigger: str = "push") -> list[RecordedEvent]:
    """A run's whole stream, ending in ``status`` (requested, running or an end)."""
    requested = ev.RunRequested(
        project=project, trigger=trigger, branch=branch, commit="c0ffee" * 6 + "abcd",
        pipeline_file=".cyclone.yml", pipeline="jobs: ...", source="https://git.example/w",
        params={"Z_LAST": "1", "A.DOT": "é ✓ 🚀", "$DOLLAR": "x"}, source_kind="git",
        forge_event={"kind": "push", "branch": branch, "commits": [{"id": "c1"}],
                     "pr_number": None})
    body: list[ev.Event] = [] if status == "requested" else [
        ev.RunPlanned(plan=PLAN), ev.JobQueued(job="build"),
        ev.JobStarted(job="build", worker="w1", executor="docker"),
        ev.StepStarted(job="build", step="compile"),
        ev.StepFinished(job="build", step="compile", status=StepStatus.SUCCESS, exit_code=0,
                        duration_s=0.25),
        ev.ImagePushed(job="build", step="compile", name="web", repository="reg:5000/web",
                       tags=("reg:5000/web:1", "reg:5000/web:latest"), digest=DIGEST),
        ev.StepStarted(job="build", step="test"),
    ]
    if status in ("success", "cancelled"):
        body += [ev.StepFinished(job="build", step="test", status=StepStatus.SUCCESS, exit_code=0,
                                 duration_s=3.0),
                 ev.JobFinished(job="build", status=JobStatus.SUCCESS, duration_s=3.5, log_lines=7)]
    elif status == "failure":
        body += [ev.StepFinished(job="build", step="test", status=StepStatus.FAILURE, exit_code=2,
                                 duration_s=1.0, reason="exit 2"),
                 ev.JobFinished(job="build", status=JobStatus.FAILURE, duration_s=1.5)]
    stream = [requested, *body, *ENDS[status]]
    return [_recorded(run_id, seq, event) for seq, event in enumerate(stream, start=1)]


def _recorded(run_id: str, seq: int, event: ev.Event) -> RecordedEvent:
    new = NewEvent(event, ts=f"2024-05-01T12:{seq // 60:02d}:{seq % 60:02d}.250000+00:00")
    return RecordedEvent(id=new.id, stream=run_stream(run_id), seq=seq, type=new.type,
                         version=new.version, ts=new.ts, data=json.loads(new.data_json()),
                         meta={}, position=seq)


def view_of(run_id: str, project: str = "web", branch: str = "main",
            status: str = "success", upto: int | None = None,
            trigger: str = "push") -> RunView:
    """The view after the first ``upto`` events (all by default) of ``events_of(...)``."""
    view = fold(events_of(run_id, project, branch, status, trigger)[:upto])
    assert view is not None
    return view


class RunViewsContract:
    @pytest.fixture
    async def views(self) -> AsyncIterator[RunViews]:
        raise NotImplementedError("subclass provides the views fixture")
        yield  # pragma: no cover

    # --- get and put ---------------------------------------------------------------------

    async def test_a_stored_view_comes_back_equal(self, views: RunViews) -> None:
        [done, running, bare] = run_ids(3)
        stored = [view_of(done), view_of(running, status="running"),
                  view_of(bare, status="requested")]
        assert stored[0].plan is not None and stored[0].jobs[1].steps[0].duration_s == 12.5
        for view in stored:
            assert await views.put(view) is True

        assert [await views.get(v.id) for v in stored] == stored
        assert (await views.get(done)).params == stored[0].params  # type: ignore[union-attr]

    async def test_an_unknown_run_is_none(self, views: RunViews) -> None:
        await views.put(view_of(run_ids(1)[0]))
        assert await views.get("0000deadbeef00000000") is None

    async def test_put_never_moves_a_view_back(self, views: RunViews) -> None:
        run = run_ids(1)[0]
        first, middle, last = (view_of(run, upto=n) for n in (3, 6, 9))

        assert await views.put(middle) is True
        assert await views.put(first) is False  # an older view: a reordered delivery
        assert await views.put(middle) is False  # the same view again: a redelivery
        assert await views.get(run) == middle
        assert await views.put(last) is True
        assert await views.get(run) == last

    async def test_concurrent_puts_keep_the_newest_view(self, views: RunViews) -> None:
        runs = run_ids(4)
        stream = events_of(runs[0])
        every = [view_of(run, upto=n) for run in runs for n in range(1, len(stream) + 1)]
        random.Random(7).shuffle(every)

        await asyncio.gather(*(views.put(view) for view in every))

        assert [await views.get(run) for run in runs] == [view_of(run) for run in runs]

    # --- queries -------------------------------------------------------------------------

    async def test_pages_are_newest_first_and_filtered(self, views: RunViews) -> None:
        ids = run_ids(6)
        layout = [("web", "main", "success"), ("api", "main", "failure"),
                  ("web", "dev", "running"), ("web", "main", "failure"),
                  ("api", "dev", "success"), ("web", "main", "requested")]
        for run, (project, branch, status) in zip(ids, layout, strict=True):
            await views.put(view_of(run, project, branch, status))

        async def page(**query: object) -> list[str]:
            return [v.id for v in await views.page(**query)]  # type: ignore[arg-type]

        assert await page() == ids[::-1]
        assert await page(project="web") == [ids[5], ids[3], ids[2], ids[0]]
        assert await page(status="failure") == [ids[3], ids[1]]
        assert await page(branch="dev") == [ids[4], ids[2]]
        assert await page(project="web", branch="main", status="failure") == [ids[3]]
        assert await page(project="nobody") == []
        assert [v.project for v in await views.page(project="api")] == ["api", "api"]
        # narrowed to the projects a reader may see
        assert await page(within={"api"}) == [ids[4], ids[1]]
        assert await page(within=set()) == []
        assert await page(project="web", within={"api"}) == []
        assert await page(project="api", within={"api", "web"}) == [ids[4], ids[1]]

    async def test_pages_filtered_by_what_started_the_runs(self, views: RunViews) -> None:
        ids = run_ids(4)
        for run, trigger in zip(ids, ("push", "schedule", "pull_request", "schedule"),
                                strict=True):
            await views.put(view_of(run, trigger=trigger))
        found = [v.id for v in await views.page(trigger="schedule")]
        assert found == [ids[3], ids[1]]
        assert [v.id for v in await views.page(trigger="schedule", before=ids[3])] == [ids[1]]
        assert await views.page(trigger="tag") == []

    async def test_the_cursor_walks_every_page_once(self, views: RunViews) -> None:
        ids = run_ids(7)
        for run in ids:
            await views.put(view_of(run, project="web" if run != ids[3] else "api"))

        seen: list[str] = []
        cursor: str | None = None
        while page := await views.page(project="web", before=cursor, limit=2):
            assert len(page) <= 2
            seen += [v.id for v in page]
            cursor = page[-1].id
        assert seen == [r for r in reversed(ids) if r != ids[3]]
        assert [v.id for v in await views.page(before=ids[2])] == [ids[1], ids[0]]
        assert await views.page(before="") == []  # nothing sorts below the empty id
        assert await views.page(limit=0) == []

    async def test_unfinished_runs_of_a_project(self, views: RunViews) -> None:
        ids = run_ids(5)
        layout = [("web", "running"), ("web", "success"), ("api", "requested"),
                  ("web", "requested"), ("web", "cancelled")]
        for run, (project, status) in zip(ids, layout, strict=True):
            await views.put(view_of(run, project=project, status=status))

        assert [v.id for v in await views.unfinished("web")] == [ids[0], ids[3]]
        assert [v.id for v in await views.unfinished()] == [ids[0], ids[2], ids[3]]
        await views.put(view_of(ids[0], project="web", status="success"))  # it ended
        assert [v.id for v in await views.unfinished("web")] == [ids[3]]
        assert await views.unfinished("web") == [view_of(ids[3], status="requested")]

    async def test_counts_by_status_and_step_durations(self, views: RunViews) -> None:
        bounds = (0.1, 0.5, 5.0, 60.0)
        assert await views.counts_by_status() == {}
        assert await views.step_durations(bounds) == DurationHistogram.of(bounds, [])
        ids = run_ids(5)
        for run, status in zip(ids, ["success", "success", "failure", "running", "requested"],
                               strict=True):
            await views.put(view_of(run, status=status))

        assert await views.counts_by_status() == {"success": 2, "failure": 1, "running": 1,
                                                  "requested": 1}
        histogram = await views.step_durations(bounds)
        # success: 0.25, 3.0, 12.5 (twice); failure: 0.25, 1.0; running: 0.25
        expected = DurationHistogram.of(bounds, [0.25, 3.0, 12.5] * 2 + [0.25, 1.0, 0.25])
        assert (histogram.bounds, histogram.le, histogram.count) == \
            (expected.bounds, expected.le, expected.count) == (bounds, (0, 4, 7, 9), 9)
        assert histogram.total == pytest.approx(expected.total)

    # --- closing -------------------------------------------------------------------------

    async def test_calls_after_close_are_store_errors(self, views: RunViews) -> None:
        await views.close()
        await views.close()

        with pytest.raises(StoreError, match="closed"):
            await views.get(run_ids(1)[0])
        with pytest.raises(StoreError, match="closed"):
            await views.put(view_of(run_ids(1)[0]))
