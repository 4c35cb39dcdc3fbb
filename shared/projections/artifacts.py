"""What a run kept, as parts of its ``RunView``: the artifacts its jobs uploaded
(``ArtifactView``), what their caches did (``CacheView``) and their test reports
(``TestReportView``). Frozen dataclasses of plain values, as the rest of the run view, so
a view rebuilt from the store equals the live one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from frozendict import deepfreeze

from shared import events as ev

__all__ = ["ArtifactView", "CacheOutcome", "CacheView", "TestReportView"]


@dataclass(frozen=True)
class ArtifactView:
    job: str
    name: str
    digest: str
    size: int
    files: int
    paths: tuple[str, ...] = ()
    uploaded_at: str = ""
    from_run: str = ""  # taken from an earlier run by ``rerun --failed`` ("": made here)

    @classmethod
    def of(cls, e: ev.ArtifactUploaded, ts: str, from_run: str = "") -> ArtifactView:
        return cls(job=e.job, name=e.name, digest=e.digest, size=e.size, files=e.files,
                   paths=tuple(e.paths), uploaded_at=ts, from_run=from_run)

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> ArtifactView:
        return cls(**{**data, "paths": tuple(data.get("paths", ()))})


class CacheOutcome(StrEnum):
    HIT = "hit"  # restored from the entry of its own key
    PARTIAL = "partial"  # restored from an entry a ``restore_keys`` prefix matched
    MISS = "miss"
    SAVED = "saved"  # stored after the job, under its key


@dataclass(frozen=True)
class CacheView:
    job: str
    key: str
    outcome: CacheOutcome
    restored_key: str = ""
    digest: str = ""
    size: int = 0
    at: str = ""

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> CacheView:
        return cls(**{**data, "outcome": CacheOutcome(data["outcome"])})


def cache_view(e: ev.CacheRestored | ev.CacheMissed | ev.CacheSaved, ts: str) -> CacheView:
    match e:
        case ev.CacheRestored():
            outcome = CacheOutcome.HIT if e.exact else CacheOutcome.PARTIAL
            return CacheView(job=e.job, key=e.key, outcome=outcome, restored_key=e.restored_key,
                             digest=e.digest, size=e.size, at=ts)
        case ev.CacheMissed():
            return CacheView(job=e.job, key=e.key, outcome=CacheOutcome.MISS, at=ts)
        case ev.CacheSaved():
            return CacheView(job=e.job, key=e.key, outcome=CacheOutcome.SAVED, digest=e.digest,
                             size=e.size, at=ts)


@dataclass(frozen=True)
class TestReportView:
    """One job's JUnit report (``TestReportRecorded``)."""

    __test__ = False  # not a pytest test class, whatever its name

    job: str
    tests: int
    passed: int
    failed: int
    errors: int
    skipped: int
    duration_s: float
    failures: tuple[Mapping[str, Any], ...] = ()
    slowest: tuple[Mapping[str, Any], ...] = ()
    results_digest: str = ""
    files: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    recorded_at: str = ""

    @classmethod
    def of(cls, e: ev.TestReportRecorded, ts: str) -> TestReportView:
        return cls(job=e.job, tests=e.tests, passed=e.passed, failed=e.failed, errors=e.errors,
                   skipped=e.skipped, duration_s=e.duration_s, failures=e.failures,
                   slowest=e.slowest, results_digest=e.results_digest, files=e.files,
                   warnings=e.warnings, recorded_at=ts)

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> TestReportView:
        return cls(**{**data,
                      "failures": deepfreeze(tuple(data.get("failures", ()))),
                      "slowest": deepfreeze(tuple(data.get("slowest", ()))),
                      "files": tuple(data.get("files", ())),
                      "warnings": tuple(data.get("warnings", ()))})

    def to_json(self) -> dict[str, Any]:
        return {"job": self.job, "tests": self.tests, "passed": self.passed,
                "failed": self.failed, "errors": self.errors, "skipped": self.skipped,
                "duration_s": self.duration_s,
                "failures": [dict(f) for f in self.failures],
                "slowest": [dict(s) for s in self.slowest],
                "results_digest": self.results_digest, "files": list(self.files),
                "warnings": list(self.warnings), "recorded_at": self.recorded_at}
