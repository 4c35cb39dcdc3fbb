"""Runs one job on an executor: services, then each step (when, retry, timeouts), reporting
every transition as an event.

The job's deadline and a cancel request both end the step that is running by
cancelling its task, which makes the executor kill the container before it
returns; the runner itself is never cancelled half-way, so it always records
how each step and the job ended. A job handed back (its worker stops, or lost its
lease) ends the same way but records nothing more: the next attempt, queued again
for another worker, is the one that reports.

``run`` is the run's state with this attempt's ``JobStarted`` applied: its job view
gives the attempt number (``CYCLONE_JOB_ATTEMPT``) and the worker.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from services.workermanager.delivery import (
    DeliveryError,
    JobImages,
    deploy_events,
    deploy_secrets,
    expand_tags,
    image_pushed,
)
from services.workermanager.files import JobFiles
from services.workermanager.logship import LogShipper
from services.workermanager.secrets import NO_SECRETS, JobSecrets, MaskedSink
from shared import events as ev
from shared.caches import CacheIndex
from shared.config import DEFAULT_STEP_LOG, StepLogLimit
from shared.errors import DeployerUnavailable, ExecutorError
from shared.events import utc_now
from shared.outputs import masked, parse_outputs
from shared.pipeline.plan import JobSpec, Plan, StepSpec
from shared.pipeline.resources import Resources, oom_message
from shared.ports.artifacts import ArtifactStore
from shared.ports.deployer import Deployer, DeployOutcome, DeployStatus
from shared.ports.executor import (
    NO_REGISTRIES,
    Executor,
    LogSink,
    Registries,
    RunContext,
    StepOutcome,
    log_lines,
    one_by_one,
)
from shared.projections.runs import RunView
from shared.status import JobStatus, StepStatus

__all__ = ["ATTEMPT_STEP", "JobRun", "Report", "StepLog", "effective_job", "step_env"]

log = logging.getLogger(__name__)

Report = Callable[[Sequence[ev.Event]], Awaitable[None]]
ATTEMPT_STEP = "attempt"  # the log "step" of the line that opens a job's later attempt


def step_env(run: RunView, job: JobSpec, step: StepSpec,
             outputs: Mapping[str, str] | None = None) -> dict[str, str]:
    """Job env < step outputs (of the jobs it needs, then of its earlier steps) < step env
    < run params; the built-ins always win."""
    env = {**job.env, **(outputs or {}), **step.env, **dict(run.params)}
    env.update({
        "CI": "true",
        "CYCLONE": "true",
        "CYCLONE_RUN_ID": run.id,
        "CYCLONE_PROJECT": run.project,
        "CYCLONE_JOB": job.name,
        "CYCLONE_JOB_ATTEMPT": str(_attempt(run, job.name)),
        "CYCLONE_STEP": step.name,
        "CYCLONE_BRANCH": run.branch,
        "CYCLONE_COMMIT": run.commit,
        "CYCLONE_EVENT": run.when_event,
    })
    return env


def effective_job(plan: Plan, name: str, defaults: Resources) -> JobSpec:
    """The job as its containers run: what its ``resources:`` asks, the worker's
    ``defaults`` for the rest, these capped at the project's maximum (which lint held
    the job's own request to)."""
    job = plan.job(name)
    resources = job.resources.over(defaults.capped(plan.max_resources))
    return dataclasses.replace(job, resources=resources)


def _attempt(run: RunView, job: str) -> int:
    """1 for a job's first start; more when it runs again after its worker was lost."""
    view = run.job(job)
    return max(1, view.attempt) if view else 1


