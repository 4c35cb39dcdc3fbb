"""``caicloud.yml``, Cyclone's original pipeline file, read into the same ``Plan``, doing
what the original did with it.

The original has up to five optional sections; each present one becomes one job (deploy:
one per cluster), in the order pre_build -> build -> integration -> post_build -> deploy,
each needing the previous present one:

* pre_build, integration, post_build: ``image`` + ``commands`` (+ ``environment``, a list
  of ``K=V`` or a mapping) -> one step of that name. ``volumes: [".:/some/path"]`` puts
  the source at that path too, and the step works there (``StepSpec.workdir``).
  integration may have ``services`` (name -> image, environment, command or commands) and
  its image defaults to the built one.
* pre_build may build its image: with ``context_dir`` / ``dockerfile_name`` a local build
  step (``pre_build-image``) comes first, then its commands run in that image (none: the
  image's own command). Its ``outputs`` (paths in its container; relative ones from the
  repository) are copied into the build's context after its commands, in the same
  container, as the original copied them out of it.
* build: ``context_dir`` (default ".") and ``dockerfile_name`` (default "Dockerfile") ->
  one build step. With the project's registry setting (``Policy.registry``) the image is
  ``<url>/<project>:<commit>`` (the original: its registry, the service's name and the
  commit), pushed, named ``built``, the registry login in ``Plan.registries``; later
  sections' ``BUILT_IMAGE`` is then ``${{ images.built }}``, the pushed digest, usable on
  any worker. Without a registry the image stays local (``BUILT_IMAGE``, for the worker to
  replace) and a warning says it is not pushed.
* deploy: a list. Cluster entries of every documented vintage (``deployment`` /
  ``namespace`` / ``cluster`` / ``containers``; ``application`` / ``partition`` for
  deployment / namespace; ``type: kubernetes`` with ``host`` and ``token``) deploy the
  pushed image to the project's cluster of that name (``Policy.clusters``: the secrets
  holding its server, token and CA): one job per cluster, whose ``environment`` is the
  cluster's name. A token written in the file is warned about and never used. An entry
  whose cluster is not set, or with no pushed image to deploy, is dropped with a warning
  naming what to set. Entries with ``image`` + ``commands`` are steps too. Either kind is
  step ``deploy-N`` (N: the entry's 1-based position).

Host access: ``privileged`` and other ``volumes`` are passed through for a trusted project
only, errors in another (``shared.pipeline.trust``). The original mounted the Docker socket
in every section's container: here a trusted project's sections get it; in another, a
section whose commands run ``docker`` is warned about.

Keys the original accepted and ignored (a section's ``command`` or ``entrypoint``,
``ports``, ``links``, the build section's ``image`` and ``commands``, ...) are warnings; a
section with ``command`` and no ``commands`` ran nothing there, and is left out here. A
service's ``entrypoint``, which the original honoured, is an error (ignoring it would
change what runs), as unknown keys are. A top-level ``services:`` (ignored by the original
too) is a warning with the hint to move it under ``integration``.
"""

from __future__ import annotations

import dataclasses
import posixpath
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.pipeline.diagnostics import Diagnostic
from shared.pipeline.loader import Path, Reporter, ordered, parse
from shared.pipeline.overrides import apply as overridden
from shared.pipeline.plan import (
    BuildSpec,
    DeploySpec,
    JobSpec,
    KubernetesTarget,
    Plan,
    RegistryLogin,
    ServiceSpec,
    StepSpec,
)
from shared.pipeline.resources import UNKNOWN, Policy, trust_hint
from shared.pipeline.schema import (
    CaiBuild,
    CaiDeploy,
    CaiFile,
    CaiSection,
    CaiService,
    validate,
)
from shared.pipeline.trust import check_privileged, check_volume, check_volumes, mountable

__all__ = ["BUILT_IMAGE", "BUILT_NAME", "DOCKER_SOCKET", "PUSHED_IMAGE", "SECTIONS",
           "CheckedCaicloud", "check_caicloud", "translate"]

