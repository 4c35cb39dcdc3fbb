"""What a run of a plan would do, without running it (``cyclone run --dry-run``).

``preview(plan, branch, event, trigger)`` judges, with the rules the run itself uses
(``triggers.refused`` for the whole run, ``When.mismatch`` for a job or a step, as the
event manager and the workers do), what is skipped before anything runs, and says what
depends on the run: a ``when.status`` that runs on failure, a ``when.outputs`` that reads
what earlier steps write. Jobs come in the plan's order (topological by needs, file order
among equals). ``lines`` prints it; ``Preview.to_json`` is its ``--json``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from shared.pipeline import triggers
from shared.pipeline.plan import STATUS_FAILURE, STATUS_SUCCESS, JobSpec, Plan, StepSpec, When

__all__ = ["JobPreview", "Preview", "StepPreview", "lines", "preview"]


@dataclass(frozen=True)
class StepPreview:
    name: str
    image: str  # "" for a build, promote or deploy step (the worker does it)
    kind: str  # "run", "build", "promote" or "deploy"
    skipped: str = ""  # why it is skipped whatever happens ("" when it is not)
    depends: str = ""  # what of the run decides whether it runs ("" when nothing does)


@dataclass(frozen=True)
class JobPreview:
    name: str
    image: str
    needs: tuple[str, ...]
    matrix: dict[str, str]
    services: tuple[str, ...]  # their images
    steps: tuple[StepPreview, ...]
    approval: str = ""  # the role that must approve it first
    skipped: str = ""
    depends: str = ""


@dataclass(frozen=True)
class Preview:
    file: str
    branch: str
    event: str
    jobs: tuple[JobPreview, ...]
    skipped: str = ""  # why the whole run would be skipped (its ``on:``)
    overrides: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """As plain JSON data (lists, not tuples)."""
        data: dict[str, Any] = json.loads(json.dumps(dataclasses.asdict(self)))
        return data


def preview(plan: Plan, branch: str, event: str, trigger: str = "",
            overrides: tuple[str, ...] = ()) -> Preview:
    """The run of ``plan`` on ``branch`` for ``event`` (``when.event`` sees it), started by
    ``trigger`` (default: ``event``)."""
    return Preview(file=plan.source_file, branch=branch, event=event,
                   jobs=tuple(_job(job, branch, event) for job in plan.jobs),
                   skipped=triggers.refused(plan.triggers, trigger or event, None),
                   overrides=overrides)


def _job(job: JobSpec, branch: str, event: str) -> JobPreview:
    skipped = _mismatch(job.when, branch, event)
    if not skipped and not job.needs and not job.when.runs_on(STATUS_SUCCESS):
        skipped = "when.status: runs only on failure"  # nothing before it can fail
    return JobPreview(
        name=job.name, image=job.image, needs=job.needs, matrix=dict(job.matrix),
        services=tuple(s.image for s in job.services),
        steps=tuple(_step(step, branch, event) for step in job.steps),
        approval=job.approval.role if job.approval else "", skipped=skipped,
        depends="" if skipped else _depends(job.when, "one of its needs", "its needs"))


def _step(step: StepSpec, branch: str, event: str) -> StepPreview:
    kind = ("build" if step.build else "promote" if step.promote
            else "deploy" if step.deploy else "run")
    skipped = _mismatch(step.when, branch, event)
    return StepPreview(name=step.name, image=step.image, kind=kind, skipped=skipped,
                       depends="" if skipped else _depends(step.when, "an earlier step",
                                                           "earlier steps"))


def _mismatch(when: When, branch: str, event: str) -> str:
    """The run's reason for skipping, and the conditions that give it."""
    reason = when.mismatch(branch, event)
    if not reason:
        return ""
    conditions = [f"when.branch: {', '.join(when.branches)}" if when.branches else "",
                  f"when.event: {', '.join(when.events)}" if when.events else ""]
    return f"{reason} ({'; '.join(c for c in conditions if c)})"


def _depends(when: When, before: str, writers: str) -> str:
    """What of the run decides, beyond its branch and event, whether ``when`` runs."""
    parts = []
    if when.status == (STATUS_FAILURE,):
        parts.append(f"runs only if {before} fails")
    elif STATUS_FAILURE in when.status:
        parts.append(f"runs whether or not {before} fails")
    parts += [f"outputs of {writers}: {key} matches {pattern!r}" for key, pattern in when.outputs]
    return "; ".join(parts)


def lines(shown: Preview) -> list[str]:
    """The preview as text: a heading, then each job and its steps, one a line."""
    count = len(shown.jobs)
    out = [f"{shown.file}: {count} job{'s' if count != 1 else ''}, branch "
           f"{shown.branch or '-'}, event {shown.event} (dry run: nothing is run)"]
    out += [f"  --set {written}" for written in shown.overrides]
    if shown.skipped:
        out.append(f"the run would be skipped: {shown.skipped}")
    for n, job in enumerate(shown.jobs, 1):
        out.append("")
        out.append(f"{n}. {job.name}" + (f"  needs {', '.join(job.needs)}" if job.needs else ""))
        out += _notes(job.skipped, job.depends, "   ")
        if job.approval and not job.skipped:
            out.append(f"   waits for approval by a {job.approval}")
        if job.services:
            out.append(f"   services: {', '.join(job.services)}")
        width = max(len(step.name) for step in job.steps)
        for step in job.steps:
            what = step.image if step.kind == "run" else f"({step.kind})"
            out.append(f"   - {step.name.ljust(width)}  {what}")
            out += _notes(step.skipped, step.depends, "       ")
    return out


def _notes(skipped: str, depends: str, indent: str) -> list[str]:
    if skipped:
        return [f"{indent}SKIPPED: {skipped}"]
    return [f"{indent}depends on the run: {depends}"] if depends else []
