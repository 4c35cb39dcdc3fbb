"""The Docker executor's translation: a run, job, step, service or build of the plan into
the names, labels and config dicts Docker's Engine API takes. Pure (no daemon, no I/O),
so it is tested without one; ``docker.py`` does the talking (as Woodpecker keeps
``pipeline/backend/docker/convert.go`` apart from its client code).

* Names: ``network_name`` / ``volume_name`` per run and worker, ``container_name``
  (run, job, part, and a random suffix: an attempt's leftover never blocks the next),
  ``built_image`` for a run's build step.
* Labels: everything created carries ``io.cyclone.managed=1`` and
  ``io.cyclone.run=<run id>`` (and ``io.cyclone.worker`` when opened for one), so what
  a run or a crashed worker left is found by ``label_filter`` alone, without local state.
* Safe by default: every step's and service's container is unprivileged, gains no
  privileges through setuid binaries (``no-new-privileges``), mounts only the run's
  workspace, and is limited to its job's resources (``container_limits``; the
  workermanager has laid the worker's defaults under the job's own). A privileged
  container or another volume is there only because the pipeline asked and lint let it
  (a trusted project's); a privileged one, which has every privilege anyway, goes
  without ``no-new-privileges`` (Docker-in-Docker's own containers would inherit it).
* Configs (``POST /containers/create`` bodies unless said otherwise): ``step_config``,
  ``service_config``, ``sandbox_config``, ``helper_config``, ``network_config``
  (``POST /networks/create``); ``build_params`` (``POST /build``'s query) and
  ``build_context_dir`` for an image build. Image references, registry logins and
  push streams are ``registry``'s.
"""

from __future__ import annotations

import hashlib
import posixpath
import secrets
from collections.abc import Mapping
from typing import Any

from shared.adapters.executor.script import sanitise, step_script
from shared.adapters.executor.workspace_files import output_script
from shared.pipeline.plan import BuildSpec, JobSpec, ServiceSpec, StepSpec
from shared.pipeline.resources import Resources
from shared.ports.executor import WORKSPACE

__all__ = [
    "BUILT_IMAGE",
    "DEFAULT_NETWORK",
    "HELPER_DOCKERFILE",
    "HELPER_IMAGE",
    "LABEL_JOB",
    "LABEL_MANAGED",
    "LABEL_ROLE",
    "LABEL_RUN",
    "LABEL_WORKER",
    "SANDBOX_LOOP",
    "build_context_dir",
    "build_params",
    "built_image",
    "container_limits",
    "container_name",
    "env_list",
    "helper_config",
    "label_filter",
    "labels",
    "network_config",
    "network_name",
    "sandbox_config",
    "sandbox_image",
    "service_config",
    "split_tag",
    "step_config",
    "step_network_mode",
    "volume_name",
    "wants_sandbox",
]

LABEL_MANAGED = "io.cyclone.managed"
LABEL_RUN = "io.cyclone.run"
LABEL_WORKER = "io.cyclone.worker"  # the workermanager that created it (reaped on its restart)
LABEL_JOB = "io.cyclone.job"
LABEL_ROLE = "io.cyclone.role"
BUILT_IMAGE = "BUILT_IMAGE"  # caicloud.yml's marker for "the image the build step made"
HELPER_IMAGE = "cyclone/workspace-helper:1"
# Cyclone's own empty image: the workspace helper is created from it, never started.
HELPER_DOCKERFILE = f"FROM scratch\nLABEL {LABEL_MANAGED}=1\n".encode()
# The sandbox's only job is to exist: sleep, and exit at once when stopped.
SANDBOX_LOOP = "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"
DEFAULT_NETWORK = "bridge"  # Docker's own: jobs without services need no network of theirs


# -- names and labels -------------------------------------------------------------------

def network_name(run_id: str, worker: str = "") -> str:
    """The run's network on this host. Each worker has its own (its label's hash in the
    name): jobs of one run may go to two workers sharing a Docker host, and two workers
    creating one name at once get two networks of that name (Docker's duplicate check
    is not atomic)."""
    return f"cyclone-{run_id}{_worker_suffix(worker)}"


def volume_name(run_id: str, worker: str = "") -> str:
    """The run's workspace volume on this host, one per worker as for the network."""
    return f"cyclone-{run_id}{_worker_suffix(worker)}-ws"


def _worker_suffix(worker: str) -> str:
    return f"-{hashlib.sha256(worker.encode()).hexdigest()[:8]}" if worker else ""


def built_image(run_id: str) -> str:
    return f"cyclone-built/{run_id.lower()}:latest"


