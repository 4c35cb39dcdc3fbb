"""The compiler: a linted pipeline file -> the ``Plan`` the event manager schedules.

``load(text, file)`` is the front end's entry point: it lints (``lint``), raises
``PipelineError`` with every diagnostic (errors first) when there is any error,
and otherwise compiles. It never raises anything else, whatever the text.

``.cyclone.yml`` compilation:

* env: ``JobSpec.env`` is the global env, then the job's, then the matrix values
  (later wins); ``StepSpec.env`` holds only the step's own env (the runtime lays
  it over the job's).
* matrix: one job per combination, named ``build (python=3.11, db=pg)`` (keys in
  file order), ``JobSpec.matrix`` holding the combination, each value also in the
  env as ``KEY`` upper-cased with non-alphanumerics as ``_``, and
  ``${{ matrix.KEY }}`` substituted in images, commands, env values and service
  images. Needing a matrix job means needing all its expansions.
* ``Plan.jobs`` is topologically ordered by ``needs``, file order among jobs
  that are free to go (stable).
* ``on:`` -> ``Plan.triggers`` (``triggers_of``): no ``on:`` is the default
  ``Triggers()``; otherwise only the listed events trigger. ``X-ignore`` lists are
  kept under their own key (``Filter.key``), cron lines stripped and deduplicated.
* ``notify:`` -> ``Plan.notify`` (``notify_rules``, source "file"): a rule without a name
  is named by its position ("1", "2", ...); ``when`` defaults to ``DEFAULT_WHEN``; its
  channels are its email addresses in order, then slack, mattermost, discord, webhook.
  Repeated ``when`` words, branch patterns and addresses (case-insensitively) are
  dropped. ``${NAME}`` stays as written: the notifier substitutes the project's env.
* ``include:`` (``shared.pipeline.include``): the included files' jobs, read from the
  records the run kept (``load(..., includes=)``), are compiled as the file's own.
* ``secrets:`` on a job and on a step -> ``StepSpec.secrets`` (the job's, then the
  step's own). Whether each name is a secret is known only where the secrets are:
  ``load(..., secrets=)`` (the event manager, planning a run) reports an unknown one
  as an error at its line.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from shared.errors import PipelineError
from shared.pipeline import caicloud
from shared.pipeline import compile_delivery as delivery
from shared.pipeline.diagnostics import Diagnostic
from shared.pipeline.include import IncludedFile
from shared.pipeline.lint import (
    MATRIX_REF,
    CheckedCyclone,
    check_cyclone,
    check_secrets,
    detect_format,
    resources_of,
)
from shared.pipeline.loader import ordered
from shared.pipeline.notify import DEFAULT_WHEN, Channel, NotifyRule
from shared.pipeline.plan import (
    ApprovalSpec,
    ArtifactsSpec,
    CacheSpec,
    JobSpec,
    Plan,
    RegistryLogin,
    ReportsSpec,
    ServiceSpec,
    StepSpec,
    When,
)
from shared.pipeline.resources import UNKNOWN, Policy
from shared.pipeline.schema import (
    JobModel,
    NotifyRuleModel,
    OnModel,
    PullRequestModel,
    PushModel,
    StepModel,
    WebhookModel,
    WhenModel,
    rule_names,
)
from shared.pipeline.schema_artifacts import caches_of
from shared.pipeline.triggers import Filter, PullRequestTrigger, PushTrigger, Triggers
from shared.pipeline.trust import mountable

__all__ = ["LoadResult", "combinations", "compile_cyclone", "job_name", "load",
           "matrix_env_key", "notify_rules", "triggers_of"]

_STATUS_ORDER = ("success", "failure")


@dataclass(frozen=True)
class LoadResult:
    plan: Plan
    warnings: list[Diagnostic]


def load(text: str, file: str, policy: Policy = UNKNOWN, secrets: Collection[str] | None = None,
         implicit: Collection[str] = (), includes: Sequence[IncludedFile] = (),
         overrides: Sequence[str] = ()) -> LoadResult:
    """Lint and compile ``text`` (read as ``file``) for a project with ``policy``; raise
    ``PipelineError`` on any error. The plan records the project's maximum resources.
    ``secrets``: the names the run may ask for (None: not known here, not checked);
    ``implicit``: those given to every step anyway (``check_secrets``); ``includes``: the
    files its ``include:`` names, as the run recorded them (``shared.pipeline.include``);
    ``overrides``: the keys ``--set`` sets (``shared.pipeline.overrides``)."""
    plan: Plan | None
    if detect_format(text, file) == "caicloud":
        cai, diagnostics = caicloud.check_caicloud(text, file, policy, overrides)
        plan = caicloud.translate(cai, file) if cai is not None else None
    else:
        checked, diagnostics = check_cyclone(text, file, policy, includes, overrides)
        plan = compile_cyclone(checked, file) if checked is not None else None
        if plan is not None and secrets is not None:
            diagnostics = ordered([*diagnostics, *check_secrets(text, file, secrets, implicit,
                                                                includes, overrides)])
            plan = None if any(d.severity == "error" for d in diagnostics) else plan
    if plan is None:
        raise PipelineError(diagnostics)
    plan = dataclasses.replace(plan, max_resources=policy.max_resources)
    return LoadResult(plan, [d for d in diagnostics if d.severity == "warning"])


def combinations(matrix: dict[str, list[str]]) -> list[dict[str, str]]:
    """Every combination of a matrix, the first key varying slowest; ``[{}]`` for none."""
    keys = list(matrix)
    return [dict(zip(keys, values, strict=True))
            for values in itertools.product(*(matrix[key] for key in keys))]


def job_name(name: str, combination: dict[str, str]) -> str:
    """``build`` + ``{python: 3.11}`` -> ``build (python=3.11)``."""
    if not combination:
        return name
    return f"{name} ({', '.join(f'{k}={v}' for k, v in combination.items())})"


def matrix_env_key(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", key).upper()


def compile_cyclone(checked: CheckedCyclone, file: str) -> Plan:
    """The plan of a linted ``.cyclone.yml`` (``check_cyclone`` found no error)."""
    expansions = {name: combinations(job.matrix or {}) for name, job in checked.jobs.items()}
    names = {name: [job_name(name, c) for c in combos] for name, combos in expansions.items()}
    jobs: list[JobSpec] = []
    for name, job in checked.jobs.items():
        needs = tuple(n for need in dict.fromkeys(job.needs) for n in names[need])
        for combo in expansions[name]:
            jobs.append(_job(job_name(name, combo), job, combo, needs, checked.env))
    return Plan(source_file=file, jobs=tuple(_topological(jobs)),
                triggers=triggers_of(checked.on), notify=notify_rules(checked.notify, "file"),
                registries=tuple(RegistryLogin(host, login.username, login.password)
                                 for host, login in checked.registries.items()))


def triggers_of(on: OnModel | None) -> Triggers:
    """The compiled ``on:`` (None: the file has none, everything but schedules triggers)."""
    if on is None:
        return Triggers()
    return Triggers(
        push=_push_trigger(on.push) if on.push is not None else None,
        pull_request=_pr_trigger(on.pull_request) if on.pull_request is not None else None,
        schedule=tuple(dict.fromkeys(item.cron for item in on.schedule)),
        manual=on.manual,
    )


def notify_rules(rules: Sequence[NotifyRuleModel], source: str) -> tuple[NotifyRule, ...]:
    """Validated rules (``NotifyRuleModel``; names unique, as lint and the API check) as
    ``NotifyRule``s from ``source`` ("file" or "project")."""
    return tuple(_rule(name, rule, source) for name, rule in zip(rule_names(rules), rules,
                                                                 strict=True))


def _rule(name: str, rule: NotifyRuleModel, source: str) -> NotifyRule:
    addresses: dict[str, str] = {}
    for address in rule.email or ():
        addresses.setdefault(address.lower(), address)  # the first spelling wins
    channels = [Channel("email", address) for address in addresses.values()]
    channels += [Channel(kind, url) for kind in ("slack", "mattermost", "discord")
                 if (url := getattr(rule, kind)) is not None]
    hook = rule.webhook
    if isinstance(hook, WebhookModel):
        channels.append(Channel("webhook", hook.url, hook.secret or ""))
    elif hook is not None:
        channels.append(Channel("webhook", hook))
    return NotifyRule(name=name, channels=tuple(channels),
                      when=tuple(dict.fromkeys(rule.when)) if rule.when else DEFAULT_WHEN,
                      branches=tuple(dict.fromkeys(rule.branches or ())), source=source)


def _push_trigger(push: PushModel) -> PushTrigger:
    return PushTrigger(
        branches=_filter("branches", push.branches, push.branches_ignore),
        tags=_filter("tags", push.tags, push.tags_ignore),
        paths=_filter("paths", push.paths, push.paths_ignore),
    )


def _pr_trigger(pr: PullRequestModel) -> PullRequestTrigger:
    return PullRequestTrigger(
        branches=_filter("branches", pr.branches, pr.branches_ignore),
        paths=_filter("paths", pr.paths, pr.paths_ignore),
        types=tuple(dict.fromkeys(pr.types or ())),
    )


def _filter(key: str, patterns: list[str] | None, ignored: list[str] | None) -> Filter | None:
    """Lint refuses a block with both; whichever is given becomes the filter."""
    if patterns is not None:
        return Filter(key, tuple(patterns))
    if ignored is not None:
        return Filter(f"{key}-ignore", tuple(ignored))
    return None


def _job(name: str, job: JobModel, combo: dict[str, str], needs: tuple[str, ...],
         global_env: dict[str, str]) -> JobSpec:
    def sub(text: str) -> str:
        return MATRIX_REF.sub(lambda m: combo[m.group(1)], text)

    env = {k: sub(v) for k, v in global_env.items()}
    env.update({k: sub(v) for k, v in (job.env or {}).items()})
    env.update({matrix_env_key(k): v for k, v in combo.items()})
    image = sub(job.image) if job.image else ""
    services = (list(job.services.items()) if isinstance(job.services, dict)
                else [(s.name, s) for s in job.services or []])
    return JobSpec(
        name=name,
        image=image,
        steps=tuple(_step(i, step, image, sub, job.secrets)
                    for i, step in enumerate(job.steps, 1)),
        env=env,
        needs=needs,
        services=tuple(
            ServiceSpec(name=n, image=sub(s.image),
                        env={k: sub(v) for k, v in (s.env or {}).items()},
                        command=tuple(s.command), privileged=s.privileged,
                        volumes=tuple(filter(mountable, s.volumes)))
            for n, s in services),
        timeout_s=job.timeout,
        when=when_of(job.when),
        matrix=dict(combo),
        resources=resources_of(job),
        environment=job.environment or "",
        approval=ApprovalSpec(job.approval.role, job.approval.timeout) if job.approval else None,
        artifacts=ArtifactsSpec(paths=tuple(job.artifacts.paths),
                                name=job.artifacts.name or name, when=job.artifacts.when)
        if job.artifacts else None,
        caches=tuple(CacheSpec(key=sub(c.key), paths=tuple(c.paths),
                               restore_keys=tuple(sub(k) for k in c.restore_keys))
                     for c in caches_of(job.cache)),
        reports=ReportsSpec(junit=tuple(job.reports.junit)) if job.reports else None,
        runs_on=tuple(sorted(set(job.runs_on))),
    )


def _step(index: int, step: StepModel, job_image: str, sub: Callable[[str], str],
          job_secrets: Sequence[str]) -> StepSpec:
    name = step.name or f"step-{index}"
    runs = step.run is not None
    return StepSpec(
        name=name,
        image=(sub(step.image) if step.image else job_image) if runs else "",
        commands=tuple(sub(command) for command in step.run or ()),
        env={k: sub(v) for k, v in (step.env or {}).items()},
        timeout_s=step.timeout,
        retry=step.retry,
        when=when_of(step.when),
        secrets=tuple(dict.fromkeys([*job_secrets, *step.secrets])),
        privileged=step.privileged,
        volumes=tuple(filter(mountable, step.volumes)),
        build=delivery.build_spec(step.build, name, sub) if step.build else None,
        promote=delivery.promote_spec(step.promote, name, sub) if step.promote else None,
        deploy=delivery.deploy_spec(step.deploy, sub) if step.deploy else None,
    )


def when_of(when: WhenModel | None) -> When:
    """``status: always`` means both outcomes; no status means success only."""
    if when is None:
        return When()
    statuses = set(_STATUS_ORDER) if "always" in when.status else set(when.status)
    return When(
        branches=tuple(dict.fromkeys(when.branch)),
        events=tuple(dict.fromkeys(when.event)),
        status=tuple(s for s in _STATUS_ORDER if s in statuses) or When().status,
        outputs=tuple((when.outputs or {}).items()),
    )


def _topological(jobs: list[JobSpec]) -> list[JobSpec]:
    """Kahn's algorithm, always taking the ready job that comes first in the file (stable)."""
    position = {job.name: i for i, job in enumerate(jobs)}
    waiting = {job.name: len(set(job.needs)) for job in jobs}
    dependants: dict[str, list[str]] = {job.name: [] for job in jobs}
    for job in jobs:
        for need in set(job.needs):
            dependants[need].append(job.name)
    ready = [i for i, job in enumerate(jobs) if not waiting[job.name]]
    heapq.heapify(ready)
    out: list[JobSpec] = []
    while ready:  # lint guarantees the graph is acyclic, so every job gets here
        job = jobs[heapq.heappop(ready)]
        out.append(job)
        for name in dependants[job.name]:
            waiting[name] -= 1
            if not waiting[name]:
                heapq.heappush(ready, position[name])
    return out
