"""Workspace files as tar streams (``workspace_files``): which paths patterns take, one tar
out of several, a count of files from headers alone, and ``hashFiles``' digest."""

from __future__ import annotations

import io
import tarfile
from collections.abc import AsyncIterator

from shared.adapters.executor.workspace_files import (
    TarCounter,
    bases,
    files_digest,
    matches,
    select,
)


def tar_of(files: dict[str, bytes], order: list[str] | None = None) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in order or list(files):
            info = tarfile.TarInfo(name)
            info.size = len(files[name])
            info.mtime = 1_700_000_000 + len(name)
            tar.addfile(info, io.BytesIO(files[name]))
    return out.getvalue()


async def chunks_of(data: bytes, size: int = 700) -> AsyncIterator[bytes]:
    for at in range(0, len(data), size):
        yield data[at:at + size]


def test_bases_are_the_literal_parts_none_inside_another() -> None:
    assert bases(["dist/", "dist/sub/*.whl", "reports/*.xml", "a/b/c.txt"]) == [
        "a/b/c.txt", "dist", "reports"]
    assert bases(["*.log", "dist"]) == [""]  # a glob at the top: the whole workspace


def test_a_pattern_takes_a_matched_directory_whole() -> None:
    assert matches(["dist/"], "dist/sub/x.whl")
    assert matches(["reports/*.xml"], "reports/a.xml")
    assert not matches(["reports/*.xml"], "reports/a.txt")
    assert matches(["**/*.xml"], "deep/down/t.xml")
    assert not matches(["dist/*.whl"], "dist/sub/x.whl")  # * stays in its directory


async def test_select_merges_sources_keeping_each_file_once() -> None:
    first = tar_of({"dist/a.whl": b"A", "dist/b.txt": b"B", "other.txt": b"O"})
    second = tar_of({"sub/c.whl": b"C"})

    async def sources() -> AsyncIterator[tuple[str, AsyncIterator[bytes]]]:
        yield "", chunks_of(first)
        yield "dist", chunks_of(second)  # names relative to dist/
        yield "", chunks_of(first)  # twice: still once

    out = b"".join([c async for c in select(sources(), ["dist/*.whl", "dist/sub/"])])
    with tarfile.open(fileobj=io.BytesIO(out)) as tar:
        got = {m.name: tar.extractfile(m).read() for m in tar if m.isreg()}  # type: ignore[union-attr]
    assert got == {"dist/a.whl": b"A", "dist/sub/c.whl": b"C"}


def test_the_counter_counts_regular_files_from_headers_across_any_cut() -> None:
    data = tar_of({f"{'d' * 120}/f{i}": bytes(i * 300) for i in range(9)})
    for cut in (1, 511, 512, 4096):
        counter = TarCounter()
        for at in range(0, len(data), cut):
            counter.feed(data[at:at + cut])
        assert counter.files == 9


async def test_the_files_digest_is_content_and_names_not_tar_order() -> None:
    files = {"a.txt": b"1", "b/c.txt": b"2"}
    one, count = await files_digest(chunks_of(tar_of(files, ["a.txt", "b/c.txt"])))
    other, _ = await files_digest(chunks_of(tar_of(files, ["b/c.txt", "a.txt"])))
    changed, _ = await files_digest(chunks_of(tar_of({**files, "a.txt": b"x"})))
    assert (one, count) == (other, 2)
    assert changed != one
