"""Fixtures every test directory may use, and how `make test` shares the suite out."""

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
# both cores by themselves: under `pytest -n 2 --dist loadgroup` (scripts/test.sh) they run
# one after the other in one worker, first, while the other worker takes the rest.
CLUSTER_GROUP = "cluster"


def _group(item: pytest.Item) -> str:
    module = item.nodeid.split("::", 1)[0]
    return CLUSTER_GROUP if module.startswith("tests/e2e/test_cluster") else module


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Each module is one xdist group (its module fixtures start once), the cluster
    tests are one group, and in an xdist worker that group comes first: it is the
    longest. A run without xdist keeps the usual order."""
    for item in items:
        item.add_marker(pytest.mark.xdist_group(_group(item)))
    if hasattr(config, "workerinput"):
        items.sort(key=lambda item: _group(item) != CLUSTER_GROUP)
