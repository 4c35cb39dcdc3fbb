"""The worker's part of delivery: what a job's plan says, made concrete when it runs.

* ``${{ images.NAME }}`` becomes the image pushed under that name, pinned to its digest
  (``repository@sha256:...``): by a job this one needs (the run's view when the job
  started) or by an earlier step of this job (``JobImages``);
* a build's and a promote's tags get ``${CYCLONE_COMMIT}``, ``${CYCLONE_SHORT_SHA}``,
  ``${CYCLONE_BRANCH}``, ``${CYCLONE_TAG}``, ``${CYCLONE_RUN_ID}`` and
  ``${CYCLONE_PROJECT}`` (made fit for a tag: ``feature/x`` -> ``feature-x``), and a
  build the OCI labels ``org.opencontainers.image.revision`` / ``source``;
* registry logins (the file's ``registries:``) and a Kubernetes deploy's secrets are
  read from the job's secrets, never from a step's env;
* a deploy step runs through the ``Deployer`` and is recorded as ``DeploymentStarted``
  then ``DeploymentSucceeded`` / ``RolledBack`` / ``Failed``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

from services.workermanager.secrets import JobSecrets
from shared import events as ev
from shared.pipeline.lint_delivery import IMAGE_REF
from shared.pipeline.plan import (
    BuildSpec,
    DeploySpec,
    DockerTarget,
    JobSpec,
    KubernetesTarget,
    Plan,
    PromoteSpec,
    StepSpec,
)
from shared.ports.deployer import DeployOutcome, DeployStatus
from shared.ports.executor import PushedImage, Registries, RegistryAuth
from shared.projections.runs import RunView

__all__ = ["DeliveryError", "JobImages", "deploy_events", "deploy_secrets", "expand_tags",
           "image_pushed", "registries_for", "tag_variables"]

_VARIABLE = re.compile(r"\$\{(?!\{)([A-Z_]+)\}")
_NOT_IN_TAG = re.compile(r"[^A-Za-z0-9_.-]")
OCI_REVISION = "org.opencontainers.image.revision"
OCI_SOURCE = "org.opencontainers.image.source"


class DeliveryError(Exception):
    """What makes a delivery step fail before it starts (the message is for the log)."""


class JobImages:
    """The images a job may use: the run's, then what this job's own steps push."""

    def __init__(self, run: RunView) -> None:
        self._refs = {image.name: image.reference for image in run.images}

    def add(self, pushed: PushedImage) -> None:
        self._refs[pushed.name] = pushed.reference

    def resolve(self, text: str) -> str:
        def ref(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in self._refs:  # lint makes sure a needed job pushed it
                raise DeliveryError(f"image '{name}' was not pushed (its build step did not "
                                    "run or did not push)")
            return self._refs[name]
        return IMAGE_REF.sub(ref, text)

    def job(self, job: JobSpec) -> JobSpec:
        """The job's own image, env and services' images resolved (steps: ``step``)."""
        return dataclasses.replace(
            job, image=self.resolve(job.image),
            env={k: self.resolve(v) for k, v in job.env.items()},
            services=tuple(dataclasses.replace(s, image=self.resolve(s.image))
                           for s in job.services))

    def step(self, step: StepSpec) -> StepSpec:
        return dataclasses.replace(
            step, image=self.resolve(step.image),
            commands=tuple(self.resolve(c) for c in step.commands),
            env={k: self.resolve(v) for k, v in step.env.items()},
            promote=self._promote(step.promote), deploy=self._deploy(step.deploy))

    def _promote(self, promote: PromoteSpec | None) -> PromoteSpec | None:
        return None if promote is None else dataclasses.replace(
            promote, image=self.resolve(promote.image))

    def _deploy(self, deploy: DeploySpec | None) -> DeploySpec | None:
        if deploy is None:
            return None
        if deploy.docker is not None:
            return DeploySpec(docker=dataclasses.replace(
                deploy.docker, image=self.resolve(deploy.docker.image),
                env={k: self.resolve(v) for k, v in deploy.docker.env.items()}))
        assert deploy.kubernetes is not None
        return DeploySpec(kubernetes=dataclasses.replace(
            deploy.kubernetes, image=self.resolve(deploy.kubernetes.image)))


def tag_variables(run: RunView) -> dict[str, str]:
    """The values a tag may use, each made fit for a tag."""
    tag = str(run.forge_event.get("tag", "")) if run.forge_event else ""
    raw = {"CYCLONE_COMMIT": run.commit, "CYCLONE_SHORT_SHA": run.commit[:8],
           "CYCLONE_BRANCH": run.branch if run.trigger != "tag" else "",
           "CYCLONE_TAG": tag or (run.branch if run.trigger == "tag" else ""),
           "CYCLONE_RUN_ID": run.id, "CYCLONE_PROJECT": run.project}
    return {k: _NOT_IN_TAG.sub("-", v).lstrip(".-")[:128] for k, v in raw.items()}


def expand_tags(step: StepSpec, run: RunView) -> StepSpec:
    """A build's or promote's tags with their variables given; a build's OCI labels."""
    values = tag_variables(run)
    if step.build is not None:
        labels = {OCI_REVISION: run.commit, **({OCI_SOURCE: run.source}
                                               if run.source_kind == "git" else {})}
        build: BuildSpec = dataclasses.replace(
            step.build, tags=_expanded(step.build.tags, values),
            labels={**labels, **step.build.labels},
            args={k: _substitute(v, values) for k, v in step.build.args.items()})
        return dataclasses.replace(step, build=build)
    if step.promote is not None:
        promote = dataclasses.replace(step.promote, tags=_expanded(step.promote.tags, values))
        return dataclasses.replace(step, promote=promote)
    return step


