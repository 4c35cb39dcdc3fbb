"""The Deployer contract (``shared/ports/deployer.py``), one suite for every adapter.

Subclass ``DeployerContract`` in ``tests/adapters/test_deployer_<adapter>.py`` and
provide the ``harness`` fixture: a ``DeployerHarness`` for the adapter's target (a Docker
daemon, a Kubernetes API stand-in), which makes targets and images and reads back
what runs where. The suite gives every test a fresh target name (``name``), has the
harness make the target as it is before Cyclone's first deploy to it (Docker: nothing,
the deploy creates the container; Kubernetes: a Deployment made by the cluster's own
manifests, running ``image_before_first_deploy``), and asks the harness to remove
whatever was deployed under it afterwards.

What the suite checks, for every adapter:

* a first deploy succeeds with ``previous`` the image the target ran before ("" where
  nothing ran), and the target runs the image;
* a second deploy replaces it: ``previous`` is the first image, the target runs the
  new one, and nothing of the old one is left;
* an image that fails (exits at once, crashes) is rolled back: the target runs the
  old image again, and the reason says what failed;
* an image that runs but never becomes healthy is rolled back once the target's health
  timeout has passed;
* a failing first deploy is FAILED and leaves nothing under the name, where a first
  deploy creates the target (Docker); where the target exists beforehand (Kubernetes)
  it is rolled back to the image the target was made with instead (``applies_where``
  says which case is for which adapters, and why);
* a deploy cancelled while it waits for the new version rolls it back before the
  cancellation goes on (where the target carries a rollback out by itself, as a
  Kubernetes Deployment does, the harness's ``after_cancel`` lets it);
* progress reaches ``on_log`` as stdout lines with UTC timestamps.

Waits are on conditions with ``HANG_S`` deadlines: nothing asserts how fast. (A
never-healthy image is waited out for the harness's ``never_healthy_timeout_s``: that is
how long the deploy waits, not a bound on anything.)
"""

from __future__ import annotations

import abc
import asyncio
import functools
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from datetime import datetime
from typing import Any, NamedTuple, TypeVar, cast

import pytest

from shared.ports.deployer import Deployer, DeployOutcome, DeployStatus, Target
from shared.ports.executor import NO_REGISTRIES, Registries
from tests.support import HANG_S, eventually

__all__ = ["DeployLog", "DeployerContract", "DeployerHarness", "LoggedLine", "applies_where",
           "unique_name"]

SHORT_HEALTH_TIMEOUT_S = 4.0  # for images that never become healthy: the wait's length

_Test = TypeVar("_Test", bound=Callable[..., Coroutine[Any, Any, None]])


def unique_name() -> str:
    return f"cyclone-deploytest-{uuid.uuid4().hex[:10]}"


class LoggedLine(NamedTuple):
    stream: str
    ts: str
    text: str


class DeployLog:
    """An ``on_log`` that keeps what it is given."""

    def __init__(self) -> None:
        self.lines: list[LoggedLine] = []

    async def __call__(self, stream: str, ts: str, text: str) -> None:
        self.lines.append(LoggedLine(stream, ts, text))

    @property
    def texts(self) -> list[str]:
        return [line.text for line in self.lines]

    def __str__(self) -> str:
        return "\n".join(self.texts)


