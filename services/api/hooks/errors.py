"""The verdicts of the hook modules other than an event: the two errors and ``Ignored``.

    CycloneError
    ├── HookAuthError   401: not authentic; nothing is stored
    └── PayloadError    400: authentic (or not yet checked) but malformed
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.errors import CycloneError

__all__ = ["MAX_REASON", "HookAuthError", "Ignored", "PayloadError"]

# A reason is stored and echoed; it quotes payload text, which must not make it huge.
MAX_REASON = 300


class HookAuthError(CycloneError):
    """The delivery is not authentic (answer 401, store nothing): a missing or malformed
    signature header, a signature or token that does not match, no secret configured, or
    an unknown provider. The message never contains the secret or the signature."""


class PayloadError(CycloneError):
    """The delivery's headers or payload are malformed (answer 400). The message names
    the header or the body field and what is wrong, e.g. ``pull_request.head.sha is
    missing``."""


@dataclass(frozen=True)
class Ignored:
    """An authentic, well-formed delivery that starts nothing (answer 202 ``{"ignored":
    reason}``): an event type or action Cyclone does not build."""

    reason: str

    def __post_init__(self) -> None:
        if len(self.reason) > MAX_REASON:
            object.__setattr__(self, "reason", self.reason[:MAX_REASON - 1] + "…")