def _expanded(tags: tuple[str, ...], values: Mapping[str, str]) -> tuple[str, ...]:
    out = []
    for tag in tags:
        expanded = _substitute(tag, values)
        repository, _, name = expanded.rpartition(":")
        if "/" in name or not repository:  # no tag: Docker's "latest"
            repository, name = expanded, "latest"
        if not name:
            empty = [v for v in _VARIABLE.findall(tag) if not values.get(v)]
            raise DeliveryError(f"tag {tag!r} is empty once {', '.join(empty) or 'expanded'} "
                                "is given (it has no value in this run)")
        out.append(f"{repository.lower()}:{name}")
    return tuple(out)


def _substitute(text: str, values: Mapping[str, str]) -> str:
    return _VARIABLE.sub(lambda m: values.get(m.group(1), m.group(0)), text)


def registries_for(plan: Plan, secrets: JobSecrets) -> Registries:
    """The logins of the file's ``registries:`` whose password secret the job can read."""
    if secrets.withheld:
        return {}
    return {login.registry: RegistryAuth(login.username, secrets.values[login.password_secret])
            for login in plan.registries if login.password_secret in secrets.values}


def deploy_secrets(target: DockerTarget | KubernetesTarget,
                   secrets: JobSecrets) -> dict[str, str]:
    """The secrets a deploy target names (Kubernetes: server, token, CA)."""
    if not isinstance(target, KubernetesTarget) or secrets.withheld:
        return {}
    names = (target.server_secret, target.token_secret, target.ca_secret)
    return {name: secrets.values[name] for name in names if name in secrets.values}


def image_pushed(job: str, step: StepSpec, pushed: PushedImage) -> ev.ImagePushed:
    source = step.promote.image if step.promote is not None else ""
    return ev.ImagePushed(job=job, step=step.name, name=pushed.name,
                          repository=pushed.repository, tags=pushed.tags,
                          digest=pushed.digest, promoted_from=source)


def deploy_events(job: JobSpec, step: StepSpec, outcome: DeployOutcome) -> ev.Event:
    """The event that records how a deployment ended."""
    assert step.deploy is not None
    target, image = step.deploy.where, step.deploy.target.image
    common = {"job": job.name, "step": step.name, "environment": job.environment,
              "target": target, "image": image}
    if outcome.status == DeployStatus.SUCCEEDED:
        return ev.DeploymentSucceeded(**common, previous=outcome.previous)
    if outcome.status == DeployStatus.ROLLED_BACK:
        return ev.DeploymentRolledBack(**common, previous=outcome.previous,
                                       reason=outcome.reason)
    return ev.DeploymentFailed(**common, reason=outcome.reason)

