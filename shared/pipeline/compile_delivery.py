"""The compiler's delivery part: a step's ``build:``, ``promote:`` and ``deploy:`` (linted
models of ``schema_delivery``) into the plan's specs. ``sub`` substitutes the job's matrix
values (``${{ matrix.KEY }}``); ``${{ images.NAME }}`` and ``${CYCLONE_*}`` stay as written
for the worker to resolve when the step runs (the digest is not known before)."""

from __future__ import annotations

from collections.abc import Callable

from shared.pipeline.plan import (
    BuildSpec,
    DeploySpec,
    DockerTarget,
    KubernetesTarget,
    PromoteSpec,
)
from shared.pipeline.schema_delivery import BuildModel, DeployModel, PromoteModel

__all__ = ["build_spec", "deploy_spec", "promote_spec"]

Sub = Callable[[str], str]


def build_spec(build: BuildModel, step: str, sub: Sub) -> BuildSpec:
    args = {k: sub(v) for k, v in (build.args or {}).items()}
    return BuildSpec(context_dir=build.context, dockerfile=build.dockerfile,
                     name=build.name or step, args=args,
                     target=build.target or "", tags=tuple(sub(t) for t in build.tags),
                     labels=dict(build.labels or {}), push=build.push)


def promote_spec(promote: PromoteModel, step: str, sub: Sub) -> PromoteSpec:
    return PromoteSpec(image=sub(promote.image), tags=tuple(sub(t) for t in promote.tags),
                       name=promote.name or step)


def deploy_spec(deploy: DeployModel, sub: Sub) -> DeploySpec:
    if deploy.docker is not None:
        d = deploy.docker
        return DeploySpec(docker=DockerTarget(
            container=d.container, image=sub(d.image), ports=tuple(d.ports),
            env={k: sub(v) for k, v in (d.env or {}).items()}, network=d.network or "",
            restart=d.restart, command=tuple(d.command), healthcheck=d.healthcheck or "",
            health_timeout_s=d.health_timeout, host=d.host or ""))
    k = deploy.kubernetes
    assert k is not None, "validated: exactly one target"
    return DeploySpec(kubernetes=KubernetesTarget(
        deployment=k.deployment, image=sub(k.image), namespace=k.namespace,
        containers=tuple(k.containers), timeout_s=k.timeout, server_secret=k.server,
        token_secret=k.token, ca_secret=k.ca or "KUBE_CA"))
