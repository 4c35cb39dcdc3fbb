"""``cyclone secret rotate-key`` on a real SQLite store: every secret is sealed with a new
key, which opens them all; the old key opens none; with the key file the old key is kept
aside, with ``CYCLONE_SECRET_KEY`` the new key is printed to prepend."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from shared.adapters.eventstore.sqlite import SqliteEventStore
from shared.secretbox import KEY_FILE, SecretKeyError, new_key
from shared.secrets import open_secret_store

VALUE = "value-of-the-deploy-token"


async def _set_secret(home: Path, variable: str = "") -> None:
    store = await SqliteEventStore.open(home / "events.db")
    try:
        secrets = await open_secret_store(variable, home, store)
        await secrets.set("demo", "DEPLOY_TOKEN", VALUE, actor="test")
    finally:
        await store.close()


async def _values(home: Path, variable: str = "") -> dict[str, str]:
    store = await SqliteEventStore.open(home / "events.db")
    try:
        return await (await open_secret_store(variable, home, store)).values("demo")
    finally:
        await store.close()


def _rotate(home: Path, variable: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CYCLONE_HOME": str(home), "CYCLONE_SECRET_KEY": variable}
    done = subprocess.run([sys.executable, "-m", "cyclone.cli", "secret", "rotate-key"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done


def test_rotating_the_key_file_reseals_every_secret(tmp_path: Path) -> None:
    asyncio.run(_set_secret(tmp_path))
    key_file = tmp_path / KEY_FILE
    old_key = key_file.read_text().strip()

    done = _rotate(tmp_path)

    assert "1 secrets sealed with a new key" in done.stdout
    new = key_file.read_text().strip()
    assert new != old_key and "," not in new
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert (tmp_path / f"{KEY_FILE}.old").read_text().strip() == old_key
    assert asyncio.run(_values(tmp_path)) == {"DEPLOY_TOKEN": VALUE}
    with pytest.raises(SecretKeyError, match="CYCLONE_SECRET_KEY"):
        asyncio.run(_values(tmp_path, variable=old_key))  # it opens nothing any more
    assert VALUE.encode() not in (tmp_path / "events.db").read_bytes()


def test_rotating_a_key_from_the_environment_prints_the_one_to_prepend(tmp_path: Path) -> None:
    old_key = new_key()
    asyncio.run(_set_secret(tmp_path, old_key))

    done = _rotate(tmp_path, old_key)

    [line] = [w for w in done.stdout.split() if w.startswith("CYCLONE_SECRET_KEY=")]
    both = line.removeprefix("CYCLONE_SECRET_KEY=")
    assert both.endswith(f",{old_key}")
    assert asyncio.run(_values(tmp_path, both)) == {"DEPLOY_TOKEN": VALUE}
    assert asyncio.run(_values(tmp_path, both.split(",")[0])) == {"DEPLOY_TOKEN": VALUE}
    assert not (tmp_path / KEY_FILE).exists()  # the variable's keys live nowhere else
