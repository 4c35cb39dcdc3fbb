"""The scheduler: starts the runs that projects' cron lines call for, each fire once.

Where the cron lines come from (``Scheduler.schedules``):

* the project's settings (``schedules``, set through the API);
* the ``on.schedule`` of the pipeline file of the project's default branch, as the
  latest run of that branch read it: the newest ``RunSourceResolved`` of a push,
  manual or scheduled git run of the project's repository on its default branch
  (reruns, tags, pull requests and ``cyclone run`` do not count). So the scheduler
  needs no Git access, and a schedule added to the file takes effect after the next
  run of the default branch (as on GitHub, schedules come from the default branch).
  A file that does not compile changes nothing (the runs it starts error, visibly);
  skipped runs count too, so a file with only ``on: schedule`` works.

A line in both is one schedule. Times are UTC, at minute resolution.

Exactly once: each project's fires are recorded in its stream ``schedule-<project>``
(``ScheduleFired``, ``ScheduleMissed``), appended with the stream's expected seq.
Two schedulers deciding the same fire (overlapping leaders, a restart) race on the
same seq: one append wins, the other gets ``ConcurrencyConflict``, reads again and
finds the fire done. Only then is the run requested (``RunRequested`` with the run
id the fire names, expected seq 0); a fire whose run is missing (a crash between the
two appends) is completed by whichever scheduler sees it next.

Which fires are due: for each (project, line), the fires after the later of the last
recorded fire of the line and the time the line took effect (the time of the event
that added it: a new line has no missed fires), up to now. Only the latest of them
starts a run: a fire missed while no scheduler ran starts ONE run (``late``), and the
run stands for every fire missed before it (``missed_from``). With ``catch_up``
off, a fire found after its own minute has passed starts nothing and is recorded as
``ScheduleMissed``.

The run is what the API's manual trigger writes, with trigger ``schedule``: the
project's default branch, commit "" (the checkout resolves the branch head), its
repository as a git source, its pipeline file, its env as params.

``tick()`` does one round (tests call it with an injected clock); ``run()`` ticks
at every fire time and at least every ``refresh_s`` seconds (new projects and
settings), riding out store outages. One scheduler at a time should run (a leader
in distributed mode); more are safe, just wasteful.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from shared import cron
from shared import events as ev
from shared.errors import ConcurrencyConflict, PipelineError, StoreError
from shared.events import NewEvent, RecordedEvent, decode, is_run_stream, run_stream
from shared.pipeline import load
from shared.pipeline.include import included_files
from shared.ports.eventstore import EventStore
from shared.projections.projects import ProjectView, fold_project
from shared.retry import Backoff, is_transient
from shared.runstream import new_run_id

__all__ = ["LATE_AFTER", "REFRESH_S", "Schedule", "Scheduler", "latest_fire", "normalize",
           "schedule_stream"]

log = logging.getLogger(__name__)

REFRESH_S = 30.0  # at least this often the projects and their settings are read again
LATE_AFTER = timedelta(minutes=1)  # a fire handled later than this after its time is late
# Runs whose pipeline file is the branch head's: their file is the branch's schedule.
_FILE_TRIGGERS = frozenset({"push", "manual", "schedule"})
_PROJECT_PREFIX = "project-"
_SCHEDULE_PREFIX = "schedule-"
_ATTEMPTS = 20  # appends of one project's fires lost to another scheduler before giving up
_PAGE = 1000


def schedule_stream(project: str) -> str:
    """The stream of a project's fires."""
    return f"{_SCHEDULE_PREFIX}{project}"


def normalize(line: str) -> str:
    """A cron line's identity: its fields single-spaced (``0  3 * * *`` is ``0 3 * * *``)."""
    return " ".join(line.split())


@dataclass(frozen=True)
class Schedule:
    """One cron line of a project, and since when it is in force (no fire before)."""

    project: str
    line: str  # normalized
    cron: cron.Cron
    since: datetime
    origins: tuple[str, ...]  # "settings", "file"


@dataclass
class _File:
    """The schedule of a (project, branch)'s pipeline file, as its latest run read it."""

    source: str  # the repository the file came from
    digest: str  # of the latest text seen (valid or not): the same text is not compiled again
    lines: dict[str, datetime]  # normalized line -> since when the file has had it


