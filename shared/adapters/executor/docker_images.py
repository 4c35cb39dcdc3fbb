"""The Docker executor's image work: build steps, promote steps, and pulls (aiodocker's
client, Docker Engine API >= 1.41). What it asks for and how it reads the answers is
translated in ``docker_convert`` (the build's query) and ``registry`` (references,
logins, progress streams); ``docker.py`` hands it a step's log and the workspace.

* ``build_image``: ``POST /build`` of the workspace's context (its Dockerfile, build
  args, target stage, labels) with every registry login in ``X-Registry-Config`` (for
  base images in private registries), tagged with the run's tag, ``build.tag`` and each
  of ``build.tags``; with ``build.push`` each of ``build.tags`` is pushed with its
  registry's login. The build's output and the push's progress (a line per layer
  status change) go to the step's log.
* ``promote_image``: the source image pulled (with its registry's login) unless it is on
  this host, tagged with each of ``promote.tags`` and pushed; when the source was named
  by digest, every push must keep it (the log says so) or the step fails.
* ``pull``: ``POST /images/create`` with the image's registry's login; a refusal is an
  ``ImageError`` naming the registry (never the password).

A failed push or pull ends the step with exit code 1 and a line in its log naming the
registry and the reference. What each step pushed is in ``StepOutcome.pushed``, one
``PushedImage`` per repository. The daemon gone (aiodocker's status 900) is left to the
caller's ``_docker_errors`` (``ExecutorUnavailable``).

Tags are shared by the runs on a host (two runs of a branch both push its ``latest``),
and a push sends what its tag names when it starts. So a tag is made and pushed under a
lock per reference (in this worker), and a tag found moved after its push (by another
worker sharing the Docker host) fails the step. The tags made stay on the host (as
``build.tag`` always has): another run may have made the same one and be about to push.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import IO, Any

import aiodocker
from aiodocker.exceptions import DockerError
from aiodocker.jsonstream import json_stream_stream

from shared.adapters.executor.docker_convert import build_params, built_image
from shared.adapters.executor.script import StepOutput
from shared.adapters.registry import (
    ImageRef,
    ProgressLog,
    auth_header,
    auth_hint,
    credentials_for,
    digest_changes,
    parse_reference,
    pull_params,
    pushed_images,
    redact,
    registry_config_header,
)
from shared.events import utc_now
from shared.pipeline.plan import BuildSpec, PromoteSpec, StepSpec
from shared.ports.executor import Registries, StepOutcome

__all__ = ["ImageError", "build_image", "image_exists", "promote_image", "pull"]

DAEMON_GONE = 900  # aiodocker's status when it cannot reach the daemon


class ImageError(Exception):
    """A pull, tag or push that failed for a reason the step's log states (the message)."""


async def build_image(docker: aiodocker.Docker, run_id: str, step: StepSpec, build: BuildSpec,
                      context: IO[bytes], output: StepOutput,
                      registries: Registries) -> StepOutcome:
    """Build ``context`` as ``build`` says, tag it, push it when asked."""
    try:
        tags = [_tag_reference(reference) for reference in build.tags]
        local = [_tag_reference(build.tag)] if build.tag else []
    except ValueError as exc:
        return await _failed(output, str(exc))
    if build.push and not tags:
        return await _failed(output, "nothing to push: the build has no tags")
    image_id, error = await _stream_build(docker, context, build_params(run_id, build),
                                          registries, output)
    if error:
        return await _failed(output, f"image build failed: {redact(error, registries)}")
    # what this build made, even if another job of the run has built since
    image_id = image_id or str((await docker.images.inspect(built_image(run_id)))["Id"])
    try:
        for ref in local:
            await _tag_and_push(docker, image_id, ref, registries, output, push=False)
        pushes = [(ref, await _tag_and_push(docker, image_id, ref, registries, output,
                                            push=build.push)) for ref in tags]
    except ImageError as exc:
        return await _failed(output, str(exc))
    if not build.push:
        await output.flush()
        return StepOutcome(exit_code=0)
    pushed = pushed_images(build.name or step.name, pushes)
    for image in pushed:
        await _say(output, f"pushed {image.reference} as {', '.join(image.tags)}")
    await output.flush()
    return StepOutcome(exit_code=0, pushed=pushed)


