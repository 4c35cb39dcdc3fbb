"""What a run delivered, as parts of its ``RunView``: the images it pushed (``ImageView``)
and the deployments it made (``DeploymentView``); and the deployment history of a
project's environments, folded from its runs' views (``history``).

Frozen dataclasses of plain values, as the rest of the run view, so a view rebuilt
from the store equals the live one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = ["DeploymentState", "DeploymentView", "EnvironmentDeployment", "ImageView", "history"]


class DeploymentState(StrEnum):
    STARTED = "started"
    SUCCEEDED = "succeeded"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"


@dataclass(frozen=True)
class ImageView:
    name: str  # as in ``${{ images.NAME }}``
    repository: str
    tags: tuple[str, ...]
    digest: str
    job: str
    step: str
    promoted_from: str = ""
    pushed_at: str = ""

    @property
    def reference(self) -> str:
        return f"{self.repository}@{self.digest}"

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> ImageView:
        return cls(**{**data, "tags": tuple(data.get("tags", ()))})


@dataclass(frozen=True)
class DeploymentView:
    job: str
    step: str
    environment: str
    target: str
    image: str
    state: DeploymentState = DeploymentState.STARTED
    previous: str = ""
    reason: str = ""
    approved_by: str = ""
    started_at: str = ""
    finished_at: str = ""

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> DeploymentView:
        return cls(**{**data, "state": DeploymentState(data.get("state", "started"))})


@dataclass(frozen=True)
class EnvironmentDeployment:
    """One entry of an environment's history: a deployment and the run that made it."""

    deployment: DeploymentView
    run_id: str
    project: str
    commit: str
    branch: str
    requested_by: str

    def to_json(self) -> dict[str, Any]:
        d = self.deployment
        return {"run": self.run_id, "project": self.project, "commit": self.commit,
                "branch": self.branch, "environment": d.environment, "target": d.target,
                "image": d.image, "state": d.state, "previous": d.previous, "reason": d.reason,
                "approved_by": d.approved_by, "requested_by": self.requested_by,
                "job": d.job, "step": d.step, "started_at": d.started_at,
                "finished_at": d.finished_at}


def history(entries: Iterable[EnvironmentDeployment],
            environment: str | None = None) -> list[EnvironmentDeployment]:
    """The deployments of one environment (all: None), newest first."""
    chosen = [e for e in entries
              if environment is None or e.deployment.environment == environment]
    return sorted(chosen, key=lambda e: e.deployment.started_at, reverse=True)
