"""The pipeline files' YAML types: lenient pydantic models, and their errors as diagnostics.

Lenient means the spellings people write are accepted (a string where a list is
expected, numbers and booleans as env values, a duration as seconds or "10m");
everything else is rejected with a message naming the key. Models forbid unknown
keys and are strict (no silent "3" -> 3 coercion) except where a validator below
says otherwise.

``validate(model, data, base, document, file)`` validates one part of a parsed
document and turns every pydantic error into a ``Diagnostic`` at the YAML line of
the offending key or value (``loc`` is mapped to the document's marks). ``explain``
gives the same path and message to callers without a document (the API renders a
project's notification rules' errors with it).

``NotifyRuleModel`` is the one definition of a notification rule: the pipeline file's
``notify:`` and a project's ``notify`` setting (JSON) are both validated with it.
"""

from __future__ import annotations

import difflib
import re
import shlex
import types
from collections.abc import Sequence
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainValidator,
    Tag,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from shared.cron import CronError
from shared.cron import parse as parse_cron
from shared.pipeline.diagnostics import Diagnostic
from shared.pipeline.duration import parse_duration
from shared.pipeline.loader import Document, Path, format_path
from shared.pipeline.notify import CHANNEL_KINDS, DEFAULT_WHEN, REDACTED, VARIABLE, WHENS
from shared.pipeline.resources import parse_cpus, parse_memory, parse_pids
from shared.pipeline.triggers import PR_ACTIONS, glob_error
from shared.workers import label_error

__all__ = [
    "EVENTS",
    "ON_EVENTS",
    "RULE_NAME",
    "STATUSES",
    "STEP_KINDS",
    "CaiBuild",
    "CaiDeploy",
    "CaiFile",
    "CaiSection",
    "CaiService",
    "CycloneFile",
    "JobModel",
    "NamedServiceModel",
    "NotifyRuleModel",
    "OnModel",
    "PullRequestModel",
    "PushModel",
    "ResourcesModel",
    "ScheduleModel",
    "ServiceModel",
    "StepModel",
    "WebhookModel",
    "WhenModel",
    "did_you_mean",
    "duplicate_rules",
    "explain",
    "kind",
    "rule_names",
    "validate",
]

STEP_KINDS = ("run", "build", "promote", "deploy")
EVENTS = ("push", "tag", "pull_request", "manual", "cli", "schedule")
STATUSES = ("success", "failure", "always")
ON_EVENTS = ("push", "pull_request", "schedule", "manual")  # the keys of ``on:``
MAP_TAG, LIST_TAG, STR_TAG = "<mapping>", "<list>", "<string>"  # union member tags; stripped
_TAGS = (MAP_TAG, LIST_TAG, STR_TAG, "[key]")  # from error locs
RULE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# deliberately simple: something@something, no spaces; the mail server judges the rest
_EMAIL = re.compile(r"[^@\s]+@[^@\s.]+(\.[^@\s.]+)*")
_SECRET_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


def kind(value: object) -> str:
    """How a value reads in a message: "a string", "a list", "null", ..."""
    if value is None:
        return "null"
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
             list: "a list", dict: "a mapping", bytes: "binary data", set: "a set"}
    for tp, name in names.items():
        if isinstance(value, tp):
            return name
    return f"a {type(value).__name__}"  # date, datetime: "a date"


def did_you_mean(name: str, candidates: Sequence[str]) -> str:
    """``", did you mean 'x'?"`` for the closest candidate, or ``""``."""
    close = difflib.get_close_matches(name, list(candidates), n=1)
    return f", did you mean '{close[0]}'?" if close else ""


# --- lenient value types ---------------------------------------------------------------------


def _as_list(value: Any) -> Any:
    return value if isinstance(value, list) else [value]


