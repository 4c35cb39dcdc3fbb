"""Projects and API tokens as pure folds over their streams.

A project's notification rules (``notify``) are ``shared.pipeline.notify.NotifyRule``s
with source "project"; their chat URLs and webhook keys are secrets, so ``to_json``
shows each rule with ``NotifyRule.to_json`` (a URL's scheme and host, ``secret_set``).
``ProjectUpdated.changes["notify"]`` replaces the whole list, ``["email_templates"]``
the whole set of templates, ``["registry"]`` the registry (``{}``: none) and
``["clusters"]`` every cluster. Those two are the delivery settings a ``caicloud.yml``
relies on; ``policy`` carries them to the linter. ``["retention"]`` replaces the whole
retention rule (``shared.retention``; ``{}``: keep forever).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from shared import events as ev
from shared.events import RecordedEvent, decode
from shared.logging import HIDDEN, secret_variable
from shared.pipeline.notify import NotifyRule, rules_from_data, variables
from shared.pipeline.resources import (
    ClusterSetting,
    Policy,
    RegistrySetting,
    Resources,
    clusters_from_data,
)
from shared.retention import Retention

__all__ = [
    "FORGE_API_URLS",
    "FORGE_KINDS",
    "FORK_PRS",
    "PROJECT_FIELDS",
    "TOKENS_STREAM",
    "ForgeSettings",
    "ForkRule",
    "ProjectView",
    "TokenView",
    "fold_project",
    "fold_tokens",
    "project_stream",
]

TOKENS_STREAM = "tokens"
PROJECT_FIELDS = ("repo", "default_branch", "pipeline_file", "env", "max_concurrent_runs",
                  "forge", "hook_secret", "auto_cancel", "schedules", "notify",
                  "email_templates", "trusted", "max_resources", "fork_prs", "registry",
                  "clusters", "retention", "cache_limit_mb")
# What a pull request from a fork does: waits for a maintainer's approval (then runs
# without secrets unless the approver says otherwise), runs without secrets, or nothing.
FORK_PRS = ("approve", "run-without-secrets", "never")
FORGE_KINDS = ("github", "gitlab", "gitea")
# The API root of each forge's hosted service; a Gitea/Forgejo is always self-hosted.
FORGE_API_URLS = {"github": "https://api.github.com", "gitlab": "https://gitlab.com/api/v4"}


def project_stream(name: str) -> str:
    return f"project-{name}"


@dataclass(frozen=True)
class ForgeSettings:
    """Where the project's commit statuses go. ``token`` is a secret: it is kept out of
    ``repr`` and of ``to_json`` (what the API shows), and only ``to_data`` (what the
    project's events store) has it."""

    kind: str  # github, gitlab, gitea
    api_url: str  # e.g. https://api.github.com, https://gitlab.example/api/v4
    repo: str  # owner/name; on GitLab also a numeric project id
    token: str = field(repr=False)

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> ForgeSettings | None:
        """The settings an event recorded; ``None`` for none (``{}``)."""
        if not data:
            return None
        kind = str(data.get("kind", ""))
        api_url = str(data.get("api_url") or FORGE_API_URLS.get(kind, ""))
        return cls(kind=kind, api_url=api_url, repo=str(data.get("repo", "")),
                   token=str(data.get("token", "")))

    def to_data(self) -> dict[str, str]:
        return {"kind": self.kind, "api_url": self.api_url, "repo": self.repo,
                "token": self.token}

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "api_url": self.api_url, "repo": self.repo,
                "token_set": bool(self.token)}


@dataclass(frozen=True)
class ForkRule:
    """What happens to a run a webhook asks for (``ProjectView.fork_rule``): ``ignored``,
    why none is started; ``approval``, why it waits for one; ``withheld``, why its steps
    get no secret (kept after an approval that does not give them). "" for none."""

    ignored: str = ""
    approval: str = ""
    withheld: str = ""


