"""Secrets as a pure fold over the stream ``secrets``: by (scope, name), with dates.

A view holds the ciphertext (what a worker opens with the key) but ``to_json``, what
the API answers, holds only the name, scope and dates: no value, no ciphertext.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from shared import events as ev
from shared.events import RecordedEvent, decode
from shared.secretbox import Sealed

__all__ = ["GLOBAL", "SECRETS_STREAM", "SecretView", "Secrets", "fold_secrets", "visible"]

SECRETS_STREAM = "secrets"
GLOBAL = ""  # the scope of a global secret (every project's)

Secrets = Mapping[tuple[str, str], "SecretView"]  # (scope, name) -> view


@dataclass(frozen=True)
class SecretView:
    scope: str
    name: str
    sealed: Sealed = field(repr=False)
    implicit: bool = False
    created_at: str = ""
    updated_at: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "scope": self.scope or "global", "implicit": self.implicit,
                "created_at": self.created_at, "updated_at": self.updated_at}


def fold_secrets(events: Iterable[RecordedEvent],
                 secrets: Secrets | None = None) -> dict[tuple[str, str], SecretView]:
    """The live secrets (after ``secrets``, the fold of the events before ``events``)."""
    folded = dict(secrets or {})
    for recorded in events:
        event = decode(recorded)
        if isinstance(event, ev.SecretSet):
            key = (event.scope, event.name)
            sealed = Sealed(event.ciphertext, event.key_id)
            old = folded.get(key)
            folded[key] = (replace(old, sealed=sealed, implicit=event.implicit,
                                   updated_at=recorded.ts) if old is not None else
                           SecretView(event.scope, event.name, sealed, event.implicit,
                                      created_at=recorded.ts, updated_at=recorded.ts))
        elif isinstance(event, ev.SecretRemoved):
            folded.pop((event.scope, event.name), None)
    return folded


def visible(secrets: Secrets, project: str) -> dict[str, SecretView]:
    """The secrets a run of ``project`` can ask for, by name: the global ones, and the
    project's, which win over a global one of the same name."""
    found = {name: view for (scope, name), view in secrets.items() if scope == GLOBAL}
    found.update({name: view for (scope, name), view in secrets.items()
                  if scope == project and project})
    return found
