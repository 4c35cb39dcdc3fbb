"""Worker labels: which worker may run which job, what a worker registers, why a job no
live worker can run waits, and which queued jobs a new worker is offered (pure)."""

from __future__ import annotations

import dataclasses
import re
from datetime import datetime

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from services.api.metrics import api_collector
from services.api.readmodel import Queue, RunsReadModel, queues_of
from services.eventmanager.reoffer import QueuedWithLabels
from services.workermanager.service import pool_group
from shared import events as ev
from shared.adapters.runviews.memory import MemoryRunViews
from shared.config import Settings
from shared.errors import ConfigError
from shared.pipeline.plan import JobSpec, Plan, StepSpec
from shared.projections.runs import RunView
from shared.projections.waiting import WaitKind, why_waiting
from shared.workers import WorkerInfo, can_run, default_labels, label_set, parse_labels
from tests.test_waiting import at, run

W1 = WorkerInfo("w1", frozenset({"linux", "amd64", "docker"}), "docker", 4)
W2 = WorkerInfo("w2", frozenset({"linux", "arm64", "docker"}), "docker", 2)
GPU = WorkerInfo("g1", frozenset({"linux", "amd64", "docker", "gpu"}), "docker", 1)


def spec(name: str, *runs_on: str) -> JobSpec:
    return JobSpec(name=name, image="img", steps=(StepSpec(name="s", image="img"),),
                   runs_on=tuple(sorted(runs_on)))


PLAN = Plan(".cyclone.yml", (spec("any"), spec("arm", "arm64"), spec("train", "gpu", "linux")))


def queued(*jobs: str, trigger: str = "push") -> RunView:
    view = run("r1", ev.RunPlanned(plan=PLAN), *(ev.JobQueued(job=j) for j in jobs))
    return dataclasses.replace(view, trigger=trigger)


def test_a_worker_runs_a_job_when_it_has_every_label_the_job_asks_for() -> None:
    assert can_run((), W1.labels)  # asking nothing: anywhere
    assert can_run(("linux",), W1.labels)
    assert not can_run(("gpu", "linux"), W1.labels)
    assert GPU.can_run(("gpu", "linux"))
    assert not W2.can_run(("amd64",))


def test_labels_from_the_setting_and_by_default() -> None:
    assert parse_labels(" linux, gpu,,amd64 ") == {"linux", "gpu", "amd64"}
    assert Settings.from_env({"CYCLONE_WORKER_LABELS": "gpu,linux"}).worker_labels == {
        "gpu", "linux"}
    with pytest.raises(ConfigError, match=r"CYCLONE_WORKER_LABELS='gpu,has space': invalid "
                                          r"label 'has space'"):
        Settings.from_env({"CYCLONE_WORKER_LABELS": "gpu,has space"})
    found = default_labels("docker")
    assert "docker" in found and len(found) == 3  # os, architecture, executor kind
    assert Settings.from_env({}).worker_labels == frozenset()  # derived by the worker


def test_a_workers_registration_round_trips_and_an_old_one_reads_as_no_labels() -> None:
    assert WorkerInfo.decode("w1", W1.encode()) == W1
    assert WorkerInfo.decode("old", b"docker") == WorkerInfo("old", frozenset(), "docker")
    odd = WorkerInfo.decode("odd", b'{"labels": "gpu", "capacity": "many"}')
    assert (odd.labels, odd.capacity) == (frozenset(), 0)


def test_workers_with_the_same_labels_share_a_pool() -> None:
    assert pool_group(frozenset({"linux", "amd64"})) == pool_group(frozenset({"amd64", "linux"}))
    assert pool_group(W1.labels) == "workermanager:amd64,docker,linux"
    assert pool_group(W1.labels) != pool_group(GPU.labels)
    assert label_set([]) == ""


