"""A job's secrets on the worker: which step gets which, and masking what the job prints.

``JobSecrets`` is read when the job starts (the values opened with the worker's key,
never written anywhere): each step gets, as env variables, the secrets its
``secrets:`` (and its job's) names, and the project's implicit ones (moved from its
env). A run whose secrets are withheld (``RunView.secrets_withheld``) gives none: a
step that would have had some says so in its log instead.

``MaskedSink`` sits between the executor and the log shipper, so every line that
leaves the worker (to the log store, and from there to SSE and websocket clients)
has every secret value of the project, and of the global secrets, replaced by
``***``. The executors deliver whole lines (``shared.adapters.executor.script``: a
step's writes are joined until a newline, whatever their timing) except a line longer
than ``MAX_LINE_BYTES`` without a newline, delivered in pieces: such a piece is fed
to the masker without a newline, so a value cut across two pieces is masked too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable, Mapping
from dataclasses import dataclass, field

from shared.adapters.executor.script import MAX_LINE_BYTES
from shared.masking import Masker
from shared.pipeline.plan import StepSpec
from shared.ports.executor import LogSink, log_lines, one_by_one

__all__ = ["NO_SECRETS", "JobSecrets", "MaskedSink"]


@dataclass(frozen=True)
class JobSecrets:
    values: Mapping[str, str] = field(default_factory=dict, repr=False)  # every visible one
    implicit: frozenset[str] = frozenset()  # given to every step
    withheld: str = ""  # why no step gets any; "": they may

    def for_step(self, step: StepSpec) -> tuple[dict[str, str], str]:
        """The env variables ``step`` gets, and a line for its log when some it would
        get are withheld ("" otherwise)."""
        wanted = [*step.secrets, *sorted(self.implicit - set(step.secrets))]
        if not wanted:
            return {}, ""
        if self.withheld:
            return {}, (f"cyclone: secrets withheld from this step ({', '.join(wanted)}): "
                        f"{self.withheld}")
        missing = [name for name in wanted if name not in self.values]
        given = {name: self.values[name] for name in wanted if name in self.values}
        note = (f"cyclone: secrets removed since the run was planned: {', '.join(missing)}"
                if missing else "")
        return given, note


NO_SECRETS = JobSecrets()


class MaskedSink:
    """A ``LogSink`` that masks ``values`` in the lines it passes on (one masker per
    stream); ``flush`` passes on what a last piece left held back."""

    def __init__(self, sink: LogSink, values: Iterable[str]) -> None:
        self.sink = sink
        self.values = tuple(values)
        self._maskers: dict[str, Masker] = {}
        self._last_ts = ""

    def __call__(self, stream: str, ts: str, text: str) -> Awaitable[None]:
        if not self.values:
            return self.sink(stream, ts, text)
        masker = self._maskers.get(stream)
        if masker is None:
            masker = self._maskers[stream] = Masker(self.values)
        self._last_ts = ts
        if _piece(text):
            return self.sink(stream, ts, masker.feed(text))
        return self.sink(stream, ts, masker.feed(text + "\n")[:-1])

    def many(self, stream: str, ts: str, texts: list[str]) -> Awaitable[None]:
        """Several lines at once (``LinesSink``): passed on as they are when there is
        nothing to mask, else masked one by one."""
        if not self.values:
            return log_lines(self.sink, stream, ts, texts)
        return one_by_one(self, stream, ts, texts)

    async def flush(self) -> None:
        for stream, masker in self._maskers.items():
            rest = masker.flush()
            if rest:
                await self.sink(stream, self._last_ts, rest)


def _piece(text: str) -> bool:
    """Whether the executor cut ``text`` from a longer line (it then has MAX_LINE_BYTES
    bytes, give or take the replacement characters of a UTF-8 sequence it cut)."""
    return (len(text) * 4 >= MAX_LINE_BYTES - 4
            and len(text.encode("utf-8", "replace")) >= MAX_LINE_BYTES - 4)
