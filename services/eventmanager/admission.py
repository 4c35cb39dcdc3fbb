"""Per-project concurrency that holds across event manager replicas: a project's runs
beyond its ``max_concurrent_runs`` wait, and go in as earlier ones end.

The state lives in the coordination service (etcd; the in-process coordinator in
embedded mode), never in one replica's memory (keys in ``shared.keys``):

* A run *counts* while it holds a slot, ``cyclone/slots/<project>/<n>`` = its run id,
  taken with ``create`` (one holder per slot, whatever the number of replicas) and no
  lease: a run keeps its slot whichever process dies, and gives it back when it ends
  (``release``, by whichever replica sees the end; idempotent).
* A run that may not start yet is listed, ``cyclone/waiting/<project>/<run id>``. Run ids
  sort by creation time, so the listing is the project's queue, oldest first, shared
  by every replica.

``admit(run, limit)`` decides for one run:

* a run that has started (checkout queued or plan made) is admitted. If it holds no
  slot (a store from before slots, an admission while the project had no limit, the
  embedded coordinator after a restart) it takes the first free slot of any number, so
  it counts from now on;
* an unstarted run lists itself *before* reading the slots (so a slot freed after that
  read wakes it up: the freeing replica reads the listing after its delete), then goes
  in if it already holds a slot (a crash between taking it and its first append), or
  if fewer than ``limit`` slots are held, it is among the first ``limit - held`` listed
  runs, and it wins a slot numbered below ``limit``. Otherwise it waits: ``"wait"``
  when the slots are full, ``"behind"`` when slots are free but older runs are listed
  before it (the caller then advances the queue from its head: ``EventManager._wake``).

Counting held slots (not just the numbers below ``limit``) makes a lowered limit hold
as the surplus runs end. Two replicas advancing the same run at once may both win a
slot for it; the one holding the higher number gives it back (``_take``), so a run
briefly counts twice at most: fewer runs run, never more.

The port has no compare-and-delete, so a release reads the slot's holder and deletes
it if it is still this run: two replicas releasing the same ended run at the very
moment a third takes the freed slot could delete the newcomer's slot. The window is
one round trip, and only while a run's end is being handled twice.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Literal

from shared.keys import (
    SLOTS_PREFIX,
    WAITING_PREFIX,
    slot_key,
    slots_prefix,
    waiting_key,
    waiting_prefix,
)
from shared.ports.coordination import Coordinator
from shared.projections.runs import RunView

__all__ = ["Admissions", "Verdict", "started"]

Verdict = Literal["admitted", "wait", "behind"]


def started(run: RunView) -> bool:
    """Whether the run has started work (from then on it counts until it ends)."""
    return bool(run.checkout) or run.plan is not None


class Admissions:
    """Per-project admission through a ``Coordinator``; see the module docstring."""

    def __init__(self, coord: Coordinator) -> None:
        self.coord = coord

    async def admit(self, run: RunView, limit: int) -> Verdict:
        """Whether the run may start (or go on) now; ``limit`` <= 0 means no limit."""
        if run.done or (run.cancel_requested and not started(run)):
            return "wait"  # nothing to start: it ends (or has ended) without a slot
        if run.awaiting_approval:
            return "wait"  # not queued for a slot until approved: it holds up no one
        if limit <= 0:
            return "admitted"
        listed = waiting_key(run.project, run.id)
        if not started(run):
            await self.coord.create(listed, b"")  # before reading the slots: see above
        slots = await self._slots(run.project)
        if run.id in slots.values():
            if not started(run):
                await self.coord.delete(listed)  # it took the slot, then its replica died
            return "admitted"
        if started(run):
            await self._take(run, slots, bound=None)
            await self.coord.delete(listed)  # listed while its project had no limit
            return "admitted"
        free = limit - len(slots)
        if free <= 0:
            return "wait"
        if run.id not in (await self.waiting(run.project))[:free]:
            return "behind"
        if not await self._take(run, slots, bound=limit):
            return "wait"  # another replica took the last free slot just now
        await self.coord.delete(listed)
        return "admitted"

    async def release(self, run: RunView) -> bool:
        """Give back what an ended run holds; whether a slot was freed. Idempotent."""
        if run.trigger == "cli":
            return False  # `cyclone run` has no project: it never takes a slot
        freed = False
        for n, holder in (await self._slots(run.project)).items():
            if holder == run.id:
                freed = await self._release_slot(run.project, n, run.id) or freed
        await self.forget(run.project, run.id)
        return freed

    async def waiting(self, project: str) -> list[str]:
        """The project's listed runs, oldest first."""
        prefix = waiting_prefix(project)
        return sorted(k.removeprefix(prefix) for k in await self.coord.get_prefix(prefix))

    async def waiting_projects(self) -> list[str]:
        """The projects that have runs listed as waiting."""
        keys = await self.coord.get_prefix(WAITING_PREFIX)
        return sorted({k.removeprefix(WAITING_PREFIX).partition("/")[0] for k in keys})

    async def forget(self, project: str, run_id: str) -> None:
        await self.coord.delete(waiting_key(project, run_id))

    async def reconcile(self, held: Mapping[str, bytes], listed: Mapping[str, bytes],
                        runs: Mapping[str, RunView],
                        limit_of: Callable[[RunView], Awaitable[int]]) -> set[str]:
        """Bring the slots and the queue in line with the runs' states (at start).

        ``held`` and ``listed`` (the slot and waiting keys) must have been read BEFORE
        ``runs`` was folded: a run lists itself or takes a slot only after its request
        is stored, so every run they name is in ``runs``, and a run ``runs`` shows ended
        has truly ended. Slots of ended (or unknown) runs are released, listings of runs
        that ended or started are dropped; an unfinished run of a limited project is made
        to count (started: ``admit`` takes a slot if it holds none) or listed (unstarted).
        Returns the projects whose slots were freed (their queues should be advanced).
        """
        freed: set[str] = set()
        for key, holder in held.items():
            project, n = _parse_slot(key)
            run = runs.get(holder.decode())
            if n is not None and (run is None or run.done):
                if await self._release_slot(project, n, holder.decode()):
                    freed.add(project)
        for key in listed:
            project, _, run_id = key.removeprefix(WAITING_PREFIX).partition("/")
            run = runs.get(run_id)
            if run is None or run.done or started(run):
                await self.forget(project, run_id)
        limits: dict[str, int] = {}
        for run in runs.values():
            if run.done or run.trigger == "cli":
                continue
            if run.project not in limits:
                limits[run.project] = await limit_of(run)
            if limits[run.project] <= 0:
                continue
            if started(run):
                await self.admit(run, limits[run.project])
            else:
                await self.coord.create(waiting_key(run.project, run.id), b"")
        return freed

    # --- slots ----------------------------------------------------------------------

    async def _slots(self, project: str) -> dict[int, str]:
        """The project's held slots: number -> holder's run id."""
        slots = {}
        for key, holder in (await self.coord.get_prefix(slots_prefix(project))).items():
            _, n = _parse_slot(key)
            if n is not None:
                slots[n] = holder.decode()
        return slots

    async def _take(self, run: RunView, slots: Mapping[int, str], bound: int | None) -> bool:
        """Take the first free slot below ``bound`` (any, when None); whether one was won."""
        n = 0
        while bound is None or n < bound:
            if n not in slots and await self.coord.create(slot_key(run.project, n),
                                                          run.id.encode()):
                mine = [m for m, holder in (await self._slots(run.project)).items()
                        if holder == run.id]
                if min(mine, default=n) < n:
                    # Another replica won a lower slot for this run at the same time.
                    await self._release_slot(run.project, n, run.id)
                return True
            n += 1
        return False

    async def _release_slot(self, project: str, n: int, run_id: str) -> bool:
        key = slot_key(project, n)
        if await self.coord.get(key) != run_id.encode():
            return False  # already given back (and maybe taken by another run since)
        return await self.coord.delete(key)


def _parse_slot(key: str) -> tuple[str, int | None]:
    """``cyclone/slots/<project>/<n>`` -> (project, n); n is None for a malformed key."""
    project, _, number = key.removeprefix(SLOTS_PREFIX).rpartition("/")
    return project, int(number) if number.isdigit() else None
