"""Which step gets which secret, and the masking sink between the executor and the
shipper (pieces of an over-long line included)."""

from __future__ import annotations

from services.workermanager.secrets import JobSecrets, MaskedSink
from shared.adapters.executor.script import MAX_LINE_BYTES
from shared.pipeline.plan import StepSpec

VALUES = {"DEPLOY_TOKEN": "tok-123456", "OLD_PASSWORD": "pw-abcdef", "OTHER_KEY": "other-999"}


def test_a_step_gets_what_it_asks_for_and_the_implicit_ones() -> None:
    secrets = JobSecrets(VALUES, implicit=frozenset({"OLD_PASSWORD"}))
    given, note = secrets.for_step(StepSpec("s", "i", secrets=("DEPLOY_TOKEN",)))
    assert given == {"DEPLOY_TOKEN": "tok-123456", "OLD_PASSWORD": "pw-abcdef"}
    assert note == ""


def test_withheld_secrets_are_said_in_the_log_and_not_given() -> None:
    secrets = JobSecrets(VALUES, withheld="the run comes from a fork")
    given, note = secrets.for_step(StepSpec("s", "i", secrets=("DEPLOY_TOKEN",)))
    assert given == {}
    assert note == ("cyclone: secrets withheld from this step (DEPLOY_TOKEN): the run comes "
                    "from a fork")
    assert secrets.for_step(StepSpec("s", "i")) == ({}, "")


async def test_the_sink_masks_lines_and_values_cut_across_pieces() -> None:
    got: list[tuple[str, str]] = []

    async def sink(stream: str, ts: str, text: str) -> None:
        got.append((stream, text))

    masked = MaskedSink(sink, VALUES.values())
    await masked("stdout", "t", "deploy tok-123456 now")
    piece = "x" * (MAX_LINE_BYTES - 4) + "tok-"  # the executor cut the line here
    await masked("stdout", "t", piece)
    await masked("stdout", "t", "123456 end")
    await masked("stderr", "t", "pw-abc")  # a last piece of stderr, held back
    await masked.flush()
    assert got[0] == ("stdout", "deploy *** now")
    assert got[1] == ("stdout", "x" * (MAX_LINE_BYTES - 4))
    assert got[2] == ("stdout", "*** end")
    assert ("stderr", "pw-abc") in got


async def test_a_chunk_of_lines_at_once_is_masked_line_by_line() -> None:
    got: list[tuple[str, str]] = []

    async def sink(stream: str, ts: str, text: str) -> None:
        got.append((stream, text))

    await MaskedSink(sink, VALUES.values()).many("stdout", "t", ["a tok-123456", "b", "pw-abcdef"])
    await MaskedSink(sink, ()).many("stderr", "t", ["nothing tok to mask"])

    assert got == [("stdout", "a ***"), ("stdout", "b"), ("stdout", "***"),
                   ("stderr", "nothing tok to mask")]
