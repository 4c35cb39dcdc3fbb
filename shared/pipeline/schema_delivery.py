"""The delivery keys of ``.cyclone.yml`` as pydantic models (the rest is in ``schema``):

* top level ``registries:`` — registry host -> ``{username, password}``, ``password``
  naming the secret that holds it;
* step kinds besides ``run:`` — ``build:`` (an image from the workspace, tagged and
  pushed), ``promote:`` (a pushed image re-tagged elsewhere), ``deploy:`` (``docker:``
  or ``kubernetes:``);
* on a job, ``environment:`` and ``approval:``.

Loaded at the end of ``schema``, whose step and job models refer to these (this module
uses ``schema``'s lenient types, so it cannot be imported before them).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, model_validator
from pydantic_core import PydanticCustomError

from shared.pipeline.schema import (
    Command,
    Duration,
    EnvMap,
    NonEmpty,
    StrList,
    _choice,
    _Model,
    _secret_name,
)

__all__ = ["APPROVER_ROLES", "ENVIRONMENT_NAME", "ApprovalModel", "BuildModel", "DeployModel",
           "DockerDeployModel", "KubernetesDeployModel", "PromoteModel", "RegistryModel"]

ENVIRONMENT_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
APPROVER_ROLES = ("developer", "maintainer")
# [IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp], as ``docker run -p`` takes it (ports, not ranges)
_PORT = re.compile(r"((\d{1,3}(\.\d{1,3}){3}):)?(\d{1,5}):(\d{1,5})(/(tcp|udp))?")
_RESTART = ("no", "always", "unless-stopped", "on-failure")
SecretName = Annotated[str, AfterValidator(_secret_name)]


def _environment(value: str) -> str:
    if not ENVIRONMENT_NAME.fullmatch(value):
        raise PydanticCustomError("environment", "invalid environment name '{value}' (1 to 64 "
                                  "letters, digits, '_', '.' and '-')", {"value": value})
    return value


def _port(value: str) -> str:
    if not _PORT.fullmatch(value):
        raise PydanticCustomError("port", "expected [IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp], "
                                  "got '{value}'", {"value": value})
    return value


def _approval(value: Any) -> Any:
    """``approval: true`` is the default rule; ``false`` none."""
    if value is True:
        return {}
    return None if value is False else value


class RegistryModel(_Model):
    username: Annotated[str, Field(min_length=1)]
    password: SecretName  # the name of the secret that holds the password or token


class BuildModel(_Model):
    name: NonEmpty | None = None  # ``${{ images.NAME }}``; default: the step's name
    context: NonEmpty = "."
    dockerfile: NonEmpty = "Dockerfile"  # relative to the context, as ``docker build -f``
    args: EnvMap | None = None
    target: NonEmpty | None = None
    tags: StrList = []
    labels: EnvMap | None = None
    push: bool = False

    @model_validator(mode="after")
    def _push_needs_tags(self) -> BuildModel:
        if self.push and not self.tags:
            raise PydanticCustomError("push_tags", "push: true needs tags (the references "
                                      "to push, e.g. registry:5000/team/app:${CYCLONE_SHORT_SHA})")
        return self


class PromoteModel(_Model):
    image: NonEmpty  # usually ${{ images.NAME }}: a digest
    tags: Annotated[StrList, Field(min_length=1)]
    name: NonEmpty | None = None


class DockerDeployModel(_Model):
    container: NonEmpty
    image: NonEmpty
    ports: Annotated[list[Annotated[str, AfterValidator(_port)]], BeforeValidator(
        lambda v: v if isinstance(v, list) else [v])] = []
    env: EnvMap | None = None
    network: NonEmpty | None = None
    restart: Annotated[str, _choice(_RESTART, "restart policy")] = "unless-stopped"
    command: Command = []
    healthcheck: NonEmpty | None = None  # a shell command; default: the image's HEALTHCHECK
    health_timeout: Duration = 60.0
    host: NonEmpty | None = None  # a Docker daemon's URL; default: the worker's


class KubernetesDeployModel(_Model):
    deployment: NonEmpty
    image: NonEmpty
    namespace: NonEmpty = "default"
    containers: StrList = []
    timeout: Duration = 300.0
    server: SecretName = "KUBE_SERVER"  # secrets' names
    token: SecretName = "KUBE_TOKEN"
    ca: SecretName | None = None  # PEM of the cluster's CA; default KUBE_CA when it is set


class DeployModel(_Model):
    docker: DockerDeployModel | None = None
    kubernetes: KubernetesDeployModel | None = None

    @property
    def target(self) -> DockerDeployModel | KubernetesDeployModel:
        target = self.docker or self.kubernetes
        assert target is not None, "validated: exactly one"
        return target

    @model_validator(mode="after")
    def _one_target(self) -> DeployModel:
        if (self.docker is None) == (self.kubernetes is None):
            raise PydanticCustomError("deploy_target", "a deploy needs exactly one of: docker, "
                                      "kubernetes")
        return self


class ApprovalModel(_Model):
    role: Annotated[str, _choice(APPROVER_ROLES, "role")] = "maintainer"
    timeout: Duration | None = None


Approval = Annotated[ApprovalModel | None, BeforeValidator(_approval)]
EnvironmentName = Annotated[str, AfterValidator(_environment)]
