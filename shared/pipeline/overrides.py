"""``--set PATH=VALUE``: a key of the pipeline file overridden for one run.

``PATH`` is a dotted path into the YAML document: ``jobs.test.image``; a list item by
its index, ``jobs.test.steps.0.image`` (or ``steps[0]``); a key holding a dot in
double quotes, ``jobs."build.linux".image``. ``VALUE`` is read as YAML (a scalar or a
flow collection: ``3``, ``alpine:3.20``, ``[make, make test]``, ``{run: [make]}``);
nothing after ``=`` is null.

The overrides are applied to the parsed document (``apply``), in the order given,
before anything is checked: a value set wrongly is reported like one written in the
file, but placed at ``--set PATH=VALUE`` (as the diagnostic's file, line 0) instead of
at a line of the file it did not come from. A path that cannot be set -- its parent is
missing, or is a scalar, or a list index out of range -- is an error naming it and what
is there. ``include:`` cannot be set: the files it names are fetched before the
pipeline is read.

The run records the overrides as written (``RunRequested.overrides``); planning it
again (a rerun, the event manager after a restart) applies the same ones.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from shared.pipeline.diagnostics import Diagnostic
from shared.pipeline.loader import Document, Marks, Path, format_path, parse
from shared.pipeline.schema import did_you_mean, kind

__all__ = ["Override", "apply", "parse_override", "syntax_problem"]

# A segment: "quoted" (may hold dots), [N], or anything up to the next dot or bracket.
_SEGMENT = re.compile(r'"([^"]*)"|\[(\d+)\]|([^.\[\]"]+)')
_INDEX = re.compile(r"\d+")
_UNSETTABLE = ("include",)


@dataclass(frozen=True)
class Override:
    written: str  # "jobs.test.image=alpine:3.20", as given: where its problems are placed
    path: tuple[str, ...]  # the segments; an index is still a string (the parent decides)
    value: Any


def syntax_problem(written: str) -> str:
    """What is wrong with ``written`` as ``PATH=VALUE`` ("" when nothing is)."""
    parsed = parse_override(written)
    return parsed.message if isinstance(parsed, Diagnostic) else ""


def parse_override(written: str) -> Override | Diagnostic:
    """``written`` read, or the problem with it (a diagnostic placed at it)."""
    raw_path, sep, raw_value = written.partition("=")
    path = _segments(raw_path.strip())
    if not sep or path is None:
        return _problem(written, "", "expected PATH=VALUE with a dotted PATH, e.g. "
                                     "jobs.test.image=alpine:3.20")
    if path[0] in _UNSETTABLE:
        return _problem(written, path[0], f"'{path[0]}' cannot be set with --set (the files "
                                          "it names are fetched before the pipeline is read)")
    if not raw_value.strip():
        return Override(written, path, None)
    parsed = parse(raw_value, _where(written))
    if parsed.document is None:
        problem = parsed.diagnostics[0].message if parsed.diagnostics else "invalid YAML"
        return _problem(written, ".".join(path), f"the value: {problem}")
    return Override(written, path, parsed.document.data)


def apply(document: Document, overrides: Sequence[str]) -> tuple[Document, list[Diagnostic]]:
    """``document`` with each of ``overrides`` (``PATH=VALUE`` as written) set, in order,
    and the problem of each that could not be; ``document`` itself when there is none."""
    if not overrides:
        return document, []
    data = _copy(document.data)
    marks = Marks(keys=dict(document.marks.keys), values=dict(document.marks.values),
                  files=dict(document.marks.files))
    problems: list[Diagnostic] = []
    for written in overrides:
        parsed = parse_override(written)
        if isinstance(parsed, Diagnostic):
            problems.append(parsed)
            continue
        data, problem = _set(data, parsed, marks)
        if problem is not None:
            problems.append(problem)
    return Document(data, marks), problems


def _set(data: Any, override: Override, marks: Marks) -> tuple[Any, Diagnostic | None]:
    """``data`` with the override's value at its path (its parents already copied), the
    marks of what it replaced dropped and the path placed at the override."""
    if not isinstance(data, dict):
        return data, _problem(override.written, "", "the pipeline file is not a mapping")
    parent: Any = data
    done: Path = ()
    for i, segment in enumerate(override.path):
        key, problem = _key(parent, segment, done, override)
        if problem is not None:
            return data, problem
        last = i == len(override.path) - 1
        if last:
            parent[key] = override.value
        else:
            child = parent.get(key) if isinstance(parent, dict) else parent[key]
            if not isinstance(child, dict | list):
                return data, _dead_end(override, parent, done, key, child)
            parent = child
        done = (*done, key)
    _place(marks, done, _where(override.written))
    return data, None


def _key(parent: Any, segment: str, done: Path, override: Override,
         ) -> tuple[str | int, Diagnostic | None]:
    """``segment`` as a key of ``parent``: a list's index (in range), or a mapping's key."""
    if isinstance(parent, dict):
        return segment, None
    shown = format_path(done)
    if not _INDEX.fullmatch(segment):
        return segment, _problem(override.written, shown,
                                 f"a list: expected an index, got '{segment}'")
    index = int(segment)
    if index >= len(parent):
        items = "1 item" if len(parent) == 1 else f"{len(parent)} items"
        return index, _problem(override.written, shown,
                               f"a list of {items}: no index {index} (from 0)")
    return index, None


def _dead_end(override: Override, parent: Any, done: Path, key: str | int,
              child: object) -> Diagnostic:
    """The problem of a path that goes on below a missing key or a scalar."""
    shown = format_path((*done, key))
    if isinstance(parent, dict) and key not in parent:
        names = [str(k) for k in parent]
        where = format_path(done) or "the file"
        return _problem(override.written, shown, f"no such key: {where} has no "
                        f"'{key}'{did_you_mean(str(key), names)} (it has: "
                        f"{', '.join(names) or 'nothing'})")
    return _problem(override.written, shown,
                    f"nothing can be set below {kind(child)} (a mapping or a list can)")


def _place(marks: Marks, path: Path, where: str) -> None:
    """What was written at and below ``path`` is gone: its problems are the override's."""
    for table in (marks.keys, marks.values, marks.files):
        for known in [p for p in table if p[:len(path)] == path]:
            del table[known]
    marks.values[path] = (0, 0)
    marks.files[path] = where


def _segments(raw: str) -> tuple[str, ...] | None:
    """``jobs."a.b".steps[0]`` -> ``("jobs", "a.b", "steps", "0")``; None if malformed."""
    out: list[str] = []
    at = 0
    while at < len(raw):
        found = _SEGMENT.match(raw, at)
        if found is None:
            return None
        quoted, index, plain = found.groups()
        out.append(next(s for s in (quoted, index, plain) if s is not None))
        at = found.end()
        if at < len(raw) and raw[at] == ".":
            at += 1
            if at == len(raw):
                return None  # a trailing dot
    return tuple(out) if out and all(out) else None


def _copy(data: Any) -> Any:
    """A copy of the containers (the values themselves are immutable scalars)."""
    if isinstance(data, dict):
        return {k: _copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_copy(v) for v in data]
    return data


def _where(written: str) -> str:
    return f"--set {written}"


def _problem(written: str, path: str, message: str) -> Diagnostic:
    return Diagnostic(_where(written), 0, 0, path, message)