class DeployerHarness(abc.ABC):
    """What the suite needs of an adapter's world. Images are references the adapter
    can deploy; ``good_image(n)`` are distinct images for distinct ``n`` that all
    become healthy at any target."""

    @property
    @abc.abstractmethod
    def deployer(self) -> Deployer:
        """The adapter under test (closed by the harness's fixture)."""

    @property
    def secrets(self) -> Mapping[str, str]:
        """The secrets a deploy is given (e.g. a Kubernetes API's server and token)."""
        return {}

    @property
    def registries(self) -> Registries:
        return NO_REGISTRIES

    @property
    def image_before_first_deploy(self) -> str:
        """What a target runs before Cyclone's first deploy to it (``create``): "" where
        that deploy creates what runs there (Docker: the container), else the image the
        target was made with (Kubernetes: a Deployment only ever gets patched, and exists
        with some image before it is first deployed to)."""
        return ""

    @property
    def never_healthy_timeout_s(self) -> float:
        """The health timeout of deploys of ``hanging_image``, which wait all of it: long
        enough for the adapter to see a good image healthy (Docker: health checks)."""
        return SHORT_HEALTH_TIMEOUT_S

    async def create(self, name: str) -> None:
        """Make the target named ``name`` as it is before Cyclone's first deploy to it,
        running ``image_before_first_deploy``; nothing where that is ""."""
        del name  # by default: nothing

    async def after_cancel(self, name: str) -> None:
        """What the target does by itself once a deploy to it was cancelled, before the
        suite looks at it. Nothing where the deploy's undo is over when the cancellation
        goes on (Docker: the old container runs again). Kubernetes: the deploy sets the
        old images back and leaves their rollout to the cluster, so the harness has the
        cluster carry it out (which only completes if the old images were set back)."""
        del name  # by default: nothing

    @abc.abstractmethod
    def target(self, name: str, health_timeout_s: float = HANG_S) -> Target:
        """A target named ``name`` that waits at most ``health_timeout_s`` for health."""

    @abc.abstractmethod
    def good_image(self, version: int) -> str:
        """An image that becomes healthy; a different one per ``version``."""

    @abc.abstractmethod
    def failing_image(self) -> str:
        """An image that fails by itself (it exits with an error, its pods crash): never
        healthy, and the deploy sees so without waiting for its health timeout."""

    @abc.abstractmethod
    def hanging_image(self) -> str:
        """An image that runs but never becomes healthy, nor fails by itself."""

    @abc.abstractmethod
    async def running_image(self, name: str) -> str | None:
        """The image that runs at the target named ``name``; None when nothing runs."""

    @abc.abstractmethod
    async def exists(self, name: str) -> bool:
        """Whether anything (running or not) is deployed under ``name``."""

    @abc.abstractmethod
    async def left_behind(self, name: str) -> list[str]:
        """What deploys to ``name`` left besides what runs there (an old version kept
        aside, a new one not removed): [] once a deploy is over."""

    @abc.abstractmethod
    async def remove(self, name: str) -> None:
        """Remove everything deployed under ``name`` (teardown)."""

    async def deploy(self, name: str, image: str, on_log: DeployLog | None = None,
                     health_timeout_s: float = HANG_S) -> DeployOutcome:
        return await self.deployer.deploy(self.target(name, health_timeout_s), image,
                                          self.secrets, self.registries,
                                          on_log if on_log is not None else DeployLog())


def applies_where(applies: Callable[[DeployerHarness], bool],
                  reason: str) -> Callable[[_Test], _Test]:
    """A contract case only for the adapters whose harness ``applies`` holds for; the
    others skip it, saying ``reason`` (why the case cannot hold for them by nature)."""
    def decorate(test: _Test) -> _Test:
        @functools.wraps(test)
        async def only_where_it_applies(*args: Any, **kwargs: Any) -> None:
            harness = kwargs["harness"]  # pytest passes fixtures by name
            if not applies(harness):
                pytest.skip(f"not for {type(harness).__name__}: {reason}")
            await test(*args, **kwargs)
        return cast(_Test, only_where_it_applies)
    return decorate


def _first_deploy_creates_the_target(harness: DeployerHarness) -> bool:
    return harness.image_before_first_deploy == ""


def _target_exists_before_the_first_deploy(harness: DeployerHarness) -> bool:
    return not _first_deploy_creates_the_target(harness)