class StepLog:
    """One step attempt's ``on_log``, holding the per-step log limit: past it, lines are
    still read from the step (it is never held up) but only counted; the log says where it
    was cut, and ``truncated`` gives the event that records it."""

    def __init__(self, sink: LogSink, limit: StepLogLimit) -> None:
        self.sink = sink
        self.limit = limit
        self.lines = self.bytes = 0
        self.dropped_lines = self.dropped_bytes = 0

    def __call__(self, stream: str, ts: str, text: str) -> Awaitable[None]:
        """The ``LogSink``. A line within the limit costs no coroutine of its own: this
        returns what ``sink`` returns for it, for the caller to await."""
        size = (len(text) if text.isascii() else len(text.encode("utf-8", "replace"))) + 1
        if not self.dropped_lines and (self.lines < self.limit.max_lines
                                       and self.bytes + size <= self.limit.max_bytes):
            self.lines += 1
            self.bytes += size
            return self.sink(stream, ts, text)
        return self._past_limit(size)

    def many(self, stream: str, ts: str, texts: list[str]) -> Awaitable[None]:
        """Several lines at once (``LinesSink``): passed on in one call while all of them
        fit in the limit, else line by line, as ``__call__`` takes them."""
        joined = "\n".join(texts)  # every line's bytes and "\n", counted at C speed
        size = (len(joined) if joined.isascii() else len(joined.encode("utf-8", "replace"))) + 1
        if not self.dropped_lines and (self.lines + len(texts) <= self.limit.max_lines
                                       and self.bytes + size <= self.limit.max_bytes):
            self.lines += len(texts)
            self.bytes += size
            return log_lines(self.sink, stream, ts, texts)
        return one_by_one(self, stream, ts, texts)

    async def _past_limit(self, size: int) -> None:
        if not self.dropped_lines:
            await self.sink("stderr", utc_now(), f"cyclone: log limit reached "
                            f"({self.limit.describe()}): the rest of this step's output "
                            "is not stored")
        self.dropped_lines += 1
        self.dropped_bytes += size

    def truncated(self, job: str, step: str, attempt: int) -> ev.StepLogTruncated | None:
        if not self.dropped_lines:
            return None
        return ev.StepLogTruncated(job=job, step=step, attempt=attempt, kept_lines=self.lines,
                                   kept_bytes=self.bytes, dropped_lines=self.dropped_lines,
                                   dropped_bytes=self.dropped_bytes)


# Step outcomes no retry can change.
_FINAL = frozenset({StepStatus.SUCCESS, StepStatus.CANCELLED, StepStatus.ERRORED})


@dataclass
class _Ended:
    status: StepStatus  # success failure timeout cancelled errored
    exit_code: int | None
    reason: str = ""
    out_of_memory: bool = False