BUILT_IMAGE = "BUILT_IMAGE"  # the original's marker for the image the build section made
BUILT_NAME = "built"  # that image's name in ${{ images.NAME }} once pushed
PUSHED_IMAGE = "${{ images." + BUILT_NAME + " }}"
DOCKER_SOCKET = "/var/run/docker.sock:/var/run/docker.sock"
SECTIONS = ("pre_build", "build", "integration", "post_build", "deploy")
DEFAULT_CLUSTER = "default"  # the cluster of an entry that names none
_WORKSPACE = "/workspace"  # shared.ports.executor.WORKSPACE (which imports the plan)
_IGNORED = ("name", "pull", "ports", "links", "entrypoint", "extra_hosts", "devices", "net",
            "dns", "auth_config", "mem_limit", "cpuset", "oom_kill_disable")
_WHY_IGNORED = {
    "links": "services are reachable by name without links",
    "entrypoint": "a section's commands run with /bin/sh, as in the original",
    "command": "a section runs its 'commands', as in the original",
}
_BUILD_IGNORED = ("image", "commands", "command", "privileged", "volumes", *_IGNORED)
_CLUSTER_KEYS = ("type", "host", "token", "cluster", "namespace", "deployment", "containers",
                 "application", "partition")
_KUBERNETES = ("kubernetes", "caicloud", "caicloud_claas")  # Caicloud's clusters are too
_RUNS_DOCKER = re.compile(r"(^|[\s;&|(`])docker(\s|$)")
_SOCKET_TARGET = DOCKER_SOCKET.split(":")[1]


@dataclass(frozen=True)
class CheckedCaicloud:
    """A ``caicloud.yml`` without errors: its jobs, in order, not yet chained by needs, and
    the registry login its pushed build needs."""

    jobs: list[JobSpec] = field(default_factory=list)
    registries: tuple[RegistryLogin, ...] = ()


@dataclass(frozen=True)
class _Context:
    report: Reporter
    policy: Policy
    has_build: bool
    build_dir: str  # the build's context, where pre_build's outputs go

    @property
    def pushed(self) -> bool:
        """Whether the build section pushes its image (the project has a registry)."""
        return self.has_build and self.policy.registry is not None

    def image(self, image: str) -> str:
        """``image`` as a later section runs it: the pushed digest for ``BUILT_IMAGE``."""
        return PUSHED_IMAGE if image == BUILT_IMAGE and self.pushed else image


def check_caicloud(text: str, file: str, policy: Policy = UNKNOWN,
                   overrides: Sequence[str] = (),
                   ) -> tuple[CheckedCaicloud | None, list[Diagnostic]]:
    """Lint a ``caicloud.yml`` for a project with ``policy``, ``overrides`` set
    (``--set``, ``shared.pipeline.overrides``); the translated jobs come back only when
    there is no error."""
    parsed = parse(text, file)
    if parsed.document is None:
        return None, parsed.diagnostics
    document, unset = overridden(parsed.document, overrides)
    report = Reporter(file, document)
    report.diagnostics.extend(unset)
    top, problems = validate(CaiFile, document.data, (), document, file)
    report.diagnostics.extend(problems)
    data = document.data if isinstance(document.data, dict) else {}
    if "services" in data:
        report.warning(("services",), "'services' at the top level is not read (the original "
                       "ignored it too): move it under integration (integration: services: "
                       "...)", at_key=True)
    ctx = _Context(report, policy, "build" in data, _build_dir(data.get("build")))
    jobs: list[JobSpec] = []
    for section in SECTIONS:
        if section in data:
            jobs += _section(ctx, section, data[section])
    if isinstance(document.data, dict) and not any(s in data for s in SECTIONS):
        report.error((), f"no section to run (expected some of: {', '.join(SECTIONS)})")
    elif top is not None and not jobs and not _errors(report):
        report.error((), "no section can run here (each is left out: see the warnings)")
    diagnostics = ordered(report.diagnostics)
    if top is None or _errors(report):
        return None, diagnostics
    return CheckedCaicloud(jobs, _registries(policy) if ctx.pushed else ()), diagnostics


def translate(checked: CheckedCaicloud, file: str) -> Plan:
    """The plan: the checked jobs, each needing the one before it."""
    jobs: list[JobSpec] = []
    for job in checked.jobs:
        needs = (jobs[-1].name,) if jobs else ()
        jobs.append(dataclasses.replace(job, needs=needs))
    return Plan(source_file=file, jobs=tuple(jobs), registries=checked.registries)


def _errors(report: Reporter) -> bool:
    return any(d.severity == "error" for d in report.diagnostics)


