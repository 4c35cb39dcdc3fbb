"""The linter's delivery checks (``lint.check_cyclone`` calls ``check_delivery``):

* ``${{ images.NAME }}`` names an image a build or promote step pushes, in an earlier
  step of the same job or in a job this one needs (directly or not): a later job may
  run on another worker, so only a pushed image, pinned to its digest, can reach it;
* image names are unique in the file; a build's and a promote's tags are image
  references whose ``${VAR}`` are among ``TAG_VARIABLES``;
* a deploy step's job names its ``environment:`` (the deployment history's key).

``secret_paths`` lists the secrets the delivery keys name (registry passwords, a
Kubernetes deploy's server, token and CA), for ``lint.check_secrets``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from shared.pipeline.loader import Path, Reporter
from shared.pipeline.schema import JobModel, StepModel, did_you_mean

__all__ = ["IMAGE_REF", "TAG_VARIABLES", "check_delivery", "image_name", "secret_paths"]

IMAGE_REF = re.compile(r"\$\{\{\s*images\.([^\s}]*)\s*\}\}")
TAG_VARIABLES = ("CYCLONE_COMMIT", "CYCLONE_SHORT_SHA", "CYCLONE_BRANCH", "CYCLONE_TAG",
                 "CYCLONE_RUN_ID", "CYCLONE_PROJECT")
_VARIABLE = re.compile(r"\$\{(?!\{)([^}]*)\}")
_TEMPLATE = re.compile(r"\$\{\{[^}]*\}\}")  # ${{ matrix.KEY }}: checked by lint
# registry[:port]/path[:tag], lower-case path components as Docker requires
_REFERENCE = re.compile(r"([a-z0-9.-]+(:\d+)?/)?[a-z0-9]+([._/-][a-z0-9]+)*(:[\w][\w.-]{0,127})?")


def image_name(step: StepModel, index: int) -> str | None:
    """The name a step's pushed image has in ``${{ images.NAME }}`` (None: it pushes none)."""
    default = step.name or f"step-{index + 1}"
    if step.build is not None and step.build.push:
        return step.build.name or default
    if step.promote is not None:
        return step.promote.name or default
    return None


def check_delivery(report: Reporter, jobs: Mapping[str, JobModel],
                   needs: Mapping[str, Sequence[str]]) -> None:
    producers = _producers(report, jobs)
    for name, job in jobs.items():
        base: Path = ("jobs", name)
        upstream = _upstream(name, needs)
        for i, step in enumerate(job.steps):
            _check_tags(report, (*base, "steps", i), step)
            if step.deploy is not None and job.environment is None:
                report.error((*base, "steps", i, "deploy"), "a deploy step's job needs an "
                             "environment: (dev, test, production...), the deployment "
                             "history it is recorded in", at_key=True)
        for path, value, step_index in _image_refs(base, job):
            for ref in IMAGE_REF.findall(value):
                problem = _ref_problem(ref, name, step_index, upstream, producers, jobs)
                if problem:
                    report.error(path, problem)


def secret_paths(data: Mapping[str, Any]) -> Iterator[tuple[Path, str]]:
    """Each secret name the delivery keys of a raw ``.cyclone.yml`` give, with its path."""
    registries = data.get("registries")
    for host, login in (registries.items() if isinstance(registries, dict) else ()):
        if isinstance(login, dict) and isinstance(login.get("password"), str):
            yield ("registries", host, "password"), login["password"]
    jobs = data.get("jobs")
    for name, job in (jobs.items() if isinstance(jobs, dict) else ()):
        steps = job.get("steps") if isinstance(job, dict) else None
        for i, step in enumerate(steps if isinstance(steps, list) else ()):
            deploy = step.get("deploy") if isinstance(step, dict) else None
            kube = deploy.get("kubernetes") if isinstance(deploy, dict) else None
            if isinstance(kube, dict):
                where: Path = ("jobs", name, "steps", i, "deploy", "kubernetes")
                for key, default in (("server", "KUBE_SERVER"), ("token", "KUBE_TOKEN")):
                    yield ((*where, key) if key in kube else where), str(kube.get(key, default))
                if "ca" in kube:
                    yield (*where, "ca"), str(kube["ca"])


