"""GitCheckout under a burst of runs of one repository: what runs in parallel, and that
one commit is fetched once. The repository is served through ``UploadPackProbe``, a real
``git-upload-pack`` behind a wrapper that records (and can hold) each connection."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from services.workermanager.checkout import GitCheckout
from tests.git_support import GitHost, GitRepo, UploadPackProbe, git_env
from tests.support import HANG_S, eventually

BURST = 8


class Lines(list[str]):
    """An ``on_line`` sink keeping every line in order."""

    async def __call__(self, line: str) -> None:
        self.append(line)


@pytest.fixture
def repo(git_files: GitHost) -> GitRepo:
    return git_files.create("burst")


@pytest.fixture
def probe(repo: GitRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> UploadPackProbe:
    """``repo.file_url`` served through the probe, for every git this test runs."""
    probe = UploadPackProbe(tmp_path / "probe", repo.file_url)
    for name, value in probe.config().items():
        monkeypatch.setenv(name, value)
    return probe


def mirror_ref(checkout: GitCheckout, url: str, ref: str) -> str:
    return subprocess.run(["git", "rev-parse", ref], cwd=checkout.mirror_path(url),
                          env=git_env(), capture_output=True, text=True, timeout=30,
                          check=True).stdout.strip()


@pytest.mark.parametrize("how", ["ref-new-mirror", "ref-moved-branch", "commit"])
async def test_a_burst_of_runs_of_one_commit_fetches_it_once(
        repo: GitRepo, probe: UploadPackProbe, tmp_path: Path, how: str) -> None:
    checkout = GitCheckout(tmp_path / "cache", timeout=HANG_S)
    sha = repo.commit({".cyclone.yml": "first\n"})
    if how == "ref-moved-branch":
        await checkout.resolve(repo.file_url, ref="main")
        sha = repo.commit({".cyclone.yml": "second\n"})
    lines = Lines()
    args = {"commit": sha} if how == "commit" else {"ref": "main"}

    results = await asyncio.gather(*(
        GitCheckout(tmp_path / "cache", on_line=lines, timeout=HANG_S).resolve(
            repo.file_url, **args) for _ in range(BURST)))

    assert {(r.commit, r.pipeline) for r in results} == {
        (sha, "second\n" if how == "ref-moved-branch" else "first\n")}
    fetches = [line for line in lines if line.startswith("$ git fetch")]
    assert len(fetches) == 1, lines
    if how != "commit":
        # The ref fetched into was moved too, although only one run fetched.
        assert mirror_ref(checkout, repo.file_url, "refs/heads/main") == sha


async def test_a_burst_lists_the_remote_in_parallel(repo: GitRepo,
                                                    probe: UploadPackProbe,
                                                    tmp_path: Path) -> None:
    sha = repo.commit({".cyclone.yml": "x\n"})
    # Each connection waits until all BURST listings have started: they can only end
    # if they run at the same time.
    probe.barrier(BURST)

    results = await asyncio.gather(*(
        GitCheckout(tmp_path / "cache", timeout=HANG_S).resolve(repo.file_url)
        for _ in range(BURST)))

    assert {r.commit for r in results} == {sha}
    connections = probe.connections()
    assert len(connections) == BURST + 1  # the listings, then one fetch
    listings = connections[:BURST]
    ends = [c.end for c in listings if c.end is not None]
    assert len(ends) == BURST
    assert max(c.start for c in listings) < min(ends)  # one instant inside all of them


async def test_a_commit_in_the_mirror_is_read_while_a_fetch_holds_the_lock(
        repo: GitRepo, probe: UploadPackProbe, tmp_path: Path) -> None:
    old = repo.commit({".cyclone.yml": "old\n", "bin/run": "#!/bin/sh\n"},
                      executable=["bin/run"])
    checkout = GitCheckout(tmp_path / "cache", timeout=HANG_S)
    await checkout.resolve(repo.file_url)
    before = len(probe.connections())  # its ls-remote and its fetch
    new = repo.commit({".cyclone.yml": "new\n"})
    probe.hold()
    fetching = asyncio.create_task(checkout.resolve(repo.file_url, commit=new))
    try:
        await eventually(lambda: len(probe.connections()) > before,
                         what="the fetch of the new commit")

        # Neither waits for the fetch in progress, which holds the mirror's lock.
        resolved = await checkout.resolve(repo.file_url, commit=old)
        await checkout.export(repo.file_url, old, tmp_path / "out")
        tar = b"".join([chunk async for chunk in checkout.archive(repo.file_url, old)])

        assert probe.connections()[before].end is None, "the fetch was still held"
        assert (resolved.commit, resolved.pipeline) == (old, "old\n")
        assert (tmp_path / "out/bin/run").read_text() == "#!/bin/sh\n"
        assert b"bin/run" in tar
    finally:
        probe.release()
    assert (await fetching).pipeline == "new\n"
