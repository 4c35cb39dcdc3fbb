"""Fixtures every test directory may use."""

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