@dataclass(frozen=True)
class ProjectView:
    name: str
    repo: str = ""
    default_branch: str = "main"
    pipeline_file: str = ".cyclone.yml"
    env: dict[str, str] = field(default_factory=dict)
    max_concurrent_runs: int = 0
    forge: ForgeSettings | None = None
    hook_secret: str = field(default="", repr=False)  # a secret: never in to_json
    auto_cancel: bool = True
    schedules: tuple[str, ...] = ()  # cron lines (UTC) set on the project; its file may add more
    notify: tuple[NotifyRule, ...] = ()  # source "project"; the file may add more
    email_templates: dict[str, str] = field(default_factory=dict)  # subject, text, html
    trusted: bool = False  # privileged containers and host volumes allowed (an admin's call)
    max_resources: Resources = field(default_factory=Resources)  # what a job may ask at most
    fork_prs: str = "approve"  # one of FORK_PRS
    registry: RegistrySetting | None = None  # where a caicloud.yml's build pushes
    clusters: dict[str, ClusterSetting] = field(default_factory=dict)  # its deploys' targets
    retention: Retention = field(default_factory=Retention)  # its runs' logs and artifacts
    cache_limit_mb: int = 0  # its cache entries together (0: CYCLONE_CACHE_MAX_MB)
    created_at: str = ""
    updated_at: str = ""
    deleted: bool = False
    last_seq: int = 0

    def to_json(self) -> dict[str, Any]:
        """What the API shows: never the forge token, the webhook secret, a chat URL's path
        nor a notification webhook's key (only whether one is set)."""
        data = dataclasses.asdict(self)
        for internal in ("deleted", "last_seq", "hook_secret"):
            data.pop(internal)
        data["hook_secret_set"] = bool(self.hook_secret)
        data["forge"] = self.forge.to_json() if self.forge else None
        data["schedules"] = list(self.schedules)
        data["notify"] = [rule.to_json() for rule in self.notify]
        data["env"] = {name: HIDDEN if name in self.secret_env() else value
                       for name, value in self.env.items()}
        data["max_resources"] = self.max_resources.to_json()
        data["retention"] = self.retention.to_data()
        return data

    @property
    def policy(self) -> Policy:
        """What this project's pipelines may ask of the Docker host, and its delivery
        settings."""
        return Policy(trusted=self.trusted, max_resources=self.max_resources, project=self.name,
                      registry=self.registry, clusters=dict(self.clusters))

    def run_requested(self, *, trigger: str, branch: str, requested_by: str, commit: str = "",
                      params: Mapping[str, str] | None = None,
                      forge_event: Mapping[str, Any] | None = None) -> ev.RunRequested:
        """The request of a run of this project's repository (a worker checks out
        ``commit``, else ``branch``, and reads the project's pipeline file there), with the
        project's env under ``params``; a pull request from a fork as ``fork_prs`` says."""
        fork = self.fork_rule(forge_event or {})
        return ev.RunRequested(
            project=self.name, trigger=trigger, branch=branch, commit=commit,
            pipeline_file=self.pipeline_file, pipeline="", source=self.repo,
            params={**self.env, **(params or {})}, requested_by=requested_by,
            source_kind="git", forge_event=dict(forge_event or {}),
            approval=fork.approval, secrets_withheld=fork.withheld)

    def fork_rule(self, forge_event: Mapping[str, Any]) -> ForkRule:
        """What ``fork_prs`` makes of a webhook's event: only a pull request whose head is
        in another repository than the project's is held back."""
        if forge_event.get("kind") != "pull_request" or not forge_event.get("fork"):
            return ForkRule()
        what = f"pull request #{forge_event.get('pr_number', 0)} from a fork"
        if self.fork_prs == "never":
            return ForkRule(ignored=f"{what}: the project's fork_prs is never")
        if self.fork_prs == "run-without-secrets":
            return ForkRule(withheld=what)
        return ForkRule(approval=f"{what}: a maintainer must approve it (cyclone approve)",
                        withheld=what)

    def secret_env(self) -> set[str]:
        """The env variables the API shows as ``***``: named like secrets, or used by a
        notification channel (``${NAME}``: chat URLs carry their token)."""
        used = variables(self.notify)
        return {name for name in self.env if secret_variable(name) or name in used}


