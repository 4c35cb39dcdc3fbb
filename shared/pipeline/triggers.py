"""Trigger rules (the pipeline file's ``on:``), compiled, and the decision they make.

``Triggers`` is what ``compile`` makes of ``on:`` and what a ``Plan`` carries;
``decide(triggers, event)`` judges a normalized webhook event (``shared.forge``)
and says whether to start a run and why, in words meant for the user (they are
shown in the delivery log).

Filter patterns follow GitHub Actions' filter patterns:

* ``*`` matches any characters except ``/``; ``**`` any characters including ``/``,
  and ``**/`` also matches no directory at all (``docs/**/*.md`` matches
  ``docs/a.md``); ``?`` one character except ``/``; ``[abc]``, ``[a-z]`` one listed
  character (``[!a]`` any other); ``\\`` makes the next character literal. ``+``
  is literal (GitHub reads it as "one or more of the previous character", which
  surprises people whose branch names contain ``+``).
* A list is read in order: a pattern selects what it matches, a ``!pattern``
  deselects it again, a later positive re-selects. A list of only ``!`` patterns
  starts from "everything" (GitHub wants ``branches-ignore`` for that).
* An ``-ignore`` key (``branches-ignore``, ``tags-ignore``, ``paths-ignore``) is the
  same list with the result inverted: what it selects does not trigger.

Push rules (GitHub's): a branch filter judges pushes to branches, a tag filter
pushes of tags; when only one of the two is given, the other kind of ref does not
trigger; when neither is, both do. Path filters must also pass (AND), except for
tags, where they are not judged. A path filter passes when at least one changed
file passes it. When the event does not list changed files (``changed_paths`` is
None, or empty: a new branch or a rewind lists no commits), path filters cannot
be judged and the run starts. Deleted refs and pings never start anything.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

from shared.forge import ForgeEvent

__all__ = [
    "PR_ACTIONS",
    "Decision",
    "Filter",
    "PullRequestTrigger",
    "PushTrigger",
    "Triggers",
    "allows_manual",
    "decide",
    "glob_error",
    "glob_match",
    "schedules",
    "select",
]

PR_ACTIONS = ("opened", "reopened", "synchronize")


@dataclass(frozen=True)
class Filter:
    """An ordered pattern list as written under ``key`` (e.g. "branches-ignore")."""

    key: str
    patterns: tuple[str, ...]

    @property
    def ignore(self) -> bool:
        return self.key.endswith("-ignore")

    def admits(self, name: str) -> tuple[bool, str | None]:
        """Whether ``name`` passes, and the pattern that decided (None: none matched)."""
        hit, pattern = select(self.patterns, name)
        return (not hit if self.ignore else hit), pattern


@dataclass(frozen=True)
class PushTrigger:
    """``on.push``; None filters are absent (see the module docstring for the rules)."""

    branches: Filter | None = None
    tags: Filter | None = None
    paths: Filter | None = None


@dataclass(frozen=True)
class PullRequestTrigger:
    """``on.pull_request``: ``branches`` judge the target (base) branch; empty ``types``
    means every action in ``PR_ACTIONS``."""

    branches: Filter | None = None
    paths: Filter | None = None
    types: tuple[str, ...] = ()


@dataclass(frozen=True)
class Triggers:
    """What starts runs of a pipeline. The default (a file without ``on:``) is every
    push of a branch or tag, every pull request, manual runs, and no schedule."""

    push: PushTrigger | None = field(default_factory=PushTrigger)
    pull_request: PullRequestTrigger | None = field(default_factory=PullRequestTrigger)
    schedule: tuple[str, ...] = ()  # cron lines (``shared.cron``), UTC
    manual: bool = True

    def to_data(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_data(cls, data: dict[str, Any] | None) -> Triggers:
        """The inverse of ``to_data``; None (a plan recorded before triggers) -> default."""
        if data is None:
            return cls()
        push, pr = data.get("push"), data.get("pull_request")
        return cls(
            push=None if push is None else PushTrigger(
                branches=_filter(push.get("branches")), tags=_filter(push.get("tags")),
                paths=_filter(push.get("paths"))),
            pull_request=None if pr is None else PullRequestTrigger(
                branches=_filter(pr.get("branches")), paths=_filter(pr.get("paths")),
                types=tuple(pr.get("types", ()))),
            schedule=tuple(data.get("schedule", ())),
            manual=bool(data.get("manual", True)),
        )


def _filter(data: dict[str, Any] | None) -> Filter | None:
    return None if data is None else Filter(data["key"], tuple(data["patterns"]))


@dataclass(frozen=True)
class Decision:
    """Whether to start a run, and why, in a sentence for the delivery log."""

    start: bool
    reason: str


def allows_manual(triggers: Triggers) -> bool:
    """Whether a run may be started by hand (API, CLI, UI)."""
    return triggers.manual


def refused(triggers: Triggers, trigger: str, forge_event: Mapping[str, Any] | None) -> str:
    """Why the pipeline's ``on:`` starts nothing for a run started by ``trigger`` (with
    what a webhook said, ``forge_event``), "" when it starts it. Only webhook and manual
    runs are judged: a rerun or ``cyclone run`` is an explicit request for this very
    pipeline. (The event manager's rule; ``cyclone run --dry-run`` shows it.)"""
    if forge_event:
        decision = decide(triggers, ForgeEvent.from_json(forge_event))
        return "" if decision.start else decision.reason
    if trigger == "manual" and not allows_manual(triggers):
        return "the pipeline's on: does not list manual"
    return ""


def schedules(triggers: Triggers) -> list[str]:
    """The cron lines that start runs, as written (each accepted by ``shared.cron.parse``)."""
    return list(triggers.schedule)


def decide(triggers: Triggers, event: ForgeEvent) -> Decision:
    """Whether ``event`` starts a run of a pipeline with these triggers, and why."""
    if event.kind == "ping":
        return Decision(False, "ping: nothing to build")
    if event.kind in ("push", "tag"):
        return _push(triggers.push, event)
    if event.kind == "pull_request":
        return _pull_request(triggers.pull_request, event)
    return Decision(False, f"event '{event.kind}' never starts a run")


def _push(push: PushTrigger | None, event: ForgeEvent) -> Decision:
    is_tag = event.kind == "tag"
    noun, name = ("tag", event.tag) if is_tag else ("branch", event.branch)
    subject = f"tag '{name}'" if is_tag else f"push to '{name}'"
    if event.deleted:
        return Decision(False, f"{noun} '{name}' deleted: nothing to build")
    if push is None:
        return Decision(False, f"{subject}: on does not list push")
    own, other = (push.tags, push.branches) if is_tag else (push.branches, push.tags)
    if own is None and other is not None:
        nouns = "tags" if is_tag else "branches"
        return Decision(False, f"{subject}: on.push.{other.key} is set and no {noun} filter "
                        f"is, so {nouns} do not trigger")
    reasons = [f"{subject} (on.push: any {noun})"]
    if own is not None:
        ok, why = _verdict(subject, own, name, noun, f"on.push.{own.key}")
        if not ok:
            return Decision(False, why)
        reasons = [why]
    if push.paths is not None:
        if is_tag:
            reasons.append(f"on.push.{push.paths.key} is not judged for tags")
        else:
            ok, why = _paths(subject, push.paths, event, "on.push")
            if not ok:
                return Decision(False, why)
            reasons.append(why)
    return Decision(True, "; ".join(reasons))


def _pull_request(pr: PullRequestTrigger | None, event: ForgeEvent) -> Decision:
    subject = f"pull request #{event.pr_number} into '{event.target_branch}'"
    if pr is None:
        return Decision(False, f"{subject}: on does not list pull_request")
    if pr.types and event.action not in pr.types:
        return Decision(False, f"{subject}: action '{event.action}' is not in "
                        f"on.pull_request.types")
    reasons = [f"{subject} (on.pull_request: any target branch)"]
    if pr.branches is not None:
        where = f"on.pull_request.{pr.branches.key}"
        ok, why = _verdict(subject, pr.branches, event.target_branch, "branch", where)
        if not ok:
            return Decision(False, why)
        reasons = [why]
    if pr.paths is not None:
        ok, why = _paths(subject, pr.paths, event, "on.pull_request")
        if not ok:
            return Decision(False, why)
        reasons.append(why)
    return Decision(True, "; ".join(reasons))


def _paths(subject: str, paths: Filter, event: ForgeEvent, block: str) -> tuple[bool, str]:
    where = f"{block}.{paths.key}"
    if not event.changed_paths:
        return True, f"changed files unknown: {where} not judged"
    why = ""
    for changed in event.changed_paths:
        ok, why = _verdict(f"changed file '{changed}'", paths, changed, "path", where)
        if ok:
            return True, why
    count = len(event.changed_paths)
    if count == 1:
        return False, f"{subject}: {why}"
    if paths.ignore:
        files = "the changed file is" if count == 1 else f"all {count} changed files are"
        return False, f"{subject}: {files} ignored by {where}"
    return False, f"{subject}: no changed file matches {where} ({count} changed)"


def _verdict(subject: str, flt: Filter, name: str, noun: str, where: str) -> tuple[bool, str]:
    """Whether ``name`` passes ``flt`` and a sentence saying which pattern decided."""
    ok, pattern = flt.admits(name)
    negative = pattern is not None and pattern.startswith("!")
    if pattern is None:
        if ok:
            return True, (f"{subject} is not ignored by {where}" if flt.ignore
                          else f"{subject} is not excluded by {where}")
        return False, (f"{subject} is ignored by {where} (it matches none of its '!' "
                       "patterns)" if flt.ignore else f"{subject} matches no {noun} of {where}")
    if ok:
        return True, (f"{subject} is re-included by {where} '{pattern}'" if negative
                      else f"{subject} matches {where} '{pattern}'")
    return False, (f"{subject} is excluded by {where} '{pattern}'" if negative
                   else f"{subject} is ignored by {where} '{pattern}'")


# --- patterns --------------------------------------------------------------------------------


def select(patterns: Sequence[str], name: str) -> tuple[bool, str | None]:
    """Whether the ordered ``patterns`` select ``name``, and the last pattern that matched
    it (None when none did). Only ``!`` patterns: everything not excluded is selected."""
    selected = bool(patterns) and all(p.startswith("!") for p in patterns)
    decided: str | None = None
    for pattern in patterns:
        negative = pattern.startswith("!")
        if glob_match(pattern[1:] if negative else pattern, name):
            selected, decided = not negative, pattern
    return selected, decided


def glob_match(pattern: str, name: str) -> bool:
    """Whether ``name`` matches the (positive) filter ``pattern`` as a whole."""
    return _regex(pattern).fullmatch(name) is not None


def glob_error(pattern: str) -> str | None:
    """Why ``pattern`` (possibly ``!``-prefixed) is not a valid filter pattern, or None."""
    body = pattern[1:] if pattern.startswith("!") else pattern
    if not body:
        return "'!' must be followed by a pattern" if pattern else "a pattern must not be empty"
    try:
        _translate(body)
    except ValueError as exc:
        return str(exc)
    return None


@lru_cache(maxsize=1024)
def _regex(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(_translate(pattern))
    except ValueError:  # lint refuses such patterns; one that got here matches nothing
        return re.compile(r"(?!)")


def _translate(pattern: str) -> str:
    """A filter pattern as a regular expression; ValueError says what is wrong."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            j = i
            while j < n and pattern[j] == "*":
                j += 1
            if j - i == 1:
                out.append("[^/]*")
            elif j < n and pattern[j] == "/":  # "**/": any directories, or none
                out.append("(?:.*/)?")
                j += 1
            else:
                out.append(".*")
            i = j
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            klass, i = _klass(pattern, i)
            out.append(klass)
        elif c == "\\":
            if i + 1 == n:
                raise ValueError("a trailing '\\' escapes nothing")
            out.append(re.escape(pattern[i + 1]))
            i += 2
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)


def _klass(pattern: str, start: int) -> tuple[str, int]:
    """The character class opening at ``start``: its regex and the index after it."""
    end = pattern.find("]", start + 2 if pattern[start + 1:start + 2] in ("!", "^") else start + 1)
    if end < 0:
        raise ValueError("'[' is not closed")
    body = pattern[start + 1:end]
    negate = body[:1] in ("!", "^")
    if negate:
        body = body[1:]
    if not body:
        raise ValueError(f"empty character class '{pattern[start:end + 1]}'")
    parts: list[str] = []
    k = 0
    while k < len(body):
        if k + 2 < len(body) and body[k + 1] == "-":
            low, high = body[k], body[k + 2]
            if low > high:
                raise ValueError(f"range '{low}-{high}' runs backwards")
            parts.append(f"{re.escape(low)}-{re.escape(high)}")
            k += 3
        else:
            parts.append(re.escape(body[k]))
            k += 1
    return f"[{'^/' if negate else ''}{''.join(parts)}]", end + 1
