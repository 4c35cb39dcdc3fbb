"""A worker's reap after a crash removes from its host only what this installation
knows to be over, and nothing it is preparing now.

Real parts: the shell executor.
"""

from __future__ import annotations

from pathlib import Path

from services.workermanager.host import Host
from shared.adapters.executor.shell import ShellExecutor
from shared.ports.executor import RunContext
from shared.projections.runs import RunView
from shared.runstream import new_run_id


async def test_a_reap_removes_only_runs_known_to_be_over_and_not_prepared_here(
        tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    shell = ShellExecutor(tmp_path / "runs")
    ended, unknown, current = new_run_id(), new_run_id(), new_run_id()
    for run_id in (ended, unknown):  # left behind by a crash
        await shell.prepare_run(RunContext(run_id=run_id, source_dir=str(source)))
    host = Host(shell, tmp_path / "git")
    await host.prepare(RunView(id=current, source=str(source)))  # being prepared here now
    try:
        # ``unknown`` may be another installation's, on the same host
        reaped = await host.reap(lambda run_id: run_id in (ended, current))

        assert reaped == [ended]
        assert await shell.leftover_runs() == {unknown, current}
    finally:
        await host.destroy_all()
        await shell.destroy_run(unknown)
        await shell.close()
    assert await shell.leftover_runs() == set()
