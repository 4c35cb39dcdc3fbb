"""``include:``: pipeline files read into another, from the run's own source or from
another project's repository at a pinned tag or commit.

Written in ``.cyclone.yml`` (and in the files it includes)::

    include:
      - ci/lint.yml                                          # the run's own source
      - {file: ci/test.yml}                                  # the same
      - {project: shared, ref: v1.2.0, file: ci/common.yml}  # another project's, pinned

A file is named by its ``Key``, ``(project, ref, file)``: ``("", "", path)`` for the
run's own source (read at the run's commit, or from the directory of ``cyclone run``);
``{file: ...}`` written in a file of another project means that project's file at the
same ref. The stages, apart from I/O as the rest of the front end:

* ``walk``: the tree of includes from the root file, given what has been fetched
  (``known``): the files in merge order, the keys still to fetch, and every problem
  (a malformed entry, a branch where a tag or commit is needed, a fetch that failed, a
  cycle, too deep, too many files), each at the include entry that caused it.
* ``resolve`` (async): walks, fetches what is missing through the caller's ``Fetch``
  (a worker's Git mirrors, or a directory), until nothing is; returns the records
  (``IncludedFile``: where from, the commit, the content and its digest, or why it
  could not be fetched) that the run keeps in its events. Compiling again -- a rerun,
  a replay -- reads those and fetches nothing.
* ``merged``: the root document with the included jobs in it; each job keeps its own
  file's lines (``Marks.files``), so a diagnostic about it names that file (a remote
  one as ``project@ref:path``) and line.

Semantics: an included file holds ``jobs:`` (and ``include:``); any other top-level key
(``on``, ``env``, ``notify``, ``registries``) is an error there -- they belong to the
pipeline file, whose ``env:`` applies to included jobs too. Included jobs come first,
depth first in ``include:`` order (a file's own includes before its jobs), then the
including file's. A job name defined twice is an error naming both places: a job is
never silently replaced by another file's. A file reached twice by the same key
(``a`` and ``b`` both include ``c``) is merged once.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.errors import IncludeError
from shared.pipeline.diagnostics import Diagnostic
from shared.pipeline.loader import Document, Marks, Path, Reporter, parse
from shared.pipeline.schema import did_you_mean, kind

__all__ = ["ENTRY_KEYS", "MAX_BYTES", "MAX_DEPTH", "MAX_FILES", "Fetch", "IncludedFile",
           "Key", "Tree", "display", "has_includes", "included_files", "merged", "resolve",
           "walk"]

Key = tuple[str, str, str]  # (project, ref, file); project "" (and ref ""): the run's own
Fetch = Callable[[Key], Awaitable["IncludedFile"]]  # raises IncludeError
ENTRY_KEYS = ("file", "project", "ref")
MAX_DEPTH = 8  # includes within includes, below the pipeline file
MAX_FILES = 32  # files included by one pipeline, all levels
MAX_BYTES = 128 * 1024  # of one included file: every run records what it includes
_TOP_KEYS = ("jobs", "include")  # what an included file may hold (besides "x-" anchors)
# What git refuses in a ref name (git check-ref-format), and a few things it allows but
# that cannot name a tag here.
_BAD_REF = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|^[-/.]|/$|\.lock$|//")


def display(key: Key) -> str:
    """How diagnostics name a file: ``ci/lint.yml``, or ``shared@v1.2.0:ci/common.yml``
    (git's ``rev:path``, after the project) for another project's."""
    project, ref, file = key
    return f"{project}@{ref}:{file}" if project else file


@dataclass(frozen=True)
class IncludedFile:
    """A file the run's pipeline included, as the run records it (``includes`` of
    ``RunSourceResolved`` and ``RunRequested``)."""

    project: str  # "" for the run's own source
    ref: str  # the tag or commit id the include names ("" for the run's own source)
    file: str  # its path in the repository
    commit: str = ""  # the commit it was read at ("" when read from a directory)
    content: str = ""
    sha256: str = ""  # of ``content`` as UTF-8: what an audit compares
    error: str = ""  # why it could not be fetched; "" when it was

    @classmethod
    def read(cls, key: Key, commit: str, content: str) -> IncludedFile:
        digest = hashlib.sha256(content.encode()).hexdigest()
        return cls(*key, commit=commit, content=content, sha256=digest)

    @classmethod
    def failed(cls, key: Key, error: str) -> IncludedFile:
        return cls(*key, error=error)

    @property
    def key(self) -> Key:
        return self.project, self.ref, self.file

    @property
    def display(self) -> str:
        return display(self.key)

    def to_data(self) -> dict[str, str]:
        return {"project": self.project, "ref": self.ref, "file": self.file,
                "commit": self.commit, "content": self.content, "sha256": self.sha256,
                "error": self.error}

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> IncludedFile:
        return cls(**{name: str(data.get(name, "")) for name in (
            "project", "ref", "file", "commit", "content", "sha256", "error")})


def included_files(data: Iterable[Mapping[str, Any]]) -> tuple[IncludedFile, ...]:
    """The records an event holds (``to_data`` of each)."""
    return tuple(IncludedFile.from_data(item) for item in data)


def has_includes(document: Document) -> bool:
    return isinstance(document.data, dict) and "include" in document.data


# --- entries -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    key: Key
    path: Path  # where it is written in its file


def _entries(report: Reporter, origin: tuple[str, str]) -> list[_Entry]:
    """The checked entries of the ``include:`` of ``report``'s document, whose own
    project and ref are ``origin``; problems go to ``report``."""
    data = report.document.data
    if not isinstance(data, dict) or "include" not in data:
        return []
    raw = data["include"]
    if isinstance(raw, str | dict):
        items: list[tuple[Path, object]] = [(("include",), raw)]
    elif isinstance(raw, list):
        items = [(("include", i), item) for i, item in enumerate(raw)]
    elif raw is None:
        items = []
    else:
        report.error(("include",), "expected a file name, an include (a mapping) or a list "
                     f"of them, got {kind(raw)}")
        return []
    if not items:
        report.warning(("include",), "lists no file (remove 'include' if none is meant)")
    found = [(_entry(report, path, item, origin), path) for path, item in items]
    return [_Entry(key, path) for key, path in found if key is not None]


def _entry(report: Reporter, path: Path, item: object, origin: tuple[str, str],
           ) -> Key | None:
    if isinstance(item, str):
        file = _file(report, path, item)
        return None if file is None else (*origin, file)
    if not isinstance(item, dict):
        report.error(path, f"expected a file name or a mapping ({', '.join(ENTRY_KEYS)}), "
                     f"got {kind(item)}")
        return None
    if not _entry_keys(report, path, item):
        return None
    file = _file(report, (*path, "file"), item["file"])
    project, ref = item.get("project"), item.get("ref")
    if project is None and ref is not None:
        report.error((*path, "ref"), "'ref' pins a file of another project: add 'project' "
                     "(a file of this repository is read at the run's own commit)",
                     at_key=True)
        return None
    if project is None:
        return None if file is None else (*origin, file)
    if ref is None:
        report.error(path, f"missing required key 'ref': an include from project "
                     f"'{project}' names a tag or a full 40-hex commit id, so that every "
                     "run reads the same file")
        return None
    pinned = _ref(report, (*path, "ref"), ref)
    return None if file is None or pinned is None else (project, pinned, file)


def _entry_keys(report: Reporter, path: Path, item: dict[str, Any]) -> bool:
    """Whether the mapping has only known keys, each a non-empty string, and ``file``."""
    ok = True
    for name, value in item.items():
        if name not in ENTRY_KEYS:
            report.error((*path, name), f"unknown key '{name}'"
                         f"{did_you_mean(name, ENTRY_KEYS)} (an include has 'file', and "
                         "'project' with 'ref' for another project's)", at_key=True)
            ok = False
        elif not isinstance(value, str):
            report.error((*path, name), f"expected a string, got {kind(value)}")
            ok = False
        elif not value:
            report.error((*path, name), "must not be empty")
            ok = False
    if ok and "file" not in item:
        report.error(path, "missing required key 'file'")
        ok = False
    return ok


def _file(report: Reporter, path: Path, value: str) -> str | None:
    """The path as the key holds it (``./ci//a.yml`` -> ``ci/a.yml``), or None with an
    error."""
    problem = ""
    if any(ord(c) < 32 for c in value):
        problem = "a file name without control characters"
    elif "\\" in value:
        problem = "use '/' between directories"
    elif value.startswith("/"):
        problem = "a path in the repository, without a leading '/'"
    elif ".." in value.split("/"):
        problem = "a path in the repository, without '..'"
    elif not value.endswith((".yml", ".yaml")):
        problem = "an included file is a YAML file (.yml or .yaml)"
    if problem:
        report.error(path, f"'{value}': {problem}")
        return None
    return posixpath.normpath(value)


def _ref(report: Reporter, path: Path, ref: str) -> str | None:
    """A tag name (``refs/tags/`` dropped) or a commit id, or None with an error. Whether
    it is a tag, a full commit id or a branch only the repository knows (the fetch)."""
    if ref.startswith("refs/heads/"):
        report.error(path, f"'{ref}' is a branch, which moves: name a tag or a full 40-hex "
                     "commit id, so that every run reads the same file")
        return None
    name = ref.removeprefix("refs/tags/")
    if name == "HEAD" or name.startswith("refs/") or _BAD_REF.search(name):
        report.error(path, f"'{ref}' is not a tag name or a full 40-hex commit id")
        return None
    return name


# --- the tree ------------------------------------------------------------------------


@dataclass
class Tree:
    """What ``walk`` found: the included files with their parsed documents, in merge
    order; the keys to fetch, each with the error to report if it never is; problems."""

    files: list[tuple[IncludedFile, Document]] = field(default_factory=list)
    missing: dict[Key, Diagnostic] = field(default_factory=dict)
    diagnostics: list[Diagnostic] = field(default_factory=list)


def walk(root: Document, root_file: str, known: Mapping[Key, IncludedFile]) -> Tree:
    """The includes of ``root`` (read as ``root_file``), depth first, through ``known``
    (the records fetched so far)."""
    walker = _Walker(known)
    root_key: Key = ("", "", posixpath.normpath(root_file))
    walker.visit(root, root_file, ("", ""), (root_key,))
    return walker.tree


class _Walker:
    def __init__(self, known: Mapping[Key, IncludedFile]) -> None:
        self.known = known
        self.tree = Tree()
        self.done: set[Key] = set()  # keys taken (or being taken) into the tree

    def visit(self, document: Document, name: str, origin: tuple[str, str],
              chain: tuple[Key, ...]) -> None:
        report = Reporter(name, document)
        for entry in _entries(report, origin):
            self._include(report, entry, chain)
        self.tree.diagnostics.extend(report.diagnostics)

    def _include(self, report: Reporter, entry: _Entry, chain: tuple[Key, ...]) -> None:
        key = entry.key
        if key in chain:
            names = " -> ".join(display(k) for k in (*chain[chain.index(key):], key))
            report.error(entry.path, f"include cycle: {names}")
            return
        if key in self.done or key in self.tree.missing:
            return  # included already, by another file: merged once
        if len(chain) > MAX_DEPTH:
            names = " -> ".join(display(k) for k in (*chain, key))
            report.error(entry.path, f"includes nest more than {MAX_DEPTH} levels deep: "
                         f"{names}")
            return
        if len(self.done) + len(self.tree.missing) >= MAX_FILES:
            report.error(entry.path, f"more than {MAX_FILES} files are included")
            return
        record = self.known.get(key)
        if record is None:
            self.tree.missing[key] = _at(report, entry.path, f"{display(key)} was not fetched "
                                         "for this run (includes are read with its source)")
            return
        if record.error:
            report.error(entry.path, f"cannot include {display(key)}: {record.error}")
            return
        self.done.add(key)
        parsed = parse(record.content, record.display)
        if parsed.document is None:
            self.tree.diagnostics.extend(parsed.diagnostics)
            return
        self.visit(parsed.document, record.display, key[:2], (*chain, key))
        self.tree.files.append((record, parsed.document))  # after what it includes


def _at(report: Reporter, path: Path, message: str) -> Diagnostic:
    """The error ``report`` would make at ``path``, without keeping it."""
    report.error(path, message)
    return report.diagnostics.pop()


async def resolve(text: str, file: str, fetch: Fetch) -> tuple[IncludedFile, ...]:
    """Every file ``text`` (read as ``file``) includes, at every level, fetched with
    ``fetch``: the records to keep with the run. A fetch that raises ``IncludeError``,
    or brings more than ``MAX_BYTES``, is recorded as failed; the problems themselves
    are reported when the pipeline is linted with these records (``merged``)."""
    document = parse(text, file).document
    if document is None or not has_includes(document):
        return ()
    known: dict[Key, IncludedFile] = {}
    while missing := walk(document, file, known).missing:
        for key in missing:
            known[key] = await _fetched(fetch, key)
    return tuple(known.values())


async def _fetched(fetch: Fetch, key: Key) -> IncludedFile:
    try:
        record = await fetch(key)
    except IncludeError as exc:
        return IncludedFile.failed(key, str(exc))
    if len(record.content.encode()) > MAX_BYTES:
        return IncludedFile.failed(key, f"it is larger than {MAX_BYTES // 1024} KiB")
    return record


# --- the merge -----------------------------------------------------------------------


def merged(document: Document, file: str, includes: Sequence[IncludedFile],
           ) -> tuple[Document, list[Diagnostic]]:
    """``document`` (read as ``file``) with the jobs of the files it includes, from the
    run's records ``includes``, and every problem of its includes; ``document`` itself
    when it has no ``include:``."""
    if not has_includes(document):
        return document, []
    tree = walk(document, file, {record.key: record for record in includes})
    diagnostics = [*tree.diagnostics, *tree.missing.values()]
    jobs: dict[str, Any] = {}
    places: dict[str, str] = {}  # job -> "file:line" where it was taken from
    marks = Marks(files=dict(document.marks.files))
    for record, included in tree.files:
        names, problems = _take_jobs(record, included, file, jobs, places)
        diagnostics += problems
        _add_marks(marks, included.marks, names.__contains__)
        marks.files.update({("jobs", name): record.display for name in names})
    data = document.data
    own = data.get("jobs")
    if not jobs or not (own is None or isinstance(own, dict)):
        return document, diagnostics  # the own jobs' problem is reported as it is
    report = Reporter(file, document)
    for name in own or {}:
        if name in jobs:
            report.error(("jobs", name), f"job '{name}' is also defined in {places[name]}, "
                         "which this file includes (a job is defined once: rename one)",
                         at_key=True)
    # the own marks, but those of a job that lost to an included one of the same name
    _add_marks(marks, document.marks, lambda job: job not in jobs)
    jobs.update({name: job for name, job in (own or {}).items() if name not in jobs})
    return Document({**data, "jobs": jobs}, marks), [*diagnostics, *report.diagnostics]


def _take_jobs(record: IncludedFile, document: Document, root_file: str,
               jobs: dict[str, Any], places: dict[str, str],
               ) -> tuple[set[str], list[Diagnostic]]:
    """Add the jobs of one included file to ``jobs``; their names, and the problems of
    its top level and of names defined already."""
    report = Reporter(record.display, document)
    data = document.data
    if not isinstance(data, dict):
        report.error((), f"expected a mapping holding jobs: (and include:), got {kind(data)}")
        return set(), report.diagnostics
    for key in data:
        if key not in _TOP_KEYS and not key.startswith("x-"):
            report.error((key,), f"'{key}' is read from the pipeline file ({root_file}) "
                         "only: an included file holds jobs: and include:", at_key=True)
    found = data.get("jobs", {})
    if not isinstance(found, dict):
        report.error(("jobs",), f"expected a mapping of jobs, got {kind(found)}")
        return set(), report.diagnostics
    names: set[str] = set()
    for name, job in found.items():
        if name in jobs:
            report.error(("jobs", name), f"job '{name}' is also defined in {places[name]} "
                         "(a job is defined once: rename one)", at_key=True)
            continue
        jobs[name] = job
        names.add(name)
        line = document.marks.locate(("jobs", name), at_key=True)[0]
        places[name] = f"{record.display}:{line}"
    return names, report.diagnostics


def _job_of(path: Path) -> str | int | None:
    """The job a path is in (``("jobs", "build", ...)`` -> ``"build"``), else None."""
    return path[1] if len(path) > 1 and path[0] == "jobs" else None


def _add_marks(target: Marks, source: Marks, wanted: Callable[[object], bool]) -> None:
    """The places in ``source`` of the jobs ``wanted`` (given a job's name, or None for
    what is in no job), into ``target``."""
    for found, kept in ((source.keys, target.keys), (source.values, target.values)):
        kept.update((path, place) for path, place in found.items() if wanted(_job_of(path)))