def _build_dir(raw: Any) -> str:
    context = raw.get("context_dir") if isinstance(raw, dict) else None
    if not isinstance(context, str):
        return "."
    return posixpath.normpath(context.strip().lstrip("/") or ".")  # as the build reads it


def _registries(policy: Policy) -> tuple[RegistryLogin, ...]:
    registry = policy.registry
    if registry is None or not registry.username or not registry.password_secret:
        return ()  # a registry that takes pushes without a login
    return (RegistryLogin(registry.host, registry.username, registry.password_secret),)


def _section(ctx: _Context, section: str, raw: Any) -> list[JobSpec]:
    if section == "deploy":
        return _deploy(ctx, raw)
    job = _build(ctx, {} if raw is None else raw) if section == "build" else \
        _run_section(ctx, section, raw)
    return [job] if job is not None else []


# -- pre_build, integration, post_build -------------------------------------------------------

def _run_section(ctx: _Context, section: str, raw: Any) -> JobSpec | None:
    report = ctx.report
    base: Path = (section,)
    image_build = _image_build(ctx, base, raw) if section == "pre_build" else None
    image = _required(ctx, base, raw, section, image_build)
    model, problems = validate(CaiSection, raw, base, report.document, report.file)
    report.diagnostics.extend(problems)
    if model is None:
        return None
    _ignored(report, base, model, ("command", *_IGNORED))
    if section != "pre_build":
        for key in ("context_dir", "dockerfile_name", "outputs"):
            if key in model.model_fields_set:
                report.warning((*base, key), f"'{key}' is used in pre_build only; ignored "
                               "here", at_key=True)
    elif image_build is not None and "image" in model.model_fields_set:
        report.warning((*base, "image"), f"'image' is ignored: pre_build builds its image from "
                       f"{_dockerfile(image_build)}, as in the original", at_key=True)
    if model.services is not None and section != "integration":
        report.error((*base, "services"), "services are supported in integration only",
                     at_key=True)
    services = _services(ctx, base, model.services or {})
    check_privileged(report, (*base, "privileged"), model.privileged, ctx.policy)
    workdir, volumes = _volumes(ctx, base, model.volumes or [])
    commands = tuple(model.commands or ())
    if not commands and image_build is None:
        if "command" in model.model_fields_set:  # the original ran an empty script
            report.warning(base, f"{section} runs nothing: no 'commands' (the original ran "
                           "none either); left out", at_key=True)
        return None  # else: reported as missing
    volumes = _socket(ctx, base, volumes, commands)
    copy = _copy_outputs(_outputs(ctx, base, raw), ctx.build_dir) if section == "pre_build" \
        else ()
    steps: list[StepSpec] = []
    if image_build is not None:
        steps.append(StepSpec(name=f"{section}-image", image="", build=image_build))
    # the image pre_build just built is a local one, on this worker
    run_image = BUILT_IMAGE if image_build is not None else ctx.image(image or "")
    run = StepSpec(name=section, image=run_image, commands=commands,
                   privileged=bool(model.privileged), volumes=volumes, workdir=workdir)
    if commands:
        steps.append(dataclasses.replace(run, commands=commands + copy))
    else:  # the built image's own command, then the copy (the image's files)
        steps.append(run)
        if copy:
            steps.append(dataclasses.replace(run, name="outputs", commands=copy))
    return JobSpec(name=section, image=run.image, steps=tuple(steps),
                   env=_env(model.environment), services=services)


def _required(ctx: _Context, base: Path, raw: Any, section: str,
              image_build: BuildSpec | None) -> str | None:
    """Check image and commands on the raw section, so a section with other errors is
    checked too; the image to use (the built one for an integration without its own)."""
    if not isinstance(raw, dict):
        return None
    image = raw.get("image")
    if image is None and section == "integration" and ctx.has_build:
        image = BUILT_IMAGE  # the original runs integration in the image just built
    if image is None and image_build is None:
        ctx.report.error(base, "missing required key 'image'")
    if "commands" not in raw and "command" not in raw and image_build is None:
        ctx.report.error(base, "missing required key 'commands'")
    if not isinstance(image, str):
        return None
    _built_image(ctx, (*base, "image"), image, section)
    return image


