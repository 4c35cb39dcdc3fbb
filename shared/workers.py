"""Worker labels: what a worker says it offers, what a job asks for (``runs-on:``), and
which live workers can run which jobs.

A worker declares labels (``CYCLONE_WORKER_LABELS=linux,amd64,docker,gpu``; unset: its
operating system, architecture and executor kind, e.g. ``linux,amd64,docker``). A job
asks with ``runs-on: [a, b]``; a worker may run it only if the job's labels are a
subset of its own (a job asking nothing runs anywhere). Labels are compared as
written (case matters), and are 1 to 63 of ``A-Z a-z 0-9 _ . -`` starting with a letter
or digit: no comma, so a label set is written ``a,b`` in settings and metrics alike.

A live worker is the key ``cyclone/workers/<id>`` bound to its lease (``shared.keys``);
its value (``WorkerInfo.encode``) holds its labels, executor and capacity as JSON, so
anyone with the coordination service can list the live workers and what they offer
(``live_workers``). A value written before labels existed (the executor's name alone)
reads as a worker with no labels.

Pure functions but ``live_workers`` (one read of the coordination service).
"""

from __future__ import annotations

import json
import platform
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from shared.keys import WORKERS_PREFIX
from shared.ports.coordination import Coordinator

__all__ = [
    "LABEL",
    "WorkerInfo",
    "can_run",
    "default_labels",
    "describe_workers",
    "label_error",
    "label_set",
    "live_workers",
    "parse_labels",
]

LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
_SHOWN_WORKERS = 5  # live workers named in a waiting reason; the rest are counted


def label_error(label: str) -> str:
    """Why ``label`` is not a valid label ("" when it is)."""
    if LABEL.fullmatch(label):
        return ""
    return (f"invalid label {label!r}: 1 to 63 letters, digits, '_', '.' or '-', starting "
            "with a letter or digit")


def parse_labels(text: str) -> frozenset[str]:
    """``"linux, amd64,gpu"`` -> its labels; ``ValueError`` naming a bad one."""
    labels = [part.strip() for part in text.split(",") if part.strip()]
    for label in labels:
        if error := label_error(label):
            raise ValueError(error)
    return frozenset(labels)


def default_labels(executor: str) -> frozenset[str]:
    """A worker's labels when it declares none: its OS, CPU architecture (Go's names, as
    Docker's platforms use them) and executor kind (``docker`` or ``shell``)."""
    machine = platform.machine().lower()
    return frozenset({platform.system().lower() or "unknown", _ARCH.get(machine, machine),
                      executor})


def label_set(labels: Iterable[str]) -> str:
    """A set of labels as one string, sorted: ``"amd64,gpu,linux"`` ("" for none)."""
    return ",".join(sorted(set(labels)))


def can_run(wanted: Iterable[str], offered: Iterable[str]) -> bool:
    """Whether a worker offering ``offered`` may run a job asking for ``wanted``."""
    return set(wanted) <= set(offered)


@dataclass(frozen=True)
class WorkerInfo:
    """A live worker as its key says it."""

    id: str
    labels: frozenset[str]
    executor: str = ""
    capacity: int = 0  # jobs it runs at once (0: not said)

    def encode(self) -> bytes:
        return json.dumps({"labels": sorted(self.labels), "executor": self.executor,
                           "capacity": self.capacity}).encode()

    @classmethod
    def decode(cls, worker_id: str, value: bytes) -> WorkerInfo:
        """What a worker key holds; never fails (a watcher must not die of a bad value)."""
        try:
            data = json.loads(value)
        except ValueError:
            data = None
        if not isinstance(data, dict):  # a worker from before labels: its executor's name
            return cls(worker_id, frozenset(), value.decode(errors="replace"))
        labels, capacity = data.get("labels"), data.get("capacity")
        return cls(worker_id,
                   frozenset(str(x) for x in labels) if isinstance(labels, list) else frozenset(),
                   str(data.get("executor", "")), capacity if isinstance(capacity, int) else 0)

    def can_run(self, wanted: Iterable[str]) -> bool:
        return can_run(wanted, self.labels)


async def live_workers(coord: Coordinator) -> list[WorkerInfo]:
    """Every live worker, by id."""
    keys = await coord.get_prefix(WORKERS_PREFIX)
    return sorted((WorkerInfo.decode(key.removeprefix(WORKERS_PREFIX), value)
                   for key, value in keys.items()), key=lambda w: w.id)


def describe_workers(workers: Sequence[WorkerInfo]) -> str:
    """``w1 [amd64,docker,linux], w2 [...]`` (the first few, then how many more)."""
    shown = ", ".join(f"{w.id} [{label_set(w.labels)}]" for w in workers[:_SHOWN_WORKERS])
    more = len(workers) - _SHOWN_WORKERS
    return shown + (f" and {more} more" if more > 0 else "")
