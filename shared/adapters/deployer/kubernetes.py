"""Kubernetes deployer: sets a Deployment's containers to a new image through the Kubernetes
API, waits for the rollout as ``kubectl rollout status`` does, and undoes it when it does
not complete.

Plain HTTPS with aiohttp rather than a Kubernetes client library: three calls are all a
deploy needs (GET and strategic-merge PATCH of ``/apis/apps/v1/namespaces/{ns}/
deployments/{name}``), and each target brings its own server, token and CA (from the
secrets the target names), so each deploy opens its own session with exactly those.

A deploy:

1. reads the Deployment: the images its pod template's targeted containers run now
   (``target.containers``, or every container) are what an undo restores;
2. PATCHes the targeted containers' images, which makes a new ``metadata.generation``
   (when they already run it and its rollout is complete: ``SUCCEEDED`` at once);
3. polls until the controller has observed that generation and every replica is updated
   and available with no old pod left, or until ``target.timeout_s`` passes, or the
   Deployment's own progress deadline is exceeded; each change of the counts is a line
   of the step's log;
4. on failure PATCHes the old images back and waits for that rollout the same way:
   ``ROLLED_BACK`` when it completes, ``FAILED`` (saying both) when it does not.

Cancelling a deploy after its PATCH puts the old images back (shielded, bounded) before
the cancellation goes on; it does not wait for that rollout, as whoever cancelled wants
the step to stop now, and the cluster carries the rollback out by itself.

Errors: an API that cannot be reached at all (connection refused, DNS, no answer, 5xx)
raises ``DeployerUnavailable`` (the step may be retried); everything else (a refusal, a
missing deployment or container, a certificate that does not verify) is a ``FAILED``
outcome. While waiting on a rollout, an unreachable API is retried until the timeout, as
the rollout goes on without us. The token is sent only in the ``Authorization`` header
and masked out of every message, log line and reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

from shared.adapters.executor.script import finish_shielded
from shared.errors import DeployerUnavailable
from shared.events import utc_now
from shared.masking import mask
from shared.pipeline.plan import KubernetesTarget
from shared.ports.deployer import DeployOutcome, DeployStatus, Target
from shared.ports.executor import LogSink, Registries

__all__ = ["PATCH_TYPE", "KubernetesDeployer"]

log = logging.getLogger(__name__)

PATCH_TYPE = "application/strategic-merge-patch+json"
REQUEST_S = 30.0  # one API call; a rollout's wait is bounded by the target's timeout
UNDO_ON_CANCEL_S = 30.0  # a cancelled deploy's undo, which the canceller waits for


class _Refused(Exception):
    """The API answered, but not with what a deploy can go on with: a ``FAILED`` outcome
    with this message (already masked)."""


@dataclass(frozen=True)
class _Api:
    """One deploy's view of one Deployment: a session holding the token, and its URL."""

    session: aiohttp.ClientSession
    server: str  # the API server's URL, as messages name it
    url: URL
    where: str  # "namespace/name"
    target: KubernetesTarget
    token: str

    def hide(self, text: str) -> str:
        """``text`` without the token (an API message could echo it back)."""
        return mask(text, [self.token])

    async def read(self) -> dict[str, Any]:
        return await self._call("GET", f"reading deployment {self.where}")

    async def set_images(self, images: Mapping[str, str]) -> dict[str, Any]:
        containers = [{"name": name, "image": image} for name, image in images.items()]
        body = {"spec": {"template": {"spec": {"containers": containers}}}}
        return await self._call("PATCH", f"updating deployment {self.where}", body)

    async def _call(self, method: str, what: str, body: object = None) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        headers = {} if body is None else {"Content-Type": PATCH_TYPE}
        with self._transport_errors(what):
            # No redirects: the token is for this server only.
            async with self.session.request(method, self.url, data=data, headers=headers,
                                            allow_redirects=False) as response:
                text = await response.text(errors="replace")
        return self._answer(what, response.status, text)

    def _answer(self, what: str, status: int, text: str) -> dict[str, Any]:
        if status == 404:
            raise _Refused(f"deployment {self.where} not found")
        message = self.hide(_status_message(text) or f"HTTP {status}")
        if status >= 500 or status == 429:  # the API server (or its proxy) is struggling
            raise DeployerUnavailable(
                f"{what}: the Kubernetes API at {self.server} answered HTTP {status}: {message}")
        if status == 401:
            raise _Refused(f"{what}: {message} (HTTP 401); check the token in the secret "
                           f"{self.target.token_secret}")
        if status != 200:
            raise _Refused(f"{what}: {message} (HTTP {status})")
        return self._deployment(what, text)

    def _deployment(self, what: str, text: str) -> dict[str, Any]:
        try:
            answer = json.loads(text)
        except ValueError:
            answer = None
        if not isinstance(answer, dict) or not isinstance(answer.get("spec"), dict):
            raise _Refused(f"{what}: the answer of {self.server} is not a Deployment")
        return answer

    @contextlib.contextmanager
    def _transport_errors(self, what: str) -> Iterator[None]:
        """Translate aiohttp's errors: a certificate is a configuration problem (FAILED),
        anything else that keeps us from an answer means the API is unavailable."""
        try:
            yield
        except aiohttp.ClientConnectorCertificateError as exc:
            raise _Refused(
                f"{what}: the certificate of {self.server} could not be verified "
                f"({_verify_message(exc)}); set the secret {self.target.ca_secret} to the "
                "cluster's CA certificate (PEM)") from exc
        except aiohttp.ClientSSLError as exc:
            raise _Refused(f"{what}: TLS with {self.server} failed: "
                           f"{self.hide(_cause(exc))}") from exc
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise DeployerUnavailable(f"{what}: cannot reach the Kubernetes API at "
                                      f"{self.server}: {self.hide(_cause(exc))}") from exc