def _image_build(ctx: _Context, base: Path, raw: Any) -> BuildSpec | None:
    """pre_build's own image, when it builds one (``context_dir`` / ``dockerfile_name``)."""
    if not isinstance(raw, dict):
        return None
    given: dict[str, str] = {}
    for key in ("context_dir", "dockerfile_name"):
        value = raw.get(key)
        if isinstance(value, str) and value.strip():
            given[key] = value.strip()
        elif value is not None:
            ctx.report.error((*base, key), "expected a path (a non-empty string)")
    if not given:
        return None
    return BuildSpec(context_dir=given.get("context_dir", "."),
                     dockerfile=given.get("dockerfile_name", "Dockerfile"))


def _dockerfile(build: BuildSpec) -> str:
    return posixpath.join(build.context_dir, build.dockerfile)


def _outputs(ctx: _Context, base: Path, raw: Any) -> tuple[str, ...]:
    value = raw.get("outputs") if isinstance(raw, dict) else None
    if value is None:
        return ()
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(item, str) and item.strip() for item in items):
        ctx.report.error((*base, "outputs"), "expected a path or a list of paths")
        return ()
    return tuple(item.strip() for item in items)


def _copy_outputs(outputs: tuple[str, ...], build_dir: str) -> tuple[str, ...]:
    """The commands that copy ``outputs`` (relative: from the repository) into the build's
    context; one already there (the same file, by another mount) is left as it is."""
    if not outputs:
        return ()
    into = '"$CYCLONE_WORKSPACE"' + ("" if build_dir == "." else f"/{shlex.quote(build_dir)}")
    commands = ['cd "$CYCLONE_WORKSPACE"', f"mkdir -p {into}"]
    for output in outputs:
        source = shlex.quote(output)
        name = shlex.quote(posixpath.basename(output.rstrip("/")) or output)
        commands.append(f"[ {source} -ef {into}/{name} ] || cp -R {source} {into}/")
    return tuple(commands)


def _volumes(ctx: _Context, base: Path, volumes: list[str]) -> tuple[str, tuple[str, ...]]:
    """The step's working directory (``.:/some/path``: the source there) and the volumes
    to mount (other host volumes: trusted projects only)."""
    workdir = ""
    kept: list[str] = []
    for i, volume in enumerate(volumes):
        where: Path = (*base, "volumes", i)
        source, _, rest = volume.partition(":")
        if source != ".":
            check_volume(ctx.report, where, volume, ctx.policy)
            kept += [volume] if mountable(volume) else []
            continue
        target = posixpath.normpath(rest.split(":", 1)[0])
        if workdir:
            ctx.report.warning(where, f"'{volume}' is ignored: the source is at {workdir} "
                               "already")
        elif target == "/" or target == _WORKSPACE or target.startswith(f"{_WORKSPACE}/"):
            ctx.report.warning(where, f"'{volume}' is ignored: the source is at {_WORKSPACE} "
                               "already (mount it at another path)")
        else:
            workdir = target
    return workdir, tuple(kept)


def _socket(ctx: _Context, base: Path, volumes: tuple[str, ...],
            commands: tuple[str, ...]) -> tuple[str, ...]:
    """The original mounted the Docker socket in every section's container: a trusted
    project's sections get it; in another, commands that run docker are warned about."""
    if any(volume.split(":")[1] == _SOCKET_TARGET for volume in volumes):
        return volumes  # asked for in the file, and judged there
    if ctx.policy.trusted is True:
        return (*volumes, DOCKER_SOCKET)
    if any(_RUNS_DOCKER.search(command) for command in commands):
        ctx.report.warning((*base, "commands"), trust_hint(
            ctx.policy, "the Docker socket, which the original mounted in every container "
            "(these commands run docker),"), at_key=True)
    return volumes


def _services(ctx: _Context, base: Path,
              raw: dict[str, CaiService | None]) -> tuple[ServiceSpec, ...]:
    report = ctx.report
    out: list[ServiceSpec] = []
    for name, service in raw.items():
        where: Path = (*base, "services", name)
        service = service or CaiService()
        _ignored(report, where, service, tuple(k for k in _IGNORED if k != "entrypoint"))
        if "entrypoint" in service.model_fields_set:
            report.error((*where, "entrypoint"), "a service's 'entrypoint' is not supported "
                         "here, and ignoring it would change what the service runs: write "
                         "the whole command in 'command'", at_key=True)
        check_privileged(report, (*where, "privileged"), service.privileged, ctx.policy)
        check_volumes(report, (*where, "volumes"), service.volumes, ctx.policy)
        image = service.image or name  # the original: a service's image defaults to its name
        _built_image(ctx, (*where, "image"), image, "integration")
        if service.command is not None and service.commands is not None:
            report.error((*where, "commands"), "use either 'command' or 'commands'",
                         at_key=True)
        command: tuple[str, ...] = tuple(service.command or ())
        if service.commands:  # a script, as the original's sections run commands
            command = ("/bin/sh", "-c", " && ".join(service.commands))
        out.append(ServiceSpec(name=name, image=ctx.image(image), env=_env(service.environment),
                               command=command, privileged=bool(service.privileged),
                               volumes=tuple(filter(mountable, service.volumes or ()))))
    return tuple(out)


