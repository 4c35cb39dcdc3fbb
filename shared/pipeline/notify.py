"""Notification rules (a project's ``notify`` setting and the pipeline file's ``notify:``),
compiled, and the decision they make when a run starts or ends.

A rule names channels and when to use them::

    notify:
      - name: team                      # optional: "1", "2", ... by position
        when: [failure, fixed]          # the default
        branches: [main, "release/*"]   # optional: every branch
        email: [dev@example.com, ops@example.com]
        slack: ${SLACK_WEBHOOK}         # a project env variable: keeps the URL out of git
        mattermost: https://chat.example.com/hooks/xxx
        discord: https://discord.com/api/webhooks/1/abc
        webhook: {url: https://ci-bot.example.com/cyclone, secret: ${HOOK_KEY}}

``when`` (any of them; a run gets one notification per rule and channel even when
several match, named by the most specific one):

* ``started`` - the run was planned (its commit resolved, its jobs known);
* ``failure`` - it failed or errored; ``success`` - it succeeded;
* ``fixed`` - it succeeded and the previous run on its branch that ended did not;
* ``changed`` - it succeeded or failed, and the previous run on its branch that
  ended the other way; the first run of a branch has changed nothing;
* ``always`` - every end, cancelled runs included.

Skipped runs (their ``on:`` rules did not start them) notify nothing. Cancelled runs
count as no previous outcome for ``fixed`` / ``changed``: a cancel says nothing about
the code. ``branches`` are patterns as in ``on:`` (``shared.pipeline.triggers``).

A channel's identity (``Channel.id``) is what the idempotency key of its
notifications is made of: the address for email, a hash of the URL as written
(``${VAR}`` included, so changing the variable's value keeps the id) for the rest.
Incoming-webhook URLs carry their token, so they are secrets: ``Channel.shown``
is how they appear in the API, logs and events.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from shared.pipeline.triggers import select

__all__ = [
    "CHANNEL_KINDS",
    "CHAT_KINDS",
    "DEFAULT_WHEN",
    "REDACTED",
    "VARIABLE",
    "WHENS",
    "Channel",
    "NotifyRule",
    "UnsetVariable",
    "due_reason",
    "outcome_of",
    "rules_from_data",
    "variables",
]

WHENS = ("started", "failure", "success", "fixed", "changed", "always")
DEFAULT_WHEN = ("failure", "fixed")
CHAT_KINDS = ("slack", "mattermost", "discord", "webhook")
CHANNEL_KINDS = ("email", *CHAT_KINDS)
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")  # ${NAME}: from the project's env
REDACTED = "…"  # stands for the path of a URL that is shown (``Channel.shown``)
# most specific first: a run that is both "fixed" and a "success" is told it is fixed
_PRECEDENCE = ("fixed", "failure", "success", "changed", "always")


class UnsetVariable(ValueError):
    """A channel names a ``${VAR}`` that the project's env does not set."""


@dataclass(frozen=True)
class Channel:
    kind: str  # one of CHANNEL_KINDS
    target: str = field(repr=False)  # an address, or a URL (a secret), maybe with ${VAR}
    secret: str = field(default="", repr=False)  # webhook: the HMAC-SHA256 key

    @property
    def id(self) -> str:
        """Stable and secret-free: part of every idempotency key and record."""
        if self.kind == "email":
            return f"email:{self.target.lower()}"
        digest = hashlib.sha256(self.target.encode()).hexdigest()[:12]
        return f"{self.kind}:{digest}"

    @property
    def shown(self) -> str:
        """What a person may see: the address, or the URL's scheme and host only."""
        if self.kind == "email":
            return self.target
        if VARIABLE.fullmatch(self.target):
            return self.target  # the variable's name, not its value
        try:
            parts = urlsplit(self.target)
            host = parts.hostname
        except ValueError:  # a bad port or IPv6 bracket: validation refuses these anyway
            return "(a URL)"
        return f"{parts.scheme}://{host}/{REDACTED}" if host else "(a URL)"

    def resolved(self, env: Mapping[str, str]) -> Channel:
        """The channel with every ``${VAR}`` replaced from ``env``; ``UnsetVariable``
        names the first one it does not set."""
        return replace(self, target=_substitute(self.target, env),
                       secret=_substitute(self.secret, env))

    def secrets(self) -> tuple[str, ...]:
        """Values that must never be shown (URLs and keys; addresses are not secret)."""
        values = (self.secret,) if self.kind == "email" else (self.target, self.secret)
        return tuple(v for v in values if v)

    def to_data(self) -> dict[str, str]:
        data = {"kind": self.kind, "target": self.target}
        return {**data, "secret": self.secret} if self.secret else data

    def to_json(self) -> dict[str, Any]:
        """What the API shows (never the URL's path nor the key)."""
        shown: dict[str, Any] = {"kind": self.kind, "id": self.id, "target": self.shown}
        return {**shown, "secret_set": True} if self.secret else shown

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Channel:
        return cls(kind=str(data["kind"]), target=str(data["target"]),
                   secret=str(data.get("secret", "")))