async def promote_image(docker: aiodocker.Docker, step: StepSpec, promote: PromoteSpec,
                        output: StepOutput, registries: Registries) -> StepOutcome:
    """Pull ``promote.image`` unless it is here, tag it with each of ``promote.tags``,
    push those; by digest, the digest must stay."""
    try:
        source = parse_reference(promote.image)
        targets = [_tag_reference(reference) for reference in promote.tags]
    except ValueError as exc:
        return await _failed(output, str(exc))
    if not targets:
        return await _failed(output, f"nothing to promote {promote.image} to: no tags")
    try:
        if await image_exists(docker, source.reference):
            await _say(output, f"{source.reference} is on this host: not pulled")
        else:
            await _say(output, f"pulling {source.reference} from {source.registry}")
            await pull(docker, source, registries, output)
        image_id = str((await docker.images.inspect(source.reference))["Id"])
        pushes = [(ref, await _tag_and_push(docker, image_id, ref, registries, output))
                  for ref in targets]
    except ImageError as exc:
        return await _failed(output, str(exc))
    pushed = pushed_images(promote.name or step.name, pushes)
    changes = digest_changes(source, pushed)
    if changes:
        return await _failed(output, "\n".join(changes))
    if source.digest:
        await _say(output, f"digest kept: {source.digest}")
    for image in pushed:
        await _say(output, f"pushed {image.reference} as {', '.join(image.tags)}")
    await output.flush()
    return StepOutcome(exit_code=0, pushed=pushed)


async def pull(docker: aiodocker.Docker, ref: ImageRef, registries: Registries,
               output: StepOutput | None = None) -> None:
    """Pull ``ref`` with its registry's login (anonymously without one), its progress to
    ``output`` when given; ``ImageError`` naming the registry when that fails."""
    auth = credentials_for(registries, ref.registry)
    headers = {"X-Registry-Auth": auth_header(auth, ref.registry)} if auth else {}
    progress = ProgressLog()
    await _follow(docker, "images/create", pull_params(ref), headers, progress, output)
    if progress.error:
        raise ImageError(
            f"pulling {ref.reference} from registry {ref.registry} failed: "
            f"{redact(progress.error, registries)}"
            f"{auth_hint(progress.error, ref.registry, auth is not None)}")


async def image_exists(docker: aiodocker.Docker, reference: str) -> bool:
    try:
        await docker.images.inspect(reference)
    except DockerError as exc:
        if exc.status == 404:
            return False
        raise
    return True


# -- pieces -------------------------------------------------------------------------------

# A push sends what its tag names when it starts: from tagging to the end of the push, no
# other step of this worker may move the tag (a branch's ``latest`` built by two runs).
_tag_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()


async def _tag_and_push(docker: aiodocker.Docker, image_id: str, ref: ImageRef,
                        registries: Registries, output: StepOutput, push: bool = True) -> str:
    """Tag ``image_id`` as ``ref`` and push it (with ``push``): its digest ("" unpushed).
    A tag moved meanwhile (by a step of another worker on this Docker host) fails it:
    what was pushed may not be this image."""
    lock = _tag_locks.setdefault(ref.reference, asyncio.Lock())
    async with lock:
        await docker.images.tag(image_id, ref.repository, tag=ref.tag)
        if not push:
            return ""
        digest = await _push(docker, ref, registries, output)
        if str((await docker.images.inspect(ref.reference))["Id"]) != image_id:
            raise ImageError(f"{ref.reference} was tagged anew on this Docker host while it "
                             "was pushed (by another build or promote): what the registry "
                             "got may not be this image")
        return digest


