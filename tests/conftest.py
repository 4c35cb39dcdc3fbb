"""Fixtures every test directory may use."""

from tests.docker_support import docker_ready
from tests.e2e.server_support import server_fixture
from tests.git_support import git_files_fixture, git_server_fixture

__all__ = ["docker_ready", "git_files_fixture", "git_server_fixture", "server_fixture"]
