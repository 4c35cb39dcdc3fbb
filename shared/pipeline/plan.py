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
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.pipeline.notify import NotifyRule, rules_from_data
from shared.pipeline.resources import Resources
from shared.pipeline.triggers import Triggers

__all__ = ["ApprovalSpec", "ArtifactsSpec", "BuildSpec", "CacheSpec", "DeploySpec",
           "DockerTarget", "JobSpec", "KubernetesTarget", "Plan", "PromoteSpec",
           "RegistryLogin", "ReportsSpec", "ServiceSpec", "StepSpec", "When"]

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
    # Step outputs (``$CYCLONE_OUTPUT``) by key -> glob their value must match: of the
    # job's earlier steps (for a step) or of the jobs it needs (for a job). A key no
    # step wrote matches only the glob "".
    outputs: tuple[tuple[str, str], ...] = ()

    def matches(self, branch: str, event: str) -> bool:
        if not self.branches and not self.events:
            return True  # most jobs: decided for every job of a run at each of its events
        return self._branch_matches(branch) and (not self.events or event in self.events)

    def mismatch(self, branch: str, event: str) -> str:
        """Why this skips its job or step in a run of ``branch`` for ``event``, "" when it
        does not: the reason the event manager (jobs) and the workers (steps) record."""
        if self.matches(branch, event):
            return ""
        return f"when: does not match branch {branch!r} / event {event!r}"

    def outputs_match(self, outputs: Mapping[str, str]) -> str:
        """"" when every ``outputs`` condition holds, else which one does not (a reason)."""
        for key, pattern in self.outputs:
            value = outputs.get(key, "")
            if not fnmatch.fnmatchcase(value, pattern):
                return f"when.outputs: {key} is {value!r}, not {pattern!r}"
        return ""

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
class RegistryLogin:
    """How to log in to a registry (the pipeline's ``registries:``): a user name and the
    secret that holds the password or token. Used to push, to promote and to pull."""

    registry: str  # host[:port], as image references name it
    username: str
    password_secret: str


@dataclass(frozen=True)
class BuildSpec:
    """A container image built from the workspace by the worker (never by a step with the
    Docker socket). ``tags`` may hold ``${CYCLONE_COMMIT}``, ``${CYCLONE_SHORT_SHA}``,
    ``${CYCLONE_BRANCH}`` and ``${CYCLONE_TAG}``, expanded when the step runs; with
    ``push`` every tag is pushed and the digest recorded (``ImagePushed``), so later jobs,
    on any worker, use it as ``${{ images.NAME }}`` pinned to that digest."""

    context_dir: str = "."
    dockerfile: str = "Dockerfile"
    tag: str = ""  # one more local tag (caicloud.yml's build)
    name: str = ""  # the image's name in ``${{ images.NAME }}`` ("": the step's name)
    args: dict[str, str] = field(default_factory=dict)
    target: str = ""
    tags: tuple[str, ...] = ()  # full references: registry/repository:tag
    labels: dict[str, str] = field(default_factory=dict)
    push: bool = False


@dataclass(frozen=True)
class PromoteSpec:
    """An already built and pushed image (by digest) tagged and pushed again elsewhere,
    without a rebuild: the digest stays the same."""

    image: str  # usually ``${{ images.NAME }}``
    tags: tuple[str, ...]
    name: str = ""  # the promoted image's name in ``${{ images.NAME }}`` ("": the step's)


@dataclass(frozen=True)
class DockerTarget:
    """``deploy: {docker: ...}``: a named container on a Docker host replaced by one of
    the new image; rolled back to the image it had when it does not become healthy."""

    container: str
    image: str
    ports: tuple[str, ...] = ()  # [HOST_IP:]HOST_PORT:CONTAINER_PORT[/PROTO]
    env: dict[str, str] = field(default_factory=dict)
    network: str = ""  # "": Docker's default bridge
    restart: str = "unless-stopped"
    command: tuple[str, ...] = ()
    healthcheck: str = ""  # a shell command (CMD-SHELL); "": the image's own, if any
    health_timeout_s: float = 60.0
    host: str = ""  # the Docker daemon's URL; "": the worker's own


