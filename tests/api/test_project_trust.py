"""A project's trust (privileged containers, host volumes) and its maximum resources: shown
to everyone, changed by an admin only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared.pipeline.resources import Policy, Resources
from shared.projections.projects import fold_project, project_stream
from tests.api import support

REPO = "https://example.com/demo.git"
GiB = 1024**3


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[support.Api]:
    async with support.serving(tmp_path, support.Api) as serving:
        yield serving


async def user(api: support.Api) -> support.Api:
    """The same server with a token that is not an admin's."""
    answer, _ = await api.call("POST", "/api/v1/tokens", 201, {"name": "dev"})
    other = support.Api(api.client, api.store, answer["token"])
    return other


async def test_a_new_project_is_untrusted_without_a_maximum(api: support.Api) -> None:
    created, _ = await api.call("POST", "/api/v1/projects", 201, {"name": "demo", "repo": REPO})
    assert (created["trusted"], created["max_resources"]) == (False, {})


async def test_an_admin_marks_a_project_trusted_and_sets_its_maximum(api: support.Api) -> None:
    await api.call("POST", "/api/v1/projects", 201, {"name": "demo", "repo": REPO})
    shown, _ = await api.call("PATCH", "/api/v1/projects/demo", 200, {
        "trusted": True, "max_resources": {"memory": "2GiB", "cpus": 4, "pids": 2048}})
    assert shown["trusted"] is True
    assert shown["max_resources"] == {"memory": 2 * GiB, "memory_shown": "2 GiB", "cpus": 4.0,
                                      "pids": 2048}
    view = fold_project(await api.store.read(project_stream("demo")))
    assert view is not None
    assert view.policy == Policy(trusted=True, project="demo",
                                 max_resources=Resources(memory=2 * GiB, cpus=4, pids=2048))


async def test_only_an_admin_may_trust_a_project_or_change_its_maximum(
        api: support.Api) -> None:
    dev = await user(api)  # a maintainer of every project, not an admin
    await api.call("POST", "/api/v1/projects", 201, {"name": "demo", "repo": REPO})
    for body in ({"trusted": True}, {"max_resources": {"memory": "64GiB"}}):
        answer, _ = await dev.call("PATCH", "/api/v1/projects/demo", 403, body)
        assert "needs the admin role" in answer["detail"]
    await dev.call("PATCH", "/api/v1/projects/demo", 200, {"auto_cancel": False})
    await dev.call("POST", "/api/v1/projects", 403,
                   {"name": "other", "repo": REPO, "trusted": True})
    shown, _ = await dev.call("GET", "/api/v1/projects/demo", 200)
    assert (shown["trusted"], shown["max_resources"]) == (False, {})


async def test_a_bad_maximum_is_refused_naming_the_field(api: support.Api) -> None:
    await api.call("POST", "/api/v1/projects", 201, {"name": "demo", "repo": REPO})
    answer, _ = await api.call("PATCH", "/api/v1/projects/demo", 400,
                               {"max_resources": {"memory": "lots"}})
    assert "max_resources.memory" in answer["detail"]
