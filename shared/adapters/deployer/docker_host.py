"""Docker-host deployer: replaces a named container on a Docker host with one of a new
image, waits until it is healthy, and puts the old one back when it is not
(``shared.ports.deployer``; aiodocker, Docker Engine API >= 1.41). What it asks Docker
for (the container config, names, labels, registry logins) is translated in
``docker_host_convert``.

A deploy of ``image`` to the target named ``app``:

1. Before anything runs differently: the target is checked (ports, restart policy),
   the image pulled when it is not on the host (with the login ``registries`` has for
   its registry), the target's network looked up (it must exist), and the new container
   created as ``app-cyclone-next``. A failure here is ``FAILED`` and ``app`` runs on,
   untouched.
2. The switch: ``app`` is renamed ``app-cyclone-previous`` and the new container ``app``
   (both while the old one still serves), then the old one is stopped (kept) and the new
   one started. Ports can be bound only once, so the old one's downtime is its stop plus
   the new one's start.
3. The wait, within ``target.health_timeout_s``: with a health check (the target's,
   else the image's own) until Docker says ``healthy``, failing early on ``unhealthy``;
   without one, until it has kept running ``SETTLE_S``. An exit fails it at once (the
   container has no restart policy until it is healthy, so an exit stays an exit).
4. Healthy: the target's restart policy is set, the old container removed:
   ``SUCCEEDED``. Not: the new container is removed and the old one renamed back and
   started again: ``ROLLED_BACK``, or ``FAILED`` when there was none (a first deploy)
   or it would not run again.

A cancelled deploy (the run was cancelled, the job timed out) rolls back the same way
before the cancellation goes on (shielded, at most ``ROLLBACK_TIMEOUT_S``). Deploys to
one container through one deployer take turns. An unreachable daemon raises
``DeployerUnavailable``; every other Docker error is an outcome saying what was being
done. Deployed containers are labelled ``io.cyclone.deployed``, never as a run's
resources: the executor's cleanup must not take them. A container of the target's name
without that label (made by hand, or another program's) is never touched: the deploy
fails, saying so (a pipeline must not be able to replace whatever runs on the host).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

import aiodocker
import aiohttp
from aiodocker.containers import DockerContainer
from aiodocker.exceptions import DockerError

from shared.adapters.deployer.docker_host_convert import (
    LABEL_DEPLOYED,
    container_config,
    has_health_check,
    next_name,
    previous_name,
    restart_policy,
)
from shared.adapters.executor.docker_images import ImageError, image_exists, pull
from shared.adapters.executor.script import finish_shielded
from shared.adapters.registry import credentials_for, parse_reference
from shared.errors import DeployerUnavailable
from shared.events import utc_now
from shared.pipeline.plan import DockerTarget
from shared.ports.deployer import DeployOutcome, DeployStatus, Target
from shared.ports.executor import LogSink, Registries

__all__ = ["DockerHostDeployer"]

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0  # a daemon that does not answer its version within this is down
SETTLE_S = 2.0  # without a health check: running this long without exiting is up
POLL_S = 0.2  # how often the new container's state is read while waiting
ROLLBACK_TIMEOUT_S = 60.0  # a rollback (after a cancel too) gives up after this
OUTPUT_LINES = 10  # the last lines of an exited container's output that are logged
REASON_CHARS = 600  # the most of a container's or health check's output a reason quotes


class _RollbackFailed(Exception):
    """The old container would not run again."""


class DockerHostDeployer:
    """The Docker-host implementation of ``shared.ports.deployer.Deployer``."""

    def __init__(self, docker: aiodocker.Docker | None = None) -> None:
        """``docker``: the client for the default daemon (target host ""), which the
        deployer does not close; without it, one is opened when first needed. A target
        with a ``host`` URL gets a client of its own, one per URL, closed by ``close``."""
        self._clients: dict[str, aiodocker.Docker] = {}
        self._owned: list[aiodocker.Docker] = []
        if docker is not None:
            self._clients[""] = docker
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    async def deploy(self, target: Target, image: str, secrets: Mapping[str, str],
                     registries: Registries, on_log: LogSink) -> DeployOutcome:
        if not isinstance(target, DockerTarget):
            return DeployOutcome(DeployStatus.FAILED,
                                 reason="the Docker-host deployer deploys only to Docker targets")
        try:
            config = container_config(target, image)
        except ValueError as exc:
            return DeployOutcome(DeployStatus.FAILED, reason=f"invalid Docker target: {exc}")
        docker = await self._client(target.host)
        where = target.host or docker.docker_host
        async with self._locks.setdefault((target.host, target.container), asyncio.Lock()):
            rollout = _Rollout(docker, target, image, config, registries, on_log)
            try:
                return await rollout.run()
            except DockerError as exc:
                if exc.status == 900:  # aiodocker: no connection
                    raise DeployerUnavailable(f"{rollout.doing}: {exc.message}") from exc
                return rollout.failed(f"{rollout.doing}: {exc.message}")
            except (aiohttp.ClientError, OSError) as exc:
                raise DeployerUnavailable(
                    f"{rollout.doing}: lost the Docker daemon at {where}: {exc}") from exc

    async def close(self) -> None:
        owned, self._owned = self._owned, []
        self._clients.clear()
        for docker in owned:
            await docker.close()

    async def _client(self, host: str) -> aiodocker.Docker:
        """The client for ``host`` ("": DOCKER_HOST, then the local socket), opened once;
        ``DeployerUnavailable`` when its daemon does not answer."""
        docker = self._clients.get(host)
        if docker is None:
            try:
                docker = aiodocker.Docker(url=host or None)
            except ValueError as exc:
                raise DeployerUnavailable(
                    f"no Docker daemon at {host or 'the default address'}: {exc}") from exc
            self._clients[host] = docker
            self._owned.append(docker)
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                await docker.version()
        except (DockerError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            reason = (exc.message if isinstance(exc, DockerError)
                      else f"{docker.docker_host}: {exc or 'no answer'}")
            raise DeployerUnavailable(f"cannot reach the Docker daemon: {reason}") from exc
        return docker


class _Rollout:
    """One deploy of ``image`` to ``target``: the steps in the module's docstring."""

    def __init__(self, docker: aiodocker.Docker, target: DockerTarget, image: str,
                 config: dict[str, Any], registries: Registries, on_log: LogSink) -> None:
        self.docker = docker
        self.target = target
        self.name = target.container
        self.image = image
        self.config = config
        self.registries = registries
        self.on_log = on_log
        self.previous = ""  # the old container's image
        self.old_id = ""  # the old container ("": there is none)
        self.old_was_running = False
        self.doing = "starting the deploy"  # what an unexpected Docker error interrupted

    async def say(self, text: str) -> None:
        await self.on_log("stdout", utc_now(), text)

    def failed(self, reason: str) -> DeployOutcome:
        return DeployOutcome(DeployStatus.FAILED, previous=self.previous, reason=reason)

    async def run(self) -> DeployOutcome:
        problem = await self._pull() or await self._check_network()
        if problem:
            await self.say(problem)
            return self.failed(problem)
        self.doing = f"inspecting container {self.name}"
        old = await _inspect(self.docker, self.name)
        if old is not None and (old["Config"].get("Labels") or {}).get(LABEL_DEPLOYED) != "1":
            problem = (f"container {self.name} exists and was not deployed by Cyclone: it is "
                       "left alone (remove or rename it, and the next deploy takes its place)")
            await self.say(problem)
            return self.failed(problem)
        if old is not None:
            self.old_id = old["Id"]
            self.previous = str(old["Config"]["Image"])
            self.old_was_running = bool(old["State"].get("Running"))
        self.doing = f"removing what an earlier deploy of {self.name} left"
        for leftover in (previous_name(self.name), next_name(self.name)):
            await _remove(self.docker, leftover)
        if old is None:
            await self.say(f"starting container {self.name} with image {self.image}")
        else:
            await self.say(f"replacing container {self.name} (image {self.previous}) "
                           f"with {self.image}")
        self.doing = f"creating container {self.name}"
        new = await self.docker.containers.create(self.config, name=next_name(self.name))
        try:
            try:
                await self._switch(new)
                failure = await self._wait_healthy(new)
                if failure is None:
                    await self._keep(new)
            except DockerError as exc:  # refused (a port taken, ...): the old one goes back
                if exc.status == 900:
                    raise
                failure = f"{self.doing}: {exc.message.strip()}"
            if failure is None:
                return DeployOutcome(DeployStatus.SUCCEEDED, previous=self.previous)
            return await self._roll_back(new, failure)
        except BaseException:
            # Cancelled, or the daemon went away: put the old one back before it goes on.
            await finish_shielded(self._undo_quietly(new))
            raise

    # -- before the switch ---------------------------------------------------------------

    async def _pull(self) -> str:
        """Pull the image unless the host has it; what went wrong, or ""."""
        self.doing = f"looking up image {self.image}"
        if await image_exists(self.docker, self.image):
            return ""
        try:
            ref = parse_reference(self.image)
        except ValueError as exc:
            return f"could not pull image {self.image}: {exc}"
        login = credentials_for(self.registries, ref.registry)
        said = f" (logged in to {ref.registry})" if login else ""
        await self.say(f"pulling image {self.image}{said}")
        self.doing = f"pulling image {self.image}"
        started = time.monotonic()
        try:
            await pull(self.docker, ref, self.registries)
        except ImageError as exc:
            return f"could not pull image {self.image}: {exc}"
        await self.say(f"pulled image {self.image} in {time.monotonic() - started:.1f}s")
        return ""

    async def _check_network(self) -> str:
        network = self.target.network
        if not network:
            return ""
        self.doing = f"looking up network {network}"
        if await _exists(self.docker.networks.get(network)):
            return ""
        return f"network {network} does not exist on the Docker host (it is not created)"

    # -- the switch and the wait ---------------------------------------------------------

    async def _switch(self, new: DockerContainer) -> None:
        """Names swapped, the old one stopped, the new one started."""
        if self.old_id:
            self.doing = f"renaming container {self.name}"
            await self.docker.containers.container(self.old_id).rename(previous_name(self.name))
        self.doing = f"renaming the new container to {self.name}"
        await new.rename(self.name)
        if self.old_was_running:
            self.doing = f"stopping the old container {self.name}"
            await self.docker.containers.container(self.old_id).stop()
        self.doing = f"starting container {self.name}"
        await new.start()

    async def _wait_healthy(self, new: DockerContainer) -> str | None:
        """Wait until the new container is up (see the module's docstring); why it is not,
        or None."""
        self.doing = f"waiting for container {self.name}"
        limit = self.target.health_timeout_s
        started = time.monotonic()
        info = await new.show()
        checked = has_health_check(info)
        settle = min(SETTLE_S, limit)
        if checked:
            await self.say(f"waiting for health check (up to {_secs(limit)}s)")
        else:
            await self.say(f"no health check: waiting {_secs(settle)}s for it to keep running")
        while True:
            state = info["State"]
            elapsed = time.monotonic() - started
            if not state.get("Running") or state.get("Restarting"):
                return await self._exited(new, state)
            health = state.get("Health") or {}
            if checked and health.get("Status") == "healthy":
                await self.say(f"healthy after {elapsed:.1f}s")
                return None
            if checked and health.get("Status") == "unhealthy":
                output = await self._health_output(health)
                return f"container {self.name} became unhealthy: {output}"
            if not checked and elapsed >= settle:
                await self.say(f"running after {elapsed:.1f}s")
                return None
            if elapsed >= limit:
                output = await self._health_output(health)
                return (f"container {self.name} did not become healthy within "
                        f"{_secs(limit)}s: {output}")
            await asyncio.sleep(min(POLL_S, max(limit - elapsed, 0.0) + 0.01))
            info = await new.show()

    async def _exited(self, new: DockerContainer, state: Mapping[str, Any]) -> str:
        how = ("was killed at its memory limit" if state.get("OOMKilled")
               else f"exited with code {state.get('ExitCode')}")
        try:
            lines = [line.rstrip("\n") for line in await new.log(
                stdout=True, stderr=True, tail=OUTPUT_LINES)]
        except DockerError as exc:  # a log driver that cannot be read back
            if exc.status == 900:
                raise
            lines = []
        lines = [line for line in lines if line.strip()]
        for line in lines:
            await self.say(f"| {line}")
        output = _quote(" | ".join(lines[-3:])) or "no output"
        return f"container {self.name} {how}: {output}"

    async def _health_output(self, health: Mapping[str, Any]) -> str:
        probes = health.get("Log") or []
        if not probes:
            return "no health check finished"
        last = probes[-1]
        lines = [line for line in str(last.get("Output") or "").splitlines() if line.strip()]
        for line in lines[-OUTPUT_LINES:]:
            await self.say(f"health check: {line}")
        output = _quote(" | ".join(lines[-3:])) or "no output"
        return f"the last check exited with code {last.get('ExitCode')}: {output}"

    # -- the end: keep it, or roll back --------------------------------------------------

    async def _keep(self, new: DockerContainer) -> None:
        """Healthy: the target's restart policy on, the old container gone."""
        self.doing = f"setting the restart policy of container {self.name}"
        await self.docker._query_json(f"containers/{new.id}/update", method="POST",
                                      data={"RestartPolicy": restart_policy(self.target.restart)})
        if self.old_id:
            try:
                await _remove(self.docker, self.old_id)
            except DockerError as exc:  # the next deploy removes it
                if exc.status == 900:
                    raise
                log.warning("could not remove %s: %s", previous_name(self.name), exc.message)
        await self.say(f"container {self.name} runs {self.image}")

    async def _roll_back(self, new: DockerContainer, failure: str) -> DeployOutcome:
        await self.say(failure)
        if not self.old_id:
            try:
                await self._undo(new)
            except (DockerError, TimeoutError) as exc:
                if isinstance(exc, DockerError) and exc.status == 900:
                    raise
                return self.failed(f"{failure}; nothing to roll back to, and removing "
                                   f"the new container failed: {_message(exc)}")
            await self.say(f"removed container {self.name}: there was none before")
            return self.failed(f"{failure}; there was no container {self.name} before "
                               "to roll back to")
        await self.say(f"rolling back to {self.previous}")
        try:
            await self._undo(new)
        except (DockerError, TimeoutError, _RollbackFailed) as exc:
            if isinstance(exc, DockerError) and exc.status == 900:
                raise
            problem = f"rolling back to {self.previous} failed too: {_message(exc)}"
            await self.say(problem)
            return self.failed(f"{failure}; {problem}")
        await self.say(f"rolled back: container {self.name} runs {self.previous} again")
        return DeployOutcome(DeployStatus.ROLLED_BACK, previous=self.previous, reason=failure)

    async def _undo(self, new: DockerContainer) -> None:
        """The new container removed, the old one back under its name, running again if it
        ran before. Safe to repeat: each part looks before it acts."""
        async with asyncio.timeout(ROLLBACK_TIMEOUT_S):
            self.doing = f"removing the new container {self.name}"
            await _remove(self.docker, new.id)
            if not self.old_id:
                return
            old = self.docker.containers.container(self.old_id)
            info = await old.show()
            if info["Name"].lstrip("/") != self.name:
                self.doing = f"renaming the old container back to {self.name}"
                await old.rename(self.name)
            if self.old_was_running:
                self.doing = f"starting the old container {self.name}"
                if not info["State"].get("Running"):
                    await old.start()
                await self._until_running(old)

    async def _until_running(self, container: DockerContainer) -> None:
        while True:
            state = (await container.show())["State"]
            if state.get("Running") and not state.get("Restarting"):
                return
            if state.get("Status") in ("exited", "dead"):
                raise _RollbackFailed(f"the old container {self.name} exited again with "
                                      f"code {state.get('ExitCode')}")
            await asyncio.sleep(POLL_S)

    async def _undo_quietly(self, new: DockerContainer) -> None:
        try:
            await self._undo(new)
        except Exception as exc:  # the cancellation (or the lost daemon) is what goes on
            log.warning("rolling back container %s failed: %s", self.name, _message(exc))


# -- helpers ----------------------------------------------------------------------------


async def _inspect(docker: aiodocker.Docker, name: str) -> dict[str, Any] | None:
    try:
        return await docker.containers.container(name).show()
    except DockerError as exc:
        if exc.status == 404:
            return None
        raise


async def _remove(docker: aiodocker.Docker, name_or_id: str) -> None:
    """Remove a container, running or not; one that is not there is fine."""
    try:
        await docker.containers.container(name_or_id).delete(force=True)
    except DockerError as exc:
        if exc.status != 404:
            raise


async def _exists(lookup: Any) -> bool:
    try:
        await lookup
    except DockerError as exc:
        if exc.status == 404:
            return False
        raise
    return True


def _secs(seconds: float) -> str:
    return f"{seconds:g}"


def _quote(text: str) -> str:
    text = text.strip()
    return text if len(text) <= REASON_CHARS else "..." + text[-REASON_CHARS:]


def _message(exc: BaseException) -> str:
    if isinstance(exc, DockerError):
        return exc.message.strip()
    if isinstance(exc, TimeoutError):
        return f"no end after {_secs(ROLLBACK_TIMEOUT_S)}s"
    return str(exc) or type(exc).__name__
