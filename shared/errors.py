"""Cyclone's error hierarchy: every error Cyclone raises on purpose derives from one base.

Adapters translate driver errors into these at their edge (``raise ... from exc``),
so no sqlite3, aiodocker or aiohttp exception escapes a port.

    CycloneError
    ├── ConfigError                 a setting is missing or malformed (names the variable)
    ├── PipelineError               a pipeline file is invalid (carries every diagnostic)
    ├── IncludeError                a file a pipeline includes cannot be fetched
    ├── StoreError                  the event or log store failed
    │   ├── ConcurrencyConflict     append with a stale expected seq (retry from fresh state)
    │   ├── StreamNotFound          read of a stream that has no events
    │   ├── BlobNotFound            read of an artifact-store blob that is not stored
    │   └── BlobCorrupted           a blob's bytes do not hash to its digest any more
    ├── BusError                    the bus failed
    │   └── BusClosed               the bus was used after ``close()`` (not transient)
    ├── CoordinationError           the coordination service failed
    │   └── LeaseExpired            a lease was used after it expired or was revoked
    ├── ExecutorError               a step could not be run (not: the step failed)
    │   └── ExecutorUnavailable     the backend (e.g. the Docker daemon) cannot be reached
    └── DeployerUnavailable         a deploy target's API (Docker, Kubernetes) cannot be reached
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.pipeline.diagnostics import Diagnostic

__all__ = [
    "BlobCorrupted",
    "BlobNotFound",
    "BusClosed",
    "BusError",
    "ConcurrencyConflict",
    "ConfigError",
    "CoordinationError",
    "CycloneError",
    "DeployerUnavailable",
    "ExecutorError",
    "ExecutorUnavailable",
    "IncludeError",
    "LeaseExpired",
    "PipelineError",
    "StoreError",
    "StreamNotFound",
]


class CycloneError(Exception):
    """Base of every error Cyclone raises on purpose."""


class ConfigError(CycloneError):
    """A setting is missing or malformed; the message names the environment variable."""


class PipelineError(CycloneError):
    """A pipeline file is invalid. ``diagnostics`` holds every problem found, not just the first."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = diagnostics
        super().__init__("\n".join(str(d) for d in diagnostics))


class IncludeError(CycloneError):
    """A file a pipeline file includes cannot be fetched (no such project, tag, commit or
    file; a branch where a pinned ref is needed; git failed). Recorded with the run
    (``shared.pipeline.include.IncludedFile.error``), reported at the include entry."""


class StoreError(CycloneError):
    """The event store or log store failed."""


class ConcurrencyConflict(StoreError):
    """An append named an expected seq that is no longer the stream's last one."""

    def __init__(self, stream: str, expected_seq: int, actual_seq: int | None = None) -> None:
        self.stream = stream
        self.expected_seq = expected_seq
        self.actual_seq = actual_seq
        actual = "" if actual_seq is None else f", stream is at {actual_seq}"
        super().__init__(
            f"concurrent append to stream {stream!r}: expected seq {expected_seq}{actual}"
        )


class StreamNotFound(StoreError):
    """A stream was read that has no events."""


class BlobNotFound(StoreError):
    """The artifact store has no blob with that digest (never stored, or collected)."""


class BlobCorrupted(StoreError):
    """What the artifact store gave back does not hash to the digest it was asked for."""


class BusError(CycloneError):
    """The bus failed or was used after being closed."""


class BusClosed(BusError):
    """The bus was used after being closed: the caller is shutting down, not failing."""


class CoordinationError(CycloneError):
    """The coordination service failed."""


class LeaseExpired(CoordinationError):
    """A lease was used after it expired or was revoked."""


class ExecutorError(CycloneError):
    """A step could not be run at all (a step that ran and exited non-zero is not an error)."""


class ExecutorUnavailable(ExecutorError):
    """The executor's backend cannot be reached."""


class DeployerUnavailable(CycloneError):
    """A deploy target's API (a Docker daemon, a Kubernetes API server) cannot be reached."""