@dataclass
class _Project:
    view: ProjectView
    settings: dict[str, datetime]  # normalized line -> since when the settings have had it
    branch_since: datetime  # the project (re)registered or its default branch changed


@dataclass
class _Fires:
    """What a project's schedule stream says, folded up to ``seq``."""

    seq: int = 0
    last: dict[str, datetime] = field(default_factory=dict)  # line -> latest handled fire
    runs: dict[str, str] = field(default_factory=dict)  # line -> run id of its latest fire
    requested: dict[str, str] = field(default_factory=dict)  # line -> that run, known to exist


@dataclass(frozen=True)
class _Decision:
    event: ev.ScheduleFired | ev.ScheduleMissed


class Scheduler:
    """Fires the schedules of every project in one store; see the module docstring.

    State kept between ticks (what the store said, read incrementally) is a cache:
    a new instance reads it all again, and any number of instances may run at once."""

    def __init__(self, store: EventStore, *, catch_up: bool = True,
                 now: Callable[[], datetime] | None = None, refresh_s: float = REFRESH_S,
                 late_after: timedelta = LATE_AFTER) -> None:
        """``now``: the clock (aware UTC); ``catch_up``: see the module docstring."""
        self.store = store
        self.catch_up = catch_up
        self.refresh_s = refresh_s
        self.late_after = late_after
        self._now = now or (lambda: datetime.now(UTC))
        self._position = 0  # of the store's global order, read so far
        # Runs whose checkout will read the head of their branch: stream -> project, source.
        self._git_runs: dict[str, tuple[str, str]] = {}
        self._files: dict[tuple[str, str], _File] = {}  # (project, branch) -> its file
        self._projects: dict[str, _Project] = {}
        self._dirty: set[str] = set()  # projects whose stream changed since folded
        self._fires: dict[str, _Fires] = {}

    async def run(self) -> None:
        """Tick at every fire time and every ``refresh_s`` at least, until cancelled."""
        backoff = Backoff()
        while True:
            try:
                await self.tick()
                backoff.reset()
            except Exception as exc:
                if not is_transient(exc):
                    raise
                log.warning("scheduler: store unreachable; retrying",
                            extra={"error": str(exc)})
                await backoff.wait()
                continue
            await asyncio.sleep(self._pause())

    async def tick(self) -> list[str]:
        """Start the runs due now; returns their ids (completed fires' runs included)."""
        now = self._now()
        started: list[str] = []
        by_project: dict[str, list[Schedule]] = {}
        for schedule in await self.schedules():
            by_project.setdefault(schedule.project, []).append(schedule)
        for name, schedules in sorted(by_project.items()):
            started += await self._fire(self._projects[name].view, schedules, now)
        return started

    async def schedules(self) -> list[Schedule]:
        """Every schedule in force, read from the store (what ``tick`` fires)."""
        await self._catch_up_store()
        out: list[Schedule] = []
        for name in sorted(self._projects):
            out += self._schedules_of(self._projects[name])
        return out

    def _pause(self) -> float:
        """Seconds until the next fire of any known schedule, at most ``refresh_s``."""
        now = self._now()
        upcoming = [s.cron.next_after(now) for p in self._projects.values()
                    for s in self._schedules_of(p)]
        until = min(((t - now).total_seconds() for t in upcoming), default=self.refresh_s)
        return max(0.0, min(self.refresh_s, until))

    # --- reading the store ---------------------------------------------------------

    async def _catch_up_store(self) -> None:
        """Follow the store's global order from where we were: projects that changed,
        and the pipeline files runs resolved."""
        while batch := await self.store.read_all(self._position, limit=_PAGE):
            for recorded in batch:
                self._see(recorded)
            self._position = batch[-1].position
        for name in sorted(self._dirty):
            await self._load_project(name)
        self._dirty.clear()

    def _see(self, recorded: RecordedEvent) -> None:
        if recorded.stream.startswith(_PROJECT_PREFIX):
            self._dirty.add(recorded.stream.removeprefix(_PROJECT_PREFIX))
        elif is_run_stream(recorded.stream):
            self._see_run(recorded)

    def _see_run(self, recorded: RecordedEvent) -> None:
        stream = recorded.stream
        if recorded.type == ev.RunRequested.TYPE:
            event = decode(recorded)
            if (isinstance(event, ev.RunRequested) and event.source_kind == "git"
                    and event.trigger in _FILE_TRIGGERS):
                self._git_runs[stream] = (event.project, event.source)
        elif recorded.type == ev.RunSourceResolved.TYPE:
            run = self._git_runs.pop(stream, None)
            event = decode(recorded)
            if run is not None and isinstance(event, ev.RunSourceResolved) and event.branch:
                project, source = run
                self._file_read(project, event.branch, source, event, _time(recorded.ts))
        elif recorded.type in _TERMINAL:
            self._git_runs.pop(stream, None)  # ended before its checkout: nothing to learn

    def _file_read(self, project: str, branch: str, source: str,
                   event: ev.RunSourceResolved, at: datetime) -> None:
        """A run read the pipeline file at the head of ``branch``: its schedule now."""
        digest = hashlib.sha256(f"{event.pipeline_file}\0{event.pipeline}".encode()).hexdigest()
        old = self._files.get((project, branch))
        if old is not None and old.source == source and old.digest == digest:
            return
        try:
            # on: is the file's own; its includes are needed for it to compile at all
            plan = load(event.pipeline, event.pipeline_file,
                        includes=included_files(event.includes)).plan
            lines = [normalize(x) for x in plan.triggers.schedule]
        except PipelineError:
            # Keep the last schedule that could be read: the runs it starts error, visibly.
            kept = old.lines if old is not None and old.source == source else {}
            self._files[(project, branch)] = _File(source, digest, kept)
            return
        before = old.lines if old is not None and old.source == source else {}
        self._files[(project, branch)] = _File(source, digest,
                                               {x: before.get(x, at) for x in lines})

    async def _load_project(self, name: str) -> None:
        events = await self.store.read(f"{_PROJECT_PREFIX}{name}")
        view = fold_project(events)
        if view is None or view.deleted:
            self._projects.pop(name, None)
            return
        settings, branch_since = _settings_history(events)
        self._projects[name] = _Project(view, settings, branch_since)

    def _schedules_of(self, project: _Project) -> list[Schedule]:
        view = project.view
        lines: dict[str, tuple[datetime, tuple[str, ...]]] = {
            x: (since, ("settings",)) for x, since in project.settings.items()}
        file = self._files.get((view.name, view.default_branch))
        if file is not None and file.source == view.repo:
            for x, since in file.lines.items():
                since = max(since, project.branch_since)
                earlier, origins = lines.get(x, (since, ()))
                lines[x] = (min(earlier, since), (*origins, "file"))
        out: list[Schedule] = []
        for x, (since, origins) in sorted(lines.items()):
            try:
                parsed = cron.parse(x)
            except cron.CronError as exc:  # the API refuses these: an old or foreign event
                log.warning("scheduler: ignoring an unreadable cron line", extra={
                    "project": view.name, "cron": x, "error": str(exc)})
                continue
            out.append(Schedule(view.name, x, parsed, since, origins))
        return out

    # --- firing --------------------------------------------------------------------

    async def _fire(self, project: ProjectView, schedules: list[Schedule],
                    now: datetime) -> list[str]:
        """Record the project's due fires in one append, then request their runs."""
        stream = schedule_stream(project.name)
        for _ in range(_ATTEMPTS):
            fires = await self._read_fires(project.name)
            started = await self._complete(project, fires)
            decisions = [d for s in schedules
                         if (d := self._decide(s, fires.last.get(s.line), now)) is not None]
            if not decisions:
                return started
            try:
                recorded = await self.store.append(
                    stream, [NewEvent(d.event) for d in decisions], fires.seq)
            except ConcurrencyConflict:
                continue  # another scheduler recorded fires meanwhile: decide again
            self._fold(fires, recorded)
            for decision in decisions:
                if isinstance(decision.event, ev.ScheduleFired):
                    started += await self._request(project, decision.event)
                    fires.requested[decision.event.cron] = decision.event.run_id
                else:
                    log.warning("schedule: fires missed while no scheduler ran were skipped "
                                "(CYCLONE_SCHEDULE_CATCHUP=0)", extra=decision.event.to_data())
            return started
        raise StoreError(f"schedule of project {project.name!r}: gave up after {_ATTEMPTS} "
                         "concurrent-append conflicts")

    def _decide(self, schedule: Schedule, last: datetime | None,
                now: datetime) -> _Decision | None:
        after = schedule.since if last is None else max(last, schedule.since)
        at = latest_fire(schedule.cron, after, now)
        if at is None:
            return None
        first = schedule.cron.next_after(after)
        late = now >= at + self.late_after
        if late and not self.catch_up:
            return _Decision(ev.ScheduleMissed(project=schedule.project, cron=schedule.line,
                                               at=_iso(at), missed_from=_iso(first)))
        return _Decision(ev.ScheduleFired(
            project=schedule.project, cron=schedule.line, at=_iso(at), run_id=new_run_id(),
            late=late, missed_from=_iso(first) if first < at else ""))

    async def _read_fires(self, project: str) -> _Fires:
        fires = self._fires.setdefault(project, _Fires())
        self._fold(fires, await self.store.read(schedule_stream(project), fires.seq + 1))
        return fires

    @staticmethod
    def _fold(fires: _Fires, recorded: Iterable[RecordedEvent]) -> None:
        for r in recorded:
            fires.seq = r.seq
            event = decode(r)
            if isinstance(event, ev.ScheduleFired | ev.ScheduleMissed):
                fires.last[event.cron] = _time(event.at)
                if isinstance(event, ev.ScheduleFired):
                    fires.runs[event.cron] = event.run_id
                else:
                    fires.runs.pop(event.cron, None)

    async def _complete(self, project: ProjectView, fires: _Fires) -> list[str]:
        """Request the runs of recorded fires that have none (their scheduler crashed, or
        lost its leadership, between the two appends)."""
        started: list[str] = []
        for line, run_id in sorted(fires.runs.items()):
            if fires.requested.get(line) == run_id:
                continue
            if not await self.store.read(run_stream(run_id)):
                fired = ev.ScheduleFired(project=project.name, cron=line,
                                         at=_iso(fires.last[line]), run_id=run_id)
                started += await self._request(project, fired)
                log.warning("schedule: completed a fire whose run was never requested",
                            extra={"project": project.name, "run": run_id, "cron": line})
            fires.requested[line] = run_id
        return started

    async def _request(self, project: ProjectView, fired: ev.ScheduleFired) -> list[str]:
        event = project.run_requested(trigger="schedule", branch=project.default_branch,
                                      requested_by=f"schedule '{fired.cron}'")
        try:
            await self.store.append(run_stream(fired.run_id), [NewEvent(event)], 0)
        except ConcurrencyConflict:
            return []  # another scheduler completed this fire first: one run all the same
        log.info("schedule fired", extra={**fired.to_data()})
        return [fired.run_id]


