"""The linter: every problem of a pipeline file, errors and warnings, each with its line.

``lint(text, file)`` never raises for bad input. For ``.cyclone.yml`` it runs, in
order: YAML parsing (``loader``), structural checks (``schema``, one job at a time
so that every job's problems are reported, ``on:`` once its shorthands are
expanded, ``notify:`` one rule at a time), then the semantic checks below (job and
step names, images, needs, ``stages:`` (``stages``, made into needs here), cycles,
matrix references, trigger filters, rule names, chat URLs and webhook secrets written
in the file instead of ``${NAME}``).
``caicloud.yml`` files are checked by ``caicloud.check_caicloud``.

The jobs of the files an ``include:`` names are merged in right after parsing
(``include.merged``) and checked as the file's own, each where it is written.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from shared.pipeline import caicloud
from shared.pipeline.diagnostics import Diagnostic
from shared.pipeline.include import IncludedFile, merged
from shared.pipeline.lint_delivery import check_delivery, secret_paths
from shared.pipeline.loader import Document, Path, Reporter, ordered, parse
from shared.pipeline.notify import VARIABLE
from shared.pipeline.overrides import apply as overridden
from shared.pipeline.resources import UNKNOWN, Policy, Resources
from shared.pipeline.schema import (
    ON_EVENTS,
    STEP_KINDS,
    CycloneFile,
    JobModel,
    NotifyRuleModel,
    OnModel,
    StepModel,
    did_you_mean,
    duplicate_rules,
    kind,
    validate,
)
from shared.pipeline.schema_delivery import RegistryModel
from shared.pipeline.stages import implied_needs
from shared.pipeline.trust import check_privileged, check_resources, check_volumes

__all__ = [
    "JOBS_LIMIT",
    "JOB_NAME",
    "LITERAL_SECRET",
    "MATRIX_LIMIT",
    "MATRIX_REF",
    "CheckedCyclone",
    "check_cyclone",
    "check_secrets",
    "detect_format",
    "lint",
    "resources_of",
]

JOB_NAME = re.compile(r"[A-Za-z0-9_.-]+")
MATRIX_KEY = re.compile(r"[A-Za-z0-9_-]+")
MATRIX_REF = re.compile(r"\$\{\{\s*matrix\.([^\s}]*)\s*\}\}")
MATRIX_LIMIT = 256  # expansions of one job; more is almost surely a mistake
JOBS_LIMIT = 1000  # jobs of a plan, matrices expanded
CAICLOUD_FILES = ("caicloud.yml", "caicloud.yaml")
_CAICLOUD_TOP = re.compile(r"^(pre_build|build|integration|post_build|deploy)\s*:", re.M)
_JOBS_TOP = re.compile(r"^jobs\s*:", re.M)
LITERAL_SECRET = ("a webhook {what} in the pipeline file is readable by everyone who can read "
                  "the repository; put it in the project's env and write ${{NAME}}")


@dataclass(frozen=True)
class CheckedCyclone:
    """A ``.cyclone.yml`` without errors, ready for ``compile``."""

    env: dict[str, str]
    jobs: dict[str, JobModel]  # in file order
    on: OnModel | None = None  # None: the file has no ``on:`` (everything triggers)
    notify: tuple[NotifyRuleModel, ...] = ()  # in file order
    registries: dict[str, RegistryModel] = field(default_factory=dict)


def lint(text: str, file: str, policy: Policy = UNKNOWN,
         includes: Sequence[IncludedFile] = (), overrides: Sequence[str] = (),
         ) -> list[Diagnostic]:
    """Every problem in ``text`` (read as ``file``) for a project with ``policy`` (default:
    none known), with the files it includes from ``includes`` and the keys ``overrides``
    sets (``shared.pipeline.overrides``): errors first, then warnings."""
    if detect_format(text, file) == "caicloud":
        return caicloud.check_caicloud(text, file, policy, overrides)[1]
    return check_cyclone(text, file, policy, includes, overrides)[1]


def detect_format(text: str, file: str) -> Literal["cyclone", "caicloud"]:
    """``caicloud`` for a file named caicloud.yml / caicloud.yaml, or whose top level has
    caicloud sections (pre_build, build, ...) and no ``jobs``; else ``cyclone``."""
    if file.replace("\\", "/").rsplit("/", 1)[-1] in CAICLOUD_FILES:
        return "caicloud"
    parsed = parse(text, file)
    if parsed.document is not None:
        data = parsed.document.data
        is_cai = (isinstance(data, dict) and "jobs" not in data
                  and any(section in data for section in caicloud.SECTIONS))
        return "caicloud" if is_cai else "cyclone"
    # unparsable: judge by the top-level keys as written, to report in the right terms
    is_cai = bool(_CAICLOUD_TOP.search(text)) and not _JOBS_TOP.search(text)
    return "caicloud" if is_cai else "cyclone"


def check_cyclone(text: str, file: str, policy: Policy = UNKNOWN,
                  includes: Sequence[IncludedFile] = (), overrides: Sequence[str] = (),
                  ) -> tuple[CheckedCyclone | None, list[Diagnostic]]:
    """Lint a ``.cyclone.yml`` for a project with ``policy``, its ``include:`` read from
    ``includes`` (``shared.pipeline.include``), ``overrides`` set (``--set``); the checked
    file comes back only when there is no error."""
    document, problems = _document(text, file, includes, overrides)
    if document is None:
        return None, problems
    report = Reporter(file, document)
    report.diagnostics.extend(problems)
    data = document.data
    if isinstance(data, dict):  # "x-" keys are for YAML anchors only, as in compose files
        data = {k: v for k, v in data.items() if not k.startswith("x-")}
    top, problems = validate(CycloneFile, data, (), document, file)
    report.diagnostics.extend(problems)
    written = data if isinstance(data, dict) else {}
    on = _check_on(report, written["on"]) if "on" in written else None
    notify = _check_notify(report, written["notify"]) if "notify" in written else ()
    found = data.get("jobs") if isinstance(data, dict) else None
    raw_jobs: dict[str, Any] = found if isinstance(found, dict) else {}
    jobs: dict[str, JobModel] = {}
    for name, raw in raw_jobs.items():
        job, problems = validate(JobModel, raw, ("jobs", name), document, file)
        report.diagnostics.extend(problems)
        if job is not None:
            jobs[name] = job
    names = list(raw_jobs)
    _check_names(report, names)
    for name in names:
        _check_steps(report, name, raw_jobs[name])
    for name, job in jobs.items():
        _check_job(report, name, job, top.env if top else None)
        _check_host_access(report, ("jobs", name), job, policy)
    total = sum(math.prod(len(v) for v in (job.matrix or {}).values()) for job in jobs.values())
    if total > JOBS_LIMIT:
        report.error(("jobs",), f"the matrices expand to {total} jobs (at most {JOBS_LIMIT})")
    # jobs with structural errors: their needs are still checked, as far as they read
    needs = {name: jobs[name].needs if name in jobs else _raw_needs(raw_jobs[name])
             for name in names}
    # a top level with errors may have lost its stages: then they are not judged
    implied = (implied_needs(report, top.stages if top else None, jobs, raw_jobs)
               if top is not None or "stages" not in written else {})
    _check_needs(report, names, needs, implied)
    needs = {name: list(dict.fromkeys([*wanted, *implied.get(name, ())]))
             for name, wanted in needs.items()}
    check_delivery(report, jobs, needs)
    diagnostics = ordered(report.diagnostics)
    if top is None or any(d.severity == "error" for d in diagnostics):
        return None, diagnostics
    # from here on a stage is only the needs it adds
    jobs = {name: job.model_copy(update={"needs": needs[name]}) if implied.get(name) else job
            for name, job in jobs.items()}
    return CheckedCyclone(dict(top.env or {}), jobs, on, notify,
                          dict(top.registries or {})), diagnostics


def check_secrets(text: str, file: str, known: Collection[str],
                  implicit: Collection[str] = (), includes: Sequence[IncludedFile] = (),
                  overrides: Sequence[str] = ()) -> list[Diagnostic]:
    """For a ``.cyclone.yml`` without errors (its includes from ``includes``): an error
    at each ``secrets:`` name that is not in ``known`` (the secrets the run's project
    sees), and a warning for each ``implicit`` secret (moved from the project's env: given
    to every step) that no ``secrets:`` lists."""
    if detect_format(text, file) != "cyclone":
        return []
    document = _document(text, file, includes, overrides)[0]
    if document is None:
        return []
    data = document.data
    if not isinstance(data, dict):
        return []
    report = Reporter(file, document)
    listed: set[str] = set()
    for path, name in _secret_names(data):
        listed.add(name)
        if name not in known:
            report.error(path, f"unknown secret '{name}'{did_you_mean(name, sorted(known))} "
                         "(neither a secret of the project nor a global one)")
    for name in sorted(set(implicit) - listed):
        report.warning(("jobs",), f"the project's secret '{name}' (moved from its env) is "
                       "given to every step; list it under secrets: on the jobs or steps "
                       "that need it", at_key=True)
    return ordered(report.diagnostics)


def _document(text: str, file: str, includes: Sequence[IncludedFile],
              overrides: Sequence[str]) -> tuple[Document | None, list[Diagnostic]]:
    """The document to check: parsed, the included jobs merged in (each keeping its own
    file), then the ``--set`` overrides applied (placed at the override)."""
    parsed = parse(text, file)
    if parsed.document is None:
        return None, parsed.diagnostics
    document, problems = merged(parsed.document, file, includes)
    document, unset = overridden(document, overrides)
    return document, [*problems, *unset]


def _secret_names(data: dict[str, Any]) -> Iterator[tuple[Path, str]]:
    """Each name in the ``secrets:`` of the file's jobs and steps, and each secret its
    delivery keys name (``lint_delivery.secret_paths``), with its path."""
    jobs = data.get("jobs")
    for name, job in (jobs.items() if isinstance(jobs, dict) else ()):
        if not isinstance(job, dict):
            continue
        yield from _names_at(("jobs", name, "secrets"), job.get("secrets"))
        steps = job.get("steps")
        for i, step in enumerate(steps if isinstance(steps, list) else ()):
            if isinstance(step, dict):
                yield from _names_at(("jobs", name, "steps", i, "secrets"), step.get("secrets"))
    yield from secret_paths(data)


def _names_at(path: Path, value: object) -> Iterator[tuple[Path, str]]:
    if isinstance(value, str):
        yield path, value  # one name without a list
    elif isinstance(value, list):
        yield from (((*path, i), str(v)) for i, v in enumerate(value))


def _check_names(report: Reporter, names: list[str]) -> None:
    for name in names:
        if not JOB_NAME.fullmatch(name):
            report.error(("jobs", name), f"invalid job name '{name}' (use letters, digits, "
                         "'_', '.' and '-')", at_key=True)


def _check_steps(report: Reporter, name: str, raw: object) -> None:
    """Images and step names, read from the raw job so that a job with other errors is
    checked too."""
    steps = raw.get("steps") if isinstance(raw, dict) else None
    if not isinstance(raw, dict) or not isinstance(steps, list):
        return
    base: Path = ("jobs", name)
    named = [(step.get("name") if isinstance(step, dict) else None, i)
             for i, step in enumerate(steps)]
    imageless = [n if isinstance(n, str) else f"step-{i + 1}" for n, i in named
                 if _runs_commands(steps[i])
                 and not (isinstance(steps[i], dict) and steps[i].get("image") is not None)]
    if raw.get("image") is None and imageless:
        report.error(base, f"missing required key 'image' (step '{imageless[0]}' has no "
                     "image of its own)")
    seen: dict[str, int] = {}
    for step_name, i in named:
        given = isinstance(step_name, str)
        key = step_name if isinstance(step_name, str) else f"step-{i + 1}"
        if key in seen:
            line = report.document.marks.locate((*base, "steps", seen[key]))[0]
            report.error((*base, "steps", i, "name") if given else (*base, "steps", i),
                         f"duplicate step name '{key}' (first at line {line})",
                         shown=(*base, "steps", i, "name"))
        seen.setdefault(key, i)


def _runs_commands(step: object) -> bool:
    """Whether a raw step runs commands (in an image), not a build, promote or deploy."""
    return not (isinstance(step, dict) and any(k in step for k in STEP_KINDS if k != "run"))


def _check_job(report: Reporter, name: str, job: JobModel, global_env: dict[str, str] | None,
               ) -> None:
    base: Path = ("jobs", name)
    _check_services(report, base, job)
    _check_matrix(report, base, job)
    keys = set(job.matrix or {})
    for path, value in _templated(base, job, global_env):
        for ref in MATRIX_REF.findall(value):
            if ref not in keys:
                known = f"{did_you_mean(ref, sorted(keys))}" if keys else " (the job has no matrix)"
                report.error(path, f"unknown matrix key '{ref}'{known}")


def _check_host_access(report: Reporter, base: Path, job: JobModel, policy: Policy) -> None:
    """Privileged containers, volumes and resources, against the project's policy."""
    for i, step in enumerate(job.steps):
        check_privileged(report, (*base, "steps", i, "privileged"), step.privileged, policy)
        check_volumes(report, (*base, "steps", i, "volumes"), step.volumes, policy)
    services = (job.services.items() if isinstance(job.services, dict)
                else enumerate(job.services or []))
    for ref, service in services:
        where: Path = (*base, "services", ref)
        check_privileged(report, (*where, "privileged"), service.privileged, policy)
        check_volumes(report, (*where, "volumes"), service.volumes, policy)
    if job.resources is not None:
        check_resources(report, (*base, "resources"), resources_of(job), policy)


def resources_of(job: JobModel) -> Resources:
    asked = job.resources
    if asked is None:
        return Resources()
    return Resources(memory=asked.memory, cpus=asked.cpus, pids=asked.pids)


def _check_services(report: Reporter, base: Path, job: JobModel) -> None:
    if isinstance(job.services, dict):
        named = [((*base, "services", n), n) for n in job.services]
    else:
        named = [((*base, "services", i, "name"), s.name) for i, s in enumerate(job.services or [])]
    seen: set[str] = set()
    for path, name in named:
        if not JOB_NAME.fullmatch(name):
            report.error(path, f"invalid service name '{name}' (use letters, digits, '_', '.' "
                         "and '-')", at_key=True)
        if name in seen:
            report.error(path, f"duplicate service name '{name}'")
        seen.add(name)


def _check_matrix(report: Reporter, base: Path, job: JobModel) -> None:
    matrix = job.matrix or {}
    for key, values in matrix.items():
        path: Path = (*base, "matrix", key)
        if not MATRIX_KEY.fullmatch(key):
            report.error(path, f"invalid matrix key '{key}' (use letters, digits, '_' and '-')",
                         at_key=True)
        for i, value in enumerate(values):
            if value in values[:i]:
                report.error((*path, i), f"duplicate value '{value}'")
    count = math.prod(len(values) for values in matrix.values())
    if count > MATRIX_LIMIT:
        report.error((*base, "matrix"), f"expands to {count} jobs (at most {MATRIX_LIMIT})")


def _templated(base: Path, job: JobModel, global_env: dict[str, str] | None,
               ) -> Iterator[tuple[Path, str]]:
    """Every string where ``${{ matrix.KEY }}`` is substituted, with its path."""
    if job.image:
        yield (*base, "image"), job.image
    for key, value in (global_env or {}).items():
        yield ("env", key), value
    for key, value in (job.env or {}).items():
        yield (*base, "env", key), value
    services: list[tuple[str | int, str]] = (
        [(n, s.image) for n, s in job.services.items()] if isinstance(job.services, dict)
        else [(i, s.image) for i, s in enumerate(job.services or [])])
    for ref, image in services:
        yield (*base, "services", ref, "image"), image
    for i, step in enumerate(job.steps):
        where: Path = (*base, "steps", i)
        if step.image:
            yield (*where, "image"), step.image
        for j, command in enumerate(step.run or ()):
            yield (*where, "run", j), command
        for key, value in (step.env or {}).items():
            yield (*where, "env", key), value
        yield from _delivery_templated(where, step)


def _delivery_templated(where: Path, step: StepModel) -> Iterator[tuple[Path, str]]:
    """The strings of a build, promote or deploy step where matrix values go."""
    if step.build is not None:
        yield from (((*where, "build", "tags", j), tag) for j, tag in enumerate(step.build.tags))
    if step.promote is not None:
        yield (*where, "promote", "image"), step.promote.image
        yield from (((*where, "promote", "tags", j), t) for j, t in enumerate(step.promote.tags))
    if step.deploy is not None:
        kind = "docker" if step.deploy.docker else "kubernetes"
        yield (*where, "deploy", kind, "image"), step.deploy.target.image


def _raw_needs(raw: object) -> list[str]:
    """The names a job that failed validation needs, as far as they can be read."""
    value = raw.get("needs") if isinstance(raw, dict) else None
    items = value if isinstance(value, list) else [value]
    return [item for item in items if isinstance(item, str)]


def _check_needs(report: Reporter, names: list[str], needs: dict[str, list[str]],
                 implied: Mapping[str, list[str]]) -> None:
    """The needs as written (``needs``), and the cycles they make with those the stages
    add (``implied``)."""
    for name, wanted in needs.items():
        where: Path = ("jobs", name, "needs")
        for i, need in enumerate(wanted):
            if need == name:
                report.error((*where, i), f"job '{name}' needs itself", shown=where)
            elif need not in names:
                others = [n for n in names if n != name]
                report.error((*where, i), f"unknown job '{need}'{did_you_mean(need, others)}",
                             shown=where)
            elif need in wanted[:i]:
                report.warning((*where, i), f"job '{need}' is listed twice", shown=where)
    combined = {name: [*wanted, *implied.get(name, ())] for name, wanted in needs.items()}
    for cycle in _cycles(names, combined):
        first, second = cycle[0], cycle[1]
        staged = any(b not in needs[a] for a, b in itertools.pairwise(cycle))
        through = " (with the needs that stages add)" if staged else ""
        at: Path = (("jobs", first, "needs", needs[first].index(second))
                    if second in needs[first] else ("jobs", first, "stage"))
        report.error(at, f"dependency cycle: {' -> '.join(cycle)}{through}", shown=at[:3])


