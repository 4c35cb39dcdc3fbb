"""The compiled pipeline: what the event manager schedules and the executors run.

Plain frozen dataclasses, JSON round-trippable (``Plan.to_data`` / ``Plan.from_data``)
because a run's plan is recorded in its ``RunPlanned`` event. The plan also carries the
file's trigger rules (``shared.pipeline.triggers.Triggers``) and its notification rules
(``shared.pipeline.notify.NotifyRule``, source "file"). ``to_data`` leaves ``notify`` out
when there is none, so a plan without rules is recorded as it was before rules existed.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
from dataclasses import dataclass, field
from typing import Any

from shared.pipeline.notify import NotifyRule, rules_from_data
from shared.pipeline.resources import Resources
from shared.pipeline.triggers import Triggers

__all__ = ["BuildSpec", "JobSpec", "Plan", "ServiceSpec", "StepSpec", "When"]

STATUS_SUCCESS = "success"
STATUS_FAILURE = "failure"


@dataclass(frozen=True)
class When:
    """When a job or step runs. Empty ``branches`` / ``events`` match anything.

    ``branches`` are globs; a leading ``!`` excludes. ``status`` lists the outcomes
    so far under which it runs: ("success",) by default, ("failure",) for cleanup
    or notification on failure, both for "always".
    """

    branches: tuple[str, ...] = ()
    events: tuple[str, ...] = ()
    status: tuple[str, ...] = (STATUS_SUCCESS,)

    def matches(self, branch: str, event: str) -> bool:
        if not self.branches and not self.events:
            return True  # most jobs: decided for every job of a run at each of its events
        return self._branch_matches(branch) and (not self.events or event in self.events)

    def runs_on(self, outcome_so_far: str) -> bool:
        return outcome_so_far in self.status

    def _branch_matches(self, branch: str) -> bool:
        includes = [b for b in self.branches if not b.startswith("!")]
        excludes = [b[1:] for b in self.branches if b.startswith("!")]
        if any(fnmatch.fnmatchcase(branch, pattern) for pattern in excludes):
            return False
        return not includes or any(fnmatch.fnmatchcase(branch, p) for p in includes)


@dataclass(frozen=True)
class ServiceSpec:
    """A sidecar container, reachable from the job's steps by ``name``."""

    name: str
    image: str
    env: dict[str, str] = field(default_factory=dict)
    command: tuple[str, ...] = ()  # arguments; empty keeps the image's default
    privileged: bool = False  # lint lets only a trusted project's pipeline ask
    volumes: tuple[str, ...] = ()  # SOURCE:TARGET[:MODE]; trusted projects only


@dataclass(frozen=True)
class BuildSpec:
    """A container image built from the workspace (caicloud.yml's ``build`` section)."""

    context_dir: str = "."
    dockerfile: str = "Dockerfile"
    tag: str = ""


@dataclass(frozen=True)
class StepSpec:
    name: str
    image: str
    commands: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    timeout_s: float | None = None
    retry: int = 0  # extra attempts after a non-zero exit
    when: When = field(default_factory=When)
    build: BuildSpec | None = None  # set: this step builds an image instead of running commands
    # The secrets (project's or global) the step is given as env variables: its job's
    # ``secrets:`` and its own. Recorded only when there are some.
    secrets: tuple[str, ...] = ()
    privileged: bool = False  # lint lets only a trusted project's pipeline ask
    volumes: tuple[str, ...] = ()  # SOURCE:TARGET[:MODE]; trusted projects only


@dataclass(frozen=True)
class JobSpec:
    name: str
    image: str
    steps: tuple[StepSpec, ...]
    env: dict[str, str] = field(default_factory=dict)
    needs: tuple[str, ...] = ()
    services: tuple[ServiceSpec, ...] = ()
    timeout_s: float | None = None
    when: When = field(default_factory=When)
    matrix: dict[str, str] = field(default_factory=dict)  # this expansion's values
    # what the file asks for its containers; the worker lays it over its defaults
    resources: Resources = field(default_factory=Resources)