def test_a_job_no_live_worker_can_run_says_which_labels_and_who_is_live() -> None:
    waits = {w.job: w for w in why_waiting(queued("any", "arm", "train"), workers=[W1, W2])}
    assert waits["train"].kind == WaitKind.NO_WORKER
    assert waits["train"].text == (
        "no live worker has labels gpu,linux (live: w1 [amd64,docker,linux], w2 "
        "[arm64,docker,linux]): it runs when one with them starts")
    assert waits["train"].labels == ("gpu", "linux")
    assert waits["train"].to_json()["labels"] == ["gpu", "linux"]
    assert waits["arm"].kind == WaitKind.WORKER  # w2 can take it
    assert waits["arm"].text == "queued for a worker with labels arm64 since 12:03 UTC"
    assert waits["any"].text == "queued for a worker since 12:02 UTC"
    assert "labels" not in waits["any"].to_json()


def test_with_no_live_worker_every_queued_job_says_so() -> None:
    wait = {w.job: w for w in why_waiting(queued("any"), workers=[])}["any"]
    assert (wait.kind, wait.text) == (
        WaitKind.NO_WORKER, "queued, but no worker is live to take it: it runs when one starts")


def test_when_the_workers_are_not_known_a_queued_job_just_waits_for_one() -> None:
    wait = {w.job: w for w in why_waiting(queued("train"))}["train"]
    assert wait.kind == WaitKind.WORKER
    assert wait.text.startswith("queued for a worker with labels gpu,linux")


def test_a_cyclone_run_ignores_runs_on_it_runs_on_its_users_machine() -> None:
    view = queued("train", trigger="cli")
    assert view.runs_on("train") == ()
    assert {w.job: w for w in why_waiting(view, workers=[W1])}["train"].kind == WaitKind.WORKER


def test_a_new_worker_is_offered_the_queued_jobs_it_has_the_labels_of() -> None:
    index = QueuedWithLabels()
    index.note(queued("any", "arm", "train"))
    assert len(index) == 2  # a job asking no labels is any pool's: never left waiting
    assert index.runnable_by(GPU) == [("r1", "train")]
    assert index.runnable_by(W2) == [("r1", "arm")]
    assert index.runnable_by(W1) == []
    started = run("r1", ev.RunPlanned(plan=PLAN), ev.JobQueued(job="train"),
                  ev.JobStarted(job="train", worker="g1", executor="docker"))
    index.note(started)
    assert index.runnable_by(GPU) == []


def test_metrics_give_queue_depth_and_oldest_wait_by_label_set() -> None:
    later = run("r2", ev.RunPlanned(plan=PLAN), ev.JobQueued(job="train"))
    runs = {"r1": queued("any", "arm", "train"), "r2": dataclasses.replace(later, id="r2")}
    assert queues_of(runs.values()) == {
        "": Queue(1, datetime.fromisoformat(at(2)).timestamp()),
        "arm64": Queue(1, datetime.fromisoformat(at(3)).timestamp()),
        "gpu,linux": Queue(2, datetime.fromisoformat(at(2)).timestamp())}  # r2's is at 12:02
    registry = CollectorRegistry()
    registry.register(api_collector(RunsReadModel(MemoryRunViews(runs)), lambda: 0))
    text = generate_latest(registry).decode()
    assert 'cyclone_jobs_queued{labels="gpu,linux"} 2.0' in text
    assert 'cyclone_jobs_queued{labels="arm64"} 1.0' in text
    waited = re.search(r'cyclone_jobs_oldest_wait_seconds\{labels="gpu,linux"\} (\S+)', text)
    assert waited is not None and float(waited.group(1)) > 0


def test_with_nothing_queued_the_metrics_still_say_zero() -> None:
    registry = CollectorRegistry()
    registry.register(api_collector(RunsReadModel(MemoryRunViews({})), lambda: 0))
    text = generate_latest(registry).decode()
    assert 'cyclone_jobs_queued{labels=""} 0.0' in text
    assert 'cyclone_jobs_oldest_wait_seconds{labels=""} 0.0' in text
