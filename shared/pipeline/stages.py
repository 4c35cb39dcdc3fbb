"""``stages:``, as in GitLab CI: sugar over ``needs``.

    stages: [build, test, deploy]
    jobs:
      compile: {stage: build, ...}
      unit:    {stage: test, ...}      # needs compile
      lint:    {stage: test, ...}      # needs compile
      ship:    {stage: deploy, ...}    # needs unit and lint

A job of a stage needs every job of the nearest earlier stage that has jobs, on top
of its own ``needs``; a job without ``stage`` is in no stage and has only its own
``needs`` (unlike GitLab, there is no default stage). The linter turns stages into
plain needs (``implied_needs``), so the compiler, the plan and everything after it
know nothing of stages. Problems are placed at their line: a ``stage`` naming a stage
the file does not list (or a file without ``stages:``), a stage listed twice; a stage
no job is in is a warning (a misspelt name, most often).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.pipeline.loader import Reporter
from shared.pipeline.schema import JobModel, did_you_mean

__all__ = ["implied_needs"]


def implied_needs(report: Reporter, stages: list[str] | None, jobs: Mapping[str, JobModel],
                  written: Mapping[str, Any]) -> dict[str, list[str]]:
    """The needs each job's ``stage`` adds (``jobs``: those without errors, in file
    order), and the problems of ``stages`` and ``stage`` reported; ``{}`` when the file
    uses no stage. ``written``: every job as written (a stage a job with errors names is
    not empty)."""
    staged = {name: job.stage for name, job in jobs.items() if job.stage is not None}
    if stages is None:
        for name, stage in staged.items():
            report.error(("jobs", name, "stage"), f"stage '{stage}' but the file has no "
                         "stages: (list them at the top level, e.g. stages: [build, test])")
        return {}
    _check_listed(report, stages)
    members: dict[str, list[str]] = {stage: [] for stage in stages}
    for name, stage in staged.items():
        if stage in members:
            members[stage].append(name)
        else:
            report.error(("jobs", name, "stage"), f"unknown stage '{stage}'"
                         f"{did_you_mean(stage, stages)} (stages: {', '.join(stages)})")
    named = {job.get("stage") for job in written.values() if isinstance(job, dict)}
    for stage, names in members.items():
        if not names and stage not in named:
            report.warning(("stages", stages.index(stage)), f"no job is in stage '{stage}'")
    added: dict[str, list[str]] = {}
    previous: list[str] = []
    for names in members.values():
        for name in names:
            added[name] = list(previous)
        previous = names or previous
    return added


def _check_listed(report: Reporter, stages: list[str]) -> None:
    for i, stage in enumerate(stages):
        if stage in stages[:i]:
            first = report.document.marks.locate(("stages", stages.index(stage)))[0]
            report.error(("stages", i), f"stage '{stage}' is listed twice (first at line "
                         f"{first})")
