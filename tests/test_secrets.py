"""The secret box and store: sealed with AES-GCM, bound to their name, opened by key id;
a wrong or missing key stops a service at start, naming the variable or the file; only
ciphertext reaches the SQLite file and the Mongo collections."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from pymongo import AsyncMongoClient

from shared.adapters.eventstore.mongo import MongoEventStore
from shared.adapters.eventstore.sqlite import SqliteEventStore
from shared.projections.secrets import GLOBAL
from shared.secretbox import KEY_FILE, SecretBox, SecretKeyError, SecretOpenError, new_key
from shared.secrets import SecretStore, check_secret, open_secret_store
from tests.infra.mongo import mongo_database, mongo_url

__all__ = ["mongo_database", "mongo_url"]  # the fixtures this module uses

VALUE = "pl41ntext-V4lue-f0r-the-test"


def test_a_sealed_value_opens_only_under_its_own_name() -> None:
    box = SecretBox.parse(new_key(), "CYCLONE_SECRET_KEY")
    sealed = box.seal("demo", "TOKEN", VALUE)
    assert VALUE not in sealed.ciphertext and sealed.key_id == box.key_ids[0]
    assert box.open("demo", "TOKEN", sealed) == VALUE
    with pytest.raises(SecretOpenError, match="copied from another secret"):
        box.open("demo", "OTHER", sealed)
    with pytest.raises(SecretOpenError):
        box.open("other-project", "TOKEN", sealed)


def test_a_prepended_key_seals_and_the_old_one_still_opens() -> None:
    old = new_key()
    before = SecretBox.parse(old, "CYCLONE_SECRET_KEY").seal("", "A_KEY", VALUE)
    both = SecretBox.parse(f"{new_key()},{old}", "CYCLONE_SECRET_KEY")
    assert both.open("", "A_KEY", before) == VALUE
    assert both.seal("", "A_KEY", VALUE).key_id == both.key_ids[0] != before.key_id


@pytest.mark.parametrize("raw", ["not base64!", "c2hvcnQ=", f"{new_key()},"],
                         ids=["not-base64", "too-short", "trailing-comma"])
def test_a_malformed_key_is_refused_naming_the_variable(raw: str) -> None:
    with pytest.raises(SecretKeyError, match=r"^CYCLONE_SECRET_KEY: key"):
        SecretBox.load(raw, Path("/nonexistent"))


def test_the_key_file_is_made_once_with_mode_0600(tmp_path: Path) -> None:
    first = SecretBox.load("", tmp_path)
    path = tmp_path / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert SecretBox.load("", tmp_path).key_ids == first.key_ids
    os.chmod(path, 0o644)
    with pytest.raises(SecretKeyError, match="others may read"):
        SecretBox.load("", tmp_path)


@pytest.mark.parametrize(("name", "value", "says"), [
    ("DEPLOY_TOKEN", "abc", "the value has 3 characters: a secret needs at least 4"),
    ("1BAD", VALUE, "not an environment variable name"),
    ("A-B", VALUE, "not an environment variable name"),
])
def test_names_and_values_refused_with_the_reason(name: str, value: str, says: str) -> None:
    assert says in check_secret(name, value)


async def test_a_wrong_or_missing_key_stops_the_start(tmp_path: Path) -> None:
    store = await SqliteEventStore.open(tmp_path / "events.db")
    try:
        home = tmp_path / "home"
        secrets = await open_secret_store("", home, store)  # makes the key file
        await secrets.set("demo", "DEPLOY_TOKEN", VALUE)
        assert (await open_secret_store("", home, store)).box is not None
        with pytest.raises(SecretKeyError, match=r"^CYCLONE_SECRET_KEY: the stored secrets"):
            await open_secret_store(new_key(), home, store)
        (home / KEY_FILE).unlink()
        with pytest.raises(SecretKeyError, match=r"CYCLONE_SECRET_KEY is not set and .*"
                                                 r"secret\.key does not exist"):
            await open_secret_store("", home, store)
    finally:
        await store.close()


async def test_only_ciphertext_reaches_the_sqlite_file(tmp_path: Path) -> None:
    store = await SqliteEventStore.open(tmp_path / "events.db")
    try:
        secrets = SecretStore(store, SecretBox.parse(new_key(), "CYCLONE_SECRET_KEY"))
        await secrets.set("demo", "DEPLOY_TOKEN", VALUE, actor="alice")
        await secrets.set(GLOBAL, "SHARED_KEY", "line-one-AAAA\nline-two-BBBB")
        assert await secrets.values("demo") == {"DEPLOY_TOKEN": VALUE,
                                                "SHARED_KEY": "line-one-AAAA\nline-two-BBBB"}
        assert await secrets.values("other") == {"SHARED_KEY": "line-one-AAAA\nline-two-BBBB"}
        listed = [v.to_json() for v in await secrets.listed("demo")]
        assert [(s["name"], s["scope"]) for s in listed] == [("DEPLOY_TOKEN", "demo")]
        assert VALUE not in str(listed)
        assert (await store.read("secrets"))[0].meta == {"actor": "alice"}
        assert await secrets.remove("demo", "DEPLOY_TOKEN") and not await secrets.listed("demo")
    finally:
        await store.close()
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("events.db*"))
    assert stored and VALUE.encode() not in stored and b"line-one-AAAA" not in stored


async def test_only_ciphertext_reaches_the_mongo_collections(mongo_url: str,
                                                             mongo_database: str) -> None:
    store = await MongoEventStore.connect(mongo_url, mongo_database)
    try:
        secrets = SecretStore(store, SecretBox.parse(new_key(), "CYCLONE_SECRET_KEY"))
        await secrets.set("demo", "DEPLOY_TOKEN", VALUE)
        assert await secrets.values("demo", ["DEPLOY_TOKEN"]) == {"DEPLOY_TOKEN": VALUE}
    finally:
        await store.close()
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(mongo_url)
    try:
        database = client[mongo_database]
        names = await database.list_collection_names()
        documents = [doc for name in names async for doc in database[name].find()]
        assert documents and VALUE not in str(documents)
        assert "DEPLOY_TOKEN" in str(documents)  # the search does look at the secret's event
    finally:
        await client.close()
