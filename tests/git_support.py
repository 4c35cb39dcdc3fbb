"""Real Git repositories for the test suite: served by a real ``git daemon``, or by path.

* ``git_server`` (fixture): a ``git daemon`` on 127.0.0.1 and a free port, serving bare
  repositories under a temporary directory (push enabled); stopped at the end of the test.
  ``repo = git_server.create("demo")`` makes ``demo.git``; ``repo.url`` is
  ``git://127.0.0.1:<port>/demo.git``.
* ``git_files`` (fixture): the same without a daemon; ``repo.url`` is a ``file://`` URL.
* ``GitRepo``: ``repo.commit({"path": "content"}, message=..., branch="main") -> sha``
  commits in a working clone and pushes it; ``repo.tag(name, sha)``; ``repo.head(branch)``;
  ``repo.tree(sha)``: every entry of a commit's tree, as git stores it.
* ``unused_port()``: a port nothing listens on (for "unreachable repository" tests).
* ``UploadPackProbe(dir, url)``: serves a ``file://`` (or path) URL through a wrapper of
  ``git-upload-pack`` that records when each connection (``ls-remote``, ``fetch``)
  starts and ends, and can hold connections until N have started (to show that they
  overlap) or until released. ``probe.config()`` is the environment that makes git use
  it (``remote.<url>.uploadpack``, which git also applies to a bare URL).

The fixtures' Python names differ from their pytest names (so a module that imports
them can take ``git_server`` as a parameter without shadowing anything): a conftest or a
test module makes them visible with
``from tests.git_support import git_files_fixture, git_server_fixture``.
Git runs with no user or system configuration, so the machine's settings do not leak in.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ["Connection", "GitHost", "GitRepo", "GitServer", "UploadPackProbe", "git_env",
           "git_files_fixture", "git_server_fixture", "unused_port"]

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
               delete: Iterable[str] = (), symlinks: Mapping[str, str] | None = None) -> str:
        """Write ``files`` (path -> content) and ``symlinks`` (path -> target) on
        ``branch`` (created from the current commit when new), commit, push; return the
        new commit's SHA."""
        self._switch(branch)
        for name, points_to in (symlinks or {}).items():
            (self.work / name).parent.mkdir(parents=True, exist_ok=True)
            (self.work / name).symlink_to(points_to)
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

    def tree(self, sha: str) -> dict[str, tuple[str, bytes]]:
        """Every entry of the tree of commit ``sha``, recursively: path -> (git's mode,
        e.g. ``100755``, ``120000`` for a symlink, ``040000`` for a directory; content,
        a symlink's target, ``b""`` for a directory)."""
        listing = subprocess.run(["git", "ls-tree", "-r", "-t", "-z", sha], cwd=self.path,
                                 env=git_env(), capture_output=True, timeout=30, check=True)
        entries: dict[str, tuple[str, bytes]] = {}
        for record in filter(None, listing.stdout.split(b"\0")):
            info, path = record.decode().split("\t", 1)
            mode, kind, obj = info.split()
            content = subprocess.run(["git", "cat-file", "blob", obj], cwd=self.path,
                                     env=git_env(), capture_output=True, timeout=30,
                                     check=True).stdout if kind == "blob" else b""
            entries[path] = (mode, content)
        return entries

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


# The wrapper: logs "start <pid> <ns>", waits while held or while fewer connections than
# the barrier have started (bounded, so a broken test fails instead of hanging), serves,
# then logs "end <pid> <ns>".
_WRAPPER = """#!/bin/sh
dir={dir}
echo "start $$ $(date +%s%N)" >> "$dir/log"
waited=0
while [ -e "$dir/hold" ] || [ "$(grep -c ^start "$dir/log")" -lt "$(cat "$dir/barrier")" ]
do
    [ "$waited" -ge {ticks} ] && break
    sleep 0.02
    waited=$((waited + 1))
done
git upload-pack "$@"
status=$?
echo "end $$ $(date +%s%N)" >> "$dir/log"
exit $status
"""


@dataclass(frozen=True)
class Connection:
    """One upload-pack connection seen by an ``UploadPackProbe``: times in ns."""

    pid: int
    start: int
    end: int | None  # None while it runs


class UploadPackProbe:
    """A ``git-upload-pack`` wrapper for one URL that logs connections and can hold them.

    ``barrier(n)``: every connection waits until ``n`` connections have started (the
    first ``n`` then overlap for sure, if the client lets them; later ones pass at once).
    ``hold()`` / ``release()``: connections wait while held. Waits end after ``deadline``
    s regardless, so a client that serialises its connections makes the test fail, not
    hang.
    """

    def __init__(self, directory: Path, url: str, deadline: float = 30.0) -> None:
        self.dir = directory
        self.url = url
        directory.mkdir(parents=True)
        (directory / "log").touch()
        (directory / "barrier").write_text("0\n")
        self.script = directory / "upload-pack"
        self.script.write_text(_WRAPPER.format(dir=shlex.quote(str(directory)),
                                               ticks=int(deadline / 0.02)))
        self.script.chmod(0o755)

    def config(self) -> dict[str, str]:
        """Environment variables making git serve ``url`` through the wrapper."""
        return {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": f"remote.{self.url}.uploadpack",
                "GIT_CONFIG_VALUE_0": str(self.script)}

    def barrier(self, count: int) -> None:
        (self.dir / "barrier").write_text(f"{count}\n")

    def hold(self) -> None:
        (self.dir / "hold").touch()

    def release(self) -> None:
        (self.dir / "hold").unlink(missing_ok=True)

    def connections(self) -> list[Connection]:
        """Every connection so far, in the order they started."""
        starts: dict[int, int] = {}
        ends: dict[int, int] = {}
        for line in (self.dir / "log").read_text().splitlines():
            event, pid, when = line.split()
            (starts if event == "start" else ends)[int(pid)] = int(when)
        return [Connection(pid, start, ends.get(pid)) for pid, start in starts.items()]


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
