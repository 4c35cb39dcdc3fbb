"""What of a source directory goes into a run's workspace (``shared/adapters/executor/
source.py``): in a Git work tree what Git sees, elsewhere everything, in every case never
Cyclone's own home, even when it sits inside the directory (``CYCLONE_HOME=./.cyclone``).
Checked through both executors, by listing the workspace from a step."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared.adapters.executor import DockerExecutor, ShellExecutor
from shared.adapters.executor.source import source_files
from shared.ports.executor import Executor, RunContext
from tests.executors.conftest import Logs, job_of, step_of
from tests.git_support import git_env

LIST = step_of("list", "find . | sort")


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], env=git_env(), check=True,
                   capture_output=True, timeout=30)


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The directory a run is started in; Cyclone's home is its ``.cyclone``."""
    work = tmp_path / "project"
    write(work, {".cyclone/events.db": "cyclone's own\n"})
    return work


@pytest.fixture
def repo(project: Path) -> Path:
    """A Git work tree: tracked files (one since deleted), an untracked file, ignored
    output, and Cyclone's home inside it."""
    work = project
    git(work, "init", "-q", "-b", "main")
    write(work, {".gitignore": "build/\n*.log\n", "README.md": "readme\n",
                 "src/main.c": "int main;\n", "gone.txt": "deleted later\n"})
    git(work, "add", ".")
    git(work, "commit", "-q", "-m", "first")
    (work / "gone.txt").unlink()
    write(work, {"notes.txt": "not yet added\n", "build/out.o": "binary\n",
                 "debug.log": "noise\n"})
    return work


@pytest.fixture
async def executor(executor_kind: str, project: Path) -> AsyncIterator[Executor]:
    """An executor whose Cyclone home is ``<project>/.cyclone`` (the shell's run
    directories under it, as ``cyclone run`` has them)."""
    home = project / ".cyclone"
    opened: Executor = (await DockerExecutor.connect(keep_out=(home,))
                        if executor_kind == "docker"
                        else ShellExecutor(home / "work", keep_out=(home,)))
    try:
        yield opened
    finally:
        await opened.close()


async def workspace_of(executor: Executor, source: Path) -> list[str]:
    """The workspace's content as a step finds it, after preparing a run from ``source``."""
    ctx = RunContext(run_id=f"t{uuid.uuid4().hex[:16]}", source_dir=str(source))
    await executor.prepare_run(ctx)
    try:
        logs = Logs()
        outcome = await executor.run_step(ctx, job_of("list", LIST), LIST, {}, logs)
        assert outcome.exit_code == 0, logs.lines
        return [line.removeprefix("./") for line in logs.texts("stdout")[1:] if line != "."]
    finally:
        await executor.destroy_run(ctx.run_id)


async def test_a_git_work_tree_gives_what_git_sees_and_never_cyclones_home(
        executor: Executor, repo: Path) -> None:
    assert await workspace_of(executor, repo) == [
        ".gitignore", "README.md", "notes.txt", "src", "src/main.c"]


async def test_a_plain_directory_gives_everything_but_cyclones_home(
        executor: Executor, project: Path) -> None:
    write(project, {"a.txt": "a\n", "build/out.o": "binary\n", ".hidden": "h\n"})
    (project / "empty").mkdir()
    (project / "link").symlink_to("a.txt")
    assert await workspace_of(executor, project) == [
        ".hidden", "a.txt", "build", "build/out.o", "empty", "link"]


# -- the listing itself (git, no executor) ------------------------------------------------

def test_a_subdirectory_of_a_work_tree_gives_its_own_files_as_git_sees_them(
        repo: Path) -> None:
    write(repo, {"src/trace.log": "ignored\n", "src/util.c": "untracked\n"})
    assert source_files(repo / "src") == ["main.c", "util.c"]


def test_a_nested_repository_is_taken_as_git_sees_it_there(repo: Path) -> None:
    nested = repo / "vendor" / "lib"
    nested.mkdir(parents=True)
    git(nested, "init", "-q")
    write(nested, {".gitignore": "*.tmp\n", "lib.c": "lib\n", "scratch.tmp": "x\n"})
    listed = source_files(repo, keep_out=(repo / ".cyclone",))
    assert [p for p in listed if p.startswith("vendor")] == [
        "vendor", "vendor/lib", "vendor/lib/.gitignore", "vendor/lib/lib.c"]


def test_a_git_hooks_environment_does_not_point_the_listing_elsewhere(
        repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = tmp_path / "other"
    other.mkdir()
    git(other, "init", "-q")
    (other / ".git" / "info" / "exclude").write_text("README.md\n")  # were it asked
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    monkeypatch.setenv("GIT_INDEX_FILE", str(other / ".git" / "index"))
    assert "README.md" in source_files(repo)


def test_the_keep_out_directories_are_left_out_wherever_they_are(repo: Path) -> None:
    listed = source_files(repo, keep_out=(repo / "src", Path("/elsewhere/.cyclone")))
    assert listed == [".cyclone", ".cyclone/events.db", ".gitignore", "README.md",
                      "notes.txt"]
