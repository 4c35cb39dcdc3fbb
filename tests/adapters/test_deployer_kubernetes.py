"""The Kubernetes deployer against the Kubernetes API stand-in (``tests/k8s_standin.py``),
over real HTTPS: the Deployer contract (``tests/contracts/deployer.py``, with
``KubernetesHarness``), what it asks of the API, and each outcome the port documents."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from shared.adapters.deployer.kubernetes import PATCH_TYPE, KubernetesDeployer
from shared.errors import DeployerUnavailable
from shared.pipeline.plan import KubernetesTarget
from shared.ports.deployer import Deployer, DeployOutcome, DeployStatus
from shared.ports.executor import NO_REGISTRIES
from tests.contracts.deployer import DeployerContract, DeployerHarness
from tests.git_support import unused_port
from tests.k8s_standin import (
    K8sStandin,
    Recorded,
    StandinDeployment,
    k8s_fixture,
    other_ca_pem,
)
from tests.support import HANG_S, eventually

__all__ = ["k8s_fixture"]  # the ``k8s`` fixture

OLD, NEW = "registry.test/web@sha256:" + "1" * 64, "registry.test/web@sha256:" + "2" * 64
PROXY = "registry.test/proxy:1.25"
POLL_S = 0.05
STALL_S = 3.0  # how long a stalled rollout is given: short, as each such test waits it out


@dataclass
class Log:
    """An ``on_log`` sink that keeps every line."""

    lines: list[tuple[str, str]] = field(default_factory=list)  # (stream, text)

    async def __call__(self, stream: str, ts: str, text: str) -> None:
        assert ts.endswith("+00:00"), ts
        self.lines.append((stream, text))

    def texts(self) -> list[str]:
        return [text for _, text in self.lines]


def kube(deployment: str = "web", **fields: Any) -> KubernetesTarget:
    fields.setdefault("timeout_s", HANG_S)  # only catches a hang, unless a test says
    return KubernetesTarget(deployment=deployment, image=NEW, **fields)


async def deploy(target: KubernetesTarget, secrets: dict[str, str], log: Log,
                 image: str = NEW) -> DeployOutcome:
    deployer = KubernetesDeployer(poll_s=POLL_S)
    try:
        return await deployer.deploy(target, image, secrets, NO_REGISTRIES, log)
    finally:
        await deployer.close()


def patches(k8s: K8sStandin) -> list[Any]:
    return [r.body for r in k8s.requests if r.method == "PATCH"]


def setting(images: dict[str, str]) -> dict[str, Any]:
    """The strategic merge patch that sets ``images`` (container -> image)."""
    containers = [{"name": name, "image": image} for name, image in images.items()]
    return {"spec": {"template": {"spec": {"containers": containers}}}}


def assert_no_token(token: str, texts: list[str], caplog: pytest.LogCaptureFixture) -> None:
    for text in texts:
        assert token not in text
    for record in caplog.records:
        assert token not in record.getMessage()
        assert token not in repr(vars(record))


# -- the Deployer contract ------------------------------------------------------------

APP = "registry.test/app"
MANIFEST_IMAGE = f"{APP}:from-the-manifests"  # what the cluster's manifests created it with


class KubernetesHarness(DeployerHarness):
    """The contract's targets as Deployments in the stand-in (namespace "default", 3
    replicas), each with two containers running one image, as an app and its queue
    worker do; a target names no container, so a deploy sets (and an undo restores)
    both.

    A first deploy: Cyclone only patches Deployments, so ``create`` makes one as the
    cluster's own manifests would, running ``MANIFEST_IMAGE``; that is the ``previous``
    of the first deploy, and what a failing first deploy is rolled back to.

    Images: good ones roll out; the failing one's pods crash, so the controller says
    the progress deadline is exceeded (``k8s.crashing_images``) and the deploy sees it
    without its timeout; the hanging one's rollout stalls (``k8s.bad_images``) until the
    deploy's timeout.

    What runs at a target is the image of the template the controller has observed (its
    newest pods); pods of any other template the status still counts are left behind,
    so a deploy that returns without waiting for its rollout (or its undo's) fails the
    contract. A cancelled deploy sets the old images back and leaves their rollout to
    the cluster (as ``KubernetesDeployer`` documents): ``after_cancel`` plays it out.
    """

    CONTAINERS = ("web", "worker")

    def __init__(self, deployer: KubernetesDeployer, k8s: K8sStandin) -> None:
        self._deployer = deployer
        self.k8s = k8s
        k8s.crashing_images.add(self.failing_image())
        k8s.bad_images.add(self.hanging_image())

    @property
    def deployer(self) -> Deployer:
        return self._deployer

    @property
    def secrets(self) -> Mapping[str, str]:
        return self.k8s.secrets()

    @property
    def image_before_first_deploy(self) -> str:
        return MANIFEST_IMAGE

    @property
    def never_healthy_timeout_s(self) -> float:
        return STALL_S  # the stand-in starts nothing: a short wait sees a good rollout

    async def create(self, name: str) -> None:
        self.k8s.add(name, dict.fromkeys(self.CONTAINERS, MANIFEST_IMAGE), replicas=3)

    def target(self, name: str, health_timeout_s: float = HANG_S) -> KubernetesTarget:
        return KubernetesTarget(deployment=name, image="", timeout_s=health_timeout_s)

    def good_image(self, version: int) -> str:
        return f"{APP}@sha256:{version:064x}"

    def failing_image(self) -> str:
        return f"{APP}:crash-loops"

    def hanging_image(self) -> str:
        return f"{APP}:never-ready"

    def _deployment(self, name: str) -> StandinDeployment | None:
        return self.k8s.deployments.get(("default", name))

    async def after_cancel(self, name: str) -> None:
        self.k8s.roll_out(name)

    async def running_image(self, name: str) -> str | None:
        deployment = self._deployment(name)
        if deployment is None:
            return None
        return deployment.observed_images[self.CONTAINERS[0]]

    async def exists(self, name: str) -> bool:
        return self._deployment(name) is not None

    async def left_behind(self, name: str) -> list[str]:
        """Containers of the template set to another image than the first one (half a
        deploy or an undo), a template the controller has not observed yet, and pods of
        an earlier template (or not yet available) that the status still counts."""
        deployment = self._deployment(name)
        if deployment is None:
            return []
        runs = deployment.images[self.CONTAINERS[0]]
        left = [f"container {container} set to {image}"
                for container, image in deployment.images.items() if image != runs]
        status = deployment.status
        if deployment.observed_images != deployment.images:
            left.append(f"template {deployment.images} not observed yet: pods of "
                        f"{deployment.observed_images} run")
        elif not deployment.rolled_out:
            left.append(f"rollout of {deployment.images} not complete: {status}")
        return left

    async def remove(self, name: str) -> None:
        self.k8s.deployments.pop(("default", name), None)


class TestKubernetesDeployer(DeployerContract):
    @pytest.fixture
    async def harness(self, k8s: K8sStandin) -> AsyncIterator[DeployerHarness]:
        deployer = KubernetesDeployer(poll_s=POLL_S)
        try:
            yield KubernetesHarness(deployer, k8s)
        finally:
            await deployer.close()


# -- Kubernetes only: the API calls, rollouts, credentials ------------------------------


async def test_rollout_succeeds(k8s: K8sStandin, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    k8s.add("web", {"app": OLD, "proxy": PROXY}, replicas=3)
    log = Log()

    outcome = await deploy(kube(containers=("app",)), k8s.secrets(), log)

    assert outcome == DeployOutcome(DeployStatus.SUCCEEDED, previous=OLD)
    assert k8s.deployment("web").images == {"app": NEW, "proxy": PROXY}
    methods = [r.method for r in k8s.requests]
    assert methods[:2] == ["GET", "PATCH"] and set(methods[2:]) == {"GET"}, methods
    assert len(methods) >= 4  # the rollout takes several reads: they were all waited for
    for request in k8s.requests:
        assert request.path == "/apis/apps/v1/namespaces/default/deployments/web"
        assert request.headers["Authorization"] == f"Bearer {k8s.token}"
    patch = k8s.requests[1]
    assert patch.headers["Content-Type"] == PATCH_TYPE
    assert patch.body == setting({"app": NEW})
    texts = log.texts()
    assert any(t.startswith("rollout of default/web: 1 of 3 updated, 0 available") for t in texts)
    assert "rollout of default/web: 3 of 3 updated, 3 available" in texts
    assert_no_token(k8s.token, texts, caplog)


async def test_every_container_when_none_is_named(k8s: K8sStandin) -> None:
    k8s.add("web", {"app": OLD, "proxy": PROXY}, namespace="shop")

    outcome = await deploy(kube(namespace="shop"), k8s.secrets(), Log())

    assert outcome == DeployOutcome(DeployStatus.SUCCEEDED, previous=OLD)
    assert patches(k8s) == [setting({"app": NEW, "proxy": NEW})]
    assert {r.path for r in k8s.requests} == {k8s.path("web", "shop")}


async def test_already_running_the_image_succeeds_at_once(k8s: K8sStandin) -> None:
    k8s.add("web", {"app": NEW})

    outcome = await deploy(kube(), k8s.secrets(), Log())

    assert outcome == DeployOutcome(DeployStatus.SUCCEEDED, previous=NEW)
    assert [r.method for r in k8s.requests] == ["GET"]


async def test_stalled_rollout_is_rolled_back(k8s: K8sStandin) -> None:
    k8s.add("web", {"app": OLD}, namespace="shop", replicas=3, scenario="stalls")
    log = Log()

    outcome = await deploy(kube(namespace="shop", timeout_s=STALL_S), k8s.secrets(), log)

    assert outcome.status is DeployStatus.ROLLED_BACK, outcome
    assert outcome.previous == OLD
    assert "rollout did not complete within 3s" in outcome.reason
    assert "2 of 3 updated, 1 available" in outcome.reason
    assert k8s.deployment("web", "shop").images == {"app": OLD}
    assert patches(k8s) == [setting({"app": NEW}), setting({"app": OLD})]
    assert "rollback of shop/web: 3 of 3 updated, 3 available" in log.texts()


async def test_exceeded_progress_deadline_is_rolled_back(k8s: K8sStandin) -> None:
    k8s.add("web", {"app": OLD}, scenario="exceeds")

    outcome = await deploy(kube(), k8s.secrets(), Log())

    assert outcome.status is DeployStatus.ROLLED_BACK, outcome
    assert "progress deadline" in outcome.reason and "has timed out progressing" in outcome.reason
    assert k8s.deployment("web").images == {"app": OLD}


async def test_crashing_image_is_rolled_back_at_its_progress_deadline(k8s: K8sStandin) -> None:
    k8s.add("web", {"app": OLD})
    k8s.crashing_images.add(NEW)

    outcome = await deploy(kube(), k8s.secrets(), Log())  # timeout: HANG_S

    assert outcome.status is DeployStatus.ROLLED_BACK, outcome
    assert "rollout exceeded its progress deadline" in outcome.reason, outcome
    assert k8s.deployment("web").images == {"app": OLD}


async def test_bad_image_is_rolled_back(k8s: K8sStandin) -> None:
    k8s.add("web", {"app": OLD, "proxy": PROXY})
    k8s.bad_images.add(NEW)

    outcome = await deploy(kube(timeout_s=STALL_S), k8s.secrets(), Log())

    assert outcome.status is DeployStatus.ROLLED_BACK, outcome
    assert k8s.deployment("web").images == {"app": OLD, "proxy": PROXY}
    assert patches(k8s)[-1] == setting({"app": OLD, "proxy": PROXY})  # each its own image


async def test_failed_rollback_fails(k8s: K8sStandin) -> None:
    k8s.add("web", {"app": OLD})
    k8s.bad_images.update({NEW, OLD})  # the old image no longer comes up either

    outcome = await deploy(kube(timeout_s=STALL_S), k8s.secrets(), Log())

    assert outcome.status is DeployStatus.FAILED, outcome
    assert "rollout did not complete within 3s" in outcome.reason
    assert f"the rollback to {OLD} failed too: rollback did not complete" in outcome.reason


async def test_refused_patch_fails(k8s: K8sStandin) -> None:
    k8s.add("web", {"app": OLD}, scenario="refused")
    log = Log()

    outcome = await deploy(kube(), k8s.secrets(), log)

    assert outcome.status is DeployStatus.FAILED, outcome
    assert 'cannot patch resource "deployments"' in outcome.reason
    assert "HTTP 403" in outcome.reason
    assert [r.method for r in k8s.requests] == ["GET", "PATCH"]
    assert k8s.deployment("web").images == {"app": OLD}
    assert ("stderr", outcome.reason) in log.lines


async def test_wrong_token_fails_without_showing_it(
        k8s: K8sStandin, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    k8s.add("web", {"app": OLD})
    wrong = "wrong-token-" + "9" * 24
    log = Log()

    outcome = await deploy(kube(), k8s.secrets(KUBE_TOKEN=wrong), log)

    assert outcome.status is DeployStatus.FAILED, outcome
    assert "Unauthorized (HTTP 401)" in outcome.reason and "KUBE_TOKEN" in outcome.reason
    assert k8s.requests[0].headers["Authorization"] == f"Bearer {wrong}"  # it was sent
    assert_no_token(wrong, [outcome.reason, *log.texts()], caplog)


@pytest.mark.parametrize("missing", ["KUBE_TOKEN", "KUBE_SERVER"])
async def test_missing_secret_fails_naming_it(k8s: K8sStandin, missing: str) -> None:
    k8s.add("web", {"app": OLD})

    outcome = await deploy(kube(), k8s.secrets(**{missing: None}), Log())

    assert outcome.status is DeployStatus.FAILED, outcome
    assert f"secret {missing} is not set" in outcome.reason
    assert k8s.requests == []


async def test_secret_names_come_from_the_target(k8s: K8sStandin) -> None:
    k8s.add("web", {"app": OLD})
    secrets = {"PROD_API": k8s.url, "PROD_TOKEN": k8s.token, "PROD_CA": k8s.ca_pem}
    target = kube(server_secret="PROD_API", token_secret="PROD_TOKEN", ca_secret="PROD_CA")

    outcome = await deploy(target, secrets, Log())

    assert outcome == DeployOutcome(DeployStatus.SUCCEEDED, previous=OLD)


async def test_unknown_container_fails_listing_the_template(k8s: K8sStandin) -> None:
    k8s.add("web", {"app": OLD, "proxy": PROXY})

    outcome = await deploy(kube(containers=("api",)), k8s.secrets(), Log())

    assert outcome.status is DeployStatus.FAILED, outcome
    assert "has no container api (it has: app, proxy)" in outcome.reason
    assert patches(k8s) == []


async def test_unknown_deployment_fails(k8s: K8sStandin) -> None:
    outcome = await deploy(kube("nope", namespace="shop"), k8s.secrets(), Log())

    assert outcome == DeployOutcome(DeployStatus.FAILED, reason="deployment shop/nope not found")


@pytest.mark.parametrize("ca", ["another cluster's CA", "no CA secret (the system's CAs)"])
async def test_unverified_certificate_fails(k8s: K8sStandin, ca: str) -> None:
    k8s.add("web", {"app": OLD})
    secrets = k8s.secrets(KUBE_CA=other_ca_pem() if ca.startswith("another") else None)

    outcome = await deploy(kube(), secrets, Log())

    assert outcome.status is DeployStatus.FAILED, outcome
    assert "certificate" in outcome.reason and "could not be verified" in outcome.reason
    assert "KUBE_CA" in outcome.reason
    assert k8s.requests == []  # nothing, not even the token, went to an unverified server


async def test_malformed_ca_secret_fails(k8s: K8sStandin) -> None:
    outcome = await deploy(kube(), k8s.secrets(KUBE_CA="not a certificate"), Log())

    assert outcome.status is DeployStatus.FAILED, outcome
    assert "secret KUBE_CA does not hold a PEM CA certificate" in outcome.reason


async def test_plain_http_server_is_refused(k8s: K8sStandin) -> None:
    server = k8s.url.replace("https://", "http://")

    outcome = await deploy(kube(), k8s.secrets(KUBE_SERVER=server), Log())

    assert outcome.status is DeployStatus.FAILED, outcome
    assert "KUBE_SERVER does not hold an https:// URL" in outcome.reason
    assert k8s.requests == []  # the token never travels in the clear


async def test_server_down_is_unavailable(k8s: K8sStandin) -> None:
    server = f"https://127.0.0.1:{unused_port()}"

    with pytest.raises(DeployerUnavailable) as raised:
        await deploy(kube(), k8s.secrets(KUBE_SERVER=server), Log())

    assert server in str(raised.value)
    assert k8s.token not in str(raised.value)


async def test_api_outage_during_rollout_is_waited_out(k8s: K8sStandin) -> None:
    k8s.add("web", {"app": OLD})
    k8s.outage.update({2, 3})  # the first two reads after the PATCH
    log = Log()

    outcome = await deploy(kube(), k8s.secrets(), log)

    assert outcome == DeployOutcome(DeployStatus.SUCCEEDED, previous=OLD)
    retrying = [t for s, t in log.lines if s == "stderr"]
    assert len(retrying) == 1 and "HTTP 503" in retrying[0], log.lines


async def test_api_outage_before_any_change_is_unavailable(k8s: K8sStandin) -> None:
    k8s.add("web", {"app": OLD})
    k8s.outage.add(0)

    with pytest.raises(DeployerUnavailable, match="answered HTTP 503"):
        await deploy(kube(), k8s.secrets(), Log())

    assert patches(k8s) == []


async def test_cancel_during_rollout_rolls_back(k8s: K8sStandin) -> None:
    k8s.add("web", {"app": OLD}, scenario="stalls")
    log = Log()
    task = asyncio.create_task(deploy(kube(), k8s.secrets(), log))

    await eventually(lambda: any(t.startswith("rollout of default/web: 2 of 3 updated")
                                 for t in log.texts()), what="the stalled rollout")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert k8s.deployment("web").images == {"app": OLD}
    assert patches(k8s) == [setting({"app": NEW}), setting({"app": OLD})]
    assert f"rolled back deployment default/web to {OLD}" in log.texts()


async def test_standin_checks_patches(k8s: K8sStandin) -> None:
    """The stand-in refuses what the deployer must not send (so the tests above mean
    something): a wrong content type, other fields, unknown containers, no token."""
    k8s.add("web", {"app": OLD})
    auth = {"Authorization": f"Bearer {k8s.token}"}
    bad_bodies = [
        ({**auth, "Content-Type": "application/json"}, setting({"app": NEW}), 415),
        ({**auth, "Content-Type": PATCH_TYPE}, setting({"api": NEW}), 422),
        ({**auth, "Content-Type": PATCH_TYPE}, {"spec": {"replicas": 9}}, 422),
        ({"Content-Type": PATCH_TYPE}, setting({"app": NEW}), 401),
    ]
    context = ssl.create_default_context(cadata=k8s.ca_pem)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        for headers, body, status in bad_bodies:
            async with session.patch(k8s.url + k8s.path("web"), json=body,
                                     headers=headers) as response:
                assert response.status == status, (body, await response.text())
                assert (await response.json())["kind"] == "Status"
    assert k8s.deployment("web").images == {"app": OLD}
    assert k8s.deployment("web").generation == 1
    assert all(isinstance(r, Recorded) for r in k8s.requests) and len(k8s.requests) == 4
