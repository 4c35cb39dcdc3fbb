"""Real Git repositories for the test suite: served by a real ``git daemon``, or by path.

* ``git_server`` (fixture): a ``git daemon`` on 127.0.0.1 and a free port, serving bare
  repositories under a temporary directory (push enabled); stopped at the end of the test.
  ``repo = git_server.create("demo")`` makes ``demo.git``; ``repo.url`` is
  ``git://127.0.0.1:<port>/demo.git``.
* ``git_files`` (fixture): the same without a daemon; ``repo.url`` is a ``file://`` URL.
* ``GitRepo``: ``repo.commit({"path": "content"}, message=..., branch="main") -> sha``
  commits in a working clone and pushes it; ``repo.tag(name, sha)``; ``repo.head(branch)``.
* ``unused_port()``: a port nothing listens on (for "unreachable repository" tests).

The fixtures' Python names differ from their pytest names (so a module that imports
them can take ``git_server`` as a parameter without shadowing anything): a conftest or a
test module makes them visible with
``from tests.git_support import git_files_fixture, git_server_fixture``.
Git runs with no user or system configuration, so the machine's settings do not leak in.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import pytest

__all__ = ["GitHost", "GitRepo", "GitServer", "git_env", "git_files_fixture",
           "git_server_fixture", "unused_port"]

# Variables that would point git at another repository (set inside git hooks, e.g.
# when the suite runs from a pre-commit hook).
_REPO_VARS = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY",
              "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_NAMESPACE")


def git_env() -> dict[str, str]:
    """The environment the helpers run git with: no user/system config, fixed identity."""
    env = {k: v for k, v in os.environ.items() if k not in _REPO_VARS}
    env.update({
        "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C",
        "GIT_AUTHOR_NAME": "Cyclone Test", "GIT_AUTHOR_EMAIL": "test@cyclone.invalid",
        "GIT_COMMITTER_NAME": "Cyclone Test", "GIT_COMMITTER_EMAIL": "test@cyclone.invalid",
    })
    return env


def _run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *map(str, args)], cwd=cwd, env=git_env(),
                          capture_output=True, text=True, timeout=30, check=False)


def _git(*args: str | Path, cwd: Path | None = None) -> str:
    done = _run(*args, cwd=cwd)
    if done.returncode != 0:
        raise AssertionError(f"git {' '.join(map(str, args))} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def unused_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class GitRepo:
    """A bare repository (``path``) and a working clone used to push commits to it."""

    def __init__(self, path: Path, work: Path, url: str) -> None:
        self.path = path
        self.work = work
        self.url = url
        self.file_url = path.as_uri()

    def commit(self, files: Mapping[str, str | bytes], message: str = "change",
               branch: str = "main", executable: Iterable[str] = (),
               delete: Iterable[str] = ()) -> str:
        """Write ``files`` (path -> content) on ``branch`` (created from the current
        commit when new), commit, push; return the new commit's SHA."""
        self._switch(branch)
        for name in delete:
            (self.work / name).unlink()
        for name, content in files.items():
            target = self.work / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                target.write_bytes(content)
            else:
                target.write_text(content)
        for name in executable:
            (self.work / name).chmod(0o755)
        _git("add", "-A", cwd=self.work)
        _git("commit", "-q", "--allow-empty", "-m", message, cwd=self.work)
        _git("push", "-q", "origin", f"HEAD:refs/heads/{branch}", cwd=self.work)
        return _git("rev-parse", "HEAD", cwd=self.work)

    def tag(self, name: str, sha: str, message: str = "") -> None:
        """Tag ``sha`` (annotated when ``message`` is given) and push the tag."""
        annotate = ["-a", "-m", message] if message else []
        _git("tag", *annotate, name, sha, cwd=self.work)
        _git("push", "-q", "origin", f"refs/tags/{name}", cwd=self.work)

    def head(self, branch: str = "main") -> str:
        """The SHA ``branch`` points at in the bare repository."""
        return _git("rev-parse", f"refs/heads/{branch}", cwd=self.path)

    def _switch(self, branch: str) -> None:
        if _git("branch", "--list", branch, cwd=self.work):
            _git("checkout", "-q", branch, cwd=self.work)
        elif _run("rev-parse", "--verify", "-q", "HEAD^{commit}", cwd=self.work).returncode == 0:
            _git("checkout", "-q", "-b", branch, cwd=self.work)
        else:  # empty repository: the first commit creates the branch
            _git("checkout", "-q", "--orphan", branch, cwd=self.work)


class GitHost:
    """Bare repositories under ``root``; URLs are ``file://`` (no server needed)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.repos_dir = root / "repos"
        self.work_dir = root / "work"
        self.repos_dir.mkdir(parents=True)
        self.work_dir.mkdir()

    def url_of(self, bare: Path) -> str:
        return bare.as_uri()

    def create(self, name: str, default_branch: str = "main") -> GitRepo:
        """A new empty bare repository ``<name>.git`` whose HEAD is ``default_branch``."""
        bare = self.repos_dir / f"{name}.git"
        _git("init", "-q", "--bare", f"--initial-branch={default_branch}", bare)
        work = self.work_dir / name
        try:
            _git("clone", "-q", bare, work)
        except AssertionError:
            shutil.rmtree(bare)
            raise
        return GitRepo(bare, work, self.url_of(bare))


class GitServer(GitHost):
    """A running ``git daemon`` serving ``repos_dir`` as ``git://127.0.0.1:<port>/``."""

    def __init__(self, root: Path, timeout: float = 10.0) -> None:
        """Start the daemon and return once it accepts connections."""
        super().__init__(root)
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = (root / "daemon.log").open("wb")
        try:
            for _ in range(3):  # the free port may be taken before the daemon binds it
                self.port = unused_port()
                self._proc = subprocess.Popen(
                    ["git", "daemon", "--reuseaddr", "--export-all", "--enable=receive-pack",
                     f"--base-path={self.repos_dir}", "--listen=127.0.0.1",
                     f"--port={self.port}", str(self.repos_dir)],
                    env=git_env(), stdin=subprocess.DEVNULL, stdout=self._log,
                    stderr=self._log,
                    start_new_session=True,  # its connection handlers die with it (killpg)
                )
                if self._listening(self._proc, timeout):
                    return
            raise AssertionError(f"git daemon did not start: {self.log()}")
        except BaseException:
            self.stop()
            raise

    def url_of(self, bare: Path) -> str:
        return f"git://127.0.0.1:{self.port}/{bare.relative_to(self.repos_dir)}"

    def _listening(self, proc: subprocess.Popen[bytes], timeout: float) -> bool:
        """True once the port accepts connections, False if the daemon exited first."""
        deadline = time.monotonic() + timeout
        while proc.poll() is None:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return True
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"git daemon not listening after {timeout}s: {self.log()}") from None
            time.sleep(0.02)  # polling interval of a deadline-bounded wait
        return False

    def log(self) -> str:
        return (self.root / "daemon.log").read_text(errors="replace").strip()

    def stop(self) -> None:
        """Stop the daemon and its connection handlers; safe twice."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self._log.close()


@pytest.fixture(name="git_server")
def git_server_fixture(tmp_path: Path) -> Iterator[GitServer]:
    """A real ``git daemon`` for this test, with push enabled."""
    server = GitServer(tmp_path / "git")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(name="git_files")
def git_files_fixture(tmp_path: Path) -> GitHost:
    """Bare repositories reached by ``file://`` URLs (or plain paths: ``repo.path``)."""
    return GitHost(tmp_path / "git")