def _scalar_str(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    if value is None:  # "KEY:" with nothing after it reads as an empty value
        return ""
    raise PydanticCustomError("scalar", "expected a string, number or boolean, got {kind}",
                              {"kind": kind(value)})


def _duration(value: Any) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise PydanticCustomError("duration", str(exc)) from exc


def _parsed(parse: Any, kind_: str) -> PlainValidator:
    """A resource value read by ``shared.pipeline.resources``' ``parse``."""
    def check(value: Any) -> Any:
        try:
            return parse(value)
        except ValueError as exc:
            raise PydanticCustomError(kind_, str(exc)) from exc
    return PlainValidator(check)


def _volume(value: str) -> str:
    """``SOURCE:TARGET[:ro|rw]`` (as ``docker run -v``): TARGET absolute."""
    parts = value.split(":")
    mode_ok = len(parts) == 2 or (len(parts) == 3 and parts[2] in ("ro", "rw"))
    if not mode_ok or not parts[0] or not parts[1].startswith("/"):
        raise PydanticCustomError("volume", "expected SOURCE:/container/path or "
                                  "SOURCE:/container/path:ro, got '{value}'", {"value": value})
    return value


def _command(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return shlex.split(value)
    except ValueError as exc:
        raise PydanticCustomError("command", "cannot split command: {why}",
                                  {"why": str(exc).lower()}) from exc


def _choice(allowed: Sequence[str], what: str) -> Any:
    def check(value: str) -> str:
        if value not in allowed:
            listed = ", ".join(allowed)
            raise PydanticCustomError(
                "choice", "unknown {what} '{value}'{hint} (expected one of: {listed})",
                {"what": what, "value": value, "hint": did_you_mean(value, allowed),
                 "listed": listed})
        return value
    return AfterValidator(check)


def _commands_present(value: list[str]) -> list[str]:
    if not any(command.strip() for command in value):
        raise PydanticCustomError("no_commands", "needs at least one command")
    return value


def _env_item(value: str) -> str:
    if "=" not in value or not value.split("=", 1)[0].strip():
        raise PydanticCustomError("env_item", "expected KEY=VALUE, got '{value}'",
                                  {"value": value})
    return value


def _secret_name(value: str) -> str:
    if not _SECRET_NAME.fullmatch(value):
        raise PydanticCustomError("secret_name", "'{value}' is not a secret's name (an env "
                                  "variable name: letters, digits and _)", {"value": value})
    return value


def _label(value: str) -> str:
    problem = label_error(value)
    if problem:
        raise PydanticCustomError("label", "{problem}", {"problem": problem})
    return value


def _glob(value: str) -> str:
    problem = glob_error(value)
    if problem:
        raise PydanticCustomError("glob", "bad pattern '{value}': {problem}",
                                  {"value": value, "problem": problem})
    return value


def _cron(value: str) -> str:
    try:
        parse_cron(value)
    except CronError as exc:
        raise PydanticCustomError("cron", "invalid cron line '{line}': {why}",
                                  {"line": value, "why": str(exc)}) from exc
    return value.strip()


def _cron_item(value: Any) -> Any:
    return {"cron": value} if isinstance(value, str) else value


def _schedules(value: Any) -> Any:
    return [] if value is None else _as_list(value)


def _on_block(value: Any) -> Any:
    """``push:`` / ``push: true`` -> no filters; ``push: false`` -> not listed."""
    if value is None or value is True:
        return {}
    if value is False or isinstance(value, dict):
        return None if value is False else value
    raise PydanticCustomError("on_block", "expected a mapping, true or false, got {kind}",
                              {"kind": kind(value)})


def _manual(value: Any) -> Any:
    return True if value is None else value  # "manual:" with nothing after it


def _map_or_list(value: Any) -> str | None:
    return MAP_TAG if isinstance(value, dict) else LIST_TAG if isinstance(value, list) else None


Scalar = Annotated[str, PlainValidator(_scalar_str)]
EnvMap = dict[str, Scalar]
Duration = Annotated[float, PlainValidator(_duration)]
StrList = Annotated[list[str], BeforeValidator(_as_list)]  # one string or a list of them
Commands = Annotated[list[str], BeforeValidator(_as_list), AfterValidator(_commands_present)]
Command = Annotated[list[str], BeforeValidator(_command)]  # shlex-split string or a list
NonEmpty = Annotated[str, Field(min_length=1)]
Event = Annotated[str, _choice(EVENTS, "event")]
Status = Annotated[str, _choice(STATUSES, "status")]
EnvItems = list[Annotated[str, AfterValidator(_env_item)]]
# The project's or global secrets a job or step is given, as env variables of that name.
SecretNames = Annotated[list[Annotated[str, AfterValidator(_secret_name)]],
                        BeforeValidator(_as_list)]
Patterns = Annotated[list[Annotated[str, AfterValidator(_glob)]], BeforeValidator(_as_list)]
# ``runs-on:``: the worker labels a job needs (shared.workers), one or a list
Labels = Annotated[list[Annotated[str, AfterValidator(_label)]], BeforeValidator(_as_list)]
PrAction = Annotated[str, _choice(PR_ACTIONS, "pull request action")]
Memory = Annotated[int, _parsed(parse_memory, "size"),
                   WithJsonSchema({"anyOf": [{"type": "integer"}, {"type": "string"}],
                                   "description": "bytes, or e.g. \"512MiB\", \"2GiB\""})]
Cpus = Annotated[float, _parsed(parse_cpus, "cpus"), WithJsonSchema({"type": "number"})]
Pids = Annotated[int, _parsed(parse_pids, "pids"), WithJsonSchema({"type": "integer"})]
Volumes = Annotated[list[Annotated[str, AfterValidator(_volume)]], BeforeValidator(_as_list)]
MAP_OR_LIST = Discriminator(_map_or_list, custom_error_type="map_or_list",
                            custom_error_message="expected a mapping or a list")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# --- .cyclone.yml ----------------------------------------------------------------------------


class WhenModel(_Model):
    branch: StrList = []
    event: Annotated[list[Event], BeforeValidator(_as_list)] = []
    status: Annotated[list[Status], BeforeValidator(_as_list)] = []
    # step outputs (``$CYCLONE_OUTPUT``) key -> the glob its value must match
    outputs: dict[str, Scalar] | None = None


class ResourcesModel(_Model):
    """``resources:`` of a job: what each of its containers may use (the worker's defaults
    for what is left out), up to the project's maximum. Also a project's maximum."""

    memory: Memory | None = None
    cpus: Cpus | None = None
    pids: Pids | None = None


class ServiceModel(_Model):
    image: NonEmpty
    env: EnvMap | None = None
    command: Command = []
    privileged: bool = False  # trusted projects only (lint)
    volumes: Volumes = []  # host paths or Docker volumes: trusted projects only (lint)


class NamedServiceModel(ServiceModel):
    name: NonEmpty


Services = Annotated[
    Union[  # noqa: UP007 - members carry Tag metadata
        Annotated[dict[str, ServiceModel], Tag(MAP_TAG)],
        Annotated[list[NamedServiceModel], Tag(LIST_TAG)],
    ],
    MAP_OR_LIST,
]


class StepModel(_Model):
    """A step does one thing: ``run`` commands, or (``schema_delivery``) ``build`` an image,
    ``promote`` one, or ``deploy`` one."""

    name: NonEmpty | None = None
    image: NonEmpty | None = None
    run: Commands | None = None
    build: BuildModel | None = None
    promote: PromoteModel | None = None
    deploy: DeployModel | None = None
    env: EnvMap | None = None
    when: WhenModel | None = None
    timeout: Duration | None = None
    retry: Annotated[int, Field(ge=0)] = 0
    secrets: SecretNames = []
    privileged: bool = False  # trusted projects only (lint)
    volumes: Volumes = []  # host paths or Docker volumes: trusted projects only (lint)

    @model_validator(mode="after")
    def _one_kind(self) -> StepModel:
        kinds = [k for k in STEP_KINDS if getattr(self, k) is not None]
        if not kinds:
            raise PydanticCustomError("step_kind", "missing required key 'run' (or one of: "
                                      "{others})", {"others": ", ".join(STEP_KINDS[1:])})
        if len(kinds) > 1:
            raise PydanticCustomError("step_kind", "a step does one thing: {kinds} (keep one "
                                      "and move the others to steps of their own)",
                                      {"kinds": " and ".join(kinds)})
        return self

    @property
    def kind(self) -> str:
        return next(k for k in STEP_KINDS if getattr(self, k) is not None)


class JobModel(_Model):
    image: NonEmpty | None = None
    stage: NonEmpty | None = None  # one of the file's ``stages:`` (``shared.pipeline.stages``)
    env: EnvMap | None = None
    needs: StrList = []
    services: Services | None = None
    when: WhenModel | None = None
    timeout: Duration | None = None
    matrix: dict[str, Annotated[list[Scalar], Field(min_length=1)]] | None = None
    secrets: SecretNames = []
    resources: ResourcesModel | None = None
    environment: EnvironmentName | None = None
    approval: Approval = None
    artifacts: ArtifactsModel | None = None
    cache: Caches | None = None
    reports: ReportsModel | None = None
    runs_on: Labels = Field(default=[], alias="runs-on")
    steps: Annotated[list[StepModel], Field(min_length=1)]


class PushModel(_Model):
    branches: Patterns | None = None
    branches_ignore: Patterns | None = Field(default=None, alias="branches-ignore")
    tags: Patterns | None = None
    tags_ignore: Patterns | None = Field(default=None, alias="tags-ignore")
    paths: Patterns | None = None
    paths_ignore: Patterns | None = Field(default=None, alias="paths-ignore")


class PullRequestModel(_Model):
    branches: Patterns | None = None  # the target (base) branch
    branches_ignore: Patterns | None = Field(default=None, alias="branches-ignore")
    paths: Patterns | None = None
    paths_ignore: Patterns | None = Field(default=None, alias="paths-ignore")
    types: Annotated[list[PrAction], BeforeValidator(_as_list)] | None = None


class ScheduleModel(_Model):
    cron: Annotated[str, AfterValidator(_cron)]


class OnModel(_Model):
    """``on:`` in its mapping form (the linter expands ``on: push`` and ``on: [a, b]``).
    A block that is absent or ``false`` is None: that event does not trigger."""

    push: Annotated[PushModel | None, BeforeValidator(_on_block)] = None
    pull_request: Annotated[PullRequestModel | None, BeforeValidator(_on_block)] = None
    schedule: Annotated[list[Annotated[ScheduleModel, BeforeValidator(_cron_item)]],
                        BeforeValidator(_schedules), Field(min_length=1)] = []
    manual: Annotated[bool, BeforeValidator(_manual)] = False


class CycloneFile(_Model):
    """The top level; jobs are validated one by one (``JobModel``) to report them all,
    ``on`` by the linter (``OnModel``), which first expands its shorthands, ``notify``
    rule by rule (``NotifyRuleModel``), and ``include`` by ``shared.pipeline.include``
    (whose jobs are in ``jobs`` by then)."""

    env: EnvMap | None = None
    on: Any = None
    notify: Any = None
    registries: dict[str, RegistryModel] | None = None
    include: Any = None  # checked and merged into jobs by ``shared.pipeline.include``
    stages: Annotated[list[NonEmpty], Field(min_length=1)] | None = None  # GitLab's, as needs
    jobs: Annotated[dict[str, Any], Field(min_length=1)]


# --- notify: (the pipeline file's, and a project's setting) ----------------------------------


def _present(value: Any) -> Any:
    """An optional key written with no value is a mistake, not "use the default"."""
    if value is None:
        raise PydanticCustomError("null", "must not be empty (leave the key out instead)")
    return value


def _rule_name(value: str) -> str:
    if not RULE_NAME.fullmatch(value):
        raise PydanticCustomError(
            "rule_name", "invalid rule name '{value}' (1 to 64 letters, digits, '_', '.' and "
            "'-')", {"value": value})
    return value


def _email(value: str) -> str:
    if not _EMAIL.fullmatch(value):
        raise PydanticCustomError("email", "not an email address: '{value}'", {"value": value})
    return value


def _url(value: str) -> str:
    """An http(s) URL with a host, or a whole ``${NAME}``. Never quoted in a message: a chat
    URL carries its token."""
    if VARIABLE.fullmatch(value):
        return value
    if REDACTED in value:  # what Channel.shown makes of a URL, sent back
        raise PydanticCustomError("shortened_url", "this is the URL as the API shows it "
                                  "(shortened: the API never shows a URL's path); send the "
                                  "full URL again")
    try:
        parts = urlsplit(value)
        scheme, host, _ = parts.scheme, parts.hostname, parts.port
    except ValueError:  # e.g. a bad port or an unclosed IPv6 bracket
        scheme, host = "", None
    if scheme not in ("http", "https") or not host or any(c.isspace() for c in value):
        raise PydanticCustomError("url", "expected an http(s) URL with a host, or a whole "
                                  "${NAME} (a variable of the project's env)")
    return value


def _str_or_map(value: Any) -> str | None:
    return STR_TAG if isinstance(value, str) else MAP_TAG if isinstance(value, dict) else None


Url = Annotated[str, AfterValidator(_url)]
Email = Annotated[str, AfterValidator(_email)]
WhenWord = Annotated[str, _choice(WHENS, "condition")]


class WebhookModel(_Model):
    """``webhook: {url, secret}``: the body is signed with HMAC-SHA256 under ``secret``."""

    url: Url
    secret: Annotated[str, Field(min_length=1)] | None = None


Webhook = Annotated[
    Union[  # noqa: UP007 - members carry Tag metadata
        Annotated[Url, Tag(STR_TAG)],
        Annotated[WebhookModel, Tag(MAP_TAG)],
    ],
    Discriminator(_str_or_map, custom_error_type="url_or_map",
                  custom_error_message="expected a URL or a mapping {url, secret}"),
]


def _one_or_more(item: dict[str, Any], description: str) -> WithJsonSchema:
    return WithJsonSchema({"anyOf": [item, {"type": "array", "items": item, "minItems": 1}],
                           "description": description})


# what the OpenAPI document and editors see (the validators above are not expressible)
_URL_DOC = {"type": "string", "description": "an http(s) URL (it holds the chat's token: a "
            "secret), or ${NAME}, a variable of the project's env"}
_WEBHOOK_DOC = {"anyOf": [{"type": "string"}, {
    "type": "object", "additionalProperties": False, "required": ["url"],
    "properties": {"url": {"type": "string", "description": "an http(s) URL, or ${NAME}"},
                   "secret": {
        "type": "string", "minLength": 1,
        "description": "the HMAC-SHA256 key the body is signed with (header "
                       "X-Cyclone-Signature-256); ${NAME} keeps it out of sight"}}}],
    "description": "a URL that is POSTed a JSON document"}


class NotifyRuleModel(_Model):
    """One notification rule (``shared.pipeline.notify``). Every key is optional but a rule
    needs at least one channel (email, slack, mattermost, discord, webhook); an optional
    key written as null is an error."""

    name: Annotated[str | None, BeforeValidator(_present), AfterValidator(_rule_name),
                    WithJsonSchema({"type": "string", "pattern": f"^{RULE_NAME.pattern}$",
                                    "description": "unique among the rules; default: the "
                                    "rule's position (\"1\", \"2\", ...)"})] = None
    # before-validators run last-written first: _present sees the value as written
    when: Annotated[list[WhenWord] | None, BeforeValidator(_as_list),
                    BeforeValidator(_present), Field(min_length=1),
                    _one_or_more({"enum": list(WHENS)},
                                 f"default: {', '.join(DEFAULT_WHEN)}")] = None
    branches: Annotated[Patterns | None, BeforeValidator(_present), Field(min_length=1),
                        _one_or_more({"type": "string"}, "patterns as in on.push.branches; "
                                     "default: every branch")] = None
    email: Annotated[list[Email] | None, BeforeValidator(_as_list), BeforeValidator(_present),
                     Field(min_length=1),
                     _one_or_more({"type": "string", "format": "email"}, "addresses")] = None
    slack: Annotated[Url | None, BeforeValidator(_present), WithJsonSchema(_URL_DOC)] = None
    mattermost: Annotated[Url | None, BeforeValidator(_present),
                          WithJsonSchema(_URL_DOC)] = None
    discord: Annotated[Url | None, BeforeValidator(_present), WithJsonSchema(_URL_DOC)] = None
    webhook: Annotated[Webhook | None, BeforeValidator(_present),
                       WithJsonSchema(_WEBHOOK_DOC)] = None

    @model_validator(mode="after")
    def _has_channel(self) -> NotifyRuleModel:
        if all(getattr(self, kind) is None for kind in CHANNEL_KINDS):
            raise PydanticCustomError("no_channel", "a rule needs at least one channel: {kinds}",
                                      {"kinds": ", ".join(CHANNEL_KINDS)})
        return self


def rule_names(rules: Sequence[NotifyRuleModel]) -> list[str]:
    """The rules' names: as given, else their position ("1", "2", ...)."""
    return [rule.name or str(i) for i, rule in enumerate(rules, 1)]


def duplicate_rules(given: Sequence[str | None]) -> list[tuple[int, int, str]]:
    """``(index, first, name)`` for each rule whose name (``given``, else its position as
    in ``rule_names``) the rule at index ``first`` already has."""
    seen: dict[str, int] = {}
    out: list[tuple[int, int, str]] = []
    for i, name in enumerate(given):
        name = name or str(i + 1)
        if name in seen:
            out.append((i, seen[name], name))
        seen.setdefault(name, i)
    return out


# --- caicloud.yml ----------------------------------------------------------------------------

Environment = Annotated[
    Union[  # noqa: UP007 - members carry Tag metadata
        Annotated[EnvItems, Tag(LIST_TAG)],
        Annotated[EnvMap, Tag(MAP_TAG)],
    ],
    MAP_OR_LIST,
]


class _Container(_Model):
    """Keys of the original's container block: ``privileged`` and ``volumes`` are honoured
    (host volumes in trusted projects only, lint), the others this runner does not honour
    (warned; a service's ``entrypoint`` is an error, as it would change what it runs)."""

    name: Any = None
    pull: Any = None
    privileged: bool | None = None
    ports: Any = None
    links: Any = None
    entrypoint: Any = None
    extra_hosts: Any = None
    volumes: Volumes | None = None
    devices: Any = None
    net: Any = None
    dns: Any = None
    auth_config: Any = None
    mem_limit: Any = None
    cpuset: Any = None
    oom_kill_disable: Any = None


class CaiService(_Container):
    image: NonEmpty | None = None  # the original defaults it to the service's name
    environment: Environment | None = None
    commands: StrList | None = None
    command: Command | None = None


class CaiSection(_Container):
    """pre_build, integration, post_build: commands run in ``image``."""

    image: NonEmpty | None = None
    environment: Environment | None = None
    commands: Commands | None = None
    command: Any = None  # the original ran only ``commands`` (warned)
    # pre_build only (checked there, warned elsewhere): its image built from
    # <context_dir>/<dockerfile_name>, and the paths copied into the build's context
    context_dir: Any = None
    dockerfile_name: Any = None
    outputs: Any = None
    services: dict[str, CaiService | None] | None = None  # integration only (checked)


class CaiBuild(_Model):
    """build: an image built from ``<context_dir>/<dockerfile_name>``. The original read a
    container block here too and ignored it: those keys are accepted (warned)."""

    context_dir: NonEmpty | None = None
    dockerfile_name: NonEmpty | None = None
    environment: Environment | None = None
    image: Any = None
    commands: Any = None
    command: Any = None
    name: Any = None
    pull: Any = None
    privileged: Any = None
    ports: Any = None
    links: Any = None
    entrypoint: Any = None
    extra_hosts: Any = None
    volumes: Any = None
    devices: Any = None
    net: Any = None
    dns: Any = None
    auth_config: Any = None
    mem_limit: Any = None
    cpuset: Any = None
    oom_kill_disable: Any = None


class CaiDeploy(_Model):
    """One deploy entry: a cluster deployment, in any of the original's vintages
    (``deployment``/``namespace``, or ``application``/``partition``; ``type``, ``host``
    and ``token`` of a Kubernetes entry), or image + commands."""

    type: str | None = None
    host: str | None = None
    token: str | None = None
    cluster: NonEmpty | None = None
    namespace: NonEmpty | None = None
    deployment: NonEmpty | None = None
    application: NonEmpty | None = None  # the original's later name of the deployment
    partition: NonEmpty | None = None  # ... and of the namespace
    containers: StrList | None = None
    image: NonEmpty | None = None
    commands: Commands | None = None
    environment: Environment | None = None


class CaiFile(_Model):
    """The top level; sections are validated one by one to report them all."""

    pre_build: Any = None
    build: Any = None
    integration: Any = None
    post_build: Any = None
    deploy: Any = None
    services: Any = None  # not read by the original either (warned: integration's)


# --- pydantic errors -> diagnostics ----------------------------------------------------------

_EXPECTED = {
    "string_type": "a string", "int_type": "an integer", "bool_type": "a boolean",
    "float_type": "a number", "list_type": "a list", "dict_type": "a mapping",
    "model_type": "a mapping", "model_attributes_type": "a mapping",
}
M = TypeVar("M", bound=BaseModel)


def validate(model: type[M], data: Any, base: Path, document: Document,
             file: str) -> tuple[M | None, list[Diagnostic]]:
    """Validate ``data`` (found at ``base`` in ``document``) as ``model``."""
    try:
        return model.model_validate(data), []
    except ValidationError as exc:
        return None, [_diagnostic(model, error, base, document, file) for error in exc.errors()]


def _diagnostic(model: type[BaseModel], error: ErrorDetails, base: Path, document: Document,
                file: str) -> Diagnostic:
    where, message = explain(model, error)
    path = (*base, *where)
    marks = document.marks
    file = marks.file_of(path, file)  # an included job's own file
    if error["type"] == "extra_forbidden":
        line, col = marks.locate(path, at_key=True)
        return Diagnostic(file, line, col, format_path(path), message)
    line, col = marks.locate(path)
    return Diagnostic(file, line, col, format_path(marks.known(path)), message)


def explain(model: type[BaseModel], error: ErrorDetails, below: int = 0) -> tuple[Path, str]:
    """Where below ``model`` a pydantic error is (union tags dropped; a missing key is
    reported at its mapping) and what to say about it. ``below``: the first parts of the
    error's ``loc`` lead to where ``model`` was validated (e.g. 2 for ``("notify", 0, ...)``
    when ``model`` is the rule) and are left out."""
    full = tuple(error["loc"][below:])
    kind_ = error["type"]
    loc = tuple(p for p in full if p not in _TAGS)
    if kind_ in ("missing", "extra_forbidden") and full:
        # the last part is a key (the one missing, or the one written), whatever it says:
        # a user's key may read like a union's tag ("<string>")
        loc = (*(p for p in full[:-1] if p not in _TAGS), full[-1])
    if kind_ == "missing":
        return loc[:-1], f"missing required key '{loc[-1]}'"
    if kind_ == "extra_forbidden":
        hint = did_you_mean(str(loc[-1]), _keys_at(model, full[:-1]))
        return loc, f"unknown key '{loc[-1]}'{hint}"
    return loc, _message(error)


def _message(error: ErrorDetails) -> str:
    kind_ = error["type"]
    if kind_ in _EXPECTED:
        return f"expected {_EXPECTED[kind_]}, got {kind(error['input'])}"
    if kind_ in ("too_short", "string_too_short"):
        return "must not be empty"
    ctx = error.get("ctx") or {}
    if kind_ == "greater_than_equal":
        return f"must be >= {ctx.get('ge')}"
    return str(error["msg"])


def _keys_at(model: type[BaseModel], loc: Sequence[str | int]) -> list[str]:
    """The keys allowed at ``loc`` below ``model`` (for "did you mean")."""
    tp: Any = model
    for part in loc:
        tp = _child(tp, part)
        if tp is None:
            return []
    tp = _strip(tp)
    return [f.alias or name for name, f in tp.model_fields.items()] if _is_model(tp) else []


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _strip(tp: Any) -> Any:
    """``Annotated[X, ...]`` -> X, ``X | None`` -> X."""
    while True:
        if get_origin(tp) is Annotated:
            tp = get_args(tp)[0]
        elif get_origin(tp) in (Union, types.UnionType):
            members = [a for a in get_args(tp) if a is not type(None)]
            if len(members) != 1:
                return tp
            tp = members[0]
        else:
            return tp


def _child(tp: Any, part: str | int) -> Any:
    tp = _strip(tp)
    if _is_model(tp):
        fields = {f.alias or name: f for name, f in tp.model_fields.items()}
        field = fields.get(part) if isinstance(part, str) else None
        return field.annotation if field else None
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):  # a tagged union: pick the member by its tag
        for member in get_args(tp):
            tags = [m for m in getattr(member, "__metadata__", ()) if isinstance(m, Tag)]
            if tags and tags[0].tag == part:
                return member
        return None
    if origin is dict:
        return get_args(tp)[1]
    if origin is list:
        return get_args(tp)[0]
    return None


# The delivery models use the types above; the step, job and file models use them.
from shared.pipeline.schema_artifacts import (  # noqa: E402
    ArtifactsModel,
    Caches,
    ReportsModel,
)
from shared.pipeline.schema_delivery import (  # noqa: E402
    Approval,
    BuildModel,
    DeployModel,
    EnvironmentName,
    PromoteModel,
    RegistryModel,
)

for _model in (StepModel, JobModel, CycloneFile):
    _model.model_rebuild()