class JobRun:
    def __init__(self, run: RunView, job: JobSpec, executor: Executor, ctx: RunContext,
                 report: Report, logs: LogShipper,
                 log_limit: StepLogLimit = DEFAULT_STEP_LOG,
                 secrets: JobSecrets = NO_SECRETS, registries: Registries = NO_REGISTRIES,
                 deployer: Deployer | None = None, artifacts: ArtifactStore | None = None,
                 caches: CacheIndex | None = None) -> None:
        self.run = run
        self.artifacts = artifacts  # None: a job with artifacts, caches or reports errors
        self.caches = caches
        # Outputs of the jobs it needs (as recorded: masked), then of its own steps (as
        # written: its later steps get the secrets they hold, nothing else does).
        self.outputs = run.outputs_of(job.needs)
        self.images = JobImages(run)
        self.registries = registries
        self.deployer = deployer
        self.secrets = secrets
        self.log_limit = log_limit
        self.job = job
        self.executor = executor
        self.ctx = ctx
        self.report = report
        self.logs = logs
        self.flush = logs.flush
        self.cancelled = asyncio.Event()
        self.handed_back = False
        self._deadline = (time.monotonic() + job.timeout_s) if job.timeout_s else None

    def sink_for(self, job: str, step: str) -> MaskedSink:
        """Where lines of ``step`` go: masked, then to the log shipper."""
        return MaskedSink(self.logs.sink(job, step), self.secrets.values.values())

    @property
    def attempt(self) -> int:
        return _attempt(self.run, self.job.name)

    def cancel(self) -> None:
        self.cancelled.set()

    def hand_back(self) -> None:
        """Stop like ``cancel``, but report nothing from now on (not even how it ended)."""
        self.handed_back = True
        self.cancelled.set()

    async def record(self, events: Sequence[ev.Event]) -> None:
        """Report ``events`` unless the job was handed back."""
        if not self.handed_back:
            await self.report(events)

    async def execute(self, prepared: Awaitable[str]) -> JobStatus:
        """Run the job to its end and report it; returns the job's status. ``prepared``
        is the run's preparation on this host ("" when ready, else why it failed): a job
        without services starts its sandbox meanwhile."""
        started = time.monotonic()
        await self._say_attempt()
        try:
            self.job = self.images.job(self.job)
        except DeliveryError as exc:
            await asyncio.gather(prepared, return_exceptions=True)  # nothing left running
            status, reason = JobStatus.ERRORED, str(exc)
        else:
            status, reason = await self._run_all(prepared)
        await self.flush()
        await self.record([ev.JobFinished(job=self.job.name, status=status,
                                          duration_s=round(time.monotonic() - started, 3),
                                          reason=reason, log_lines=self.logs.shipped)])
        return status

    async def _say_attempt(self) -> None:
        """A job queued again after its worker went away says so first in its log."""
        if self.attempt <= 1:
            return
        view = self.run.job(self.job.name)
        worker = view.worker if view else ""
        await self.sink_for(self.job.name, ATTEMPT_STEP)(
            "stdout", utc_now(),
            f"attempt {self.attempt} on worker {worker} (the previous worker was lost)")

    async def _run_all(self, prepared: Awaitable[str]) -> tuple[JobStatus, str]:
        services = self.executor.start_services(self.ctx, self.job,
                                                self.sink_for(self.job.name, "services"),
                                                registries=self.registries)
        try:
            if self.job.services:  # services use the workspace: it must be ready first
                problem = await prepared
                if not problem:
                    await services
            else:
                problem, _ = await asyncio.gather(prepared, services)
        except ExecutorError as exc:
            problem = str(exc)
        finally:
            services.close()  # not awaited when the workspace failed first
        if problem:
            await self.executor.stop_services(self.ctx, self.job)
            return JobStatus.ERRORED, problem
        try:
            return await self._run_steps_with_files()
        finally:
            await self.executor.stop_services(self.ctx, self.job)

    async def _run_steps_with_files(self) -> tuple[JobStatus, str]:
        """The steps, with what the job keeps (``files.JobFiles``) brought in before and
        kept after them."""
        files = self._files()
        if isinstance(files, str):
            return JobStatus.ERRORED, files
        if files is not None:
            problem = await files.bring_in()
            if problem:
                return JobStatus.ERRORED, problem
        status, reason = await self._run_steps()
        ran = status in (JobStatus.SUCCESS, JobStatus.FAILURE)  # (not cancelled, errored)
        if files is not None and ran and not self.handed_back:
            problem = await files.keep(status)
            if problem:
                return JobStatus.ERRORED, problem
        return status, reason

    def _files(self) -> JobFiles | str | None:
        """The job's ``JobFiles`` (None: it keeps and needs none; a str: why it cannot)."""
        needed = any(a.job in self.job.needs for a in self.run.artifacts)
        job = self.job
        if not (needed or job.artifacts or job.caches or job.reports):
            return None
        if self.artifacts is None:
            return "this worker has no artifact store (artifacts, caches and reports need one)"
        return JobFiles(self.run, job, self.executor, self.ctx, self.artifacts, self.caches,
                        self.record, lambda step: self.sink_for(job.name, step))

    async def _run_steps(self) -> tuple[JobStatus, str]:
        failed_step = ""
        for step in self.job.steps:
            skip = self._skip_reason(step, failed=bool(failed_step))
            if skip:
                await self.record([ev.StepSkipped(job=self.job.name, step=step.name,
                                                  reason=skip)])
                continue
            ended = await self._run_with_retry(step)
            if ended.status == StepStatus.CANCELLED:
                return JobStatus.CANCELLED, "run cancelled"
            if ended.status == StepStatus.ERRORED:
                return JobStatus.ERRORED, ended.reason
            if ended.status == StepStatus.TIMEOUT and self._job_timed_out():
                return JobStatus.FAILURE, f"job timed out after {self.job.timeout_s:g}s"
            if ended.status != StepStatus.SUCCESS and not failed_step:
                # what killed it, when the failure says more than its exit code
                failed_step = step.name + (f": {ended.reason}" if ended.out_of_memory else "")
        if failed_step:
            return JobStatus.FAILURE, f"step failed: {failed_step}"
        return JobStatus.SUCCESS, ""

    def _skip_reason(self, step: StepSpec, failed: bool) -> str:
        if self.cancelled.is_set():
            return "run cancelled"
        mismatch = step.when.mismatch(self.run.branch, self.run.when_event)
        if mismatch:
            return mismatch
        if self._job_timed_out():
            return "job timed out"
        if not step.when.runs_on("failure" if failed else "success"):
            return "an earlier step failed" if failed else "when.status: runs only on failure"
        return step.when.outputs_match(self.outputs)

    async def _run_with_retry(self, step: StepSpec) -> _Ended:
        attempts = step.retry + 1
        ended = _Ended(StepStatus.ERRORED, None)
        for attempt in range(1, attempts + 1):
            await self.record([ev.StepStarted(job=self.job.name, step=step.name,
                                              attempt=attempt)])
            started = time.monotonic()
            sink = self.sink_for(self.job.name, step.name)
            step_log = StepLog(sink, self.log_limit)
            ended = await self._attempt(step, step_log)
            await sink.flush()
            await self.flush()
            truncated = step_log.truncated(self.job.name, step.name, attempt)
            await self.record([*([truncated] if truncated else []), ev.StepFinished(
                job=self.job.name, step=step.name, status=ended.status,
                exit_code=ended.exit_code, duration_s=round(time.monotonic() - started, 3),
                attempt=attempt, reason=ended.reason,
            )])
            if ended.status in _FINAL or self._job_timed_out():
                break
        return ended

    async def _attempt(self, step: StepSpec, on_log: LogSink) -> _Ended:
        try:
            step = expand_tags(self.images.step(step), self.run)
        except DeliveryError as exc:
            await on_log("stderr", utc_now(), f"cyclone: {exc}")
            return _Ended(StepStatus.FAILURE, None, str(exc))
        env = step_env(self.run, self.job, step, self.outputs)
        given, note = self.secrets.for_step(step)
        env.update(given)  # never recorded: neither the events nor the params hold them
        if note:
            await on_log("stderr", utc_now(), note)
        work = (self._deploy(step, on_log) if step.deploy is not None
                else self.executor.run_step(self.ctx, self.job, step, env, on_log,
                                            registries=self.registries))
        task = asyncio.create_task(work)
        stop = asyncio.create_task(self.cancelled.wait())
        try:
            timeout = None if self._deadline is None else max(0, self._deadline - time.monotonic())
            await asyncio.wait({task, stop}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            # The runner itself is being cancelled (a worker giving up on a job that
            # would not stop): the step's container must not outlive it.
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            raise
        finally:
            stop.cancel()
        if not task.done():
            task.cancel()  # the executor kills the container before this returns
            await asyncio.gather(task, return_exceptions=True)
            if self.cancelled.is_set():
                return _Ended(StepStatus.CANCELLED, None, "run cancelled")
            return _Ended(StepStatus.TIMEOUT, None, f"job timed out after {self.job.timeout_s:g}s")
        try:
            outcome: StepOutcome = task.result()
        except ExecutorError as exc:
            return _Ended(StepStatus.ERRORED, None, str(exc))
        except Exception as exc:  # an executor bug must end the step, not hang the run
            log.exception("executor failed", extra={"run": self.run.id, "step": step.name})
            return _Ended(StepStatus.ERRORED, None, f"executor failed: {exc!r}")
        for pushed in outcome.pushed:
            self.images.add(pushed)
            await self.record([image_pushed(self.job.name, step, pushed)])
        if outcome.outputs:
            await self._outputs(step, outcome.outputs, on_log)
        if outcome.timed_out:
            return _Ended(StepStatus.TIMEOUT, outcome.exit_code,
                          f"step timed out after {step.timeout_s:g}s")
        if outcome.exit_code == 0:
            return _Ended(StepStatus.SUCCESS, 0)
        if outcome.reason:
            return _Ended(StepStatus.FAILURE, outcome.exit_code, outcome.reason)
        if outcome.out_of_memory:  # a bare 137 would not say why
            reason = oom_message(self.job.resources.memory)
            await on_log("stderr", utc_now(), f"cyclone: {reason}")
            return _Ended(StepStatus.FAILURE, outcome.exit_code, reason, out_of_memory=True)
        return _Ended(StepStatus.FAILURE, outcome.exit_code, f"exit code {outcome.exit_code}")

    async def _outputs(self, step: StepSpec, raw: bytes, on_log: LogSink) -> None:
        """What the step wrote to ``$CYCLONE_OUTPUT``: recorded (secrets masked), and
        given to the job's later steps as written."""
        parsed = parse_outputs(raw)
        for problem in parsed.problems:
            await on_log("stderr", utc_now(), f"cyclone: $CYCLONE_OUTPUT {problem}")
        if not parsed.values:
            return
        self.outputs.update(parsed.values)
        shown, hidden = masked(parsed.values, self.secrets.values.values())
        await self.record([ev.StepOutputs(job=self.job.name, step=step.name, outputs=shown,
                                          masked=tuple(hidden))])

    async def _deploy(self, step: StepSpec, on_log: LogSink) -> StepOutcome:
        """A deploy step: through the deployer, each phase recorded as an event."""
        assert step.deploy is not None
        if self.deployer is None:
            raise ExecutorError("this worker cannot deploy (no deployer)")
        target = step.deploy.target
        view = self.run.job(self.job.name)
        await self.record([ev.DeploymentStarted(
            job=self.job.name, step=step.name, environment=self.job.environment,
            target=step.deploy.where, image=target.image,
            approved_by=view.approved_by if view else "")])
        try:
            outcome = await self.deployer.deploy(
                target, target.image, deploy_secrets(target, self.secrets), self.registries,
                on_log)
        except DeployerUnavailable as exc:
            outcome = DeployOutcome(DeployStatus.FAILED, reason=str(exc))
        await self.record([deploy_events(self.job, step, outcome)])
        if outcome.status == DeployStatus.SUCCEEDED:
            return StepOutcome(exit_code=0)
        what = "rolled back" if outcome.status == DeployStatus.ROLLED_BACK else "failed"
        await on_log("stderr", utc_now(), f"cyclone: deployment {what}: {outcome.reason}")
        return StepOutcome(exit_code=1, reason=f"deployment {what}: {outcome.reason}")

    def _job_timed_out(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline
