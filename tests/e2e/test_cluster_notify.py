"""Notifications in distributed mode: two notifier replicas never send one notification
twice; a notifier SIGKILLed after the SMTP server took a mail and before it recorded
that sends it again when restarted, with the same Message-ID, and records it once.

That is the delivery guarantee (README, "Notifications"): exactly once in effect for
receivers that drop a repeated key, at least once on the wire, never zero.
"""

from __future__ import annotations

import asyncio
import functools
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.docker_support import TEST_IMAGE
from tests.e2e.cluster_support import Cluster, Service, start_cluster
from tests.git_support import GitServer
from tests.notifier.smtp_server import SmtpServer
from tests.support import eventually

ADDRESSES = ["dev@example.com", "ops@example.com"]
FAILING = f"""
jobs:
  build:
    image: {TEST_IMAGE}
    steps:
      - run: ["echo about to fail", "exit 1"]
"""
ENDED = ("success", "failure", "cancelled", "errored")


class KillingSmtp(SmtpServer):
    """Takes the first mail, then SIGKILLs ``victim`` before answering 250: the mail
    is delivered, and the notifier never learns it was."""

    victim: Service | None = None

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        reply = await super().handle_DATA(server, session, envelope)
        if self.victim is not None and len(self.received) == 1:
            self.victim.kill()
        return reply


@pytest.fixture
async def smtp() -> AsyncIterator[KillingSmtp]:
    async with KillingSmtp() as server:
        yield server


def notifier_env(smtp: SmtpServer) -> dict[str, str]:
    return {"CYCLONE_SMTP_HOST": "127.0.0.1", "CYCLONE_SMTP_PORT": str(smtp.port),
            "CYCLONE_NOTIFY_RETRY_S": "0.2", "CYCLONE_NOTIFY_RETRY_MAX_S": "1"}


async def start(tmp_path: Path, infra: dict[str, str], smtp: SmtpServer,
                notifiers: int) -> Cluster:
    return await asyncio.to_thread(_start_with_notifiers, tmp_path, infra, smtp, notifiers)


def _start_with_notifiers(tmp_path: Path, infra: dict[str, str], smtp: SmtpServer,
                          notifiers: int) -> Cluster:
    cluster = start_cluster(tmp_path, infra, workers=1, replicas=1, **notifier_env(smtp))
    try:
        for i in range(2, notifiers + 1):
            replica = Service("notifier", f"notifier-{i}", tmp_path / f"notifier-{i}",
                              {**infra, **notifier_env(smtp)})
            cluster.services[replica.replica] = replica
            replica.start()
    except BaseException:
        cluster.stop()
        raise
    return cluster


async def project_with_failing_runs(http: aiohttp.ClientSession, git_server: GitServer,
                                    runs: int, addresses: list[str]) -> list[str]:
    repo = git_server.create("demo")
    repo.commit({".cyclone.yml": FAILING})
    body = {"name": "demo", "repo": repo.url,
            "notify": [{"when": ["failure"], "email": addresses}]}
    async with http.post("/api/v1/projects", json=body) as response:
        assert response.status == 201, await response.text()
    run_ids = []
    for _ in range(runs):
        async with http.post("/api/v1/projects/demo/runs", json={}) as response:
            assert response.status == 202, await response.text()
            run_ids.append((await response.json())["id"])
    return run_ids


async def notifications(http: aiohttp.ClientSession, run_id: str) -> list[dict[str, Any]]:
    async with http.get(f"/api/v1/runs/{run_id}/events") as response:
        events = (await response.json())["events"]
    return [e for e in events if e["type"] in ("NotificationSent", "NotificationFailed")]


async def recorded_all(http: aiohttp.ClientSession, run_id: str) -> list[dict[str, Any]] | None:
    recorded = await notifications(http, run_id)
    return recorded if len(recorded) >= len(ADDRESSES) else None


async def test_two_notifier_replicas_send_each_notification_once(
    tmp_path: Path, infra: dict[str, str], smtp: KillingSmtp, git_server: GitServer,
) -> None:
    cluster = await start(tmp_path, infra, smtp, notifiers=2)
    try:
        api = cluster.api
        async with aiohttp.ClientSession(api.url, headers=api.headers) as http:
            run_ids = await project_with_failing_runs(http, git_server, 6, ADDRESSES)
            expected = len(run_ids) * len(ADDRESSES)
            await eventually(lambda: len(smtp.received) >= expected, timeout=180,
                             what="every address hears of every run")
            for run_id in run_ids:
                recorded = await eventually(functools.partial(recorded_all, http, run_id))
                assert [e["type"] for e in recorded] == ["NotificationSent"] * 2, recorded
    finally:
        await asyncio.to_thread(cluster.stop)
    ids = Counter(r.message["Message-ID"] for r in smtp.received)
    assert len(ids) == expected and set(ids.values()) == {1}, ids  # nothing twice
    pairs = {(r.rcpt_tos[0], r.message["X-Cyclone-Key"].split("/")[0]) for r in smtp.received}
    assert pairs == {(a, run) for a in ADDRESSES for run in run_ids}


async def test_a_notifier_killed_between_sending_and_recording_resends_under_the_same_id(
    tmp_path: Path, infra: dict[str, str], smtp: KillingSmtp, git_server: GitServer,
) -> None:
    cluster = await start(tmp_path, infra, smtp, notifiers=1)
    notifier = cluster["notifier"]
    smtp.victim = notifier
    try:
        api = cluster.api
        async with aiohttp.ClientSession(api.url, headers=api.headers) as http:
            [run_id] = await project_with_failing_runs(http, git_server, 1, ADDRESSES[:1])
            await eventually(lambda: not notifier.alive, timeout=120,
                             what="the notifier is killed by the first mail it sends")
            assert len(smtp.received) == 1
            assert await notifications(http, run_id) == []  # sent, not recorded

            smtp.victim = None
            await asyncio.to_thread(notifier.start)
            # its claim outlives it by the claim lease (10 s); then the restarted notifier,
            # redelivered the uncommitted run end, sends again and records
            recorded = await eventually(lambda: notifications(http, run_id), timeout=60,
                                        what="the restarted notifier records the mail")
            await eventually(lambda: len(smtp.received) == 2, what="the mail sent again")
    finally:
        await asyncio.to_thread(cluster.stop)
    assert [e["type"] for e in recorded] == ["NotificationSent"]
    first, again = smtp.received
    assert first.rcpt_tos == again.rcpt_tos == (ADDRESSES[0],)
    assert again.message["Message-ID"] == first.message["Message-ID"]