@dataclass(frozen=True)
class KubernetesTarget:
    """``deploy: {kubernetes: ...}``: a Deployment's containers set to the new image through
    the Kubernetes API, the rollout awaited and undone when it fails. The API server, the
    token and the CA come from the named secrets."""

    deployment: str
    image: str
    namespace: str = "default"
    containers: tuple[str, ...] = ()  # (): every container of the pod template
    timeout_s: float = 300.0
    server_secret: str = "KUBE_SERVER"
    token_secret: str = "KUBE_TOKEN"
    ca_secret: str = "KUBE_CA"  # PEM; a secret that is not set: the system's CAs


@dataclass(frozen=True)
class DeploySpec:
    """One of ``docker`` or ``kubernetes``."""

    docker: DockerTarget | None = None
    kubernetes: KubernetesTarget | None = None

    @property
    def target(self) -> DockerTarget | KubernetesTarget:
        target = self.docker or self.kubernetes
        assert target is not None, "lint gives a deploy exactly one target"
        return target

    @property
    def where(self) -> str:
        """The target, named as the deployment history shows it."""
        if self.docker is not None:
            return f"docker:{self.docker.host or 'worker'}/{self.docker.container}"
        assert self.kubernetes is not None
        return f"kubernetes:{self.kubernetes.namespace}/{self.kubernetes.deployment}"


@dataclass(frozen=True)
class ApprovalSpec:
    """``approval:`` on a job: it waits, before it is queued, until a user with ``role``
    in the project approves (or rejects) it; after ``timeout_s`` it is rejected."""

    role: str = "maintainer"
    timeout_s: float | None = None


@dataclass(frozen=True)
class ArtifactsSpec:
    """``artifacts:`` on a job: the workspace files ``paths`` (globs, ``**`` for any depth,
    relative to the workspace) stored after its steps as one artifact ``name``; jobs that
    ``need`` it get them extracted into their workspace, on any worker."""

    paths: tuple[str, ...]
    name: str = ""  # "": the job's name
    when: str = "success"  # "success" | "failure" | "always": after which job outcome


@dataclass(frozen=True)
class CacheSpec:
    """``cache:`` on a job: ``paths`` restored before its steps from the project's entry
    under ``key`` (else the newest whose key starts with one of ``restore_keys``, in
    order), and saved under ``key`` after a success when the project has no such entry.
    ``key`` may hold ``${{ hashFiles('glob', ...) }}``, expanded by the worker."""

    key: str
    paths: tuple[str, ...]
    restore_keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReportsSpec:
    """``reports:`` on a job: JUnit XML files (globs) read after its steps, whatever
    their outcome."""

    junit: tuple[str, ...] = ()


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
    promote: PromoteSpec | None = None  # set: this step re-tags and pushes an image
    deploy: DeploySpec | None = None  # set: this step deploys an image
    # The secrets (project's or global) the step is given as env variables: its job's
    # ``secrets:`` and its own. Recorded only when there are some.
    secrets: tuple[str, ...] = ()
    privileged: bool = False  # lint lets only a trusted project's pipeline ask
    volumes: tuple[str, ...] = ()  # SOURCE:TARGET[:MODE]; trusted projects only
    # An absolute path where the workspace is mounted too, the step's working directory
    # (caicloud.yml's ``volumes: [".:/go/src/app"]``); "": the workspace's own path.
    workdir: str = ""


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
    environment: str = ""  # where its deploy steps deploy to (its deployment history)
    approval: ApprovalSpec | None = None
    artifacts: ArtifactsSpec | None = None
    caches: tuple[CacheSpec, ...] = ()  # ``cache:`` (one, or a list)
    reports: ReportsSpec | None = None
    runs_on: tuple[str, ...] = ()  # the worker labels it needs (``runs-on:``), sorted


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
    registries: tuple[RegistryLogin, ...] = ()  # the file's ``registries:``

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
        _drop_defaults(data, "max_resources", "registries")
        for job in data["jobs"]:
            _drop_defaults(job, "resources", "environment", "approval", "artifacts",
                           "caches", "reports", "runs_on")
            _drop_when_defaults(job["when"])
            for part in (*job["steps"], *job["services"]):
                _drop_defaults(part, "privileged", "volumes")
            for step in job["steps"]:
                _drop_defaults(step, "promote", "deploy", "workdir")
                _drop_when_defaults(step["when"])
                if step["build"]:
                    _drop_defaults(step["build"], "name", "args", "target", "tags", "labels",
                                   "push")
        return data

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Plan:
        return cls(source_file=data["source_file"], jobs=tuple(_job(j) for j in data["jobs"]),
                   triggers=Triggers.from_data(data.get("triggers")),
                   notify=rules_from_data(data.get("notify")),
                   max_resources=Resources.from_data(data.get("max_resources")),
                   registries=tuple(RegistryLogin(**r) for r in data.get("registries", ())))