def fold_project(events: Iterable[RecordedEvent],
                 view: ProjectView | None = None) -> ProjectView | None:
    """The project as its stream says (after ``view``, the fold of the events before
    ``events``); a deleted one is returned with ``deleted=True``."""
    for recorded in events:
        event = decode(recorded)
        if isinstance(event, ev.ProjectRegistered):
            view = ProjectView(name=event.name, repo=event.repo,
                               default_branch=event.default_branch,
                               pipeline_file=event.pipeline_file, env=dict(event.env),
                               max_concurrent_runs=event.max_concurrent_runs,
                               forge=ForgeSettings.from_data(event.forge),
                               hook_secret=event.hook_secret, auto_cancel=event.auto_cancel,
                               schedules=tuple(event.schedules),
                               notify=rules_from_data(event.notify),
                               email_templates=dict(event.email_templates),
                               trusted=event.trusted, fork_prs=event.fork_prs,
                               max_resources=Resources.from_data(event.max_resources),
                               registry=RegistrySetting.from_data(event.registry),
                               clusters=clusters_from_data(event.clusters),
                               retention=Retention.from_data(event.retention),
                               cache_limit_mb=event.cache_limit_mb,
                               created_at=recorded.ts, updated_at=recorded.ts)
        elif isinstance(event, ev.ProjectUpdated) and view is not None:
            known = {k: v for k, v in event.changes.items() if k in PROJECT_FIELDS}
            if "forge" in known:  # the whole block, or {} for "no forge any more"
                known["forge"] = ForgeSettings.from_data(dict(known["forge"] or {}))
            if "schedules" in known:
                known["schedules"] = tuple(known["schedules"] or ())
            if "notify" in known:
                known["notify"] = rules_from_data(known["notify"])
            if "email_templates" in known:
                known["email_templates"] = dict(known["email_templates"] or {})
            if "max_resources" in known:
                known["max_resources"] = Resources.from_data(known["max_resources"])
            if "registry" in known:
                known["registry"] = RegistrySetting.from_data(known["registry"])
            if "clusters" in known:
                known["clusters"] = clusters_from_data(known["clusters"])
            if "retention" in known:
                known["retention"] = Retention.from_data(known["retention"])
            view = replace(view, updated_at=recorded.ts, **known)
        elif isinstance(event, ev.ProjectDeleted) and view is not None:
            view = replace(view, deleted=True, updated_at=recorded.ts)
        if view is not None:
            view = replace(view, last_seq=recorded.seq)
    return view


@dataclass(frozen=True)
class TokenView:
    id: str
    name: str
    token_hash: str
    admin: bool
    created_at: str
    user: str = ""  # "" for a token of no user (made before users existed)
    read_only: bool = False
    session: bool = False  # a browser session: ends at ``expires_at``, writes need CSRF
    expires_at: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "admin": self.admin, "user": self.user,
                "read_only": self.read_only, "created_at": self.created_at}


def fold_tokens(events: Iterable[RecordedEvent],
                tokens: Mapping[str, TokenView] | None = None) -> dict[str, TokenView]:
    """Live tokens by id (after ``tokens``, the fold of the events before ``events``)."""
    tokens = dict(tokens or {})
    for recorded in events:
        event = decode(recorded)
        if isinstance(event, ev.TokenCreated):
            tokens[event.token_id] = TokenView(
                id=event.token_id, name=event.name, token_hash=event.token_hash,
                admin=event.admin, created_at=recorded.ts, user=event.user,
                read_only=event.read_only, session=event.session, expires_at=event.expires_at)
        elif isinstance(event, ev.TokenRevoked):
            tokens.pop(event.token_id, None)
    return tokens
