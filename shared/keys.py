"""The coordination key space (etcd in distributed mode), in one place.

    cyclone/workers/<worker id>        a live worker, bound to its lease
    cyclone/claims/<run id>/<job>      the worker that runs a job, bound to its lease
    cyclone/cancel/<run id>            present while a cancel of the run is in progress
"""

from __future__ import annotations

__all__ = ["CANCEL_PREFIX", "CHECKOUT", "CLAIMS_PREFIX", "WORKERS_PREFIX", "cancel_key",
           "claim_key", "run_of_cancel_key", "worker_key"]

WORKERS_PREFIX = "cyclone/workers/"
CLAIMS_PREFIX = "cyclone/claims/"
CANCEL_PREFIX = "cyclone/cancel/"
CHECKOUT = "checkout"  # the claim (and log job) name of a run's checkout


def worker_key(worker_id: str) -> str:
    return f"{WORKERS_PREFIX}{worker_id}"


def claim_key(run_id: str, job: str) -> str:
    return f"{CLAIMS_PREFIX}{run_id}/{job}"


def cancel_key(run_id: str) -> str:
    return f"{CANCEL_PREFIX}{run_id}"


def run_of_cancel_key(key: str) -> str:
    return key.removeprefix(CANCEL_PREFIX)
