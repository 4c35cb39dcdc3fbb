"""The commit status request of each forge's documented API, as plain values (no I/O).

* GitHub: ``POST {api}/repos/{owner}/{repo}/statuses/{sha}`` with
  ``Authorization: Bearer``, ``Accept: application/vnd.github+json`` and
  ``X-GitHub-Api-Version: 2022-11-28``; body ``state`` (pending, success, failure,
  error), ``target_url``, ``description``, ``context``.
* Gitea / Forgejo: the same path and body under their ``/api/v1``, with
  ``Authorization: token ...``.
* GitLab: ``POST {api}/projects/{id}/statuses/{sha}``, ``id`` a number or the
  URL-encoded ``group/project``, with ``PRIVATE-TOKEN``; body ``state`` (pending,
  running, success, failed, canceled), ``target_url``, ``description``, ``name``.

``status_request`` turns one moment of a run into that request; the reporter only
sends it. The token lives in the headers only, never in the URL or body.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import quote

from shared import events as ev
from shared.projections.projects import ForgeSettings

__all__ = ["CONTEXT", "MOMENTS", "Moment", "StatusRequest", "status_request"]

CONTEXT = "cyclone"  # the label that tells Cyclone's status apart from other systems'
_DESCRIPTION_MAX = 140  # GitHub's documented limit; the shortest of the three


@dataclass(frozen=True)
class Moment:
    """A run event worth a commit status: the state Cyclone records (GitHub's and
    Gitea's word), the state GitLab is sent, and what the description says."""

    state: str
    gitlab_state: str
    says: str


# A run starts when it is planned: RunPlanned comes once per run, after its checkout
# resolved the commit (RunSourceResolved); JobStarted comes once per job and attempt.
# GitLab has "running" for a started pipeline; it has no "error": an errored run is a
# failed pipeline there, a cancelled one "canceled" (GitHub and Gitea: "error").
MOMENTS: dict[str, Moment] = {
    ev.RunPlanned.TYPE: Moment("pending", "running", "running"),
    ev.RunSucceeded.TYPE: Moment("success", "success", "succeeded"),
    ev.RunFailed.TYPE: Moment("failure", "failed", "failed"),
    ev.RunErrored.TYPE: Moment("error", "failed", "errored"),
    ev.RunCancelled.TYPE: Moment("error", "canceled", "cancelled"),
}


@dataclass(frozen=True)
class StatusRequest:
    url: str  # already percent-encoded: send it as is
    headers: dict[str, str] = field(repr=False)  # holds the token
    body: dict[str, str]
    forge_state: str


def status_request(forge: ForgeSettings, sha: str, moment: Moment, target_url: str,
                   run_id: str, reason: str = "") -> StatusRequest:
    """The request that tells ``forge`` about ``moment`` of run ``run_id`` at ``sha``."""
    description = f"Cyclone run {run_id} {moment.says}" + (f": {reason}" if reason else "")
    if len(description) > _DESCRIPTION_MAX:
        description = description[:_DESCRIPTION_MAX - 1] + "…"
    api = forge.api_url.rstrip("/")
    headers = {"User-Agent": "Cyclone-CI", "Content-Type": "application/json"}
    if forge.kind == "gitlab":
        project = quote(forge.repo, safe="")  # "group/name" -> "group%2Fname"
        return StatusRequest(
            url=f"{api}/projects/{project}/statuses/{sha}",
            headers={**headers, "PRIVATE-TOKEN": forge.token},
            body={"state": moment.gitlab_state, "target_url": target_url,
                  "description": description, "name": CONTEXT},
            forge_state=moment.gitlab_state)
    owner, _, name = forge.repo.partition("/")
    url = f"{api}/repos/{quote(owner, safe='')}/{quote(name, safe='')}/statuses/{sha}"
    if forge.kind == "github":
        headers |= {"Authorization": f"Bearer {forge.token}",
                    "Accept": "application/vnd.github+json",
                    "X-GitHub-Api-Version": "2022-11-28"}
    else:  # gitea, forgejo
        headers |= {"Authorization": f"token {forge.token}", "Accept": "application/json"}
    body = {"state": moment.state, "target_url": target_url, "description": description,
            "context": CONTEXT}
    return StatusRequest(url=url, headers=headers, body=body, forge_state=moment.state)