@dataclass(frozen=True)
class _Rollout:
    """Where a rollout is, from one read of the Deployment (kubectl's criteria)."""

    observed: bool  # the controller has seen the generation we wait for
    desired: int
    updated: int
    total: int
    available: int
    deadline_exceeded: str | None  # the Progressing condition's message, when it says so

    @classmethod
    def of(cls, deployment: Mapping[str, Any], generation: int) -> _Rollout:
        status = _mapping(deployment.get("status"))
        metadata = _mapping(deployment.get("metadata"))
        # Someone else's later change to the Deployment is waited for too, as kubectl does.
        wanted = max(generation, _int(metadata.get("generation")))
        return cls(observed=_int(status.get("observedGeneration")) >= wanted,
                   desired=_int(_mapping(deployment.get("spec")).get("replicas"), default=1),
                   updated=_int(status.get("updatedReplicas")),
                   total=_int(status.get("replicas")),
                   available=_int(status.get("availableReplicas")),
                   deadline_exceeded=_deadline_exceeded(status))

    @property
    def complete(self) -> bool:
        return (self.observed and self.deadline_exceeded is None
                and self.updated >= self.desired and self.total <= self.updated
                and self.available >= self.updated)

    @property
    def failed(self) -> bool:
        # Before the controller observed our generation the condition may be a stale one.
        return self.observed and self.deadline_exceeded is not None

    def counts(self) -> str:
        text = f"{self.updated} of {self.desired} updated, {self.available} available"
        old = self.total - self.updated
        return f"{text}, {old} old pending termination" if old > 0 else text


class _Progress:
    """Says a rollout's counts in the step's log each time they change; keeps the last."""

    def __init__(self, api: _Api, say: _Say, what: str) -> None:
        self.api, self.say, self.what = api, say, what
        self.last: _Rollout | None = None
        self.trouble = ""  # why the last poll had no answer, if it had none

    async def seen(self, rollout: _Rollout) -> None:
        self.trouble = ""
        if rollout == self.last:
            return
        self.last = rollout
        prefix = f"{self.what} of {self.api.where}"
        if not rollout.observed:
            await self.say(f"{prefix}: waiting for the controller to observe the change")
        else:
            await self.say(f"{prefix}: {rollout.counts()}")

    async def unreachable(self, exc: DeployerUnavailable) -> None:
        if not self.trouble:  # once per outage, not once per poll
            await self.say(f"{exc} (retrying)", "stderr")
            log.warning("rollout poll failed", extra={"deployment": self.api.where,
                                                      "error": str(exc)})
        self.trouble = str(exc)

    def state(self) -> str:
        """The last counts seen, for a reason: "2 of 3 updated, 1 available"."""
        if self.last is None:
            seen = "no status read"
        elif not self.last.observed:
            seen = "the controller had not observed the change"
        else:
            seen = self.last.counts()
        return f"{seen}; last poll: {self.trouble}" if self.trouble else seen


class _Say:
    """The step's log, with the token masked out of every line."""

    def __init__(self, on_log: LogSink, token: str) -> None:
        self.on_log, self.token = on_log, token

    async def __call__(self, text: str, stream: str = "stdout") -> None:
        await self.on_log(stream, utc_now(), mask(text, [self.token]) if self.token else text)


