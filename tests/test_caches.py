"""The cache index over a real SQLite event store: what the fold keeps, how ``find`` picks
an entry (the exact key, then each restore key's newest), least-recently-used eviction
past a project's limit (its own setting or the server default), and two saves of one key
racing: the first append wins, the other records nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from shared import events as ev
from shared.adapters.eventstore.sqlite import SqliteEventStore
from shared.caches import MIB, CacheIndex, fold_entries, over_limit, project_cache_limit
from shared.events import NewEvent, RecordedEvent, caches_stream, decode
from shared.ports.artifacts import Blob
from shared.projections.projects import project_stream

P = "app"


def blob(n: int, mib: float = 1) -> Blob:
    return Blob(digest=f"sha256:{n:064x}", size=int(mib * MIB))


def recorded(events: Sequence[ev.Event]) -> list[RecordedEvent]:
    return [RecordedEvent(id=str(i), stream=caches_stream(P), seq=i, type=e.TYPE,
                          version=e.VERSION, ts=f"2030-01-01T00:00:{i:02d}+00:00",
                          data=e.to_data(), meta={}, position=i)
            for i, e in enumerate(events, start=1)]


async def stream_events(store: SqliteEventStore, project: str = P) -> list[ev.Event]:
    return [e for r in await store.read(caches_stream(project)) if (e := decode(r))]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteEventStore]:
    store = await SqliteEventStore.open(tmp_path / "events.db")
    try:
        yield store
    finally:
        await store.close()


def test_the_fold_keeps_live_entries_with_their_last_use_and_drops_evicted_ones() -> None:
    a, b = blob(1), blob(2)
    entries = fold_entries(recorded([
        ev.CacheEntrySaved(key="a", digest=a.digest, size=a.size, run="r1", job="build"),
        ev.CacheEntrySaved(key="b", digest=b.digest, size=b.size, run="r1", job="test"),
        ev.CacheEntryUsed(key="a", run="r2"),
        ev.CacheEntrySaved(key="a", digest=b.digest, size=1, run="r3", job="x"),  # taken
        ev.CacheEntryEvicted(key="b", digest=b.digest, reason="over"),
        ev.CacheEntryUsed(key="b", run="r4"),  # evicted: no entry comes back
    ]))
    assert list(entries) == ["a"]
    assert entries["a"].digest == a.digest and entries["a"].run == "r1"
    assert entries["a"].saved_at.endswith(":01+00:00")
    assert entries["a"].last_used_at.endswith(":03+00:00")
    again = fold_entries(recorded([ev.CacheEntrySaved(key="b", digest=a.digest, size=5,
                                                      run="r5", job="y")]), entries)
    assert sorted(again) == ["a", "b"] and again["b"].last_used_at == ""


def test_eviction_takes_the_least_recently_used_first_and_never_the_kept_key() -> None:
    entries = fold_entries(recorded([
        ev.CacheEntrySaved(key=k, digest=blob(n).digest, size=MIB, run="r", job="j")
        for n, k in enumerate("abcd")] + [ev.CacheEntryUsed(key="a", run="r2")]))
    assert [e.key for e in over_limit(entries, 2 * MIB)] == ["b", "c"]  # a was used last
    assert [e.key for e in over_limit(entries, 0, keep="b")] == ["c", "d", "a"]
    assert over_limit(entries, 4 * MIB) == []


async def test_find_takes_the_exact_key_then_each_restore_key_s_newest_entry(
        store: SqliteEventStore) -> None:
    index = CacheIndex(store, lambda project: 100 * MIB)
    for n, key in enumerate(["deps-linux-aaa", "deps-linux-bbb", "deps-mac-ccc", "other"]):
        assert await index.save(P, key, blob(n), run=f"r{n}", job="build")
    found = await index.find(P, "deps-linux-bbb", ["deps-"])
    assert found is not None and found.key == "deps-linux-bbb"  # exact
    found = await index.find(P, "deps-linux-zzz", ["deps-linux-", "deps-"])
    assert found is not None and found.key == "deps-linux-bbb"  # the newer of the two
    found = await index.find(P, "deps-win-zzz", ["deps-win-", "deps-"])
    assert found is not None and found.key == "deps-mac-ccc"  # the next prefix, newest
    assert await index.find(P, "nothing", ["none-"]) is None
    assert await index.find("elsewhere", "other", []) is None  # per project
    assert await index.has(P, "other") and not await index.has(P, "deps-")


async def test_saving_a_key_that_has_an_entry_records_nothing(store: SqliteEventStore) -> None:
    index = CacheIndex(store, lambda project: 100 * MIB)
    assert await index.save(P, "k", blob(1), run="r1", job="build")
    assert not await index.save(P, "k", blob(2), run="r2", job="build")
    assert [type(e) for e in await stream_events(store)] == [ev.CacheEntrySaved]
    entry = await index.find(P, "k", [])
    assert entry is not None and entry.digest == blob(1).digest and entry.run == "r1"


async def test_two_racing_saves_of_one_key_record_the_first_only(tmp_path: Path) -> None:
    # two processes' stores on one file, each with its own index: both see no entry
    stores = [await SqliteEventStore.open(tmp_path / "events.db") for _ in range(2)]
    try:
        indexes = [CacheIndex(s, lambda project: 100 * MIB) for s in stores]
        for i in indexes:
            assert not await i.has(P, "k")
        won = await asyncio.gather(*(i.save(P, "k", blob(n), run=f"r{n}", job="build")
                                     for n, i in enumerate(indexes)))
        assert sorted(won) == [False, True]
        saved = await stream_events(stores[0])
        assert len(saved) == 1 and isinstance(saved[0], ev.CacheEntrySaved)
        winner = won.index(True)
        assert saved[0].digest == blob(winner).digest
        for i in indexes:  # the loser reads the winner's entry
            entry = await i.find(P, "k", [])
            assert entry is not None and entry.run == f"r{winner}"
    finally:
        for s in stores:
            await s.close()


async def test_a_save_past_the_limit_evicts_the_least_recently_used_in_the_same_append(
        store: SqliteEventStore) -> None:
    index = CacheIndex(store, lambda project: 3 * MIB)
    for n, key in enumerate("abc"):
        assert await index.save(P, key, blob(n), run="r1", job="build")
    await index.used(P, "a", run="r2")  # b is now the least recently used
    assert await index.save(P, "d", blob(3, mib=1.5), run="r3", job="build")
    events = await stream_events(store)
    assert [type(e).__name__ for e in events[-3:]] == [
        "CacheEntrySaved", "CacheEntryEvicted", "CacheEntryEvicted"]
    evicted = [e for e in events if isinstance(e, ev.CacheEntryEvicted)]
    assert [(e.key, e.digest) for e in evicted] == [("b", blob(1).digest), ("c", blob(2).digest)]
    assert evicted[0].reason == "over the project's cache limit of 3 MB"
    assert sorted(await index.entries(P)) == ["a", "d"]
    assert (await index.state(P)).total == int(2.5 * MIB)
    assert await index.find(P, "b", []) is None


async def test_an_entry_bigger_than_the_limit_stays_until_the_next_save(
        store: SqliteEventStore) -> None:
    index = CacheIndex(store, lambda project: 2 * MIB)
    assert await index.save(P, "small", blob(1), run="r1", job="j")
    assert await index.save(P, "huge", blob(2, mib=5), run="r2", job="j")
    assert sorted(await index.entries(P)) == ["huge"]  # small evicted, huge kept
    assert await index.save(P, "next", blob(3), run="r3", job="j")
    assert sorted(await index.entries(P)) == ["next"]


async def test_an_evicted_entry_is_not_marked_used_and_its_key_can_be_saved_again(
        store: SqliteEventStore) -> None:
    index = CacheIndex(store, lambda project: MIB)
    await index.save(P, "a", blob(1), run="r1", job="j")
    await index.save(P, "b", blob(2), run="r2", job="j")  # evicts a
    await index.used(P, "a", run="r3")
    assert not any(isinstance(e, ev.CacheEntryUsed) for e in await stream_events(store))
    assert await index.save(P, "a", blob(4), run="r4", job="j")
    entry = await index.find(P, "a", [])
    assert entry is not None and entry.digest == blob(4).digest


async def test_each_project_has_its_own_limit_from_its_setting_or_the_default(
        store: SqliteEventStore) -> None:
    await store.append(project_stream("small"), [NewEvent(ev.ProjectRegistered(
        name="small", repo="git://x", cache_limit_mb=1))], 0)
    index = CacheIndex(store, project_cache_limit(store, default_mb=2))
    assert await index.limit("small") == MIB
    assert await index.limit("unknown") == 2 * MIB
    for project in ("small", "unknown"):
        for n in range(3):
            await index.save(project, f"k{n}", blob(n), run="r", job="j")
    assert sorted(await index.entries("small")) == ["k2"]
    assert sorted(await index.entries("unknown")) == ["k1", "k2"]
    await store.append(project_stream("small"), [NewEvent(ev.ProjectUpdated(
        changes={"cache_limit_mb": 0}))], 1)  # back to the default: nothing to trim
    assert await index.trim("small") == []


async def test_trim_evicts_what_a_lowered_limit_no_longer_holds(store: SqliteEventStore) -> None:
    limits = {P: 3 * MIB}
    index = CacheIndex(store, lambda project: limits[project])
    for n in range(3):
        await index.save(P, f"k{n}", blob(n), run="r", job="j")
    limits[P] = MIB
    assert [e.key for e in await index.trim(P)] == ["k0", "k1"]
    assert sorted(await index.entries(P)) == ["k2"]
    assert await index.trim(P) == []
