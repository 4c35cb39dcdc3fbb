"""Docker executor: each step and service in its own container, on the run's network, with
the run's workspace volume at ``/workspace`` (aiodocker, Docker Engine API >= 1.41).
This module talks to the daemon about containers, networks and volumes; what it asks for
(names, labels, container, network and build configs) is translated from the plan in
``docker_convert``. Image builds, pushes, promotes and pulls are ``docker_images``'s
(with ``registry``'s references and logins): a step's or service's image that is not on
the host is pulled with its registry's login from ``registries``.

What it creates, all labelled ``io.cyclone.managed=1`` and ``io.cyclone.run=<run id>``
(and ``io.cyclone.worker=<worker id>`` when opened for a worker) so that ``destroy_run``
and ``leftover_runs`` find them without any local state:

* network ``cyclone-<run>[-<worker hash>]`` (bridge; services join it under their name
  as alias), made for the first job that has services: one per worker, as jobs of a
  run may run on two workers of one host. Jobs without services use Docker's default
  bridge;
* volume ``cyclone-<run>[-<worker hash>]-ws``, created and filled (from
  ``RunContext.source_archive``, a Git tree streamed from the mirror, or a tar of what
  of ``source_dir`` belongs in a workspace, made by ``source``) through a helper
  container that is created, never started, from Cyclone's own empty image
  ``cyclone/workspace-helper:1`` (built ``FROM scratch`` once, so no step image and no
  registry are needed);
* containers ``cyclone-<run>-<job>-<step>-<random>``, removed when the step ends;
* per job with services or several steps, a sandbox container
  ``cyclone-<run>-<job>-sandbox-<random>`` that only holds a network namespace (like a
  Kubernetes pod's pause container): the job's steps join it (``NetworkMode:
  container:<id>``) instead of each getting a network endpoint of its own. Setting up
  an endpoint is most of a container's start time (about 100 of 250 ms here); joining
  a namespace is not, and services are still reached by name through it. The sandbox
  runs a shell loop in the job's image; when that image cannot run one, steps join the
  network directly. A one-step job without services gets none (it would cost more
  than it saves);
* image ``cyclone-built/<run>:latest`` for a step with a ``BuildSpec`` (also tagged
  ``build.tag`` and each of ``build.tags``, which are pushed with ``build.push``); a
  later step whose image is ``BUILT_IMAGE`` runs it. ``destroy_run`` removes the run's
  tag, not the others: another run may have just made the same one (a branch's
  ``latest``, a rebuilt commit) and be about to push it.

Removals are off a run's critical path: a step's container (once it has exited), the
sandbox and the services are removed in the background, and ``destroy_run`` waits for
those before it sweeps everything labelled with the run. A step that is cancelled or
times out is still killed before ``run_step`` returns.

A step's output is read by attaching to the container before it starts (what
`docker run` does): every line arrives, live, and is stamped on arrival; steps have no
log driver (nothing is written to disk twice). Reading
it back through the log driver instead (``GET /containers/{id}/logs?follow=1``)
capped a chatty step at ~28,000 lines/s here, and Docker 20.10 can end that stream
before a container's last frames; services, whose output is informational, are
still followed that way (``docker_logs.read_logs``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import json
import logging
import posixpath
import tarfile
import tempfile
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Collection,
    Coroutine,
    Iterator,
    Mapping,
    Sequence,
)
from pathlib import Path
from typing import IO, Any, cast

import aiodocker
import aiohttp
from aiodocker.containers import DockerContainer
from aiodocker.exceptions import DockerError
from aiodocker.networks import DockerNetwork
from aiodocker.volumes import DockerVolume

from shared.adapters.executor import docker_files
from shared.adapters.executor.docker_convert import (
    DEFAULT_NETWORK,
    HELPER_DOCKERFILE,
    HELPER_IMAGE,
    LABEL_RUN,
    build_context_dir,
    built_image,
    container_name,
    helper_config,
    label_filter,
    network_config,
    network_name,
    sandbox_config,
    sandbox_image,
    service_config,
    step_config,
    step_network_mode,
    volume_name,
    wants_sandbox,
)
from shared.adapters.executor.docker_images import (
    ImageError,
    build_image,
    image_exists,
    promote_image,
    pull,
)
from shared.adapters.executor.docker_logs import AttachedReader, Cursor, read_logs
from shared.adapters.executor.script import (
    StepOutput,
    check_run_id,
    finish_shielded,
)
from shared.adapters.executor.source import CHUNK, SPOOL_BYTES, directory_archive
from shared.adapters.executor.workspace_files import CONTAINER_OUTPUT, select
from shared.adapters.registry import parse_reference
from shared.errors import ExecutorError, ExecutorUnavailable
from shared.events import utc_now
from shared.pipeline.plan import BuildSpec, JobSpec, PromoteSpec, ServiceSpec, StepSpec
from shared.ports.executor import (
    NO_REGISTRIES,
    WORKSPACE,
    LogSink,
    Registries,
    RunContext,
    StepOutcome,
)

__all__ = ["DockerExecutor"]

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0
SERVICE_SETTLE_S = 0.5  # a service still running this long after its start counts as up
OUTPUT_STALL_S = 10.0  # an exited step's output stream silent this long is given up


class DockerExecutor:
    """The Docker implementation of ``shared.ports.executor.Executor``."""

    def __init__(self, docker: aiodocker.Docker | None = None, worker: str = "",
                 keep_out: Collection[Path] = ()) -> None:
        """``worker``: a label for the workermanager this executor runs for, unique on
        the Docker host and the same across its restarts (its id and home); everything
        created is labelled with it, so that worker's next incarnation finds its leftovers.
        ``keep_out``: Cyclone's own directories (its home), never copied into a workspace."""
        self._docker = docker if docker is not None else aiodocker.Docker()
        self._worker = worker
        self._keep_out = tuple(keep_out)
        self._owns_client = docker is None
        self._helper_ready = False
        self._helper_lock = asyncio.Lock()
        self._run_locks: dict[str, asyncio.Lock] = {}
        self._filled: set[str] = set()  # runs whose workspace is ready on this host
        self._networks: dict[str, asyncio.Task[None]] = {}  # run id -> its network made
        self._removals: dict[str, set[asyncio.Task[None]]] = {}  # run id -> in progress
        self._service_logs: dict[tuple[str, str], list[asyncio.Task[None]]] = {}
        self._sandboxes: dict[tuple[str, str], str] = {}  # (run, job) -> container id
        self._host_cpus: float | None = None  # the daemon's CPUs (NCPU), read once

    @classmethod
    async def connect(cls, url: str | None = None, worker: str = "",
                      keep_out: Collection[Path] = ()) -> DockerExecutor:
        """An executor on the daemon at ``url`` (default: DOCKER_HOST, then the local
        socket); ``ExecutorUnavailable`` when it does not answer within a few seconds."""
        try:
            docker = aiodocker.Docker(url=url)
        except ValueError as exc:
            raise ExecutorUnavailable(f"no Docker daemon configured: {exc}") from exc
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                await docker.version()
        except (DockerError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            await docker.close()
            # aiodocker's message names the address it tried; others do not
            reason = (exc.message if isinstance(exc, DockerError)
                      else f"{docker.docker_host}: {exc or 'no answer'}")
            raise ExecutorUnavailable(f"cannot reach the Docker daemon: {reason}") from exc
        executor = cls(docker, worker=worker, keep_out=keep_out)
        executor._owns_client = True
        return executor

    @property
    def name(self) -> str:
        return "docker"

    @property
    def supports_services(self) -> bool:
        return True

    # -- the run: network, workspace volume ----------------------------------------------

    async def prepare_run(self, ctx: RunContext) -> None:
        run_id = check_run_id(ctx.run_id)
        async with self._run_locks.setdefault(run_id, asyncio.Lock()):
            if run_id in self._filled:
                return
            with _docker_errors(f"preparing run {run_id}"):
                # What a failed earlier call may have left half-filled goes first.
                await self._removed(run_id)  # its helper, which still mounts the volume
                volume = DockerVolume(self._docker, volume_name(run_id, self._worker))  # type: ignore[no-untyped-call]
                await _absent_ok(volume.delete())  # type: ignore[no-untyped-call]
                await self._fill(run_id, ctx)
            self._filled.add(run_id)

    async def _fill(self, run_id: str, ctx: RunContext) -> None:
        if ctx.source_archive is not None:
            async with contextlib.aclosing(ctx.source_archive()) as chunks:
                async with self._helper(run_id) as helper:
                    await helper.put_archive(WORKSPACE, chunks)  # type: ignore[no-untyped-call]
        elif ctx.source_dir is not None:
            async with directory_archive(Path(ctx.source_dir), self._keep_out) as chunks:
                async with self._helper(run_id) as helper:
                    await helper.put_archive(WORKSPACE, chunks)  # type: ignore[no-untyped-call]
        else:
            async with self._helper(run_id):
                pass  # an empty workspace: the helper's mount creates the volume

    async def _network(self, run_id: str) -> str:
        """The run's private network on this host, made once (for the first job that has
        services)."""
        made = self._networks.get(run_id)
        if made is None or (made.done() and made.exception() is not None):
            made = self._networks[run_id] = asyncio.create_task(self._make_network(run_id))
        await asyncio.shield(made)
        return network_name(run_id, self._worker)

    async def _make_network(self, run_id: str) -> None:
        with _docker_errors(f"creating the network of run {run_id}"):
            await _absent_ok(self._docker.networks.create(
                network_config(run_id, self._worker)), also=(409,))

    async def destroy_run(self, run_id: str, worker: str | None = None) -> None:
        run_id = check_run_id(run_id)
        await self._removed(run_id)
        if worker is not None:
            await self._destroy_worker_part(run_id, worker)
            return
        self._filled.discard(run_id)
        self._networks.pop(run_id, None)
        for key in [k for k in self._service_logs if k[0] == run_id]:
            await _cancel_all(self._service_logs.pop(key))
        for key in [k for k in self._sandboxes if k[0] == run_id]:
            del self._sandboxes[key]
        selector = label_filter(run_id)
        with _docker_errors(f"removing run {run_id}"):
            for container in await self._containers(selector):
                await _absent_ok(container.delete(force=True, v=True), also=(409,))
            for network in await self._docker.networks.list(filters=selector):
                net = DockerNetwork(self._docker, network["Id"])  # type: ignore[no-untyped-call]
                await _absent_ok(net.delete())
            for volume in await self._volumes(selector):
                vol = DockerVolume(self._docker, volume["Name"])  # type: ignore[no-untyped-call]
                await _absent_ok(vol.delete())  # type: ignore[no-untyped-call]
            await _absent_ok(self._docker.images.delete(built_image(run_id)), also=(409,))
        self._run_locks.pop(run_id, None)

    async def _destroy_worker_part(self, run_id: str, worker: str) -> None:
        """What ``worker`` created for the run: its containers, then the run's network and
        workspace if it created them and no container uses them any more. On a Docker
        host shared by several workers the next attempt of a job, run by another worker,
        may be using them: they are left to that run's own ``destroy_run``, as is the
        run's built image while any container of the run remains."""
        selector = label_filter(run_id, worker)
        with _docker_errors(f"removing what worker {worker} left of run {run_id}"):
            for container in await self._containers(selector):
                await _absent_ok(container.delete(force=True, v=True), also=(409,))
            for network in await self._docker.networks.list(filters=selector):
                net = DockerNetwork(self._docker, network["Id"])  # type: ignore[no-untyped-call]
                await _in_use_ok(net.delete(), f"network {network['Name']}")
            for volume in await self._volumes(selector):
                vol = DockerVolume(self._docker, volume["Name"])  # type: ignore[no-untyped-call]
                await _in_use_ok(vol.delete(), f"volume {volume['Name']}")  # type: ignore[no-untyped-call]
            if not await self._containers(label_filter(run_id)):
                await _absent_ok(self._docker.images.delete(built_image(run_id)), also=(409,))

    async def leftover_runs(self, worker: str | None = None) -> set[str]:
        selector = label_filter(None, worker)
        with _docker_errors("listing Cyclone's Docker resources"):
            found = [c["Labels"] for c in await self._containers(selector)]
            found += [n["Labels"] for n in await self._docker.networks.list(filters=selector)]
            found += [v["Labels"] for v in await self._volumes(selector)]
        return {each[LABEL_RUN] for each in found if each and each.get(LABEL_RUN)}

    async def close(self) -> None:
        for key in list(self._service_logs):
            await _cancel_all(self._service_logs.pop(key))
        for run_id in list(self._removals):
            await self._removed(run_id)
        if self._owns_client:
            await self._docker.close()

    # -- services ---------------------------------------------------------------------

    async def start_services(self, ctx: RunContext, job: JobSpec, on_log: LogSink, *,
                             registries: Registries = NO_REGISTRIES) -> None:
        """Start each service, then give them ``SERVICE_SETTLE_S`` together: one that has
        exited by then (a bad command, a broken config) is an ExecutorError with its last
        output. Readiness is not awaited: steps retry, as in any CI. An image that is not
        on this host is pulled with its registry's login from ``registries``."""
        run_id = check_run_id(ctx.run_id)
        if not job.services:
            if wants_sandbox(job):
                await self._start_sandbox(run_id, job, DEFAULT_NETWORK, registries)
            return
        network = await self._network(run_id)
        started: list[tuple[ServiceSpec, DockerContainer]] = []
        for service in job.services:
            with _docker_errors(f"service {service.name!r} of job {job.name!r}"):
                name = container_name(run_id, job.name, "svc", service.name)
                config = service_config(run_id, job, service, self._worker,
                                        host_cpus=await self._cpus())
                container = await self._create(config, name, registries)
                await container.start()
            self._follow_service(run_id, job.name, service.name, container.id, on_log)
            started.append((service, container))
        with _docker_errors(f"services of job {job.name!r}"):
            await asyncio.gather(self._start_sandbox(run_id, job, network, registries),
                                 *(_still_running(s, c) for s, c in started))

    async def stop_services(self, ctx: RunContext, job: JobSpec) -> None:
        """Removes the job's sandbox and services in the background (``destroy_run`` waits
        for that, and removes whatever could not be removed)."""
        run_id = check_run_id(ctx.run_id)
        await _cancel_all(self._service_logs.pop((run_id, job.name), []))
        sandbox = self._sandboxes.pop((run_id, job.name), None)
        if sandbox is not None:
            self._remove_later(run_id, sandbox)
        if job.services:
            self._spawn_removal(run_id, self._remove_services(run_id, job))

    async def _remove_services(self, run_id: str, job: JobSpec) -> None:
        selector = label_filter(run_id, job=job.name, role="service")
        try:
            with _docker_errors(f"stopping the services of job {job.name!r}"):
                for container in await self._containers(selector):
                    await _absent_ok(container.delete(force=True, v=True), also=(409,))
        except ExecutorError as exc:
            log.warning("could not remove service containers: %s", exc, extra={"run": run_id})

    async def _start_sandbox(self, run_id: str, job: JobSpec, network: str,
                             registries: Registries) -> None:
        """Start the job's network sandbox on ``network``, or leave steps on the network
        when we can't."""
        image = sandbox_image(job)
        if not image:
            return
        name = container_name(run_id, job.name, "sandbox")
        config = sandbox_config(run_id, job, image, network, self._worker)
        try:
            container = await self._create(config, name, registries)
            await container.start()
            state = (await container.show())["State"]
        except (DockerError, ExecutorError) as exc:
            log.info("no network sandbox for job %s: %s", job.name, exc)
            await self._remove_quietly(name)
            return
        if not state.get("Running"):
            log.info("no network sandbox for job %s: its image cannot run a shell", job.name)
            self._remove_later(run_id, name)
            return
        self._sandboxes[(run_id, job.name)] = container.id

    def _follow_service(self, run_id: str, job: str, service: str, container_id: str,
                        on_log: LogSink) -> None:
        async def prefixed(stream: str, ts: str, text: str) -> None:
            await on_log(stream, ts, f"[{service}] {text}")

        async def follow() -> None:
            output = StepOutput(prefixed)
            with contextlib.suppress(DockerError, aiohttp.ClientError, OSError):
                await read_logs(self._docker, container_id, output, Cursor(), follow=True)
            await output.flush()

        task = asyncio.create_task(follow(), name=f"service-logs-{service}")
        self._service_logs.setdefault((run_id, job), []).append(task)

    # -- steps ------------------------------------------------------------------------

    async def run_step(self, ctx: RunContext, job: JobSpec, step: StepSpec,
                       env: Mapping[str, str], on_log: LogSink,
                       registries: Registries = NO_REGISTRIES) -> StepOutcome:
        run_id = check_run_id(ctx.run_id)
        if step.build is not None:
            return await self._build(run_id, step, step.build, on_log, registries)
        if step.promote is not None:
            return await self._promote(step, step.promote, on_log, registries)
        name = container_name(run_id, job.name, step.name)
        sandbox = self._sandboxes.get((run_id, job.name))
        try:
            with _docker_errors(f"step {step.name!r} of job {job.name!r}"):
                config = step_config(
                    run_id, job, step, env, worker=self._worker, host_cpus=await self._cpus(),
                    network_mode=step_network_mode(run_id, job, sandbox, self._worker),
                    output=CONTAINER_OUTPUT)
                container = await self._create(config, name, registries)
                outcome = await self._run(container, step, on_log)
                if step.commands:
                    outcome = dataclasses.replace(
                        outcome, outputs=await self._outputs(container, outcome))
        except BaseException:
            # also on cancel: the container is killed and gone before CancelledError goes on
            await finish_shielded(self._remove_quietly(name))
            raise
        self._remove_later(run_id, name)  # it has exited: nothing waits for its removal
        return outcome

    async def _outputs(self, container: DockerContainer, outcome: StepOutcome) -> bytes:
        """What the step wrote to ``$CYCLONE_OUTPUT``. A failed step's container may be
        going already (its run was cancelled or destroyed, and Docker answers 404, or 500
        "RWLayer ... is unexpectedly nil"): its outputs are none, the failure says enough."""
        try:
            return await docker_files.read_output(self._docker, container.id, CONTAINER_OUTPUT)
        except DockerError:
            if outcome.exit_code == 0:
                raise
            return b""

    async def _run(self, container: DockerContainer, step: StepSpec,
                   on_log: LogSink) -> StepOutcome:
        """Attach to the container's output before it starts (as `docker run` does), so
        every line arrives, live, without going through a log driver.

        The output is read to its end, however long after the exit that is: a slow log
        pipeline slows the step's writes (Docker stops copying while we do not read), it
        never loses lines (``AttachedReader`` says how). Only a stream that stays silent
        ``OUTPUT_STALL_S`` after the exit while we wait on Docker is given up, and the
        log says so."""
        output = StepOutput(on_log)
        attached = container.attach(stdout=True, stderr=True, logs=False)
        await attached._init()  # connect now: the stream then holds the very first line
        reading = AttachedReader(attached, output)
        reader = asyncio.create_task(reading.run())
        try:
            await container.start()
            exit_code, timed_out = await _wait(container, step.timeout_s)
            problem = await reading.finish(reader, OUTPUT_STALL_S)
            if problem:
                await output.flush()
                await output.feed("stderr", utc_now(),
                                  f"cyclone: {problem}; the rest of it is lost\n".encode())
        finally:
            await _cancel_all([reader])
            await attached.close()
        await output.flush()
        oom = bool(exit_code) and await _out_of_memory(container)
        return StepOutcome(exit_code=exit_code, timed_out=timed_out, out_of_memory=oom)

    async def _cpus(self) -> float | None:
        """The Docker host's CPUs (a step may not ask for more), read once."""
        if self._host_cpus is None:
            info = await self._docker.system.info()
            self._host_cpus = float(info.get("NCPU") or 0) or None
        return self._host_cpus

    # -- containers, images -----------------------------------------------------------

    async def _create(self, config: dict[str, Any], name: str,
                      registries: Registries = NO_REGISTRIES) -> DockerContainer:
        """Create the container, pulling its image first (with its registry's login in
        ``registries``) when it is not on this host."""
        image = str(config["Image"])
        try:
            return await self._docker.containers.create(config, name=name)
        except DockerError as exc:
            if exc.status != 404 or await image_exists(self._docker, image):
                raise  # 404 for something else, e.g. the run's network is gone
        try:
            await pull(self._docker, parse_reference(image), registries)
        except (ValueError, ImageError) as exc:
            raise ExecutorError(f"image {image!r} is not on this Docker host and "
                                f"could not be pulled: {exc}") from exc
        return await self._docker.containers.create(config, name=name)

    async def _containers(self, selector: Mapping[str, list[str]]) -> list[DockerContainer]:
        return await self._docker.containers.list(all=True, filters=json.dumps(selector))

    async def _volumes(self, selector: Mapping[str, list[str]]) -> list[dict[str, Any]]:
        found = await self._docker.volumes.list(filters=selector)  # type: ignore[no-untyped-call]
        return list(found["Volumes"] or [])

    async def _remove_quietly(self, name: str) -> None:
        try:
            await _absent_ok(self._docker.containers.container(name).delete(force=True, v=True),
                             also=(409,))
        except (DockerError, aiohttp.ClientError, OSError) as exc:
            log.warning("could not remove container %s (destroy_run will): %s", name, exc)

    def _remove_later(self, run_id: str, container: str) -> None:
        """Remove a container (name or id) in the background."""
        self._spawn_removal(run_id, self._remove_quietly(container))

    def _spawn_removal(self, run_id: str, removal: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(removal)
        pending = self._removals.setdefault(run_id, set())
        pending.add(task)
        task.add_done_callback(pending.discard)

    async def _removed(self, run_id: str) -> None:
        """Wait for the run's background removals."""
        pending = self._removals.pop(run_id, set())
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    @contextlib.asynccontextmanager
    async def _helper(self, run_id: str) -> AsyncIterator[DockerContainer]:
        """A created, never started, container with the run's workspace at /workspace."""
        await self._ensure_helper_image()
        name = container_name(run_id, "workspace")
        try:
            yield await self._docker.containers.create(helper_config(run_id, self._worker),
                                                       name=name)
        finally:
            self._remove_later(run_id, name)

    async def _ensure_helper_image(self) -> None:
        async with self._helper_lock:
            if self._helper_ready:
                return
            if not await _exists(self._docker.images.inspect(HELPER_IMAGE)):
                await self._docker.images.build(fileobj=_tar_of({"Dockerfile": HELPER_DOCKERFILE}),
                                                encoding="identity", tag=HELPER_IMAGE)
            self._helper_ready = True

    async def _workspace_archive(self, run_id: str, subdir: str) -> IO[bytes]:
        """A tar of ``/workspace/<subdir>`` with paths relative to it (a build context)."""
        spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)
        try:
            async with self._helper(run_id) as helper, self._docker._query(
                    f"containers/{helper.id}/archive", timeout=None,
                    params={"path": posixpath.join(WORKSPACE, subdir, ".")}) as response:
                async for chunk in response.content.iter_chunked(CHUNK):
                    await asyncio.to_thread(spool.write, chunk)
            spool.seek(0)
            return cast(IO[bytes], spool)
        except BaseException:
            spool.close()
            raise

    # -- workspace files: artifacts, caches, reports -------------------------------------

    async def read_files(self, ctx: RunContext, patterns: Sequence[str]) -> AsyncIterator[bytes]:
        run_id = check_run_id(ctx.run_id)
        with _docker_errors(f"reading {', '.join(patterns)} from the workspace"):
            async with self._helper(run_id) as helper:
                found = docker_files.sources(self._docker, helper.id, patterns)
                async with contextlib.aclosing(select(found, patterns)) as chunks:
                    async for chunk in chunks:
                        yield chunk

    async def write_files(self, ctx: RunContext, chunks: AsyncIterator[bytes]) -> None:
        run_id = check_run_id(ctx.run_id)
        with _docker_errors("writing files into the workspace"):
            async with self._helper(run_id) as helper:
                await helper.put_archive(WORKSPACE, chunks)  # type: ignore[no-untyped-call]

    # -- image builds and promotes ---------------------------------------------------------

    async def _build(self, run_id: str, step: StepSpec, build: BuildSpec, on_log: LogSink,
                     registries: Registries) -> StepOutcome:
        output = StepOutput(on_log)

        async def fail(message: str) -> StepOutcome:
            await output.flush()
            await output.feed("stderr", utc_now(), f"{message}\n".encode())
            return StepOutcome(exit_code=1)

        context_dir = build_context_dir(build)
        if context_dir is None:
            return await fail(f"build context {build.context_dir!r} is outside the workspace")
        with _docker_errors(f"build step {step.name!r}"):
            try:
                context = await self._workspace_archive(run_id, context_dir)
            except DockerError as exc:
                if exc.status != 404:
                    raise
                return await fail(f"build context {build.context_dir!r} is not in the workspace")
            try:
                async with asyncio.timeout(step.timeout_s):
                    return await build_image(self._docker, run_id, step, build, context,
                                             output, registries)
            except TimeoutError:
                await output.flush()
                return StepOutcome(exit_code=None, timed_out=True)
            finally:
                context.close()

    async def _promote(self, step: StepSpec, promote: PromoteSpec,
                       on_log: LogSink, registries: Registries) -> StepOutcome:
        output = StepOutput(on_log)
        with _docker_errors(f"promote step {step.name!r}"):
            try:
                async with asyncio.timeout(step.timeout_s):
                    return await promote_image(self._docker, step, promote, output,
                                               registries)
            except TimeoutError:
                await output.flush()
                return StepOutcome(exit_code=None, timed_out=True)


# -- helpers ----------------------------------------------------------------------------

async def _still_running(service: ServiceSpec, container: DockerContainer) -> None:
    try:
        async with asyncio.timeout(SERVICE_SETTLE_S):
            result = await container.wait()
    except TimeoutError:
        return
    tail = await container.log(stdout=True, stderr=True, tail=5)
    raise ExecutorError(
        f"service {service.name!r} ({service.image}) exited at once with code "
        f"{result.get('StatusCode')}: {''.join(tail).strip() or 'no output'}")


async def _wait(container: DockerContainer, timeout_s: float | None) -> tuple[int | None, bool]:
    """(exit code, timed out); on timeout the container is killed (exit code None)."""
    try:
        async with asyncio.timeout(timeout_s):
            result = await container.wait()
        return int(result["StatusCode"]), False
    except TimeoutError:
        await _absent_ok(container.kill(), also=(409,))
        await container.wait()
        return None, True


@contextlib.contextmanager
def _docker_errors(what: str) -> Iterator[None]:
    """Translate aiodocker / aiohttp errors into Cyclone's, saying what was being done."""
    try:
        yield
    except DockerError as exc:
        if exc.status == 900:
            raise ExecutorUnavailable(f"{what}: {exc.message}") from exc
        raise ExecutorError(f"{what}: {exc.message}") from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise ExecutorUnavailable(f"{what}: lost the Docker daemon: {exc}") from exc


async def _out_of_memory(container: DockerContainer) -> bool:
    """Whether a failed step's container was killed at its memory limit (the kernel's
    SIGKILL alone, 137, would not say why). A container that is gone already (its run
    was destroyed meanwhile: another incarnation of the worker cleaning up) was not:
    the failure says enough, as for its outputs."""
    try:
        return bool((await container.show())["State"].get("OOMKilled"))
    except DockerError as exc:
        if exc.status != 404:
            raise
        return False


async def _absent_ok(operation: Awaitable[Any], also: tuple[int, ...] = ()) -> None:
    """Await a removal; "not found" (and the ``also`` statuses) mean it is already done."""
    try:
        await operation
    except DockerError as exc:
        if exc.status != 404 and exc.status not in also:
            raise


async def _in_use_ok(operation: Awaitable[Any], what: str) -> None:
    """A removal that may be refused because something still uses the object (a network
    with endpoints: 403, a volume mounted by a container: 409): leave it, say so."""
    try:
        await _absent_ok(operation)
    except DockerError as exc:
        if exc.status not in (403, 409):
            raise
        log.info("left %s: still in use (%s)", what, exc.message)


async def _exists(lookup: Awaitable[Any]) -> bool:
    try:
        await lookup
    except DockerError as exc:
        if exc.status == 404:
            return False
        raise
    return True


async def _cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, Exception):
            log.debug("log reader ended with %r", result)


def _tar_of(files: Mapping[str, bytes]) -> IO[bytes]:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer
