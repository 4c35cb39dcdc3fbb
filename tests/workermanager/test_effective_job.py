"""The limits a job's containers run with: its own ``resources:``, the worker's defaults for
the rest, and those capped at its project's maximum."""

from __future__ import annotations

from services.workermanager.jobs import effective_job
from shared.pipeline.plan import JobSpec, Plan, StepSpec
from shared.pipeline.resources import Resources

MiB = 1024 * 1024
DEFAULTS = Resources(memory=512 * MiB, cpus=2, pids=4096)


def plan(asked: Resources, maximum: Resources | None = None) -> Plan:
    job = JobSpec(name="build", image="img", steps=(StepSpec(name="s", image="img"),),
                  resources=asked)
    return Plan(".cyclone.yml", (job,), max_resources=maximum or Resources())


def test_a_job_asking_nothing_gets_the_workers_defaults() -> None:
    assert effective_job(plan(Resources()), "build", DEFAULTS).resources == DEFAULTS


def test_what_a_job_asks_replaces_the_default_of_that_limit_only() -> None:
    job = effective_job(plan(Resources(memory=2048 * MiB)), "build", DEFAULTS)
    assert job.resources == Resources(memory=2048 * MiB, cpus=2, pids=4096)


def test_the_defaults_never_exceed_the_projects_maximum() -> None:
    job = effective_job(plan(Resources(), Resources(memory=256 * MiB, cpus=1)), "build",
                        DEFAULTS)
    assert job.resources == Resources(memory=256 * MiB, cpus=1, pids=4096)
