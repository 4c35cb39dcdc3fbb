"""The embedded artifact store (files) against plain file tools, in a temporary directory.

    python bench/artifacts.py [--mb 500] [--files 20000] [--repeat 5]

Prints, each the median of ``--repeat`` rounds (after one more, a warm-up):

* a ``--mb`` MB artifact put into the store (read from a file, hashed, written, fsynced,
  renamed) and got out of it into a file (read, hashed, written), each against ``cp``
  of the same file on the same disk: the ratio (target <= 2x). ``cp`` does not fsync,
  a put does: ``cp`` + ``sync FILE`` is printed beside it for the durable comparison,
  and so is the time SHA-256 of the file alone takes (a floor no put or get can beat);
  CPU seconds are printed beside wall times, as neighbours on the machine weigh on
  the latter;
* this process's RSS before, at its peak and after (target: flat, whatever the size);
* a cache of ``--files`` small files (1-4 KB, in nested directories): saved (``tar -c``
  streamed into the store) against ``tar -cf`` to a file, and restored (the store's
  blob streamed into ``tar -x``, as a worker restores a cache) against ``tar -xf`` of
  the same tar file from disk: the ratio (target <= 1.5x for the restore).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import resource
import shutil
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from shared.adapters.artifacts.files import FileArtifactStore
from shared.adapters.executor.shell import _extract
from shared.ports.artifacts import CHUNK_BYTES, Blob

__all__ = ["main"]

MB = 1024 * 1024


# --- measuring ---------------------------------------------------------------------------------

def memory_mb() -> tuple[float, float]:
    """This process's resident set now (VmRSS) and at its peak (VmHWM), in MB."""
    values = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
    return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # the peak RSS starts again from the current RSS


class Rounds:
    """Timings by name. Each round times every case once, one after the other, so a
    neighbour loading the disk or the CPUs for a while weighs on all of them alike; the
    page cache's dirty pages are written out (untimed) before each. The first round is
    a warm-up, not counted: in this VM, the first write into memory the guest has not
    touched yet costs several times the next ones (seen: 1.5 s of system time for
    500 MB, then 0.12 s)."""

    def __init__(self) -> None:
        self.times: dict[str, list[float]] = {}
        self.cpu: dict[str, list[float]] = {}  # CPU seconds, this process's and its children's
        self.counting = False  # the warm-up round

    async def time(self, name: str, run: Callable[[], Awaitable[object]],
                   before: Callable[[], object] = lambda: None) -> None:
        before()
        await asyncio.to_thread(os.sync)
        cpu, started = cpu_s(), time.perf_counter()
        await run()
        if self.counting:
            self.times.setdefault(name, []).append(time.perf_counter() - started)
            self.cpu.setdefault(name, []).append(cpu_s() - cpu)

    def median(self, name: str) -> float:
        return statistics.median(self.times[name])

    def vs(self, ours: str, theirs: str) -> str:
        """``ours`` against ``theirs``: medians of wall time (their ratio), and of CPU time."""
        mine, base = self.median(ours), self.median(theirs)
        cpu_mine, cpu_base = (statistics.median(self.cpu[n]) for n in (ours, theirs))
        return (f"{mine:6.2f} s vs {base:6.2f} s: {mine / base:4.2f}x of {theirs:<7} "
                f"(CPU {cpu_mine:5.2f} s vs {cpu_base:5.2f} s)")