# -- pieces -------------------------------------------------------------------------------

_Producer = tuple[str, int, bool]  # (job, step index, pushed)


def _producers(report: Reporter, jobs: Mapping[str, JobModel]) -> dict[str, _Producer]:
    """Image name -> where it is built or promoted; a name given twice is an error."""
    found: dict[str, _Producer] = {}
    for job_name, job in jobs.items():
        for i, step in enumerate(job.steps):
            built = step.build is not None or step.promote is not None
            name = image_name(step, i) or (
                (step.build.name or step.name or f"step-{i + 1}") if step.build else None)
            if not built or name is None:
                continue
            if name in found:
                first = found[name][0]
                report.error(("jobs", job_name, "steps", i), f"image name '{name}' is already "
                             f"given by a step of job '{first}' (set build.name or promote.name)")
                continue
            found[name] = (job_name, i, image_name(step, i) is not None)
    return found


def _upstream(job: str, needs: Mapping[str, Sequence[str]]) -> set[str]:
    """Every job ``job`` needs, directly or through others."""
    seen: set[str] = set()
    todo = list(needs.get(job, ()))
    while todo:
        need = todo.pop()
        if need not in seen and need in needs:
            seen.add(need)
            todo.extend(needs[need])
    return seen


def _ref_problem(ref: str, job: str, step_index: int | None, upstream: set[str],
                 producers: Mapping[str, _Producer], jobs: Mapping[str, JobModel]) -> str:
    producer = producers.get(ref)
    if producer is None:
        return f"unknown image '{ref}'{did_you_mean(ref, sorted(producers))} (no build or " \
               "promote step gives it)"
    where, index, pushed = producer
    if not pushed:
        return (f"image '{ref}' is built without push: true; a later job may run on "
                "another worker, so only a pushed image (pinned to its digest) can be used")
    if where == job:
        if step_index is not None and index < step_index:
            return ""
        return f"image '{ref}' is made by a later step of this job"
    if where not in upstream:
        return f"image '{ref}' is made by job '{where}', which job '{job}' does not need " \
               f"(add it to needs)"
    return ""


def _image_refs(base: Path, job: JobModel) -> Iterator[tuple[Path, str, int | None]]:
    """Every string where ``${{ images.NAME }}`` is substituted, with its path and the
    index of its step (None: the job's own, used by every step)."""
    if job.image:
        yield (*base, "image"), job.image, None
    for key, value in (job.env or {}).items():
        yield (*base, "env", key), value, None
    services: list[tuple[str | int, str]] = (
        [(n, s.image) for n, s in job.services.items()] if isinstance(job.services, dict)
        else [(i, s.image) for i, s in enumerate(job.services or [])])
    for ref, image in services:
        yield (*base, "services", ref, "image"), image, None
    for i, step in enumerate(job.steps):
        where: Path = (*base, "steps", i)
        if step.image:
            yield (*where, "image"), step.image, i
        for j, command in enumerate(step.run or ()):
            yield (*where, "run", j), command, i
        for key, value in (step.env or {}).items():
            yield (*where, "env", key), value, i
        if step.promote is not None:
            yield (*where, "promote", "image"), step.promote.image, i
        target = step.deploy.docker or step.deploy.kubernetes if step.deploy else None
        if target is not None:
            kind = "docker" if step.deploy and step.deploy.docker else "kubernetes"
            yield (*where, "deploy", kind, "image"), target.image, i


def _check_tags(report: Reporter, where: Path, step: StepModel) -> None:
    tags = (step.build.tags if step.build else step.promote.tags if step.promote else [])
    key = "build" if step.build else "promote"
    for j, tag in enumerate(tags):
        path: Path = (*where, key, "tags", j)
        unknown = [v for v in _VARIABLE.findall(tag) if v not in TAG_VARIABLES]
        if unknown:
            report.error(path, f"unknown variable '${{{unknown[0]}}}' in a tag (tags may use: "
                         f"{', '.join('${' + v + '}' for v in TAG_VARIABLES)})")
            continue
        if not _REFERENCE.fullmatch(_VARIABLE.sub("x", _TEMPLATE.sub("x", tag))):
            report.error(path, f"'{tag}' is not an image reference "
                         "(registry:port/path/name:tag, lower-case path)")
