"""Fixtures every test directory may use."""

from tests.docker_support import docker_ready

__all__ = ["docker_ready"]
