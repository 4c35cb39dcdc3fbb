"""Request bodies, validated with pydantic: unknown fields are errors that name the field.

A project's ``notify`` rules are ``shared.pipeline.schema.NotifyRuleModel``, the model the
pipeline file's ``notify:`` is read with (one definition of a rule); ``email_templates``
are Jinja2 sources checked by ``shared.email_templates.check_template``. ``registry`` and
``clusters`` are the delivery settings a ``caicloud.yml`` relies on (its build pushes to
the registry, its deploy entries name clusters); they hold secret names, never values.
``retention`` and ``cache_limit_mb`` are what the project's runs may keep in storage.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from shared import cron
from shared.email_templates import check_template
from shared.pipeline.overrides import syntax_problem
from shared.pipeline.schema import NotifyRuleModel, ResourcesModel
from shared.projections.projects import FORGE_API_URLS
from shared.retention import Retention

__all__ = ["MAX_CLUSTERS", "MAX_RULES", "MAX_SCHEDULES", "ClusterSettingsBody", "EmailTemplates",
           "ForgePatch", "ForgeSettingsBody", "ForkPrs", "GcRequest", "MemberSet", "ProjectCreate",
           "ProjectPatch", "RegistrySettingsBody", "RetentionBody", "RoleName", "RunApprove",
           "RunCreate", "RunRerun", "SessionCreate", "TokenCreate", "UserCreate", "UserPatch",
           "check_cron", "check_ref"]

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SHA = re.compile(r"^[0-9a-f]{7,40}$")
_SEGMENT = r"[A-Za-z0-9_][A-Za-z0-9_.-]*"
_OWNER_NAME = re.compile(rf"^{_SEGMENT}/{_SEGMENT}$")  # GitHub, Gitea: owner/name
_GITLAB_PROJECT = re.compile(rf"^([0-9]+|{_SEGMENT}(/{_SEGMENT})+)$")  # id or group/.../name
# A registry as image references start: host[:port], then lower-case path components.
_REGISTRY_URL = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?"
                           r"(/[a-z0-9]+([._-][a-z0-9]+)*)*$")
_SECRET_REF = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"  # a secret's name (shared.secrets.SECRET_NAME)
_K8S_NAME = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"  # a Kubernetes namespace (DNS label)


def check_ref(ref: str) -> str:
    """Git's rules for a ref name (git check-ref-format), as far as a client can break them."""
    bad = (not ref or ref.startswith(("-", "/")) or ref.endswith(("/", ".", ".lock"))
           or ".." in ref or "//" in ref or "@{" in ref
           or any(c in ref for c in " ~^:?*[\\") or any(ord(c) < 32 or ord(c) == 127
                                                          for c in ref))
    if bad:
        raise ValueError(f"not a valid git ref: {ref!r}")
    return ref


def check_cron(line: str) -> str:
    """A cron line ``shared.cron`` reads, stripped; the error names the line and the field."""
    try:
        cron.parse(line)
    except cron.CronError as exc:
        raise ValueError(f"{line!r}: {exc}") from None
    return line.strip()


MAX_SCHEDULES = 50
# Cron lines of a project, run by the scheduler in UTC: "0 3 * * *", "@hourly", ...
_Schedules = Annotated[list[Annotated[str, Field(max_length=200), AfterValidator(check_cron)]],
                       Field(max_length=MAX_SCHEDULES)]


MAX_RULES = 50
_Rules = Annotated[list[NotifyRuleModel], Field(max_length=MAX_RULES)]


def _check_env(env: dict[str, str]) -> dict[str, str]:
    for key in env:
        if not _ENV_KEY.match(key):
            raise ValueError(f"not a valid environment variable name: {key!r}")
    return env


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


ForgeKind = Literal["github", "gitlab", "gitea"]
ForkPrs = Literal["approve", "run-without-secrets", "never"]  # projections.projects.FORK_PRS
_TokenText = Annotated[str, Field(min_length=1, max_length=4000)]