def cpu_s() -> float:
    """User and system CPU seconds of this process (every thread) and its children."""
    own, children = (resource.getrusage(who) for who in (resource.RUSAGE_SELF,
                                                         resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def shell(*argv: str, failure: str = "") -> Callable[[], Awaitable[object]]:
    async def run() -> None:
        proc = await asyncio.create_subprocess_exec(*argv)
        if await proc.wait() != 0:
            raise SystemExit(failure or f"{' '.join(argv)} failed")

    return run


# --- the store's side --------------------------------------------------------------------------

async def file_chunks(path: Path) -> AsyncIterator[bytes]:
    """``path``'s bytes, read in a thread a chunk at a time."""
    file = await asyncio.to_thread(open, path, "rb")
    try:
        while chunk := await asyncio.to_thread(file.read, CHUNK_BYTES):
            yield chunk
    finally:
        file.close()


async def get_to_file(store: FileArtifactStore, digest: str, path: Path) -> None:
    file = await asyncio.to_thread(open, path, "wb")
    try:
        async for chunk in store.get(digest):
            await asyncio.to_thread(file.write, chunk)
    finally:
        file.close()


async def process_output(*argv: str) -> AsyncIterator[bytes]:
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    while chunk := await proc.stdout.read(CHUNK_BYTES):
        yield chunk
    if await proc.wait() != 0:
        raise SystemExit(f"{' '.join(argv)} failed")


# --- the cases ---------------------------------------------------------------------------------

def make_file(path: Path, mb: int) -> None:
    pattern = random.Random(16).randbytes(CHUNK_BYTES + 4321)
    with open(path, "wb") as file:
        for _ in range(mb * MB // len(pattern)):
            file.write(pattern)
        file.write(pattern[:mb * MB % len(pattern)])


def sha256_of(path: Path) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def make_cache(root: Path, files: int) -> None:
    """``files`` files of 1-4 KB, 100 a directory, two levels deep."""
    rng = random.Random(17)
    for n in range(files):
        directory = root / f"pkg{n // 1000:03}" / f"mod{n // 100 % 10}"
        if n % 100 == 0:
            directory.mkdir(parents=True)
        (directory / f"file{n}.py").write_bytes(rng.randbytes(rng.randint(1024, 4096)))


async def big_artifact(tmp: Path, store: FileArtifactStore, mb: int, repeat: int) -> None:
    source, copy, out = tmp / "source.bin", tmp / "copy.bin", tmp / "out.bin"
    make_file(source, mb)
    blob: list[Blob] = []

    async def put() -> None:
        blob[:] = [await store.put(file_chunks(source))]

    def delete_blob() -> None:  # every put writes the blob anew, as a first one does
        if blob:
            store.path_of(blob[0].digest).unlink()

    rounds = Rounds()
    rss_before, _ = memory_mb()
    reset_peak()
    for k in range(repeat + 1):
        rounds.counting = k > 0
        await rounds.time("cp", shell("cp", str(source), str(copy)),
                          lambda: copy.unlink(missing_ok=True))
        await rounds.time("cp+sync", _cp_sync(source, copy), lambda: copy.unlink())
        await rounds.time("put", put, delete_blob)
        await rounds.time("get", lambda: get_to_file(store, blob[0].digest, out),
                          lambda: out.unlink(missing_ok=True))
        await rounds.time("sha256", lambda: asyncio.to_thread(sha256_of, source))
    rss_after, rss_peak = memory_mb()
    await shell("cmp", str(source), str(out),
                failure="the artifact got out of the store is not the one put in")()

    print(f"artifact of {mb} MB (files store, {tmp}), medians of {repeat}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"  put  {rounds.vs('put', 'cp')}  {mb / rounds.median('put'):5.0f} MB/s")
    print(f"  put  {rounds.vs('put', 'cp+sync')}  (cp + sync FILE: durable, as a put is)")
    print(f"  get  {rounds.vs('get', 'cp')}  {mb / rounds.median('get'):5.0f} MB/s")
    print(f"  the floor: SHA-256 of the file alone (as a put and a get must) takes "
          f"{rounds.median('sha256'):.2f} s, {rounds.median('sha256') / rounds.median('cp'):.2f}x "
          "of cp")
    print(f"  RSS  {rss_before:.0f} MB before, {rss_peak:.0f} MB at peak, "
          f"{rss_after:.0f} MB after")
    for path in (source, copy, out):
        path.unlink(missing_ok=True)


def _cp_sync(source: Path, copy: Path) -> Callable[[], Awaitable[object]]:
    async def run() -> None:
        await shell("cp", str(source), str(copy))()
        await shell("sync", str(copy))()

    return run


async def small_files_cache(tmp: Path, store: FileArtifactStore, files: int,
                            repeat: int) -> None:
    cache, tar, restored = tmp / "cache", tmp / "cache.tar", tmp / "restored"
    make_cache(cache, files)

    def fresh() -> None:
        shutil.rmtree(restored, ignore_errors=True)
        restored.mkdir()

    blob: list[Blob] = []

    async def save() -> None:
        tar_c = process_output("tar", "-c", "-f", "-", "-C", str(cache), ".")
        blob[:] = [await store.put(tar_c)]

    rounds = Rounds()
    for k in range(repeat + 1):
        rounds.counting = k > 0
        await rounds.time("tar -c", shell("tar", "-c", "-f", str(tar), "-C", str(cache), "."))
        await rounds.time("save", save)
        await rounds.time("tar -x", shell("tar", "-x", "-f", str(tar), "-C", str(restored)),
                          fresh)
        await rounds.time("restore", lambda: _extract(store.get(blob[0].digest), restored),
                          fresh)
    await shell("diff", "-r", "-q", str(cache), str(restored),
                failure="the restored cache differs from the one saved")()

    print(f"cache of {files} files of 1-4 KB ({blob[0].size / MB:.0f} MB as tar), "
          f"medians of {repeat}, load average {os.getloadavg()[0]:.1f}")
    print(f"  save     {rounds.vs('save', 'tar -c')}  (tar -c into the store / into a file)")
    print(f"  restore  {rounds.vs('restore', 'tar -x')}  (the store into tar -x / a file)")


async def bench(mb: int, files: int, repeat: int) -> None:
    with tempfile.TemporaryDirectory(prefix="cyclone-bench-") as name:
        tmp = Path(name)
        store = FileArtifactStore(tmp / "artifacts")
        try:
            await big_artifact(tmp, store, mb, repeat)
            await small_files_cache(tmp, store, files, repeat)
        finally:
            await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=500, help="the big artifact's size")
    parser.add_argument("--files", type=int, default=20_000, help="files in the cache")
    parser.add_argument("--repeat", type=int, default=5, help="rounds (medians are printed)")
    args = parser.parse_args()
    asyncio.run(bench(args.mb, args.files, args.repeat))


if __name__ == "__main__":
    main()
