"""Settings from the environment: defaults, and errors that name the variable."""

from __future__ import annotations

import pytest

from shared.config import Settings
from shared.errors import ConfigError


def test_the_public_url_defaults_to_where_the_server_listens() -> None:
    settings = Settings.from_env({"CYCLONE_LISTEN": "0.0.0.0:9000"})
    assert settings.public_url == "http://0.0.0.0:9000"
    assert Settings.from_env({"CYCLONE_PUBLIC_URL": "https://ci.example.com/"}).public_url \
        == "https://ci.example.com"


@pytest.mark.parametrize(("name", "value"), [
    ("CYCLONE_PUBLIC_URL", "ci.example.com"),
    ("CYCLONE_WORKER_DRAIN_S", "-1"),
    ("CYCLONE_WORKER_DRAIN_S", "soon"),
    ("CYCLONE_WORKER_CAPACITY", "0"),
])
def test_a_bad_value_is_an_error_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


def test_the_drain_time_is_read_in_seconds() -> None:
    assert Settings.from_env({"CYCLONE_WORKER_DRAIN_S": "2.5"}).worker_drain_s == 2.5
    assert Settings.from_env({}).worker_drain_s == 10.0