def container_name(run_id: str, *parts: str) -> str:
    """``cyclone-<run>-<parts...>-<random>``: readable in ``docker ps``; the random end
    lets a retried step be created while its predecessor is still being removed."""
    return "-".join(["cyclone", run_id, *(sanitise(p) for p in parts), secrets.token_hex(3)])


def labels(run_id: str, worker: str = "", **extra: str) -> dict[str, str]:
    """The labels of what is created for ``run_id``; ``extra`` as ``io.cyclone.<key>``."""
    mine = {LABEL_WORKER: worker} if worker else {}
    return {LABEL_MANAGED: "1", LABEL_RUN: run_id, **mine,
            **{f"io.cyclone.{key}": value for key, value in extra.items()}}


def label_filter(run_id: str | None, worker: str | None = None,
                 **extra: str) -> dict[str, list[str]]:
    """Docker's ``filters`` for what was created for ``run_id`` (any run: None), by
    ``worker`` when given, with each ``extra`` label (as in ``labels``)."""
    wanted = [LABEL_RUN if run_id is None else f"{LABEL_RUN}={run_id}"]
    if worker is not None:
        wanted.append(f"{LABEL_WORKER}={worker}")
    wanted += [f"io.cyclone.{key}={value}" for key, value in extra.items()]
    return {"label": wanted}


# -- containers ---------------------------------------------------------------------------

def step_config(run_id: str, job: JobSpec, step: StepSpec, env: Mapping[str, str],
                network_mode: str, worker: str = "",
                host_cpus: float | None = None, output: str = "") -> dict[str, Any]:
    """A step's container: its commands as one script for ``/bin/sh -c`` in the workspace
    (also mounted at ``step.workdir``, then the working directory, when it has one),
    ``env`` (the job's and step's, merged by the caller) plus ``CYCLONE_WORKSPACE`` and
    ``CYCLONE_OUTPUT`` (``output``, the file its script makes first; "": none);
    limited to ``job.resources`` (CPUs to at most ``host_cpus``, what the host has)."""
    workdir = [f"{volume_name(run_id, worker)}:{step.workdir}"] if step.workdir else []
    extra = {"CYCLONE_WORKSPACE": WORKSPACE}
    if output and step.commands:
        extra["CYCLONE_OUTPUT"] = output
    config: dict[str, Any] = {
        "Image": _image(run_id, step.image),
        "Env": env_list({**env, **extra}),
        "WorkingDir": step.workdir or WORKSPACE,
        "Labels": labels(run_id, worker, job=job.name, step=step.name, role="step"),
        "HostConfig": {"Binds": [_workspace_bind(run_id, worker), *workdir, *step.volumes],
                       "NetworkMode": network_mode,
                       # read by attaching: a log driver would only write it to disk again
                       "LogConfig": _no_logs(),
                       **_security(step.privileged),
                       **container_limits(job.resources, host_cpus)},
    }
    if step.commands:  # without commands the image's own entrypoint runs (a plugin step)
        config["Entrypoint"] = ["/bin/sh", "-c"]
        prelude = output_script(output) if "CYCLONE_OUTPUT" in extra else ()
        config["Cmd"] = [step_script(step.commands, prelude)]
    return config


def step_network_mode(run_id: str, job: JobSpec, sandbox: str | None,
                      worker: str = "") -> str:
    """Where a step's container is on the network: in the job's sandbox (its container
    id) when there is one, else on the run's network when the job has services."""
    if sandbox:
        return f"container:{sandbox}"
    return network_name(run_id, worker) if job.services else DEFAULT_NETWORK


def service_config(run_id: str, job: JobSpec, service: ServiceSpec,
                   worker: str = "", host_cpus: float | None = None) -> dict[str, Any]:
    """A service's container, on the run's network under its name as alias, limited as
    each of the job's steps is."""
    network = network_name(run_id, worker)
    config: dict[str, Any] = {
        "Image": service.image,
        "Env": env_list(service.env),
        "Labels": labels(run_id, worker, job=job.name, role="service", service=service.name),
        "HostConfig": {"Binds": [_workspace_bind(run_id, worker), *service.volumes],
                       "NetworkMode": network,
                       # the logs endpoint, which follows a service, needs a driver it can read
                       "LogConfig": {"Type": "json-file", "Config": {}},
                       **_security(service.privileged),
                       **container_limits(job.resources, host_cpus)},
        "NetworkingConfig": {"EndpointsConfig": {network: {"Aliases": [service.name]}}},
    }
    if service.command:
        config["Cmd"] = list(service.command)
    return config


def wants_sandbox(job: JobSpec) -> bool:
    """A job without services: a sandbox pays for itself from the second container step."""
    return sum(1 for step in job.steps if step.build is None) > 1


