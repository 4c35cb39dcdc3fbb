"""Step outputs on the worker: a real shell executor runs the steps, ``JobRun`` reads each
step's ``$CYCLONE_OUTPUT``; what is recorded (masked) and what later steps get (as
written) are checked from the events the job reports and the log it ships."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from services.workermanager.jobs import JobRun
from services.workermanager.logship import LogShipper
from services.workermanager.secrets import JobSecrets
from shared import events as ev
from shared.adapters.bus.memory import MemoryBus
from shared.adapters.executor.shell import ShellExecutor
from shared.outputs import parse_outputs
from shared.pipeline.plan import JobSpec, StepSpec, When
from shared.ports.executor import RunContext
from shared.projections.runs import JobView, RunView
from shared.status import JobStatus, StepStatus

SECRET = "s3cr3t-value-42"


async def run_job(tmp_path: Path, job: JobSpec,
                  run: RunView | None = None) -> list[ev.Event]:
    executor = ShellExecutor(tmp_path / "runs")
    ctx = RunContext(run_id="r1", source_dir=str(tmp_path / "src"))
    (tmp_path / "src").mkdir(exist_ok=True)
    await executor.prepare_run(ctx)
    reported: list[ev.Event] = []

    async def report(events: Sequence[ev.Event]) -> None:
        reported.extend(events)

    bus = MemoryBus()
    shipper = LogShipper(bus, "r1")
    runner = JobRun(run or RunView(id="r1", project="demo"), job, executor, ctx, report,
                    shipper, secrets=JobSecrets(values={"TOKEN": SECRET},
                                                implicit=frozenset({"TOKEN"})))
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    ready.set_result("")  # the workspace is prepared
    await runner.execute(ready)
    await executor.destroy_run("r1")
    await bus.close()
    return reported


WRITE = StepSpec(name="write", image="x", commands=(
    'echo "plain=one" >> "$CYCLONE_OUTPUT"',
    'printf "multi<<EOT\\nline 1\\nline 2\\nEOT\\n" >> "$CYCLONE_OUTPUT"',
    'echo "leaky=Bearer $TOKEN" >> "$CYCLONE_OUTPUT"',
    'echo "bad line" >> "$CYCLONE_OUTPUT"'))
READ = StepSpec(name="read", image="x", commands=(
    'test "$plain" = one', 'test "$multi" = "$(printf "line 1\\nline 2")"',
    'test "$leaky" = "Bearer $TOKEN"'))
SKIPPED = StepSpec(name="only-two", image="x", commands=("true",),
                   when=When(outputs=(("plain", "two"),)))


async def test_outputs_are_recorded_masked_and_given_to_later_steps_as_written(
        tmp_path: Path) -> None:
    job = JobSpec(name="j", image="x", steps=(WRITE, READ, SKIPPED))
    events = await run_job(tmp_path, job)

    recorded = [e for e in events if isinstance(e, ev.StepOutputs)]
    assert len(recorded) == 1
    assert dict(recorded[0].outputs) == {"plain": "one", "multi": "line 1\nline 2",
                                         "leaky": "Bearer ***"}
    assert recorded[0].masked == ("leaky",)
    assert SECRET not in repr(events)
    finished = {e.step: e.status for e in events if isinstance(e, ev.StepFinished)}
    assert finished == {"write": StepStatus.SUCCESS, "read": StepStatus.SUCCESS}
    skipped = [e for e in events if isinstance(e, ev.StepSkipped)]
    assert [s.step for s in skipped] == ["only-two"]
    assert "plain is 'one', not 'two'" in skipped[0].reason
    assert [e.status for e in events if isinstance(e, ev.JobFinished)] == [JobStatus.SUCCESS]


async def test_a_dependent_job_gets_the_outputs_its_needs_recorded(tmp_path: Path) -> None:
    run = RunView(id="r1", project="demo", jobs=(
        JobView(name="a", status=JobStatus.SUCCESS, outputs=(("version", "2.0"),)),
        JobView(name="b", needs=("a",))))
    job = JobSpec(name="b", image="x", needs=("a",), steps=(
        StepSpec(name="use", image="x", commands=('test "$version" = 2.0',)),))
    events = await run_job(tmp_path, job, run)
    assert [e.status for e in events if isinstance(e, ev.JobFinished)] == [JobStatus.SUCCESS]


def test_unreadable_lines_are_problems_naming_the_line_never_errors() -> None:
    parsed = parse_outputs(b"ok=1\nno equals\n9bad=2\nopen<<EOF\nnever closed\n")
    assert parsed.values == {"ok": "1"}
    assert [p.split(":")[0] for p in parsed.problems] == ["line 2", "line 3", "line 4"]