def _cycles(names: list[str], needs: dict[str, list[str]]) -> list[list[str]]:
    """One cycle per set of jobs caught in one, each starting at its first job in the file."""
    edges = {n: [d for d in dict.fromkeys(wanted) if d in needs and d != n]
             for n, wanted in needs.items()}
    order = {name: i for i, name in enumerate(names)}
    state: dict[str, int] = {}  # 1: on the DFS stack, 2: done
    found: dict[frozenset[str], list[str]] = {}
    for root in names:
        if state.get(root):
            continue
        stack: list[tuple[str, Iterator[str]]] = [(root, iter(edges[root]))]
        state[root] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
            elif state.get(child) == 1:  # back edge: the stack from child on is a cycle
                path = [n for n, _ in stack]
                ring = path[path.index(child):]
                start = min(range(len(ring)), key=lambda k: order[ring[k]])
                ring = ring[start:] + ring[:start]
                found.setdefault(frozenset(ring), [*ring, ring[0]])
            elif not state.get(child):
                state[child] = 1
                stack.append((child, iter(edges[child])))
    return list(found.values())


# --- on: -------------------------------------------------------------------------------------

_FILTERS = {"push": ("branches", "tags", "paths"), "pull_request": ("branches", "paths")}
_NOUNS = {"branches": "branch", "tags": "tag", "paths": "path"}


def _check_on(report: Reporter, raw: object) -> OnModel | None:
    """Validate ``on:`` (an event name, a list of them, or a mapping) and check its
    filters; the model comes back when there is no error in it."""
    if isinstance(raw, str | list):
        expanded = _on_shorthand(report, raw if isinstance(raw, list) else [raw],
                                 single=isinstance(raw, str))
        if expanded is None:
            return None
        raw = expanded
    elif not isinstance(raw, dict):
        report.error(("on",), f"expected an event name, a list of them or a mapping, got "
                     f"{kind(raw)}")
        return None
    elif not raw:
        report.error(("on",), "lists no event (remove 'on' to trigger on every event)")
        return None
    on, problems = validate(OnModel, raw, ("on",), report.document, report.file)
    report.diagnostics.extend(problems)
    for block, bases in _FILTERS.items():
        written = raw.get(block)
        if not isinstance(written, dict):
            continue
        for base in bases:
            if base in written and f"{base}-ignore" in written:
                report.error(("on", block, f"{base}-ignore"),
                             f"use either '{base}' or '{base}-ignore', not both (put '!' "
                             f"patterns in '{base}' instead)", at_key=True)
            for key in (base, f"{base}-ignore"):
                _check_patterns(report, ("on", block, key), written.get(key), base)
    if on is not None and not (on.push or on.pull_request or on.schedule or on.manual):
        report.warning(("on",), "no event triggers this pipeline")
    return on


def _on_shorthand(report: Reporter, names: list[object], single: bool,
                  ) -> dict[str, None] | None:
    """``on: push`` / ``on: [push, pull_request]`` -> ``{push: null, ...}``; None on error."""
    if not names:
        report.error(("on",), "lists no event (remove 'on' to trigger on every event)")
        return None
    out: dict[str, None] = {}
    failed = False
    for i, name in enumerate(names):
        path: Path = ("on",) if single else ("on", i)
        problem = _event_name_problem(name)
        if problem:
            report.error(path, problem)
            failed = True
        elif isinstance(name, str):
            if name in out:
                report.warning(path, f"event '{name}' is listed twice")
            out[name] = None
    return None if failed else out