class DeployerContract:
    @pytest.fixture
    async def harness(self) -> AsyncIterator[DeployerHarness]:
        raise NotImplementedError("subclass provides the harness fixture")
        yield  # pragma: no cover

    @pytest.fixture
    async def name(self, harness: DeployerHarness) -> AsyncIterator[str]:
        name = unique_name()
        try:
            await harness.create(name)
            yield name
        finally:
            await harness.remove(name)

    async def test_a_first_deploy_succeeds(self, harness: DeployerHarness, name: str) -> None:
        image = harness.good_image(1)
        logged = DeployLog()

        outcome = await harness.deploy(name, image, logged)

        before = harness.image_before_first_deploy
        assert outcome == DeployOutcome(DeployStatus.SUCCEEDED, previous=before), str(logged)
        assert await harness.running_image(name) == image
        assert await harness.left_behind(name) == []
        assert logged.lines, "a deploy says what it does"
        for line in logged.lines:
            assert line.stream == "stdout"
            assert datetime.fromisoformat(line.ts).utcoffset() is not None, line.ts
        assert any(image in text for text in logged.texts), str(logged)

    async def test_a_second_deploy_replaces_the_first(self, harness: DeployerHarness,
                                                      name: str) -> None:
        first, second = harness.good_image(1), harness.good_image(2)
        assert (await harness.deploy(name, first)).status == DeployStatus.SUCCEEDED

        logged = DeployLog()
        outcome = await harness.deploy(name, second, logged)

        assert outcome == DeployOutcome(DeployStatus.SUCCEEDED, previous=first), str(logged)
        assert await harness.running_image(name) == second
        assert await harness.left_behind(name) == []

    async def test_a_failing_image_is_rolled_back(self, harness: DeployerHarness,
                                                  name: str) -> None:
        good = harness.good_image(1)
        assert (await harness.deploy(name, good)).status == DeployStatus.SUCCEEDED

        logged = DeployLog()
        outcome = await harness.deploy(name, harness.failing_image(), logged)

        assert outcome.status == DeployStatus.ROLLED_BACK, (outcome, str(logged))
        assert outcome.previous == good
        assert outcome.reason
        assert await harness.running_image(name) == good
        assert await harness.left_behind(name) == []

    async def test_an_image_never_healthy_is_rolled_back_after_the_timeout(
        self, harness: DeployerHarness, name: str
    ) -> None:
        good = harness.good_image(1)
        assert (await harness.deploy(name, good)).status == DeployStatus.SUCCEEDED

        outcome = await harness.deploy(name, harness.hanging_image(),
                                       health_timeout_s=harness.never_healthy_timeout_s)

        assert outcome.status == DeployStatus.ROLLED_BACK, outcome
        assert outcome.previous == good
        assert outcome.reason
        assert await harness.running_image(name) == good
        assert await harness.left_behind(name) == []

    @applies_where(_first_deploy_creates_the_target,
                   "the target exists with an image before its first deploy (a Kubernetes "
                   "Deployment, which a deploy patches and never creates), so a failing first "
                   "deploy has that image to roll back to and never leaves nothing; see "
                   "test_a_failing_first_deploy_is_rolled_back_to_what_the_target_was_made_with")
    async def test_a_failing_first_deploy_fails_and_leaves_nothing(
        self, harness: DeployerHarness, name: str
    ) -> None:
        outcome = await harness.deploy(name, harness.failing_image())

        assert outcome.status == DeployStatus.FAILED, outcome
        assert outcome.previous == ""
        assert outcome.reason
        assert not await harness.exists(name)
        assert await harness.left_behind(name) == []

    @applies_where(_target_exists_before_the_first_deploy,
                   "a first deploy creates the target (a Docker container), so there is "
                   "nothing to roll back to; see "
                   "test_a_failing_first_deploy_fails_and_leaves_nothing")
    async def test_a_failing_first_deploy_is_rolled_back_to_what_the_target_was_made_with(
        self, harness: DeployerHarness, name: str
    ) -> None:
        before = harness.image_before_first_deploy
        logged = DeployLog()

        outcome = await harness.deploy(name, harness.failing_image(), logged)

        assert outcome.status == DeployStatus.ROLLED_BACK, (outcome, str(logged))
        assert outcome.previous == before
        assert outcome.reason
        assert await harness.running_image(name) == before
        assert await harness.left_behind(name) == []

    async def test_a_deploy_cancelled_while_waiting_is_rolled_back(
        self, harness: DeployerHarness, name: str
    ) -> None:
        good, hanging = harness.good_image(1), harness.hanging_image()
        assert (await harness.deploy(name, good)).status == DeployStatus.SUCCEEDED

        deploying = asyncio.create_task(harness.deploy(name, hanging))
        try:
            await eventually(lambda: _running(harness, name, hanging, deploying),
                             what=f"{hanging} running at {name}")
        finally:
            deploying.cancel()
        with pytest.raises(asyncio.CancelledError):
            await deploying

        # The rollback was done before the cancellation went on: no waiting here (the
        # harness plays out only what the target does by itself, if anything).
        await harness.after_cancel(name)
        assert await harness.running_image(name) == good
        assert await harness.left_behind(name) == []


async def _running(harness: DeployerHarness, name: str, image: str,
                   deploying: asyncio.Task[DeployOutcome]) -> bool:
    if deploying.done():  # it must still be waiting: say what it returned instead
        raise AssertionError(f"the deploy ended before it was cancelled: {deploying.result()}")
    return await harness.running_image(name) == image
