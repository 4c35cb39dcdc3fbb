"""Deployer port: puts an image where a deploy step says (a container on a Docker host, a
Kubernetes Deployment), waits until it is up, and undoes it when it does not come up.

Contract (every adapter; ``tests/contracts/deployer.py`` checks it against a real
Docker daemon and a Kubernetes API stand-in):

* ``deploy(target, image, secrets, registries, on_log)`` replaces what runs at ``target`` with
  ``image`` (a reference, usually ``repository@sha256:...``) and waits until the new
  version is healthy, within the target's timeout. The outcome says what happened:

  - ``DeployStatus.SUCCEEDED``: the new image runs and is healthy; ``previous`` is
    the image that ran there before ("" for a first deploy);
  - ``DeployStatus.ROLLED_BACK``: it did not become healthy (``reason`` says how),
    and the previous image runs again;
  - ``DeployStatus.FAILED``: it did not become healthy, and there was nothing to roll
    back to or the rollback failed too (``reason`` says which); or the deploy could
    not be started at all (refused by the target, an image that cannot be pulled).

  Progress goes to ``on_log`` as lines a user reads (what is replaced, the rollout's
  counts, the health check's verdict), never a credential.
* ``secrets`` holds the values of the secrets the target names (Kubernetes: server,
  token, CA), ``registries`` the logins for pulling the image (Docker); a missing
  required secret is a ``FAILED`` outcome naming it, not an exception.
* Raises only ``DeployerUnavailable`` (the target's API cannot be reached at all: the
  step errors and may be retried); every other problem is an outcome.
* Cancelling ``deploy`` (the run was cancelled, the job timed out) stops waiting; what
  was deployed is rolled back before the cancellation goes on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from shared.pipeline.plan import DockerTarget, KubernetesTarget
from shared.ports.executor import LogSink, Registries

__all__ = ["DeployOutcome", "DeployStatus", "Deployer", "Target"]

Target = DockerTarget | KubernetesTarget


class DeployStatus(StrEnum):
    SUCCEEDED = "succeeded"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"


@dataclass(frozen=True)
class DeployOutcome:
    status: DeployStatus
    previous: str = ""  # the image that ran there before ("": nothing did)
    reason: str = ""  # why it was rolled back or failed


class Deployer(Protocol):
    async def deploy(self, target: Target, image: str, secrets: Mapping[str, str],
                     registries: Registries, on_log: LogSink) -> DeployOutcome: ...

    async def close(self) -> None: ...