# -- build ------------------------------------------------------------------------------------

def _build(ctx: _Context, raw: Any) -> JobSpec | None:
    report = ctx.report
    model, problems = validate(CaiBuild, raw, ("build",), report.document, report.file)
    report.diagnostics.extend(problems)
    if model is None:
        return None
    spec = BuildSpec(context_dir=model.context_dir or ".",
                     dockerfile=model.dockerfile_name or "Dockerfile")
    for key in _BUILD_IGNORED:
        if key in model.model_fields_set:
            report.warning(("build", key), f"'{key}' is ignored: the build section builds "
                           f"{_dockerfile(spec)}, as in the original", at_key=True)
    registry = ctx.policy.registry
    if registry is None:
        report.warning(("build",), _not_pushed(ctx.policy), at_key=True)
    else:
        tag = f"{registry.url}/{ctx.policy.project.lower()}:${{CYCLONE_COMMIT}}"
        spec = dataclasses.replace(spec, name=BUILT_NAME, tags=(tag,), push=True)
    step = StepSpec(name="build", image="", build=spec)
    return JobSpec(name="build", image="", steps=(step,), env=_env(model.environment))


def _not_pushed(policy: Policy) -> str:
    what = "the image is built on the worker and not pushed"
    if not policy.project:
        return (f"{what}: a project with a registry setting pushes it as <registry>/<project>:"
                "<commit> (cyclone project update NAME --registry HOST[:PORT][/PATH])")
    return (f"{what}: project '{policy.project}' has no registry (a maintainer sets one to push "
            f"it as <registry>/{policy.project.lower()}:<commit>: cyclone project update "
            f"{policy.project} --registry HOST[:PORT][/PATH])")


# -- deploy -----------------------------------------------------------------------------------

def _deploy(ctx: _Context, raw: Any) -> list[JobSpec]:
    """Steps ``deploy-N`` in one job ``deploy``, whose environment is the cluster its
    entries deploy to; with several clusters, a job per cluster (``deploy (NAME)``, its
    environment NAME) and one for the entries that run commands, in file order."""
    report = ctx.report
    entries = raw if isinstance(raw, list) else [raw]
    base: Path = ("deploy",)
    steps: list[tuple[str | None, StepSpec]] = []  # (its cluster, the step), in file order
    for i, entry in enumerate(entries):
        where: Path = (*base, i) if isinstance(raw, list) else base
        model, problems = validate(CaiDeploy, entry, where, report.document, report.file)
        report.diagnostics.extend(problems)
        if model is None:
            continue
        name = f"deploy-{i + 1}"
        if any(key in model.model_fields_set for key in _CLUSTER_KEYS):
            found = _cluster_step(ctx, where, model, name)
            if found is not None:
                steps.append(found)
            continue
        if model.image is None or model.commands is None:
            missing = "image" if model.image is None else "commands"
            report.error(where, f"missing required key '{missing}' (a deploy entry needs "
                         "image and commands, or a cluster)")
            continue
        _built_image(ctx, (*where, "image"), model.image, "deploy")
        steps.append((None, StepSpec(
            name=name, image=ctx.image(model.image), commands=tuple(model.commands),
            env=_env(model.environment))))
    clusters = [c for c in dict.fromkeys(cluster for cluster, _ in steps) if c]
    if len(clusters) <= 1:
        return [_deploy_job("deploy", "".join(clusters), [s for _, s in steps])] if steps else []
    # a job per cluster, and one for the entries that run commands, in file order
    return [_deploy_job(f"deploy ({key})" if key else "deploy", key or "",
                        [s for cluster, s in steps if cluster == key])
            for key in dict.fromkeys(cluster for cluster, _ in steps)]