def _drop_defaults(data: dict[str, Any], *keys: str) -> None:
    """Leave out each of ``keys`` whose value is empty or false (resources: all None)."""
    for key in keys:
        value = data[key]
        if not value or (isinstance(value, dict) and all(v is None for v in value.values())):
            del data[key]
        elif isinstance(value, dict):
            data[key] = {k: v for k, v in value.items() if v is not None}


def _drop_when_defaults(when: dict[str, Any]) -> None:
    if not when["outputs"]:
        del when["outputs"]  # a plan without output conditions is recorded as before


def _when(d: dict[str, Any]) -> When:
    return When(
        branches=tuple(d.get("branches", ())),
        events=tuple(d.get("events", ())),
        status=tuple(d.get("status", (STATUS_SUCCESS,))),
        outputs=tuple((str(k), str(v)) for k, v in d.get("outputs", ())),
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
        build=_build(build) if build else None,
        promote=_promote(d["promote"]) if d.get("promote") else None,
        deploy=_deploy(d["deploy"]) if d.get("deploy") else None,
        secrets=tuple(d.get("secrets", ())),
        privileged=bool(d.get("privileged", False)),
        volumes=tuple(d.get("volumes", ())),
        workdir=str(d.get("workdir", "")),
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
        environment=str(d.get("environment", "")),
        approval=ApprovalSpec(**d["approval"]) if d.get("approval") else None,
        artifacts=_artifacts(d["artifacts"]) if d.get("artifacts") else None,
        caches=tuple(CacheSpec(key=c["key"], paths=tuple(c["paths"]),
                               restore_keys=tuple(c.get("restore_keys", ())))
                     for c in d.get("caches", ())),
        reports=ReportsSpec(junit=tuple(d["reports"].get("junit", ()))) if d.get("reports")
        else None,
        runs_on=tuple(d.get("runs_on", ())),
    )


def _artifacts(d: dict[str, Any]) -> ArtifactsSpec:
    return ArtifactsSpec(paths=tuple(d["paths"]), name=str(d.get("name", "")),
                         when=str(d.get("when", "success")))


def _build(d: dict[str, Any]) -> BuildSpec:
    return BuildSpec(**{**d, "args": dict(d.get("args", {})), "tags": tuple(d.get("tags", ())),
                        "labels": dict(d.get("labels", {}))})


def _promote(d: dict[str, Any]) -> PromoteSpec:
    return PromoteSpec(image=d["image"], tags=tuple(d["tags"]), name=d.get("name", ""))


def _deploy(d: dict[str, Any]) -> DeploySpec:
    docker, kube = d.get("docker"), d.get("kubernetes")
    return DeploySpec(
        docker=DockerTarget(**{**docker, "ports": tuple(docker.get("ports", ())),
                               "env": dict(docker.get("env", {})),
                               "command": tuple(docker.get("command", ()))}) if docker else None,
        kubernetes=KubernetesTarget(**{**kube, "containers": tuple(kube.get("containers", ()))})
        if kube else None)
