"""rechunk, which every artifact store adapter cuts its source with: exact pieces, the
bytes unchanged, whatever the source yields (empty pieces, big ones, a reused buffer)."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import pytest

from shared.adapters.artifacts import rechunk


async def source(data: bytes, sizes: list[int], reuse: bool) -> AsyncIterator[bytes]:
    """``data`` in pieces of ``sizes`` (cycled); with ``reuse``, each piece in one
    bytearray overwritten for the next, as a reader filling its buffer would."""
    buffer = bytearray()
    at, k = 0, 0
    while at < len(data):
        piece = data[at:at + sizes[k % len(sizes)]]
        at, k = at + len(piece), k + 1
        if reuse:
            buffer[:] = piece
            yield buffer  # type: ignore[misc]  # a bytearray, as sources may yield
        else:
            yield piece


@pytest.mark.parametrize("seed", range(40))
async def test_pieces_are_exact_and_the_bytes_unchanged(seed: int) -> None:
    rng = random.Random(seed)
    size = rng.choice([1, 7, 4096, 65536])
    data = rng.randbytes(rng.randrange(0, 5 * size + 3))
    sizes = [rng.choice([0, 1, size - 1 or 1, size, size + 1, 3 * size + 2])
             for _ in range(rng.randrange(1, 6))]
    if not any(sizes):
        sizes.append(1)

    pieces = [piece async for piece in rechunk(source(data, sizes, seed % 2 == 1), size)]

    assert b"".join(pieces) == data
    assert all(len(piece) == size for piece in pieces[:-1])
    assert all(pieces) and all(isinstance(piece, bytes) for piece in pieces)