def _deploy_job(name: str, environment: str, steps: list[StepSpec]) -> JobSpec:
    return JobSpec(name=name, image=steps[0].image, steps=tuple(steps), environment=environment)


def _cluster_step(ctx: _Context, where: Path, model: CaiDeploy,
                  name: str) -> tuple[str, StepSpec] | None:
    """A cluster entry's step and its cluster; None (and why) when it cannot run here."""
    report = ctx.report
    if model.type is not None and model.type not in _KUBERNETES:
        report.warning((*where, "type"), f"deploying to '{model.type}' is not supported here "
                       "(kubernetes is); entry dropped")
        return None
    if model.token is not None:
        report.warning((*where, "token"), "a token written in the file is readable by everyone "
                       "who can read the repository (revoke it); it is not used: the "
                       "project's cluster setting names the secret holding the token")
    if model.host is not None:
        report.warning((*where, "host"), "'host' is not used: the project's cluster setting "
                       "names the secret holding the API server's URL")
    deployment, one_deployment = _one_of(report, where, model, "deployment", "application")
    namespace, one_namespace = _one_of(report, where, model, "namespace", "partition")
    if not (one_deployment and one_namespace):
        return None
    if deployment is None:
        report.error(where, "missing required key 'deployment' (or 'application')")
        return None
    cluster = model.cluster or DEFAULT_CLUSTER
    setting = ctx.policy.clusters.get(cluster)
    if setting is None:
        report.warning(where, _no_cluster(ctx.policy, cluster))
        return None
    if not ctx.pushed:
        why = ("no build section makes an image to deploy" if not ctx.has_build else
               "the built image is not pushed (no registry), so the cluster cannot pull it")
        report.warning(where, f"{why}; entry dropped")
        return None
    target = KubernetesTarget(
        deployment=deployment, image=PUSHED_IMAGE, namespace=namespace or setting.namespace,
        containers=tuple(model.containers or ()), server_secret=setting.server,
        token_secret=setting.token, ca_secret=setting.ca or "KUBE_CA")
    return cluster, StepSpec(name=name, image="", deploy=DeploySpec(kubernetes=target))


def _one_of(report: Reporter, where: Path, model: CaiDeploy, key: str,
            old: str) -> tuple[str | None, bool]:
    """``key``'s value, or ``old``'s (the original's other name of it), and whether at most
    one of them is given (both: an error)."""
    value: str | None = getattr(model, key)
    older: str | None = getattr(model, old)
    if value is not None and older is not None:
        report.error((*where, old), f"'{old}' is another name of '{key}': give one of them",
                     at_key=True)
        return None, False
    return (value if value is not None else older), True


def _no_cluster(policy: Policy, cluster: str) -> str:
    flag = f"--cluster {cluster}=server=SECRET,token=SECRET"
    if not policy.project:
        return (f"deploying to cluster '{cluster}' needs the project's cluster setting of that "
                f"name (cyclone project update NAME {flag}); entry dropped")
    return (f"project '{policy.project}' has no cluster '{cluster}' (a maintainer adds it: "
            f"cyclone project update {policy.project} {flag}, the secrets holding its API "
            "server's URL and a token); entry dropped")


# -- shared -----------------------------------------------------------------------------------

def _ignored(report: Reporter, base: Path, model: CaiSection | CaiService,
             keys: tuple[str, ...]) -> None:
    for key in keys:
        if key in model.model_fields_set:
            why = _WHY_IGNORED.get(key, "not supported by this runner")
            report.warning((*base, key), f"'{key}' is ignored: {why}", at_key=True)


def _built_image(ctx: _Context, path: Path, image: str | None, section: str) -> None:
    if image != BUILT_IMAGE:
        return
    if not ctx.has_build:
        ctx.report.error(path, f"{BUILT_IMAGE} needs a build section")
    elif section == "pre_build":
        ctx.report.error(path, f"{BUILT_IMAGE} is not built yet: pre_build runs before build")


def _env(environment: list[str] | dict[str, str] | None) -> dict[str, str]:
    """``["K=V", "A = b"]`` or ``{K: V}`` -> ``{"K": "V", "A": "b"}``."""
    if isinstance(environment, dict):
        return dict(environment)
    out: dict[str, str] = {}
    for item in environment or []:
        key, value = item.split("=", 1)  # the schema checked there is one
        out[key.strip()] = value.strip()
    return out
