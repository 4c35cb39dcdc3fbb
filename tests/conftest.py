"""Fixtures every test directory may use."""

from tests.docker_support import docker_ready
from tests.e2e.server_support import server_fixture
from tests.git_support import git_files_fixture, git_server_fixture
from tests.k8s_standin import k8s_fixture
from tests.registry_support import auth_registry, registry

__all__ = ["auth_registry", "docker_ready", "git_files_fixture", "git_server_fixture",
           "k8s_fixture", "registry", "server_fixture"]
