"""The plain-Git post-receive hook: installed into a real bare repository, run by a real
``git push``, heard by a small HTTP server that checks it as Cyclone's endpoint does
(``verify`` then ``parse`` of the generic provider)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from cyclone.githook import CONFIG_NAME, GitHookError, install_hook
from services.api.hooks import HookAuthError, Ignored, parse, verify
from shared.forge import ForgeEvent
from tests.git_support import GitHost, GitRepo, git_env, unused_port
from tests.support import HANG_S, eventually

SECRET = "correct horse battery staple"


@dataclass
class Receiver:
    """What the endpoint was sent: parsed events, delivery ids, refused deliveries."""

    secret: str
    url: str = ""
    events: list[ForgeEvent | Ignored] = field(default_factory=list)
    deliveries: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            verify("generic", request.headers, body, self.secret)
        except HookAuthError as exc:
            self.refused.append(str(exc))
            return web.json_response({"error": "unauthorized", "detail": str(exc)}, status=401)
        event = parse("generic", request.headers, body)
        self.events.append(event)
        self.deliveries.append(request.headers["X-Cyclone-Delivery"])
        return web.json_response({"accepted": True}, status=202)


@contextlib.asynccontextmanager
async def receiver(secret: str = SECRET) -> AsyncIterator[Receiver]:
    got = Receiver(secret=secret)
    app = web.Application()
    app.router.add_post("/api/v1/hooks/generic/demo", got.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        got.url = f"http://{host}:{port}/api/v1/hooks/generic/demo"
        yield got
    finally:
        await runner.cleanup()


async def git(work: Path, *args: str) -> tuple[int, str]:
    """Run git in ``work`` without blocking the loop (the receiver answers meanwhile)."""
    proc = await asyncio.create_subprocess_exec(
        "git", *args, cwd=work, env=git_env(), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), HANG_S)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


async def commit(work: Path, files: dict[str, str], message: str,
                 delete: tuple[str, ...] = ()) -> str:
    for name in delete:
        (work / name).unlink()
    for name, text in files.items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text(text)
    for args in (("add", "-A"), ("commit", "-q", "-m", message)):
        code, out = await git(work, *args)
        assert code == 0, out
    return (await git(work, "rev-parse", "HEAD"))[1].strip()


@pytest.fixture
def repo(git_files: GitHost) -> GitRepo:
    """A bare repository with a first commit on main (pushed before any hook exists)."""
    repo = git_files.create("demo")
    repo.commit({"README.md": "demo\n", "src/app.py": "print(1)\n", "old.txt": "x\n"},
                message="first")
    return repo


def pushes(got: Receiver) -> list[ForgeEvent]:
    return [e for e in got.events if isinstance(e, ForgeEvent)]


async def test_a_push_notifies_cyclone_with_branch_commit_and_changed_paths(
        repo: GitRepo) -> None:
    async with receiver() as got:
        hook = install_hook(repo.path, got.url, SECRET)
        assert hook == repo.path / "hooks" / "post-receive"
        before = repo.head("main")
        sha = await commit(repo.work, {"src/app.py": "print(2)\n", "docs/guide.md": "# Guide\n"},
                           "Print two\n\nBecause one was not enough.", delete=("old.txt",))
        code, out = await git(repo.work, "push", "origin", "HEAD:refs/heads/main")
        assert code == 0, out
        await eventually(lambda: got.events, what="the hook's delivery")
    assert got.events == [ForgeEvent(
        kind="push", provider="generic", delivery=got.deliveries[0],
        repo_url=repo.path.as_uri(), ref="refs/heads/main", branch="main", commit=sha,
        before=before, changed_paths=("docs/guide.md", "old.txt", "src/app.py"),
        author="Cyclone Test", message="Print two\n\nBecause one was not enough.")]
    assert len(got.deliveries[0]) >= 16
    assert "cyclone: refs/heads/main: notified" in out
    assert repo.head("main") == sha


async def test_new_branch_annotated_tag_and_deletion_each_notify(repo: GitRepo) -> None:
    async with receiver() as got:
        install_hook(repo.path, got.url, SECRET, repo_url="ssh://git.example.com/demo.git")
        sha = await commit(repo.work, {"feature.txt": "f\n"}, "Feature")
        code, out = await git(repo.work, "tag", "-a", "-m", "Release 1", "v1", sha)
        assert code == 0, out
        code, out = await git(repo.work, "push", "origin", "HEAD:refs/heads/feature",
                              "refs/tags/v1")
        assert code == 0, out
        await eventually(lambda: len(got.events) == 2, what="two deliveries for two refs")
        code, out = await git(repo.work, "push", "origin", ":refs/heads/feature")
        assert code == 0, out
        await eventually(lambda: len(got.events) == 3, what="the deletion's delivery")
    branch, tag, deleted = sorted(pushes(got)[:2], key=lambda e: e.kind) + pushes(got)[2:]
    assert (branch.kind, branch.branch, branch.commit) == ("push", "feature", sha)
    assert branch.before == "0" * 40 and branch.changed_paths is None  # new: nothing to diff
    assert branch.repo_url == "ssh://git.example.com/demo.git"
    assert (tag.kind, tag.tag, tag.commit, tag.changed_paths) == ("tag", "v1", sha, None)
    assert (deleted.kind, deleted.branch, deleted.deleted, deleted.before) == (
        "push", "feature", True, sha)
    assert len(set(got.deliveries)) == 3, "every delivery has its own id"


async def test_cyclone_down_the_push_still_succeeds_with_a_warning(repo: GitRepo) -> None:
    url = f"http://127.0.0.1:{unused_port()}/api/v1/hooks/generic/demo"
    install_hook(repo.path, url, SECRET)
    sha = await commit(repo.work, {"a.txt": "a\n"}, "A")
    code, out = await git(repo.work, "push", "origin", "HEAD:refs/heads/main")  # no hang
    assert code == 0, out
    assert repo.head("main") == sha
    assert f"cyclone: warning: Cyclone at {url} did not answer" in out
    assert "The push is done." in out


async def test_cyclone_hanging_holds_the_push_only_for_the_hooks_budget(
        repo: GitRepo) -> None:
    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        install_hook(repo.path, f"http://127.0.0.1:{port}/hook", SECRET, timeout=1.0)
        sha = await commit(repo.work, {"b.txt": "b\n"}, "B")
        # The server never answers: that the push comes back at all (``git`` fails at
        # its 60 s deadline otherwise) is the hook giving up; how soon is not timed.
        code, out = await git(repo.work, "push", "origin", "HEAD:refs/heads/main",
                              "HEAD:refs/heads/second")
    assert code == 0, out
    assert repo.head("main") == sha and repo.head("second") == sha
    # At the first silence it gives up on the rest of the push: both refs are reported.
    # On a loaded machine the 1 s may run out before the request is even sent.
    assert re.search(r"did not answer \((timed out|out of time)\); 2 ref\(s\) not notified",
                     out), out


async def test_a_refused_delivery_is_a_warning_naming_the_reason(repo: GitRepo) -> None:
    async with receiver(secret="the project's new secret") as got:
        install_hook(repo.path, got.url, SECRET)
        sha = await commit(repo.work, {"c.txt": "c\n"}, "C")
        code, out = await git(repo.work, "push", "origin", "HEAD:refs/heads/main")
    assert code == 0, out
    assert repo.head("main") == sha
    assert got.refused and not got.events
    assert ("cyclone: warning: refs/heads/main: Cyclone answered HTTP 401: "
            "X-Cyclone-Signature does not match") in out


def test_the_secret_is_kept_in_a_file_only_its_owner_reads(repo: GitRepo) -> None:
    hook = install_hook(repo.path, "https://ci.example.com/api/v1/hooks/generic/demo", SECRET)
    assert SECRET not in hook.read_text()
    assert stat.S_IMODE(hook.stat().st_mode) == 0o755
    config = repo.path / CONFIG_NAME
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert json.loads(config.read_text())["secret"] == SECRET
    # Installing again updates it in place.
    install_hook(repo.path, "https://ci2.example.com/hook", "another secret", timeout=2)
    assert json.loads(config.read_text()) == {
        "url": "https://ci2.example.com/hook", "secret": "another secret", "timeout": 2,
        "repo_url": repo.path.as_uri()}
    assert stat.S_IMODE(config.stat().st_mode) == 0o600


def test_only_a_bare_repository_takes_the_hook(repo: GitRepo, tmp_path: Path) -> None:
    url = "https://ci.example.com/hook"
    with pytest.raises(GitHookError, match="is not a bare repository"):
        install_hook(repo.work, url, SECRET)
    with pytest.raises(GitHookError, match="is not a Git repository"):
        install_hook(tmp_path, url, SECRET)
    with pytest.raises(GitHookError, match="is not a directory"):
        install_hook(tmp_path / "missing.git", url, SECRET)
    with pytest.raises(GitHookError, match="is inside the repository"):
        install_hook(repo.path / "refs", url, SECRET)
    assert not (repo.work / ".git" / "hooks" / "post-receive").exists()


def test_bad_arguments_and_a_foreign_hook_are_refused(repo: GitRepo) -> None:
    with pytest.raises(GitHookError, match="must start with http"):
        install_hook(repo.path, "ci.example.com/hook", SECRET)
    with pytest.raises(GitHookError, match="secret is empty"):
        install_hook(repo.path, "https://ci.example.com/hook", "")
    theirs = repo.path / "hooks" / "post-receive"
    theirs.write_text("#!/bin/sh\necho mail the team\n")
    with pytest.raises(GitHookError, match="was not written by Cyclone"):
        install_hook(repo.path, "https://ci.example.com/hook", SECRET)
    assert "mail the team" in theirs.read_text()
    install_hook(repo.path, "https://ci.example.com/hook", SECRET, force=True)
    assert "mail the team" not in theirs.read_text()
