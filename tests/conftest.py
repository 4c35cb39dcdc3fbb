"""Fixtures every test directory may use, and how `make test` shares the suite out."""

from typing import Any

import pytest

from tests.browser_support import (
    browser_page_fixture,
    chromium_fixture,
    pytest_terminal_summary,
    ui_server_fixture,
)
from tests.docker_support import docker_ready
from tests.e2e.server_support import server_fixture
from tests.git_support import git_files_fixture, git_server_fixture
from tests.k8s_standin import k8s_fixture
from tests.registry_support import auth_registry, registry

__all__ = ["auth_registry", "browser_page_fixture", "chromium_fixture", "docker_ready",
           "git_files_fixture", "git_server_fixture", "k8s_fixture", "pytest_terminal_summary",
           "registry", "server_fixture", "ui_server_fixture"]

# Tests that start a whole cluster (two replicas of every service on Kafka and etcd) load
# both cores by themselves: under `pytest -n 2` (scripts/test.sh) they run one after the
# other in one worker, first, while the other worker takes the rest module by module.
CLUSTER = "tests/e2e/test_cluster"


def _scope(nodeid: str) -> str:
    """What one worker runs as a whole: a module (its module fixtures start once), or
    every cluster test."""
    module = nodeid.split("::", 1)[0]
    return CLUSTER if module.startswith(CLUSTER) else module


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """xdist's load-scope scheduling with the scopes above. (Its ``xdist_group`` marks do
    not group anything under pytest 9: the group is a suffix on ``Item._nodeid``, which
    ``nodeid`` no longer reads.)"""
    from xdist.scheduler import (  # type: ignore[import-untyped]  # only under xdist
        LoadScopeScheduling,
    )

    class ByModule(LoadScopeScheduling):  # type: ignore[misc]  # xdist is untyped
        def _split_scope(self, nodeid: str) -> str:
            return _scope(nodeid)

    return ByModule(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In an xdist worker the cluster tests come first (the scheduler hands scopes out in
    collection order, and theirs is the longest). A run without xdist keeps the usual
    order."""
    if hasattr(config, "workerinput"):
        items.sort(key=lambda item: _scope(item.nodeid) != CLUSTER)