class KubernetesDeployer:
    """``Deployer`` for ``KubernetesTarget``s (see the module docstring)."""

    def __init__(self, poll_s: float = 1.0) -> None:
        self._poll_s = poll_s

    async def close(self) -> None:
        """Nothing to release: each deploy opens and closes its own session."""

    async def deploy(self, target: Target, image: str, secrets: Mapping[str, str],
                     registries: Registries, on_log: LogSink) -> DeployOutcome:
        del registries  # the cluster pulls the image with its own credentials
        if not isinstance(target, KubernetesTarget):
            return _failed(f"not a Kubernetes target: {type(target).__name__}")
        token = secrets.get(target.token_secret, "").strip()
        say = _Say(on_log, token)
        try:
            async with _connect(target, secrets, token) as api:
                return await self._deploy(api, image, say)
        except _Refused as exc:
            log.warning("deploy failed", extra={"deployment": _where(target),
                                                "error": str(exc)})
            await say(str(exc), "stderr")
            return _failed(str(exc))

    async def _deploy(self, api: _Api, image: str, say: _Say) -> DeployOutcome:
        current = await api.read()
        before = _targeted(current, api)
        previous = next(iter(before.values()))
        if all(old == image for old in before.values()):
            generation = _int(_mapping(current.get("metadata")).get("generation"))
            if _Rollout.of(current, generation).complete:
                await say(f"deployment {api.where} already runs {image}")
                return DeployOutcome(DeployStatus.SUCCEEDED, previous=previous)
        log.info("deploying", extra={"deployment": api.where, "image": image,
                                     "previous": previous})
        await say(f"deploying {image} to deployment {api.where} "
                  f"(containers {', '.join(before)}; was {previous})")
        try:
            return await self._roll_out(api, image, before, say)
        except asyncio.CancelledError:
            await finish_shielded(self._put_back(api, before, say))
            raise

    async def _roll_out(self, api: _Api, image: str, before: Mapping[str, str],
                        say: _Say) -> DeployOutcome:
        previous = next(iter(before.values()))
        try:
            patched = await api.set_images(dict.fromkeys(before, image))
        except _Refused as exc:  # refused, so nothing changed
            await say(str(exc), "stderr")
            return DeployOutcome(DeployStatus.FAILED, previous=previous, reason=str(exc))
        except DeployerUnavailable:  # it may have been applied before the answer was lost
            await finish_shielded(self._put_back(api, before, say))
            raise
        problem = await self._wait(api, _generation(patched), "rollout", say)
        if problem is None:
            await say(f"rollout of {api.where} complete: {image}")
            return DeployOutcome(DeployStatus.SUCCEEDED, previous=previous)
        return await self._undo(api, image, before, problem, say)

    async def _undo(self, api: _Api, image: str, before: Mapping[str, str], problem: str,
                    say: _Say) -> DeployOutcome:
        previous = next(iter(before.values()))
        log.warning("rolling back", extra={"deployment": api.where, "problem": problem})
        await say(problem, "stderr")
        if all(old == image for old in before.values()):
            return _failed(f"{problem}; nothing to roll back to: it ran {image} already",
                           previous)
        await say(f"rolling back deployment {api.where} to {previous}")
        try:
            again = await self._wait(api, _generation(await api.set_images(before)),
                                     "rollback", say)
        except (_Refused, DeployerUnavailable) as exc:
            again = str(exc)
        if again is not None:
            await say(f"rollback failed: {again}", "stderr")
            return _failed(f"{problem}; the rollback to {previous} failed too: {again}",
                           previous)
        await say(f"rolled back deployment {api.where} to {previous}")
        return DeployOutcome(DeployStatus.ROLLED_BACK, previous=previous, reason=problem)

    async def _wait(self, api: _Api, generation: int, what: str, say: _Say) -> str | None:
        """Poll until the rollout of ``generation`` completes (None) or why it did not."""
        progress = _Progress(api, say, what)
        deadline = asyncio.timeout(api.target.timeout_s)
        try:
            async with deadline:
                return await self._poll(api, generation, progress)
        except TimeoutError:
            if not deadline.expired():
                raise
            return (f"{what} did not complete within {api.target.timeout_s:g}s "
                    f"({progress.state()})")

    async def _poll(self, api: _Api, generation: int, progress: _Progress) -> str | None:
        while True:
            try:
                rollout = _Rollout.of(await api.read(), generation)
            except DeployerUnavailable as exc:
                await progress.unreachable(exc)
            except _Refused as exc:  # deleted meanwhile, token revoked...
                return str(exc)
            else:
                await progress.seen(rollout)
                if rollout.failed:
                    return (f"{progress.what} exceeded its progress deadline: "
                            f"{rollout.deadline_exceeded} ({rollout.counts()})")
                if rollout.complete:
                    return None
            await asyncio.sleep(self._poll_s)

    async def _put_back(self, api: _Api, before: Mapping[str, str], say: _Say) -> None:
        """Best effort: put the old images back; failures are logged, not raised."""
        previous = next(iter(before.values()))
        try:
            async with asyncio.timeout(UNDO_ON_CANCEL_S):
                await api.set_images(before)
        except (_Refused, DeployerUnavailable, TimeoutError) as exc:
            log.warning("undo failed", extra={"deployment": api.where, "error": str(exc)})
            await say(f"could not roll back deployment {api.where}: {exc}", "stderr")
            return
        log.info("rolled back", extra={"deployment": api.where, "image": previous})
        await say(f"rolled back deployment {api.where} to {previous}")


