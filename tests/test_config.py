"""Settings from the environment: defaults, and errors that name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.config import Settings
from shared.errors import ConfigError
from shared.pipeline.resources import Resources


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
    ("CYCLONE_STEP_MEMORY", "lots"),
    ("CYCLONE_STEP_MEMORY", "1MiB"),
    ("CYCLONE_STEP_CPUS", "0"),
    ("CYCLONE_STEP_PIDS", "many"),
])
def test_a_bad_value_is_an_error_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


def test_step_containers_are_limited_by_default_and_the_limits_can_be_set() -> None:
    mib = 1024 * 1024
    assert Settings.from_env({}).step_resources == Resources(memory=512 * mib, cpus=2,
                                                             pids=4096)
    assert Settings.from_env({"CYCLONE_STEP_MEMORY": "2g", "CYCLONE_STEP_CPUS": "0.5",
                              "CYCLONE_STEP_PIDS": "100"}).step_resources == Resources(
        memory=2048 * mib, cpus=0.5, pids=100)


def test_the_drain_time_is_read_in_seconds() -> None:
    assert Settings.from_env({"CYCLONE_WORKER_DRAIN_S": "2.5"}).worker_drain_s == 2.5
    assert Settings.from_env({}).worker_drain_s == 10.0


INFRA = {"CYCLONE_BUS": "kafka://k:9092", "CYCLONE_STORE": "mongodb://m:27017",
         "CYCLONE_COORD": "etcd://e:2379", "CYCLONE_LOG_STORE": "mongodb://m:27017"}


def test_the_infrastructure_is_all_four_urls_or_none() -> None:
    assert Settings.from_env({}).infra is None
    infra = Settings.from_env({**INFRA, "CYCLONE_KAFKA_PARTITIONS": "8"}).infra
    assert infra is not None
    assert (infra.bus, infra.coord, infra.partitions, infra.replication) \
        == ("kafka://k:9092", "etcd://e:2379", 8, 1)
    with pytest.raises(ConfigError, match="CYCLONE_LOG_STORE=''"):
        Settings.from_env({k: v for k, v in INFRA.items() if k != "CYCLONE_LOG_STORE"})
    with pytest.raises(ConfigError, match=r"CYCLONE_COORD='http://e:2379'.*etcd://"):
        Settings.from_env({**INFRA, "CYCLONE_COORD": "http://e:2379"})


def test_a_service_without_infrastructure_names_the_first_url_missing() -> None:
    with pytest.raises(ConfigError, match=r"CYCLONE_BUS.*kafka://"):
        Settings.from_env({}).require_infra()


def test_the_clients_and_the_hooks_settings_are_read_here_too() -> None:
    settings = Settings.from_env({"CYCLONE_SERVER": "http://ci:8080", "CYCLONE_TOKEN": "cyc_x",
                                  "CYCLONE_HOOK_SECRET": "s3cret"})
    assert (settings.server, settings.token, settings.hook_secret) \
        == ("http://ci:8080", "cyc_x", "s3cret")
    assert "cyc_x" not in repr(settings) and "s3cret" not in repr(settings)
    assert Settings.from_env({}).log_format == "text"


def test_the_artifact_store_may_be_an_s3_bucket_checked_at_start_without_its_secret() -> None:
    url = "s3://AKIA:s3cret@minio:9000/blobs?tls=0"
    infra = Settings.from_env({**INFRA, "CYCLONE_ARTIFACT_STORE": url}).infra
    assert infra is not None and infra.artifacts_url == url
    assert "s3cret" not in repr(infra)
    for bad, why in [("s3://AKIA:s3cret@minio:9000", "bucket ''"),
                     ("s3://AKIA:s3cret@minio/blobs?tls=no", "option tls='no'")]:
        with pytest.raises(ConfigError, match=f"CYCLONE_ARTIFACT_STORE=.*{why}") as caught:
            Settings.from_env({**INFRA, "CYCLONE_ARTIFACT_STORE": bad})
        assert "s3cret" not in str(caught.value)


def test_the_artifact_store_is_the_event_stores_mongodb_unless_set() -> None:
    infra = Settings.from_env(INFRA).infra
    assert infra is not None and infra.artifacts_url == "mongodb://m:27017"
    infra = Settings.from_env({**INFRA, "CYCLONE_ARTIFACT_STORE": "mongodb://a:27017/blobs"}).infra
    assert infra is not None and infra.artifacts_url == "mongodb://a:27017/blobs"
    with pytest.raises(ConfigError, match="CYCLONE_ARTIFACT_STORE='ftp://b'"):
        Settings.from_env({**INFRA, "CYCLONE_ARTIFACT_STORE": "ftp://b"})
    with pytest.raises(ConfigError, match="CYCLONE_BUS=''"):  # alone, it names a cluster too
        Settings.from_env({"CYCLONE_ARTIFACT_STORE": "mongodb://a:27017"})
    assert Settings.from_env({"CYCLONE_HOME": "/h"}).artifacts_dir == Path("/h/artifacts")
