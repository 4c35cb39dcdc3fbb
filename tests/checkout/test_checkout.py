"""GitCheckout against a real ``git daemon`` (and ``file://``): resolving refs and commits,
reading the pipeline file, exporting and archiving trees, and how failures read.
(Concurrency: test_concurrency.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import os
import re
import stat
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.workermanager.checkout import (
    CheckoutError,
    GitCheckout,
    Resolved,
    mask_credentials,
)
from tests.git_support import GitHost, GitRepo, GitServer, unused_port
from tests.support import HANG_S, eventually

# The git_server and git_files fixtures come from tests/git_support.py via tests/conftest.py.

PIPELINE = "jobs:\n  build:\n    steps: [{run: [make]}]\n"


class Lines(list[str]):
    """An ``on_line`` sink keeping every line in order."""

    async def __call__(self, line: str) -> None:
        self.append(line)


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def lines() -> Lines:
    return Lines()


@pytest.fixture
def checkout(cache: Path, lines: Lines) -> GitCheckout:
    return GitCheckout(cache, on_line=lines, timeout=HANG_S)


@pytest.fixture
def demo(git_server: GitServer) -> GitRepo:
    return git_server.create("demo")


@pytest.fixture
async def silent_server() -> AsyncIterator[int]:
    """A TCP port that accepts connections and never answers (a hung Git server)."""
    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client goes away
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def test_resolves_the_remote_default_branch(git_server: GitServer,
                                                  checkout: GitCheckout) -> None:
    repo = git_server.create("trunky", default_branch="trunk")
    sha = repo.commit({".cyclone.yml": PIPELINE}, branch="trunk")

    assert await checkout.resolve(repo.url) == Resolved(
        commit=sha, branch="trunk", pipeline_file=".cyclone.yml", pipeline=PIPELINE)
    assert re.fullmatch(r"[0-9a-f]{40}", sha)


async def test_resolves_a_named_branch_again_after_it_moved(demo: GitRepo,
                                                            checkout: GitCheckout) -> None:
    demo.commit({".cyclone.yml": "on: main\n"})
    first = demo.commit({".cyclone.yml": "feature one\n"}, branch="feature")
    resolved = await checkout.resolve(demo.url, ref="feature")
    assert (resolved.commit, resolved.branch, resolved.pipeline) == (
        first, "feature", "feature one\n")

    second = demo.commit({".cyclone.yml": "feature two\n"}, branch="feature")
    resolved = await checkout.resolve(demo.url, ref="refs/heads/feature")

    assert second != first
    assert (resolved.commit, resolved.branch, resolved.pipeline) == (
        second, "feature", "feature two\n")


@pytest.mark.parametrize("annotated", [True, False], ids=["annotated", "lightweight"])
async def test_resolves_a_tag_to_its_commit_with_no_branch(demo: GitRepo, checkout: GitCheckout,
                                                           annotated: bool) -> None:
    tagged = demo.commit({".cyclone.yml": "release\n"})
    demo.tag("v1.0", tagged, message="release 1.0" if annotated else "")
    demo.commit({".cyclone.yml": "later\n"})

    resolved = await checkout.resolve(demo.url, ref="v1.0")

    assert (resolved.commit, resolved.branch, resolved.pipeline) == (tagged, "", "release\n")


@pytest.mark.parametrize("protocol", ["2", "0"], ids=["sha-want", "server-refuses-sha-want"])
async def test_rerun_resolves_and_exports_the_old_commit_after_the_branch_moved(
        demo: GitRepo, checkout: GitCheckout, tmp_path: Path, lines: Lines,
        monkeypatch: pytest.MonkeyPatch, protocol: str) -> None:
    # Protocol v0 without uploadpack.allowReachableSHA1InWant refuses a commit by SHA,
    # as older servers do; the checkout must then fetch the whole history instead.
    monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
    monkeypatch.setenv("GIT_CONFIG_KEY_0", "protocol.version")
    monkeypatch.setenv("GIT_CONFIG_VALUE_0", protocol)
    old = demo.commit({".cyclone.yml": "old\n", "old.txt": "old content\n"})
    demo.commit({".cyclone.yml": "new\n", "new.txt": "new\n"}, delete=["old.txt"])
    demo.commit({".cyclone.yml": "newer\n"})
    assert (await checkout.resolve(demo.url, ref="main")).pipeline == "newer\n"

    resolved = await checkout.resolve(demo.url, ref="main", commit=old)
    dest = tmp_path / "workspace" / "src"
    await checkout.export(demo.url, resolved.commit, dest)

    assert (resolved.commit, resolved.branch, resolved.pipeline) == (old, "main", "old\n")
    assert (dest / "old.txt").read_text() == "old content\n"
    assert sorted(p.name for p in dest.iterdir()) == [".cyclone.yml", "old.txt"]
    full_fetches = [line for line in lines if "refs/heads/*" in line]
    assert len(full_fetches) == (1 if protocol == "0" else 0), lines


async def test_an_abbreviated_commit_resolves_to_the_full_sha(demo: GitRepo,
                                                              checkout: GitCheckout) -> None:
    old = demo.commit({".cyclone.yml": "old\n"})
    demo.commit({".cyclone.yml": "new\n"})

    resolved = await checkout.resolve(demo.url, commit=old[:10])

    assert (resolved.commit, resolved.branch, resolved.pipeline) == (old, "", "old\n")


async def test_reads_caicloud_yml_when_there_is_no_cyclone_yml(demo: GitRepo,
                                                              checkout: GitCheckout) -> None:
    demo.commit({"caicloud.yml": "build:\n  image: x\n"})

    resolved = await checkout.resolve(demo.url)

    assert (resolved.pipeline_file, resolved.pipeline) == ("caicloud.yml", "build:\n  image: x\n")


async def test_a_configured_pipeline_file_is_read_from_its_path(demo: GitRepo,
                                                               checkout: GitCheckout) -> None:
    demo.commit({"ci/build.yml": "custom\n", ".cyclone.yml": "default\n"})

    resolved = await checkout.resolve(demo.url, pipeline_file="ci/build.yml")

    assert (resolved.pipeline_file, resolved.pipeline) == ("ci/build.yml", "custom\n")


async def test_pipeline_files_are_read_alike_before_and_after_the_mirror_has_the_commit(
        demo: GitRepo, checkout: GitCheckout) -> None:
    # The first resolve fetches; the later ones find the commit in the mirror and read
    # it and its pipeline file with one git process: both must read the same.
    sha = demo.commit({"ci files/build #1.yml": "spaced\n", ".cyclone.yml/x": "a directory\n",
                       "caicloud.yml": "legacy\n"})

    for _ in range(2):
        spaced = await checkout.resolve(demo.url, pipeline_file="ci files/build #1.yml")
        dotted = await checkout.resolve(demo.url, commit=sha[:10],
                                        pipeline_file="./ci files/build #1.yml")
        legacy = await checkout.resolve(demo.url)  # .cyclone.yml is no file: caicloud.yml
        with pytest.raises(CheckoutError) as newline:
            await checkout.resolve(demo.url, pipeline_file="ci\nfiles")

        assert (spaced.commit, spaced.pipeline_file, spaced.pipeline) == (
            sha, "ci files/build #1.yml", "spaced\n")
        assert (dotted.commit, dotted.pipeline_file, dotted.pipeline) == (
            sha, "./ci files/build #1.yml", "spaced\n")
        assert (legacy.pipeline_file, legacy.pipeline) == ("caicloud.yml", "legacy\n")
        assert str(newline.value) == f"no ci\nfiles at {sha} in {demo.url}"


async def test_a_missing_pipeline_file_is_named_with_commit_and_repository(
        demo: GitRepo, checkout: GitCheckout) -> None:
    sha = demo.commit({"README": "no pipeline here\n"})

    with pytest.raises(CheckoutError) as default:
        await checkout.resolve(demo.url)
    with pytest.raises(CheckoutError) as custom:  # no caicloud.yml fallback for a custom file
        await checkout.resolve(demo.url, pipeline_file="ci/build.yml")

    assert str(default.value) == f"no .cyclone.yml (or caicloud.yml) at {sha} in {demo.url}"
    assert str(custom.value) == f"no ci/build.yml at {sha} in {demo.url}"


async def test_an_unknown_branch_or_commit_is_named_with_the_repository(
        demo: GitRepo, checkout: GitCheckout) -> None:
    demo.commit({".cyclone.yml": PIPELINE})
    missing = "0123456789abcdef0123456789abcdef01234567"

    with pytest.raises(CheckoutError) as branch:
        await checkout.resolve(demo.url, ref="no-such-branch")
    with pytest.raises(CheckoutError) as commit:
        await checkout.resolve(demo.url, commit=missing)

    assert str(branch.value) == f"no branch or tag 'no-such-branch' in {demo.url}"
    assert str(commit.value) == f"no commit {missing} in {demo.url}"


@pytest.mark.parametrize("how", ["ref", "commit"])
async def test_an_unreachable_repository_fails_with_gits_message(checkout: GitCheckout,
                                                                 how: str) -> None:
    url = f"git://127.0.0.1:{unused_port()}/gone.git"
    args = {"commit": "0123456789abcdef0123456789abcdef01234567"} if how == "commit" else {}

    with pytest.raises(CheckoutError) as caught:
        await checkout.resolve(url, **args)

    message = str(caught.value)
    assert url in message
    assert "unable to connect" in message and "Connection refused" in message
    assert "Traceback" not in message and "File \"" not in message


@pytest.mark.parametrize("scheme", ["git", "https"])
async def test_credentials_in_the_url_never_show(checkout: GitCheckout, lines: Lines,
                                                 scheme: str) -> None:
    url = f"{scheme}://user:secret@127.0.0.1:{unused_port()}/x.git"

    with pytest.raises(CheckoutError) as caught:
        await checkout.resolve(url)

    everything = "\n".join([str(caught.value), *lines])
    assert "secret" not in everything
    assert "***@127.0.0.1" in str(caught.value)
    assert lines, "the clone attempt is logged"


def test_mask_credentials_masks_userinfo_of_urls() -> None:
    assert mask_credentials("from https://tok@github.com/o/r and ssh://u:p@h/r") == (
        "from https://***@github.com/o/r and ssh://***@h/r")
    assert mask_credentials("unable to look up u:p%40ss@h", "git://u:p%40ss@h/r") == (
        "unable to look up ***@h")


async def test_the_mirror_is_reused_across_runs(demo: GitRepo, cache: Path) -> None:
    demo.commit({".cyclone.yml": PIPELINE, "big.txt": "x" * 10_000})
    first_log, second_log = Lines(), Lines()
    await GitCheckout(cache, on_line=first_log).resolve(demo.url)

    second = await GitCheckout(cache, on_line=second_log).resolve(demo.url)
    demo.commit({".cyclone.yml": "changed\n"})
    third_log = Lines()
    third = await GitCheckout(cache, on_line=third_log).resolve(demo.url)

    assert (second.pipeline, third.pipeline) == (PIPELINE, "changed\n")
    assert list(cache.iterdir()) == [cache / hashlib.sha256(demo.url.encode()).hexdigest()]
    assert any(re.search(r"remote: Total [1-9]", line) for line in first_log), first_log
    # The listed commit was in the mirror already: no fetch at all.
    assert second_log == [f"$ git ls-remote --symref {demo.url} HEAD"]
    # The branch moved: only the new commit, its tree and the changed file came.
    assert any(line.startswith("remote: Total 3 ") for line in third_log), third_log


async def test_export_writes_nested_files_and_keeps_the_executable_bit(
        demo: GitRepo, cache: Path, tmp_path: Path) -> None:
    sha = demo.commit({".cyclone.yml": PIPELINE, "src/pkg/deep/mod.py": "X = 1\n",
                       "bin/run.sh": "#!/bin/sh\necho hi\n", "data.bin": bytes(range(256))},
                      executable=["bin/run.sh"])
    dest = tmp_path / "out" / "workspace"

    # A fresh cache: export fetches the commit itself.
    await GitCheckout(cache).export(demo.url, sha, dest)

    assert (dest / "src/pkg/deep/mod.py").read_text() == "X = 1\n"
    assert (dest / "data.bin").read_bytes() == bytes(range(256))
    assert (dest / "bin/run.sh").stat().st_mode & stat.S_IXUSR
    assert not (dest / "src/pkg/deep/mod.py").stat().st_mode & stat.S_IXUSR
    assert not (dest / ".git").exists()


def tar_as_tree(data: bytes) -> dict[str, tuple[str, bytes]]:
    """The members of a tar archive in the shape of ``GitRepo.tree``; their modes must be
    the ones a checkout under umask 022 makes."""
    entries: dict[str, tuple[str, bytes]] = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar:
            if member.isdir():
                assert member.mode == 0o755, member.name
                entries[member.name.rstrip("/")] = ("040000", b"")
            elif member.issym():
                entries[member.name] = ("120000", member.linkname.encode())
            else:
                assert member.isreg() and member.mode in (0o644, 0o755), member.name
                content = tar.extractfile(member)
                assert content is not None
                entries[member.name] = ("100755" if member.mode & 0o100 else "100644",
                                        content.read())
    return entries


async def test_archive_streams_the_commits_tree_with_modes_and_symlinks(
        demo: GitRepo, cache: Path) -> None:
    sha = demo.commit({".cyclone.yml": PIPELINE, "src/pkg/mod.py": "X = 1\n",
                       "bin/run.sh": "#!/bin/sh\necho hi\n",
                       "data.bin": os.urandom(600 * 1024)},  # several chunks
                      executable=["bin/run.sh"],
                      symlinks={"latest": "bin/run.sh", "src/up": "../data.bin"})
    demo.commit({".cyclone.yml": "later\n"}, delete=["latest"])

    # A fresh cache: archive fetches the commit itself.
    chunks = [chunk async for chunk in GitCheckout(cache).archive(demo.url, sha)]

    assert tar_as_tree(b"".join(chunks)) == demo.tree(sha)
    assert {"bin/run.sh", "latest", "src/up"} <= set(demo.tree(sha))
    assert [len(chunk) for chunk in chunks[:-1]] == [256 * 1024] * (len(chunks) - 1)
    assert 0 < len(chunks[-1]) <= 256 * 1024


async def blocked_writer(sha: str) -> int:
    """The pid of the process whose command line names ``sha``, once it is blocked
    writing to a full pipe and has written nothing more while the event loop ran for a
    polling interval: its reader has stopped reading (asyncio paused the pipe), rather
    than not having come round to it yet."""
    seen: list[tuple[int, str]] = []  # (pid, bytes written) of each poll that found it

    def stalled() -> bool:
        for entry in Path("/proc").iterdir():
            with contextlib.suppress(OSError):  # gone meanwhile, or not a process
                if (entry.name.isdigit() and sha.encode() in (entry / "cmdline").read_bytes()
                        and "pipe_write" in (entry / "wchan").read_text()):
                    written = re.findall(r"wchar: \d+", (entry / "io").read_text())[0]
                    seen.append((int(entry.name), written))
                    return len(seen) > 1 and seen[-2] == seen[-1]
        seen.clear()
        return False

    await eventually(stalled, what=f"a process naming {sha} blocked writing")
    return seen[-1][0]


@pytest.mark.skipif(not Path("/proc/self/wchan").exists(), reason="needs Linux's /proc")
@pytest.mark.parametrize("stop", ["aclose", "cancel", "break"])
async def test_stopping_an_archive_early_kills_git(demo: GitRepo, checkout: GitCheckout,
                                                   stop: str) -> None:
    # Far more than the pipe and the stream's buffer hold: once the consumer stalls,
    # asyncio stops reading the pipe and git blocks writing the rest.
    sha = demo.commit({".cyclone.yml": PIPELINE, "big.bin": os.urandom(4 * 1024 * 1024)})
    pids: list[int] = []

    async def stall_then_stop() -> None:
        tar = checkout.archive(demo.url, sha)
        if stop == "break":  # no aclose: the event loop closes it once it is collected
            async for _ in tar:
                pids.append(await blocked_writer(sha))
                break
            return
        async with contextlib.aclosing(tar):
            async for _ in tar:
                pids.append(await blocked_writer(sha))
                if stop == "cancel":
                    await asyncio.Event().wait()  # until cancelled
                return

    task = asyncio.create_task(stall_then_stop())
    if stop == "cancel":
        await eventually(lambda: pids, what="git archive blocked writing")
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, HANG_S)

    [pid] = pids
    if stop == "break":  # the generator's aclose runs as a task of its own
        await eventually(lambda: asyncio.all_tasks() == {asyncio.current_task()},
                         what="the archive generator to be closed")
    assert not Path(f"/proc/{pid}").exists()  # killed and reaped: not even a zombie


async def test_archive_of_an_unknown_or_malformed_commit_raises(demo: GitRepo,
                                                               checkout: GitCheckout) -> None:
    demo.commit({".cyclone.yml": PIPELINE})
    missing = "0123456789abcdef0123456789abcdef01234567"

    with pytest.raises(CheckoutError) as unknown:
        async for _ in checkout.archive(demo.url, missing):
            pass
    with pytest.raises(CheckoutError) as malformed:
        async for _ in checkout.archive(demo.url, "--output=/tmp/x"):
            pass

    assert str(unknown.value) == f"no commit {missing} in {demo.url}"
    assert str(malformed.value) == "'--output=/tmp/x' is not a commit id"


async def test_a_failing_git_archive_raises_with_gits_message(demo: GitRepo,
                                                             checkout: GitCheckout) -> None:
    demo.commit({".cyclone.yml": PIPELINE, "kept.txt": "only in the first fetch\n"})
    await checkout.resolve(demo.url)
    packs = list((checkout.mirror_path(demo.url) / "objects" / "pack").iterdir())
    second = demo.commit({".cyclone.yml": "second\n"})
    await checkout.resolve(demo.url)
    for pack in packs:  # the mirror loses kept.txt, which the second commit still has
        pack.unlink()

    with pytest.raises(CheckoutError) as caught:
        async for _ in checkout.archive(demo.url, second):
            pass

    message = str(caught.value)
    assert message.startswith(f"cannot archive {second} of {demo.url}: "), message
    assert "kept.txt" in message  # git's own words for what it could not read


async def test_on_line_shows_the_git_commands_and_their_output(demo: GitRepo,
                                                              checkout: GitCheckout,
                                                              lines: Lines) -> None:
    demo.commit({".cyclone.yml": PIPELINE})

    await checkout.resolve(demo.url, ref="main")

    assert lines[0] == f"$ git ls-remote {demo.url} refs/heads/main refs/tags/main"
    assert any(line.startswith("$ git fetch --depth 1") for line in lines), lines
    assert any(line.startswith("remote: ") for line in lines), lines
    assert all("\r" not in line for line in lines)


async def test_concurrent_resolves_of_one_repository_both_succeed(demo: GitRepo,
                                                                  cache: Path) -> None:
    main = demo.commit({".cyclone.yml": "main\n"})
    feature = demo.commit({".cyclone.yml": "feature\n"}, branch="feature")
    tag = demo.commit({".cyclone.yml": "tagged\n"}, branch="release")
    demo.tag("v2", tag)

    results = await asyncio.gather(
        GitCheckout(cache).resolve(demo.url, ref="main"),
        GitCheckout(cache).resolve(demo.url, ref="feature"),
        GitCheckout(cache).resolve(demo.url, ref="v2"),
        GitCheckout(cache).resolve(demo.url, commit=main))

    assert [(r.commit, r.branch, r.pipeline) for r in results] == [
        (main, "main", "main\n"), (feature, "feature", "feature\n"), (tag, "", "tagged\n"),
        (main, "", "main\n")]


async def test_a_hung_server_fails_after_the_timeout(cache: Path, silent_server: int) -> None:
    url = f"git://127.0.0.1:{silent_server}/hang.git"

    with pytest.raises(CheckoutError, match=r"git ls-remote for .* timed out after 0\.5s"):
        await GitCheckout(cache, timeout=0.5).resolve(url)


@pytest.mark.parametrize("form", ["file-url", "path"])
async def test_resolves_and_exports_a_repository_by_file_url_or_path(
        git_files: GitHost, checkout: GitCheckout, tmp_path: Path, form: str) -> None:
    repo = git_files.create("local")
    sha = repo.commit({".cyclone.yml": PIPELINE, "a/b.txt": "b\n"})
    url = repo.file_url if form == "file-url" else str(repo.path)

    resolved = await checkout.resolve(url)
    await checkout.export(url, resolved.commit, tmp_path / "out")

    assert (resolved.commit, resolved.branch) == (sha, "main")
    assert (tmp_path / "out/a/b.txt").read_text() == "b\n"