@dataclass(frozen=True)
class NotifyRule:
    name: str
    channels: tuple[Channel, ...]
    when: tuple[str, ...] = DEFAULT_WHEN
    branches: tuple[str, ...] = ()  # patterns; () means every branch
    source: str = "project"  # "project" (its settings) or "file" (the pipeline file)

    @property
    def id(self) -> str:
        return f"{self.source}:{self.name}"

    def covers(self, branch: str) -> bool:
        return not self.branches or select(self.branches, branch)[0]

    def to_data(self) -> dict[str, Any]:
        return {"name": self.name, "when": list(self.when), "branches": list(self.branches),
                "channels": [c.to_data() for c in self.channels], "source": self.source}

    def to_json(self) -> dict[str, Any]:
        return {**self.to_data(), "channels": [c.to_json() for c in self.channels]}

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> NotifyRule:
        return cls(name=str(data["name"]),
                   channels=tuple(Channel.from_data(c) for c in data.get("channels", ())),
                   when=tuple(data.get("when", DEFAULT_WHEN)),
                   branches=tuple(data.get("branches", ())),
                   source=str(data.get("source", "project")))


def rules_from_data(data: Iterable[Mapping[str, Any]] | None) -> tuple[NotifyRule, ...]:
    return tuple(NotifyRule.from_data(rule) for rule in data or ())


def outcome_of(status: str) -> str:
    """A run status as the rules see it: success, failure (errored too), cancelled,
    skipped, or "" for a run that has not ended."""
    if status == "errored":
        return "failure"
    return status if status in ("success", "failure", "cancelled", "skipped") else ""


def due_reason(rule: NotifyRule, moment: str, status: str, branch: str,
               previous: str | None) -> str | None:
    """Which of ``rule.when`` makes the run notify at ``moment`` ("started" or "ended"),
    or None. ``status`` is the run's; ``previous`` the outcome (``outcome_of``) of the
    previous run on its branch that ended successful or failed, None for none."""
    if not rule.covers(branch):
        return None
    if moment == "started":
        return "started" if "started" in rule.when else None
    outcome = outcome_of(status)
    if outcome in ("", "skipped"):
        return None
    matched = {
        "fixed": outcome == "success" and previous == "failure",
        "failure": outcome == "failure",
        "success": outcome == "success",
        "changed": outcome in ("success", "failure") and previous is not None
        and previous != outcome,
        "always": True,
    }
    return next((w for w in _PRECEDENCE if w in rule.when and matched[w]), None)


def variables(rules: Sequence[NotifyRule]) -> set[str]:
    """The env variables the rules' channels name."""
    return {name for rule in rules for c in rule.channels
            for text in (c.target, c.secret) for name in VARIABLE.findall(text)}


def _substitute(text: str, env: Mapping[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            raise UnsetVariable(f"${{{name}}} is not set in the project's env")
        return env[name]
    return VARIABLE.sub(value, text)