def _event_name_problem(name: object) -> str | None:
    if not isinstance(name, str):
        return f"expected an event name, got {kind(name)}"
    if name == "schedule":
        return "schedule needs cron lines: write 'on: {schedule: [{cron: \"0 3 * * *\"}]}'"
    if name not in ON_EVENTS:
        return (f"unknown event '{name}'{did_you_mean(name, ON_EVENTS)} (expected one of: "
                f"{', '.join(ON_EVENTS)})")
    return None


def _check_patterns(report: Reporter, path: Path, value: object, base: str) -> None:
    """Warnings for pattern lists that are valid but cannot mean what was written."""
    patterns = value if isinstance(value, list) else [value] if isinstance(value, str) else None
    if patterns == []:
        report.warning(path, f"an empty list matches no {_NOUNS[base]}")
    for i, pattern in enumerate(patterns or []):
        if not isinstance(pattern, str):
            continue
        where: Path = (*path, i) if isinstance(value, list) else path
        body = pattern.removeprefix("!")
        if base in ("branches", "tags") and body.startswith("refs/"):
            report.warning(where, f"{base} are matched by name: '{pattern}' never matches "
                           f"(write '{body.split('/', 2)[-1]}')")
        elif base == "paths" and body.startswith(("/", "./")):
            report.warning(where, f"paths are matched from the repository root without a "
                           f"leading '/' or './': '{pattern}' never matches")


# --- notify: ---------------------------------------------------------------------------------

_CHATS = ("slack", "mattermost", "discord")


def _check_notify(report: Reporter, raw: object) -> tuple[NotifyRuleModel, ...]:
    """Validate ``notify:`` (a rule, or a list of them) rule by rule, check the names and
    warn of secrets written in the file; the rules without an error come back."""
    if isinstance(raw, dict):
        items: list[tuple[Path, object]] = [(("notify",), raw)]
    elif isinstance(raw, list):
        items = [(("notify", i), item) for i, item in enumerate(raw)]
    elif raw is None:
        items = []
    else:
        report.error(("notify",), f"expected a rule (a mapping) or a list of them, got "
                     f"{kind(raw)}")
        return ()
    if not items:
        report.warning(("notify",), "lists no rule (remove 'notify' if none is meant)")
    rules: list[NotifyRuleModel] = []
    for base, item in items:
        rule, problems = validate(NotifyRuleModel, item, base, report.document, report.file)
        report.diagnostics.extend(problems)
        _check_rule(report, base, rule, item)
        if rule is not None:
            rules.append(rule)
    _check_rule_names(report, items)
    return tuple(rules)


def _check_rule(report: Reporter, base: Path, rule: NotifyRuleModel | None,
                raw: object) -> None:
    """Warnings about one rule; secrets written in the file are found even in a rule with
    errors, the rest only in a valid one."""
    if not isinstance(raw, dict):
        return
    for chat in _CHATS:
        url = raw.get(chat)
        if isinstance(url, str) and not VARIABLE.search(url):
            report.warning((*base, chat), LITERAL_SECRET.format(what="URL"))
    hook = raw.get("webhook")
    secret = hook.get("secret") if isinstance(hook, dict) else None
    if isinstance(secret, str) and secret and not VARIABLE.search(secret):
        report.warning((*base, "webhook", "secret"), LITERAL_SECRET.format(what="secret"))
    if rule is None:
        return
    _check_patterns(report, (*base, "branches"), raw.get("branches"), "branches")
    listed = isinstance(raw.get("email"), list)
    seen: set[str] = set()
    for i, address in enumerate(rule.email or ()):
        if address.lower() in seen:
            report.warning((*base, "email", i) if listed else (*base, "email"),
                           f"address '{address}' is listed twice")
        seen.add(address.lower())


def _check_rule_names(report: Reporter, items: list[tuple[Path, object]]) -> None:
    """Names are unique in a file; a rule without one is named by its position."""
    given: list[str | None] = []
    for _, item in items:
        name = item.get("name") if isinstance(item, dict) else None
        given.append(name if isinstance(name, str) and name else None)
    marks = report.document.marks
    for index, first, name in duplicate_rules(given):
        base = items[index][0]
        line = marks.locate(items[first][0])[0]
        if given[index] is not None:
            report.error((*base, "name"), f"duplicate rule name '{name}' (first at line {line})")
        else:
            report.error(base, f"this rule is named '{name}' by its position, as the rule at "
                         f"line {line} is; give it a name")
