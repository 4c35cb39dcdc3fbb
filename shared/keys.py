"""The coordination key space (etcd in distributed mode), in one place.

    cyclone/workers/<worker id>        a live worker, bound to its lease (value: its labels,
                                       executor and capacity, ``shared.workers.WorkerInfo``)
    cyclone/claims/<run id>/<job>      the worker that runs a job, bound to its lease
    cyclone/cancel/<run id>            present while a cancel of the run is in progress
    cyclone/notifying/<notification>   a notification a notifier replica is sending
                                       (``<run>/<moment>/<rule>/<channel>``; bound to the
                                       replica's lease, deleted once the outcome is recorded)
    cyclone/slots/<project>/<n>        a run counting against the project's max_concurrent_runs
                                       (value: its run id; no lease: held until the run ends)
    cyclone/waiting/<project>/<run id> a run waiting for one of those slots (empty value; run
                                       ids sort by creation time, so the prefix lists the
                                       project's waiting runs oldest first)

Project names never contain ``/`` (the API's name pattern), so a project's prefix holds
only its own keys.
"""

from __future__ import annotations

__all__ = [
    "CANCEL_PREFIX",
    "CHECKOUT",
    "CLAIMS_PREFIX",
    "SLOTS_PREFIX",
    "WAITING_PREFIX",
    "WORKERS_PREFIX",
    "cancel_key",
    "claim_key",
    "notifying_key",
    "run_of_cancel_key",
    "slot_key",
    "slots_prefix",
    "waiting_key",
    "waiting_prefix",
    "worker_key",
]

WORKERS_PREFIX = "cyclone/workers/"
CLAIMS_PREFIX = "cyclone/claims/"
CANCEL_PREFIX = "cyclone/cancel/"
SLOTS_PREFIX = "cyclone/slots/"
WAITING_PREFIX = "cyclone/waiting/"
CHECKOUT = "checkout"  # the claim (and log job) name of a run's checkout


def worker_key(worker_id: str) -> str:
    return f"{WORKERS_PREFIX}{worker_id}"


def claim_key(run_id: str, job: str) -> str:
    return f"{CLAIMS_PREFIX}{run_id}/{job}"


def cancel_key(run_id: str) -> str:
    return f"{CANCEL_PREFIX}{run_id}"


def run_of_cancel_key(key: str) -> str:
    return key.removeprefix(CANCEL_PREFIX)


def slots_prefix(project: str) -> str:
    return f"{SLOTS_PREFIX}{project}/"


def slot_key(project: str, n: int) -> str:
    return f"{SLOTS_PREFIX}{project}/{n}"


def waiting_prefix(project: str) -> str:
    return f"{WAITING_PREFIX}{project}/"


def waiting_key(project: str, run_id: str) -> str:
    return f"{WAITING_PREFIX}{project}/{run_id}"


def notifying_key(notification: str) -> str:
    """The claim on a notification, by its idempotency key."""
    return f"cyclone/notifying/{notification}"
