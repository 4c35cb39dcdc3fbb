"""Deployer adapters (``shared.ports.deployer``): a container on a Docker host
(``docker_host``) and a Kubernetes Deployment (``kubernetes``); ``Deployers`` is the port
for both, handing each target to its adapter, opened at its first use (a worker that
never deploys to Kubernetes opens no HTTPS session for it)."""

from __future__ import annotations

from collections.abc import Mapping

from shared.adapters.deployer.docker_host import DockerHostDeployer
from shared.adapters.deployer.kubernetes import KubernetesDeployer
from shared.pipeline.plan import DockerTarget
from shared.ports.deployer import Deployer, DeployOutcome, Target
from shared.ports.executor import LogSink, Registries

__all__ = ["Deployers", "DockerHostDeployer", "KubernetesDeployer"]


class Deployers:
    def __init__(self, docker: Deployer | None = None,
                 kubernetes: Deployer | None = None) -> None:
        self._docker = docker
        self._kubernetes = kubernetes

    async def deploy(self, target: Target, image: str, secrets: Mapping[str, str],
                     registries: Registries, on_log: LogSink) -> DeployOutcome:
        return await self._for(target).deploy(target, image, secrets, registries, on_log)

    def _for(self, target: Target) -> Deployer:
        if isinstance(target, DockerTarget):
            if self._docker is None:
                self._docker = DockerHostDeployer()
            return self._docker
        if self._kubernetes is None:
            self._kubernetes = KubernetesDeployer()
        return self._kubernetes

    async def close(self) -> None:
        for adapter in (self._docker, self._kubernetes):
            if adapter is not None:
                await adapter.close()
