"""A job's test reports: the JUnit XML files its ``reports: {junit: [...]}`` globs match,
read from the workspace after its steps (whatever their outcome), parsed
(``shared.reports.junit``), every test case kept as one JSON blob in the artifact store and
the summary recorded (``TestReportRecorded``). A report that cannot be read, is too big,
or matches nothing is a warning in the job's log: it never changes the job's outcome.
"""

from __future__ import annotations

import asyncio
import tarfile
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from shared import events as ev
from shared.adapters.executor.workspace_files import read_tar
from shared.errors import CycloneError
from shared.events import utc_now
from shared.pipeline.plan import JobSpec
from shared.ports.artifacts import ArtifactStore
from shared.ports.executor import Executor, LogSink, RunContext
from shared.reports.junit import MAX_REPORT_BYTES, parse_junit

__all__ = ["read_reports"]

MAX_FILES = 2000
MAX_TOTAL_BYTES = 256 * 1024 * 1024  # of all of one job's reports together


async def read_reports(job: JobSpec, executor: Executor, ctx: RunContext,
                       store: ArtifactStore, record: Callable[[Sequence[ev.Event]],
                                                             Awaitable[None]],
                       say: LogSink) -> None:
    assert job.reports is not None
    patterns = job.reports.junit
    try:
        files, skipped = await read_tar(executor.read_files(ctx, patterns), _collect)
    except CycloneError as exc:
        await say("stderr", utc_now(), f"cyclone: test reports not read: {exc}")
        return
    for problem in skipped:
        await say("stderr", utc_now(), f"cyclone: test report {problem}")
    if not files:
        await say("stderr", utc_now(), f"cyclone: no test report matches {', '.join(patterns)}")
        return
    report = await asyncio.to_thread(parse_junit, files)
    for warning in report.warnings:
        await say("stderr", utc_now(), f"cyclone: test report {warning}")
    try:
        blob = await store.put(_one(report.results_json()))
    except CycloneError as exc:
        await say("stderr", utc_now(), f"cyclone: test results not stored: {exc}")
        return
    event = report.event(job.name, blob.digest)
    await record([event])
    await say("stdout", utc_now(), f"cyclone: tests: {event.tests} run, {event.passed} passed, "
              f"{event.failed} failed, {event.errors} errors, {event.skipped} skipped "
              f"({len(report.files)} report files)")


def _collect(tar: tarfile.TarFile) -> tuple[list[tuple[str, bytes]], list[str]]:
    """The regular files of the tar (within the limits), and what was left out and why."""
    files: list[tuple[str, bytes]] = []
    skipped: list[str] = []
    total = 0
    for member in tar:
        if not member.isreg():
            continue
        if member.size > MAX_REPORT_BYTES:
            skipped.append(f"{member.name} skipped: {member.size} bytes, more than the "
                           f"{MAX_REPORT_BYTES} a report may have")
        elif len(files) >= MAX_FILES or total + member.size > MAX_TOTAL_BYTES:
            skipped.append(f"{member.name} skipped: the job's reports are over "
                           f"{MAX_FILES} files or {MAX_TOTAL_BYTES // (1024 * 1024)} MB")
        else:
            handle = tar.extractfile(member)
            files.append((member.name, handle.read() if handle else b""))
            total += member.size
    return files, skipped


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data
