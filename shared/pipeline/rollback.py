"""The pipeline of a rollback run: the deploy step that made an earlier deployment, as it
was written, with the image it deployed then (a digest), in a job of its own.

The API starts such a run for ``cyclone rollback PROJECT ENV``; the file is recorded in
its ``RunRequested``, so the history shows exactly what was redeployed and how.
"""

from __future__ import annotations

from typing import Any

import yaml

from shared.pipeline.plan import DeploySpec, DockerTarget, KubernetesTarget, Plan

__all__ = ["rollback_pipeline"]


def rollback_pipeline(plan: Plan, job: str, step_name: str, environment: str,
                      image: str) -> str:
    """``.cyclone.yml`` text that deploys ``image`` to ``environment`` again as step
    ``step_name`` of ``job`` in ``plan`` did."""
    step = next(s for s in plan.job(job).steps if s.name == step_name)
    assert step.deploy is not None, "a deployment is made by a deploy step"
    data: dict[str, Any] = {}
    if plan.registries:
        data["registries"] = {r.registry: {"username": r.username, "password": r.password_secret}
                              for r in plan.registries}
    data["jobs"] = {"rollback": {"environment": environment, "steps": [
        {"name": "rollback", "deploy": _deploy(step.deploy, image)}]}}
    header = (f"# rollback of {environment} to {image}, as step {step_name!r} of job "
              f"{job!r} deployed it\n")
    return header + yaml.safe_dump(data, sort_keys=False)


def _deploy(spec: DeploySpec, image: str) -> dict[str, Any]:
    if spec.docker is not None:
        return {"docker": _docker(spec.docker, image)}
    assert spec.kubernetes is not None
    return {"kubernetes": _kubernetes(spec.kubernetes, image)}


def _docker(t: DockerTarget, image: str) -> dict[str, Any]:
    out: dict[str, Any] = {"container": t.container, "image": image, "ports": list(t.ports),
                           "env": dict(t.env), "restart": t.restart,
                           "command": list(t.command), "health_timeout": t.health_timeout_s}
    out.update({k: v for k, v in (("network", t.network), ("healthcheck", t.healthcheck),
                                  ("host", t.host)) if v})
    return out


def _kubernetes(t: KubernetesTarget, image: str) -> dict[str, Any]:
    out: dict[str, Any] = {"deployment": t.deployment, "image": image,
                           "namespace": t.namespace, "containers": list(t.containers),
                           "timeout": t.timeout_s, "server": t.server_secret,
                           "token": t.token_secret}
    if t.ca_secret != "KUBE_CA":  # the default is used when set, and may not be
        out["ca"] = t.ca_secret
    return out