def sandbox_image(job: JobSpec) -> str:
    """The image the job's sandbox runs its shell loop in ("": none to run it in)."""
    return next((s.image for s in job.steps if s.build is None and s.image), job.image)


def sandbox_config(run_id: str, job: JobSpec, image: str, network: str,
                   worker: str = "") -> dict[str, Any]:
    """The job's sandbox: a container that only holds a network namespace on ``network``
    for the job's steps to join."""
    return {
        "Image": _image(run_id, image),
        "Entrypoint": ["/bin/sh", "-c", SANDBOX_LOOP],
        "Labels": labels(run_id, worker, job=job.name, role="sandbox"),
        "HostConfig": {"NetworkMode": network, "LogConfig": _no_logs(), **_security(False)},
    }


def helper_config(run_id: str, worker: str = "") -> dict[str, Any]:
    """The workspace helper: created, never started, with the run's volume at the
    workspace. Its mount creates the volume, labelled, when it is not there yet."""
    mount = {"Type": "volume", "Source": volume_name(run_id, worker),
             "Target": WORKSPACE, "VolumeOptions": {"Labels": labels(run_id, worker)}}
    return {
        "Image": HELPER_IMAGE, "Cmd": ["/never-started"],
        "Labels": labels(run_id, worker, role="helper"),
        "HostConfig": {"Mounts": [mount]},
    }


def network_config(run_id: str, worker: str = "") -> dict[str, Any]:
    """The run's private bridge network (``POST /networks/create``)."""
    return {"Name": network_name(run_id, worker), "Driver": "bridge",
            "CheckDuplicate": True, "Labels": labels(run_id, worker)}


# -- image builds -------------------------------------------------------------------------

def build_context_dir(build: BuildSpec) -> str | None:
    """The build context as a path relative to the workspace; None when it is outside."""
    context_dir = posixpath.normpath(build.context_dir.lstrip("/") or ".")
    return None if context_dir.startswith("..") else context_dir


def build_params(run_id: str, build: BuildSpec) -> dict[str, Any]:
    """``POST /build``'s query for ``build`` (aiodocker's client turns the dicts into
    JSON and the booleans into 1/0): its Dockerfile, build args, target stage and labels
    (the workermanager has put the OCI ones in), the run's tag. The other tags are
    added once it is built."""
    params: dict[str, Any] = {
        "t": built_image(run_id), "dockerfile": build.dockerfile, "rm": True,
        "forcerm": True,  # a failed build leaves no intermediate containers either
        "labels": {**build.labels, LABEL_MANAGED: "1"},
    }
    if build.args:
        params["buildargs"] = dict(build.args)
    if build.target:
        params["target"] = build.target
    return params


def split_tag(reference: str) -> tuple[str, str]:
    """``registry:5000/app:1.2`` -> (``registry:5000/app``, ``1.2``); no tag: ``latest``."""
    repo, sep, tag = reference.rpartition(":")
    if not sep or "/" in tag:
        return reference, "latest"
    return repo, tag


# -- pieces -------------------------------------------------------------------------------

def env_list(env: Mapping[str, str]) -> list[str]:
    return [f"{key}={value}" for key, value in env.items()]


def _image(run_id: str, image: str) -> str:
    return built_image(run_id) if image == BUILT_IMAGE else image


def _workspace_bind(run_id: str, worker: str) -> str:
    return f"{volume_name(run_id, worker)}:{WORKSPACE}"


def container_limits(resources: Resources, host_cpus: float | None = None) -> dict[str, Any]:
    """HostConfig's limits for ``resources`` (what is None stays unlimited). Swap is
    limited to the memory, so the limit is real: past it the kernel kills, nothing is
    swapped. CPUs above ``host_cpus`` are lowered to it (Docker refuses more)."""
    limits: dict[str, Any] = {}
    if resources.memory is not None:
        limits["Memory"] = limits["MemorySwap"] = resources.memory
    if resources.cpus is not None:
        cpus = min(resources.cpus, host_cpus) if host_cpus else resources.cpus
        limits["NanoCpus"] = round(cpus * 1e9)
    if resources.pids is not None:
        limits["PidsLimit"] = resources.pids
    return limits


def _security(privileged: bool) -> dict[str, Any]:
    """Unprivileged, and no privilege gained through a setuid binary, unless the step asked
    for privileges (lint allows that in trusted projects only)."""
    return {"Privileged": privileged,
            "SecurityOpt": [] if privileged else ["no-new-privileges"]}


def _no_logs() -> dict[str, Any]:
    return {"Type": "none", "Config": {}}
