"""``caicloud.yml``, Cyclone's original pipeline file, read into the same ``Plan``.

The original has up to five optional sections; each present one becomes one job,
in the order pre_build -> build -> integration -> post_build -> deploy, each
needing the previous present one:

* pre_build, integration, post_build: ``image`` + ``commands`` (+ ``environment``,
  a list of ``K=V`` or a mapping) -> one step of that name. integration may have
  ``services`` (name -> image, environment, command or commands) and its image
  defaults to the built one.
* build: ``context_dir`` (default ".") and ``dockerfile_name`` (default
  "Dockerfile") -> one step with a ``BuildSpec`` and no image or commands.
* deploy: a list; entries with ``image`` + ``commands`` become steps
  ``deploy-N`` (N: the entry's 1-based position); entries that deploy to a
  cluster (kubernetes, Caicloud) cannot run here: a warning, and they are dropped.

``image: BUILT_IMAGE`` (the original's marker for the image the build section
produced) is kept as the string ``BUILT_IMAGE`` for the runtime to replace.
``privileged`` and ``volumes`` (the original mounted the Docker socket for
Docker-in-Docker) are passed through for a trusted project only, errors in another
(``shared.pipeline.trust``). Container keys of the original that this runner does not
honour (ports, links, ...) give a warning; unknown keys are errors.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from shared.pipeline.diagnostics import Diagnostic
from shared.pipeline.loader import Path, Reporter, ordered, parse
from shared.pipeline.plan import BuildSpec, JobSpec, Plan, ServiceSpec, StepSpec
from shared.pipeline.resources import UNKNOWN, Policy
from shared.pipeline.schema import (
    CaiBuild,
    CaiDeploy,
    CaiFile,
    CaiSection,
    CaiService,
    validate,
)
from shared.pipeline.trust import check_privileged, check_volumes, mountable

__all__ = ["BUILT_IMAGE", "SECTIONS", "CheckedCaicloud", "check_caicloud", "translate"]

BUILT_IMAGE = "BUILT_IMAGE"
SECTIONS = ("pre_build", "build", "integration", "post_build", "deploy")
_RUN_SECTIONS = ("pre_build", "integration", "post_build")
_IGNORED = ("name", "pull", "ports", "links", "entrypoint", "extra_hosts", "devices", "net",
            "dns", "auth_config", "mem_limit", "cpuset", "oom_kill_disable", "outputs")
_CLUSTER_KEYS = ("type", "host", "token", "cluster", "namespace", "deployment", "containers")


@dataclass(frozen=True)
class CheckedCaicloud:
    """A ``caicloud.yml`` without errors: its jobs, in order, not yet chained by needs."""

    jobs: list[JobSpec] = field(default_factory=list)


def check_caicloud(text: str, file: str, policy: Policy = UNKNOWN,
                   ) -> tuple[CheckedCaicloud | None, list[Diagnostic]]:
    """Lint a ``caicloud.yml`` for a project with ``policy``; the translated jobs come back
    only when there is no error."""
    parsed = parse(text, file)
    if parsed.document is None:
        return None, parsed.diagnostics
    document = parsed.document
    report = Reporter(file, document)
    top, problems = validate(CaiFile, document.data, (), document, file)
    report.diagnostics.extend(problems)
    data = document.data if isinstance(document.data, dict) else {}
    has_build = "build" in data
    jobs: list[JobSpec] = []
    for section in SECTIONS:
        if section not in data:
            continue
        job = _section(report, section, data[section], has_build, policy)
        if job is not None:
            jobs.append(job)
    if isinstance(document.data, dict) and not any(s in data for s in SECTIONS):
        report.error((), f"no section to run (expected some of: {', '.join(SECTIONS)})")
    elif top is not None and not jobs and not _errors(report):
        report.error((), "no section can run here (only cluster deploy entries)")
    diagnostics = ordered(report.diagnostics)
    if top is None or _errors(report):
        return None, diagnostics
    return CheckedCaicloud(jobs), diagnostics


def translate(checked: CheckedCaicloud, file: str) -> Plan:
    """The plan: the checked jobs, each needing the one before it."""
    jobs: list[JobSpec] = []
    for job in checked.jobs:
        needs = (jobs[-1].name,) if jobs else ()
        jobs.append(dataclasses.replace(job, needs=needs))
    return Plan(source_file=file, jobs=tuple(jobs))


def _errors(report: Reporter) -> bool:
    return any(d.severity == "error" for d in report.diagnostics)


def _section(report: Reporter, section: str, raw: Any, has_build: bool,
             policy: Policy) -> JobSpec | None:
    if section == "build":
        return _build(report, {} if raw is None else raw)
    if section == "deploy":
        return _deploy(report, raw, has_build)
    base: Path = (section,)
    image = _required(report, base, raw, section, has_build)
    model, problems = validate(CaiSection, raw, base, report.document, report.file)
    report.diagnostics.extend(problems)
    if model is None:
        return None
    _ignored(report, base, model)
    for key in ("context_dir", "dockerfile_name"):
        if key in model.model_fields_set:
            report.warning((*base, key), f"'{key}' is used in the build section only; "
                           "ignored here", at_key=True)
    if model.services is not None and section != "integration":
        report.error((*base, "services"), "services are supported in integration only",
                     at_key=True)
    services = _services(report, base, model.services or {}, has_build, policy)
    _check_host_access(report, base, model, policy)
    step = StepSpec(name=section, image=image or "", commands=tuple(model.commands or ()),
                    privileged=bool(model.privileged),
                    volumes=tuple(filter(mountable, model.volumes or ())))
    return JobSpec(name=section, image=image or "", steps=(step,),
                   env=_env(model.environment), services=services)


def _required(report: Reporter, base: Path, raw: Any, section: str, has_build: bool,
              ) -> str | None:
    """Check image and commands on the raw section, so a section with other errors is
    checked too; the image to use (the built one for an integration without its own)."""
    if not isinstance(raw, dict):
        return None
    image = raw.get("image")
    if image is None and section == "integration" and has_build:
        image = BUILT_IMAGE  # the original runs integration in the image just built
    if image is None:
        report.error(base, "missing required key 'image'")
    if "commands" not in raw:
        report.error(base, "missing required key 'commands'")
    if not isinstance(image, str):
        return None
    _built_image(report, (*base, "image"), image, has_build, section)
    return image


def _build(report: Reporter, raw: Any) -> JobSpec | None:
    model, problems = validate(CaiBuild, raw, ("build",), report.document, report.file)
    report.diagnostics.extend(problems)
    if model is None:
        return None
    spec = BuildSpec(context_dir=model.context_dir or ".",
                     dockerfile=model.dockerfile_name or "Dockerfile")
    step = StepSpec(name="build", image="", build=spec)
    return JobSpec(name="build", image="", steps=(step,), env=_env(model.environment))


def _deploy(report: Reporter, raw: Any, has_build: bool) -> JobSpec | None:
    entries = raw if isinstance(raw, list) else [raw]
    base: Path = ("deploy",)
    steps: list[StepSpec] = []
    for i, entry in enumerate(entries):
        where: Path = (*base, i) if isinstance(raw, list) else base
        model, problems = validate(CaiDeploy, entry, where, report.document, report.file)
        report.diagnostics.extend(problems)
        if model is None:
            continue
        cluster = [k for k in _CLUSTER_KEYS if k in model.model_fields_set]
        if cluster:
            target = model.type or "caicloud"
            report.warning(where, f"deploying to a cluster ({target}) cannot run here; "
                           "entry dropped")
            continue
        if model.image is None or model.commands is None:
            missing = "image" if model.image is None else "commands"
            report.error(where, f"missing required key '{missing}' (a deploy entry needs "
                         "image and commands, or a cluster)")
            continue
        _built_image(report, (*where, "image"), model.image, has_build, "deploy")
        steps.append(StepSpec(name=f"deploy-{i + 1}", image=model.image,
                              commands=tuple(model.commands), env=_env(model.environment)))
    if not steps:
        return None
    return JobSpec(name="deploy", image=steps[0].image, steps=tuple(steps))


def _services(report: Reporter, base: Path, raw: dict[str, CaiService | None],
              has_build: bool, policy: Policy) -> tuple[ServiceSpec, ...]:
    out: list[ServiceSpec] = []
    for name, service in raw.items():
        where: Path = (*base, "services", name)
        service = service or CaiService()
        _ignored(report, where, service)
        _check_host_access(report, where, service, policy)
        image = service.image or name  # the original: a service's image defaults to its name
        _built_image(report, (*where, "image"), image, has_build, "integration")
        if service.command is not None and service.commands is not None:
            report.error((*where, "commands"), "use either 'command' or 'commands'",
                         at_key=True)
        command: tuple[str, ...] = tuple(service.command or ())
        if service.commands:  # a script, as the original's sections run commands
            command = ("/bin/sh", "-c", " && ".join(service.commands))
        out.append(ServiceSpec(name=name, image=image, env=_env(service.environment),
                               command=command, privileged=bool(service.privileged),
                               volumes=tuple(filter(mountable, service.volumes or ()))))
    return tuple(out)


def _check_host_access(report: Reporter, base: Path, model: CaiSection | CaiService,
                       policy: Policy) -> None:
    check_privileged(report, (*base, "privileged"), model.privileged, policy)
    check_volumes(report, (*base, "volumes"), model.volumes, policy)


def _ignored(report: Reporter, base: Path, model: CaiSection | CaiService) -> None:
    for key in _IGNORED:
        if key not in model.model_fields_set:
            continue
        why = ("services are reachable by name without links" if key == "links"
               else "not supported by this runner")
        report.warning((*base, key), f"'{key}' is ignored: {why}", at_key=True)


def _built_image(report: Reporter, path: Path, image: str | None, has_build: bool,
                 section: str) -> None:
    if image != BUILT_IMAGE:
        return
    if not has_build:
        report.error(path, f"{BUILT_IMAGE} needs a build section")
    elif section == "pre_build":
        report.error(path, f"{BUILT_IMAGE} is not built yet: pre_build runs before build")


def _env(environment: list[str] | dict[str, str] | None) -> dict[str, str]:
    """``["K=V", "A = b"]`` or ``{K: V}`` -> ``{"K": "V", "A": "b"}``."""
    if isinstance(environment, dict):
        return dict(environment)
    out: dict[str, str] = {}
    for item in environment or []:
        key, value = item.split("=", 1)  # the schema checked there is one
        out[key.strip()] = value.strip()
    return out