@dataclass(frozen=True)
class Plan:
    source_file: str
    jobs: tuple[JobSpec, ...]  # in a topological order of ``needs``
    # the file's ``on:``; a plan recorded before triggers existed reads as the default
    triggers: Triggers = field(default_factory=Triggers)
    # the file's ``notify:``; a plan recorded before rules existed reads as ()
    notify: tuple[NotifyRule, ...] = ()
    # the project's maximum when the run was planned: the worker's defaults are capped to it
    max_resources: Resources = field(default_factory=Resources)

    def job(self, name: str) -> JobSpec:
        return self._jobs_by_name[name]

    @functools.cached_property
    def _jobs_by_name(self) -> dict[str, JobSpec]:
        return {job.name: job for job in self.jobs}

    @functools.cached_property
    def unconditional(self) -> frozenset[str]:
        """The jobs nothing can skip: no ``needs``, and a ``when`` that takes every branch
        and event and runs on success (what a run's start is)."""
        return frozenset(
            job.name for job in self.jobs
            if not job.needs and not job.when.branches and not job.when.events
            and job.when.runs_on(STATUS_SUCCESS))

    def to_data(self) -> dict[str, Any]:
        """As recorded; what is at its default since it was added is left out, so a plan
        that uses none of it is recorded as before."""
        data = dataclasses.asdict(self)
        del data["notify"]
        for job in data["jobs"]:
            for step in job["steps"]:
                if not step["secrets"]:
                    del step["secrets"]  # a plan without secrets is recorded as before
        if self.notify:
            data["notify"] = [rule.to_data() for rule in self.notify]
        _drop_defaults(data, "max_resources")
        for job in data["jobs"]:
            _drop_defaults(job, "resources")
            for part in (*job["steps"], *job["services"]):
                _drop_defaults(part, "privileged", "volumes")
        return data

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Plan:
        return cls(source_file=data["source_file"], jobs=tuple(_job(j) for j in data["jobs"]),
                   triggers=Triggers.from_data(data.get("triggers")),
                   notify=rules_from_data(data.get("notify")),
                   max_resources=Resources.from_data(data.get("max_resources")))


def _drop_defaults(data: dict[str, Any], *keys: str) -> None:
    """Leave out each of ``keys`` whose value is empty or false (resources: all None)."""
    for key in keys:
        value = data[key]
        if not value or (isinstance(value, dict) and all(v is None for v in value.values())):
            del data[key]
        elif isinstance(value, dict):
            data[key] = {k: v for k, v in value.items() if v is not None}


def _when(d: dict[str, Any]) -> When:
    return When(
        branches=tuple(d.get("branches", ())),
        events=tuple(d.get("events", ())),
        status=tuple(d.get("status", (STATUS_SUCCESS,))),
    )


def _step(d: dict[str, Any]) -> StepSpec:
    build = d.get("build")
    return StepSpec(
        name=d["name"],
        image=d["image"],
        commands=tuple(d.get("commands", ())),
        env=dict(d.get("env", {})),
        timeout_s=d.get("timeout_s"),
        retry=int(d.get("retry", 0)),
        when=_when(d.get("when", {})),
        build=BuildSpec(**build) if build else None,
        secrets=tuple(d.get("secrets", ())),
        privileged=bool(d.get("privileged", False)),
        volumes=tuple(d.get("volumes", ())),
    )


def _service(d: dict[str, Any]) -> ServiceSpec:
    return ServiceSpec(name=d["name"], image=d["image"], env=dict(d.get("env", {})),
                       command=tuple(d.get("command", ())),
                       privileged=bool(d.get("privileged", False)),
                       volumes=tuple(d.get("volumes", ())))


def _job(d: dict[str, Any]) -> JobSpec:
    return JobSpec(
        name=d["name"],
        image=d["image"],
        steps=tuple(_step(s) for s in d["steps"]),
        env=dict(d.get("env", {})),
        needs=tuple(d.get("needs", ())),
        services=tuple(_service(s) for s in d.get("services", ())),
        timeout_s=d.get("timeout_s"),
        when=_when(d.get("when", {})),
        matrix=dict(d.get("matrix", {})),
        resources=Resources.from_data(d.get("resources")),
    )