class _ForgeFields(_Body):
    """Where the project's commit statuses go. ``api_url`` defaults to the hosted
    service's API (GitHub, GitLab); a Gitea or Forgejo needs its own
    (``https://gitea.example/api/v1``). ``repo`` is ``owner/name``; on GitLab also a
    numeric project id or ``group/subgroup/name``."""

    kind: ForgeKind
    api_url: Annotated[str | None, Field(validate_default=True, max_length=2000)] = None
    repo: Annotated[str, Field(min_length=1, max_length=500)]

    @field_validator("api_url")
    @classmethod
    def _api_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        kind = info.data.get("kind")
        if value is None:
            if kind == "gitea":
                raise ValueError("required for a gitea forge (e.g. https://gitea.example/api/v1)")
            return FORGE_API_URLS.get(str(kind))
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {value!r}")
        if parts.username or parts.password or parts.query or parts.fragment:
            # The token goes in a header; a URL is logged and shown, so it holds no secret.
            raise ValueError("no user, password, query or fragment in the URL")
        return value.rstrip("/")

    @field_validator("repo")
    @classmethod
    def _repo(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("kind") == "gitlab":
            if not _GITLAB_PROJECT.match(value):
                raise ValueError(f"expected a project id or group/name, got {value!r}")
        elif not _OWNER_NAME.match(value):
            raise ValueError(f"expected owner/name, got {value!r}")
        return value


class ForgeSettingsBody(_ForgeFields):
    token: Annotated[_TokenText, Field(repr=False)]


class ForgePatch(_ForgeFields):
    """The whole forge block again; ``token`` may be left out to keep the stored one,
    as long as ``kind`` and ``api_url`` stay the same (a token is never sent elsewhere)."""

    token: Annotated[_TokenText | None, Field(repr=False)] = None


class EmailTemplates(_Body):
    """Jinja2 templates (rendered in a sandbox) that replace the shipped notification mail's
    subject, plain text and HTML parts; each left out keeps the shipped one."""

    subject: str | None = None
    text: str | None = None
    html: str | None = None

    @field_validator("subject", "text", "html")
    @classmethod
    def _compiles(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:
            name = str(info.field_name)
            try:
                check_template(name, value)
            except ValueError as exc:  # "html: line 3: ..." -> "line 3: ..." (the path names it)
                raise ValueError(str(exc).removeprefix(f"{name}: ")) from None
        return value

    def to_data(self) -> dict[str, str]:
        return self.model_dump(exclude_none=True)


_SecretRef = Annotated[str, Field(pattern=_SECRET_REF)]


class RegistrySettingsBody(_Body):
    """Where a ``caicloud.yml``'s build pushes its image (``<url>/<project>:<commit>``):
    ``url`` is ``host[:port][/path]`` without a scheme (``registry.example:5000/team``).
    ``username`` and ``password_secret`` (the name of a project secret holding the password
    or token) go together; without them the worker pushes without logging in."""

    url: Annotated[str, Field(min_length=1, max_length=500)]
    username: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    password_secret: _SecretRef | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        value = value.rstrip("/")
        if "://" in value:
            raise ValueError(f"no scheme: write host[:port][/path], got {value!r}")
        if not _REGISTRY_URL.match(value):
            raise ValueError(f"expected host[:port][/path] in lower case, got {value!r}")
        return value

    @model_validator(mode="after")
    def _login(self) -> RegistrySettingsBody:
        if (self.username is None) != (self.password_secret is None):
            raise ValueError("username and password_secret go together (both, or neither "
                             "for a registry that takes pushes without a login)")
        return self

    def to_data(self) -> dict[str, str]:
        return {"url": self.url, "username": self.username or "",
                "password_secret": self.password_secret or ""}


class ClusterSettingsBody(_Body):
    """A Kubernetes cluster a ``caicloud.yml``'s deploy entries name (``cluster:``): the
    names of the project secrets holding its API server URL, a token and the CA (PEM;
    optional: the system's CAs), and the namespace of an entry that names none."""

    server: _SecretRef
    token: _SecretRef
    ca: _SecretRef | None = None
    namespace: Annotated[str, Field(pattern=_K8S_NAME)] = "default"

    def to_data(self) -> dict[str, str]:
        return {"server": self.server, "token": self.token, "ca": self.ca or "",
                "namespace": self.namespace}


class RetentionBody(_Body):
    """How long the project's runs' logs and artifacts are kept (``shared.retention``):
    while a run is one of the last ``runs`` or ended less than ``days`` days ago
    (``failed_days`` for a failed one; default twice ``days``). 0: that rule is off; no
    rule on: kept forever."""

    days: Annotated[int, Field(ge=0, le=36500)] = 0
    runs: Annotated[int, Field(ge=0, le=10_000_000)] = 0
    failed_days: Annotated[int, Field(ge=0, le=36500)] | None = None

    def to_data(self) -> dict[str, int]:
        return Retention(days=self.days, runs=self.runs, failed_days=self.failed_days).to_data()


# A project's cache entries together, in MiB (0: the server's CYCLONE_CACHE_MAX_MB).
_CacheLimit = Annotated[int, Field(ge=0, le=16 * 1024 * 1024)]
MAX_CLUSTERS = 50
# Named as caicloud.yml's deploy entries name them (often a UUID in the original's files).
_Clusters = Annotated[dict[Annotated[str, Field(pattern=_NAME)], ClusterSettingsBody],
                      Field(max_length=MAX_CLUSTERS)]


class ProjectCreate(_Body):
    name: Annotated[str, Field(pattern=_NAME)]
    repo: Annotated[str, Field(min_length=1, max_length=2000)]
    default_branch: str = "main"
    pipeline_file: Annotated[str, Field(min_length=1, max_length=500)] = ".cyclone.yml"
    env: dict[str, str] = {}
    max_concurrent_runs: Annotated[int, Field(ge=0)] = 0
    forge: ForgeSettingsBody | None = None
    hook_secret: Annotated[str, Field(min_length=16, max_length=200)] | None = None
    auto_cancel: bool = True
    schedules: _Schedules = []
    notify: _Rules = []  # rule names unique; ${NAME}s set in env (checked by the handler)
    email_templates: EmailTemplates | None = None
    trusted: bool = False  # admin only: privileged containers, host volumes
    max_resources: ResourcesModel | None = None  # admin only: what a job may ask at most
    fork_prs: ForkPrs = "approve"
    registry: RegistrySettingsBody | None = None  # where a caicloud.yml's build pushes
    clusters: _Clusters = {}  # where its deploy entries deploy
    retention: RetentionBody | None = None  # None: kept forever
    cache_limit_mb: _CacheLimit = 0  # admin only

    _branch = field_validator("default_branch")(check_ref)
    _env = field_validator("env")(_check_env)


class ProjectPatch(_Body):
    repo: Annotated[str, Field(min_length=1, max_length=2000)] | None = None
    default_branch: str | None = None
    pipeline_file: Annotated[str, Field(min_length=1, max_length=500)] | None = None
    env: dict[str, str] | None = None
    max_concurrent_runs: Annotated[int, Field(ge=0)] | None = None
    forge: ForgePatch | None = None  # null: no forge any more
    hook_secret: Annotated[str, Field(min_length=16, max_length=200)] | None = None
    auto_cancel: bool | None = None
    schedules: _Schedules | None = None  # []: no schedule any more
    notify: _Rules | None = None  # the whole list again; []: no rule any more
    email_templates: EmailTemplates | None = None  # all of them again; {}: the shipped ones
    trusted: bool | None = None  # admin only
    max_resources: ResourcesModel | None = None  # admin only; the whole block; {}: no maximum
    fork_prs: ForkPrs | None = None
    registry: RegistrySettingsBody | None = None  # the whole block; null: no registry any more
    clusters: _Clusters | None = None  # every cluster again; {}: none any more
    retention: RetentionBody | None = None  # the whole block; {}: kept forever
    cache_limit_mb: _CacheLimit | None = None  # admin only

    @field_validator("default_branch")
    @classmethod
    def _branch(cls, value: str | None) -> str | None:
        return None if value is None else check_ref(value)

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return None if value is None else _check_env(value)


class RunCreate(_Body):
    ref: str | None = None
    commit: str | None = None
    params: dict[str, str] = {}
    # keys of the pipeline file set for this run, "PATH=VALUE" (``cyclone trigger --set``);
    # a path the file lacks ends the run errored, naming it
    overrides: Annotated[list[Annotated[str, Field(max_length=4096)]],
                         Field(max_length=100)] = []

    @field_validator("ref")
    @classmethod
    def _ref(cls, value: str | None) -> str | None:
        return None if value is None else check_ref(value)

    @field_validator("commit")
    @classmethod
    def _commit(cls, value: str | None) -> str | None:
        if value is not None and not _SHA.match(value):
            raise ValueError(f"not a commit SHA (7 to 40 lower-case hex digits): {value!r}")
        return value

    _params = field_validator("params")(_check_env)

    @field_validator("overrides")
    @classmethod
    def _overrides(cls, value: list[str]) -> list[str]:
        for written in value:
            problem = syntax_problem(written)
            if problem:
                raise ValueError(f"{written!r}: {problem}")
        return value


_UserName = Annotated[str, Field(pattern=_NAME)]
RoleName = Literal["viewer", "developer", "maintainer"]  # shared.status.Role's values
_Password = Annotated[str, Field(min_length=1, max_length=1024)]


class TokenCreate(_Body):
    name: Annotated[str, Field(min_length=1, max_length=100)]
    user: _UserName | None = None  # whose token (an admin's choice; default: the caller's)
    read_only: bool = False


class UserCreate(_Body):
    name: _UserName
    password: _Password | None = Field(default=None, repr=False)  # None: tokens only (a bot)
    admin: bool = False
    roles: dict[Annotated[str, Field(pattern=_NAME)], RoleName] = {}


class UserPatch(_Body):
    password: _Password | None = Field(default=None, repr=False)
    admin: bool | None = None


class RunRerun(_Body):
    """What of a run to run again (neither: all of it, as a new run on the same commit)."""

    failed: bool = False  # its failed jobs and what needs them; the rest is reused
    from_job: Annotated[str, Field(min_length=1, max_length=300)] | None = None  # and after

    @model_validator(mode="after")
    def _one(self) -> RunRerun:
        if self.failed and self.from_job is not None:
            raise ValueError("give failed or from_job, not both")
        return self


class RunApprove(_Body):
    secrets: bool = False  # give the run's steps the secrets they ask for


class JobDecision(_Body):
    """An approval's comment, or a rejection's reason (shown in the run's history)."""

    comment: Annotated[str, Field(max_length=1000)] = ""


class MemberSet(_Body):
    role: RoleName


class GcRequest(_Body):
    dry_run: bool = False  # report what a retention pass would remove, remove nothing


class SessionCreate(_Body):
    user: _UserName
    password: _Password = Field(repr=False)