async def _push(docker: aiodocker.Docker, ref: ImageRef, registries: Registries,
                output: StepOutput) -> str:
    """Push ``ref`` (one tag) with its registry's login; its digest."""
    auth = credentials_for(registries, ref.registry)
    login = f" as {auth.username}" if auth is not None else ""
    await _say(output, f"pushing {ref.reference} to {ref.registry}{login}")
    progress = ProgressLog()
    await _follow(docker, f"images/{ref.repository}/push", {"tag": ref.tag},
                  {"X-Registry-Auth": auth_header(auth, ref.registry)}, progress, output)
    if progress.error:
        raise ImageError(
            f"pushing {ref.reference} to registry {ref.registry} failed: "
            f"{redact(progress.error, registries)}"
            f"{auth_hint(progress.error, ref.registry, auth is not None)}")
    if not progress.digest:
        raise ImageError(f"pushing {ref.reference} to registry {ref.registry}: the daemon "
                         "did not say which digest the registry stored")
    return progress.digest


async def _follow(docker: aiodocker.Docker, path: str, params: Mapping[str, str],
                  headers: Mapping[str, str], progress: ProgressLog,
                  output: StepOutput | None) -> None:
    """A pull's or push's stream into ``progress`` (and its lines to ``output``); an
    error, in the stream or as the answer's status, ends up in ``progress.error``."""
    try:
        async with contextlib.aclosing(_stream(docker, path, dict(params),
                                               dict(headers))) as items:
            async for item in items:
                line = progress.feed(item)
                if line is not None and output is not None:
                    await _say(output, line)
    except DockerError as exc:
        if exc.status == DAEMON_GONE:
            raise
        progress.error = exc.message.strip()


async def _stream_build(docker: aiodocker.Docker, context: IO[bytes],
                        params: dict[str, Any], registries: Registries,
                        output: StepOutput) -> tuple[str, str]:
    """Run the build, its output to ``output``: (the image's id as the build said it,
    or ""; the error text, "" on success)."""
    headers = {"content-type": "application/x-tar", "Content-Encoding": "identity"}
    if registries:
        headers["X-Registry-Config"] = registry_config_header(registries)
    image_id = ""
    try:
        async with contextlib.aclosing(_stream(docker, "build", params, headers,
                                               _chunks(context))) as items:
            async for item in items:
                if "error" in item or "errorDetail" in item:
                    detail = item.get("errorDetail")
                    message = detail.get("message") if isinstance(detail, Mapping) else None
                    return "", str(message or item.get("error") or "unknown error").strip()
                aux = item.get("aux")
                if isinstance(aux, Mapping) and aux.get("ID"):
                    image_id = str(aux["ID"])
                text = item.get("stream") or item.get("status")
                if text:
                    await output.feed("stdout", utc_now(), str(text).encode())
    except DockerError as exc:
        if exc.status == DAEMON_GONE:
            raise
        return "", exc.message.strip()
    return image_id, ""


async def _stream(docker: aiodocker.Docker, path: str, params: dict[str, Any],
                  headers: dict[str, str],
                  data: Any = None) -> AsyncGenerator[dict[str, Any], None]:
    """The JSON items of a long-running endpoint's answer (no client-side timeout: the
    step's own bounds it), errors in the stream included as items."""
    async with docker._query(path, "POST", params=params, headers=headers, data=data,
                             timeout=None) as response:
        async for item in json_stream_stream(response, raise_on_error=False):
            yield item


async def _chunks(context: IO[bytes]) -> AsyncIterator[bytes]:
    while chunk := context.read(64 * 1024):
        yield chunk


def _tag_reference(reference: str) -> ImageRef:
    """A reference to tag an image with: ``latest`` when it names no tag; no digest."""
    ref = parse_reference(reference)
    if ref.digest:
        raise ValueError(f"cannot tag an image as {reference!r}: a tag names no digest")
    return dataclasses.replace(ref, tag=ref.tag or "latest")


async def _say(output: StepOutput, line: str) -> None:
    await output.feed("stdout", utc_now(), f"{line}\n".encode())


async def _failed(output: StepOutput, message: str) -> StepOutcome:
    await output.flush()
    await output.feed("stderr", utc_now(), f"{message}\n".encode())
    await output.flush()
    return StepOutcome(exit_code=1)