def latest_fire(line: cron.Cron, after: datetime, upto: datetime) -> datetime | None:
    """The last fire ``f`` with ``after < f <= upto`` (None when there is none), without
    walking every fire of a long gap: windows ending at ``upto`` double until one holds a
    fire, then that window is walked."""
    if line.next_after(after) > upto:
        return None
    span = timedelta(minutes=1)
    while True:
        t = line.next_after(max(after, upto - span))
        if t <= upto:
            while (following := line.next_after(t)) <= upto:
                t = following
            return t
        span *= 2


def _settings_history(events: list[RecordedEvent]) -> tuple[dict[str, datetime], datetime]:
    """The project's settings lines with since when each has been set, and when the
    project was last registered or its default branch changed."""
    lines: dict[str, datetime] = {}
    branch_since = datetime.min.replace(tzinfo=UTC)
    branch = ""
    for recorded in events:
        event, at = decode(recorded), _time(recorded.ts)
        if isinstance(event, ev.ProjectRegistered):
            lines = {normalize(x): at for x in event.schedules}
            branch_since, branch = at, event.default_branch
        elif isinstance(event, ev.ProjectUpdated):
            if "schedules" in event.changes:
                new = [normalize(str(x)) for x in event.changes["schedules"] or ()]
                lines = {x: lines.get(x, at) for x in new}
            if event.changes.get("default_branch", branch) != branch:
                branch_since, branch = at, str(event.changes["default_branch"])
    return lines, branch_since


_TERMINAL = frozenset(t.TYPE for t in ev.TERMINAL_RUN_EVENTS)


def _time(text: str) -> datetime:
    t = datetime.fromisoformat(text)
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat()
