"""GitCheckout.pinned and read_file, what an include from another project uses, against a
real ``git daemon``: a tag or a full commit id becomes a commit in the mirror; a branch is
refused; failures say what is missing."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from services.workermanager.checkout import CheckoutError, GitCheckout
from tests.git_support import GitRepo, GitServer, git_env
from tests.support import HANG_S


@pytest.fixture
def checkout(tmp_path: Path) -> GitCheckout:
    return GitCheckout(tmp_path / "cache", timeout=HANG_S)


@pytest.fixture
def shared(git_server: GitServer) -> GitRepo:
    return git_server.create("shared")


async def test_a_tag_names_its_commit_annotated_or_not(checkout: GitCheckout,
                                                       shared: GitRepo) -> None:
    first = shared.commit({"ci/a.yml": "one\n"})
    second = shared.commit({"ci/a.yml": "two\n"})
    shared.tag("v1", first)
    shared.tag("v2", second, message="annotated")
    assert await checkout.pinned(shared.url, "v1") == first
    assert await checkout.pinned(shared.url, "refs/tags/v2") == second
    assert await checkout.read_file(shared.url, first, "ci/a.yml") == "one\n"
    assert await checkout.read_file(shared.url, second, "ci/a.yml") == "two\n"


async def test_a_full_commit_id_is_fetched_even_off_every_branch_head(
        checkout: GitCheckout, shared: GitRepo) -> None:
    old = shared.commit({"ci/a.yml": "old\n"})
    shared.commit({"ci/a.yml": "new\n"})
    assert await checkout.pinned(shared.url, old) == old
    assert await checkout.read_file(shared.url, old, "ci/a.yml") == "old\n"


async def test_a_branch_is_refused_and_a_missing_tag_or_file_named(
        checkout: GitCheckout, shared: GitRepo) -> None:
    sha = shared.commit({"ci/a.yml": "x\n"})
    with pytest.raises(CheckoutError, match=r"^'main' is a branch, which moves, not a tag"):
        await checkout.pinned(shared.url, "main")
    with pytest.raises(CheckoutError, match=r"^no tag 'v9' in git://.*/shared\.git$"):
        await checkout.pinned(shared.url, "v9")
    with pytest.raises(CheckoutError, match=r"no tag 'abc1234' .* \(a commit is named by "
                                            r"its full 40-hex id\)$"):
        await checkout.pinned(shared.url, "abc1234")
    with pytest.raises(CheckoutError, match=f"^no file ci/b.yml at {sha} in git://"):
        await checkout.read_file(shared.url, await checkout.pinned(shared.url, sha),
                                 "ci/b.yml")


async def test_a_moved_tag_names_its_new_commit(checkout: GitCheckout, shared: GitRepo,
                                                tmp_path: Path) -> None:
    """Why a run records the commit and content it read: a tag can be moved."""
    first = shared.commit({"ci/a.yml": "one\n"})
    shared.tag("v1", first)
    assert await checkout.pinned(shared.url, "v1") == first
    second = shared.commit({"ci/a.yml": "two\n"})
    _move_tag(shared, "v1", second)
    assert await checkout.pinned(shared.url, "v1") == second


def _move_tag(repo: GitRepo, name: str, sha: str) -> None:
    """``git tag -f`` and a forced push of the tag."""
    for args in (["tag", "-f", name, sha], ["push", "-q", "-f", "origin", f"refs/tags/{name}"]):
        subprocess.run(["git", *args], cwd=repo.work, env=git_env(), check=True,
                       capture_output=True, timeout=30)