@contextlib.asynccontextmanager
async def _connect(target: KubernetesTarget, secrets: Mapping[str, str],
                   token: str) -> AsyncIterator[_Api]:
    """An ``_Api`` for ``target``'s Deployment with the server, token and CA of ``secrets``."""
    server = _server(target, secrets)
    if not token:
        raise _Refused(f"the secret {target.token_secret} is not set (it holds the token "
                       "for the Kubernetes API)")
    context = await _tls(target, secrets)
    url = server / "apis" / "apps" / "v1" / "namespaces" / target.namespace / "deployments" \
        / target.deployment
    async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context),
            timeout=aiohttp.ClientTimeout(total=REQUEST_S),
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
    ) as session:
        yield _Api(session, str(server), url, _where(target), target, token)


def _server(target: KubernetesTarget, secrets: Mapping[str, str]) -> URL:
    value = secrets.get(target.server_secret, "").strip()
    if not value:
        raise _Refused(f"the secret {target.server_secret} is not set (it holds the "
                       "Kubernetes API server's URL, https://host:port)")
    try:
        server = URL(value)
    except ValueError:
        server = URL()
    # The value is not repeated: a secret put in the wrong place must not reach a log.
    if server.scheme != "https" or not server.host:
        raise _Refused(f"the secret {target.server_secret} does not hold an https:// URL "
                       "(the Kubernetes API server's, https://host:port)")
    return server.with_query(None).with_fragment(None)


async def _tls(target: KubernetesTarget, secrets: Mapping[str, str]) -> ssl.SSLContext:
    """Trust the CA of the target's CA secret only, or the system's CAs without one."""
    ca = secrets.get(target.ca_secret, "").strip() or None
    try:
        # Loading the system's CAs reads files: not on the event loop.
        return await asyncio.to_thread(ssl.create_default_context, cadata=ca)
    except (ssl.SSLError, ValueError) as exc:
        raise _Refused(f"the secret {target.ca_secret} does not hold a PEM CA "
                       f"certificate ({exc.__class__.__name__})") from exc


def _targeted(deployment: Mapping[str, Any], api: _Api) -> dict[str, str]:
    """The targeted containers' current images, in the target's (or the template's) order."""
    template = _mapping(_mapping(_mapping(deployment.get("spec")).get("template")).get("spec"))
    containers = template.get("containers")
    images = {str(c.get("name")): str(c.get("image", "")) for c in
              (containers if isinstance(containers, list) else []) if isinstance(c, dict)}
    wanted = api.target.containers or tuple(images)
    missing = [name for name in wanted if name not in images]
    if missing or not wanted:
        raise _Refused(f"deployment {api.where} has no container "
                       f"{', '.join(missing) or '(none at all)'} (it has: "
                       f"{', '.join(images) or 'none'})")
    return {name: images[name] for name in wanted}


def _deadline_exceeded(status: Mapping[str, Any]) -> str | None:
    conditions = status.get("conditions")
    for condition in conditions if isinstance(conditions, list) else []:
        if (isinstance(condition, dict) and condition.get("type") == "Progressing"
                and condition.get("reason") == "ProgressDeadlineExceeded"):
            return str(condition.get("message") or "ProgressDeadlineExceeded")
    return None


def _generation(deployment: Mapping[str, Any]) -> int:
    return _int(_mapping(deployment.get("metadata")).get("generation"))


def _status_message(text: str) -> str:
    """The ``message`` of a Kubernetes Status body, or the start of whatever else it is."""
    try:
        body = json.loads(text)
    except ValueError:
        return " ".join(text.split())[:200]
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body["message"])
    return " ".join(text.split())[:200]


def _verify_message(exc: aiohttp.ClientConnectorCertificateError) -> str:
    error = exc.certificate_error
    if isinstance(error, ssl.SSLCertVerificationError) and error.verify_message:
        return error.verify_message
    return str(error)


def _cause(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return str(exc.os_error.strerror or exc.os_error)
    if isinstance(exc, TimeoutError):
        return f"no answer within {REQUEST_S:g}s"
    return str(exc) or type(exc).__name__


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _int(value: object, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _where(target: KubernetesTarget) -> str:
    return f"{target.namespace}/{target.deployment}"


def _failed(reason: str, previous: str = "") -> DeployOutcome:
    return DeployOutcome(DeployStatus.FAILED, previous=previous, reason=reason)
