"""YAML text -> plain Python data, with the line and column of every key and value.

``parse(text, file)`` composes the YAML node tree (``yaml.compose``, which keeps
marks) and converts it to dicts, lists and scalars, recording where each key and
value was written under its path, a tuple of mapping keys (``str``) and sequence
indices (``int``): ``("jobs", "build", "steps", 0, "run")``.

Contract: never raises for any input text. Problems (YAML syntax errors,
duplicate keys, non-scalar keys, recursive or exploding aliases, bad tagged
scalars) come back as error diagnostics, and then ``document`` is ``None``.

Mapping keys are the scalar's source text (``on:`` is the key ``"on"``, not
``True``); values are resolved as YAML 1.1 by PyYAML's safe constructor. Merge
keys (``<<: *anchor``) are applied, explicit keys winning.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from shared.pipeline.diagnostics import Diagnostic

__all__ = [
    "Document", "Marks", "ParseResult", "Path", "Reporter", "format_path", "ordered", "parse",
]

Path = tuple[str | int, ...]
MERGE_TAG = "tag:yaml.org,2002:merge"
# libyaml's parser when PyYAML was built with it (Debian's and the wheels are): the same
# nodes and marks, 15-20x faster than the pure-Python one (a run's file is parsed as it
# is planned, so that is on every run's way to its first job). A file it refuses is
# parsed again by the pure-Python one, whose messages say more ("expected ',' or ']',
# but got '<stream end>'").
_FAST_LOADER = getattr(yaml, "CSafeLoader", None)
# Aliases can make a small text expand into a huge tree ("billion laughs"):
# stop converting after this many nodes.
MAX_NODES = 100_000


def format_path(path: Sequence[str | int]) -> str:
    """``("jobs", "build", "steps", 0, "run")`` -> ``"jobs.build.steps[0].run"``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


@dataclass
class Marks:
    """Where each path's key and value start, as 1-based (line, column)."""

    keys: dict[Path, tuple[int, int]] = field(default_factory=dict)
    values: dict[Path, tuple[int, int]] = field(default_factory=dict)
    # The file a part was written in, when not the document's own: a job an ``include:``
    # merged in (``shared.pipeline.include``) keeps its file's lines, so a problem in it
    # must name that file.
    files: dict[Path, str] = field(default_factory=dict)

    def locate(self, path: Path, at_key: bool = False) -> tuple[int, int]:
        """The place to report a problem at ``path``, or at its nearest known ancestor.

        A value written on its key's line is reported at the value (the column
        points at it); a block value below its key is reported at the key.
        ``at_key`` reports at the key itself (for "unknown key").
        """
        for end in range(len(path), -1, -1):
            prefix = path[:end]
            key = self.keys.get(prefix)
            value = self.values.get(prefix)
            if key and (at_key or value is None or value[0] != key[0]):
                return key
            if value:
                return value
        return (0, 0)

    def file_of(self, path: Path, default: str) -> str:
        """The file ``path`` was written in: that of its nearest part in ``files``, else
        ``default`` (the document's own)."""
        for end in range(len(path), 0, -1):
            found = self.files.get(path[:end])
            if found is not None:
                return found
        return default

    def known(self, path: Path) -> Path:
        """The longest prefix of ``path`` that exists in the document."""
        for end in range(len(path), -1, -1):
            if path[:end] in self.values or path[:end] in self.keys:
                return path[:end]
        return ()


@dataclass(frozen=True)
class Document:
    data: Any
    marks: Marks


@dataclass(frozen=True)
class ParseResult:
    document: Document | None  # None when there are errors
    diagnostics: list[Diagnostic]


def parse(text: str, file: str) -> ParseResult:
    """Parse ``text``; see the module docstring for the contract."""
    try:
        root = _compose(text)
    except yaml.MarkedYAMLError as exc:
        return ParseResult(None, [_syntax_error(exc, file)])
    except yaml.YAMLError as exc:  # ReaderError: a character YAML does not allow
        return ParseResult(None, [_reader_error(exc, text, file)])
    except RecursionError:
        return ParseResult(None, [Diagnostic(file, 0, 0, "", "invalid YAML: nested too deeply")])
    if root is None:
        return ParseResult(None, [Diagnostic(file, 1, 1, "", "the file is empty")])
    builder = _Builder(file)
    try:
        data = builder.build(root, ())
    except _TooLarge:
        return ParseResult(None, [Diagnostic(
            file, _line(root), _col(root), "",
            f"the document expands to more than {MAX_NODES} nodes (aliases?)")])
    except RecursionError:
        return ParseResult(None, [Diagnostic(file, 0, 0, "", "invalid YAML: nested too deeply")])
    if builder.errors:
        return ParseResult(None, builder.errors)
    return ParseResult(Document(data, builder.marks), [])


def _compose(text: str) -> Node | None:
    if _FAST_LOADER is not None:
        try:
            return yaml.compose(text, Loader=_FAST_LOADER)
        except (yaml.YAMLError, RecursionError):
            pass  # the pure-Python parser says what is wrong
    return yaml.compose(text, Loader=yaml.SafeLoader)


class _TooLarge(Exception):
    pass


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


def _col(node: Node) -> int:
    return int(node.start_mark.column) + 1


class _Builder:
    """Converts a node tree to data, recording marks and collecting problems."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.marks = Marks()
        self.errors: list[Diagnostic] = []
        self._constructor = SafeConstructor()
        self._count = 0
        self._active: set[int] = set()  # ids of collection nodes being built (alias cycles)

    def error(self, node: Node, path: Path, message: str) -> None:
        self.errors.append(Diagnostic(self.file, _line(node), _col(node), format_path(path),
                                      message))

    def build(self, node: Node, path: Path) -> Any:
        self._count += 1
        if self._count > MAX_NODES:
            raise _TooLarge
        self.marks.values[path] = (_line(node), _col(node))
        if isinstance(node, ScalarNode):
            return self._scalar(node, path)
        if id(node) in self._active:
            self.error(node, path, "an alias refers to a node that contains it")
            return None
        self._active.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
            if isinstance(node, MappingNode):
                return self._mapping(node, path)
        finally:
            self._active.discard(id(node))
        self.error(node, path, "unsupported YAML node")
        return None

    def _scalar(self, node: ScalarNode, path: Path) -> Any:
        try:
            return self._constructor.construct_object(node, deep=True)
        except Exception as exc:  # the contract: never raise, whatever the text
            # e.g. "!!int abc", an unknown "!tag", a bad "!!binary"; PyYAML's constructors
            # raise what their parsing trips on (an empty "!!int": IndexError, an empty
            # "!!timestamp": AttributeError)
            problem = getattr(exc, "problem", None) or str(exc)
            self.error(node, path, f"invalid value: {problem}")
            return None

    def _mapping(self, node: MappingNode, path: Path) -> dict[str, Any]:
        # merges first, so that the marks of explicit keys overwrite merged ones
        merged: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == MERGE_TAG:
                for key, item in self._merge(value_node, path).items():
                    merged.setdefault(key, item)
        out: dict[str, Any] = {}
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == MERGE_TAG:
                continue
            if not isinstance(key_node, ScalarNode):
                self.error(key_node, path, "a mapping key must be a plain string")
                continue
            key = str(key_node.value)
            if key in first_line:
                self.error(key_node, (*path, key),
                           f"duplicate key '{key}' (first at line {first_line[key]})")
                continue
            first_line[key] = _line(key_node)
            self.marks.keys[(*path, key)] = (_line(key_node), _col(key_node))
            out[key] = self.build(value_node, (*path, key))
        # explicit keys win over merged ones; merged keys go first, as written
        return {**{k: v for k, v in merged.items() if k not in out}, **out}

    def _merge(self, value: Node, path: Path) -> dict[str, Any]:
        sources = value.value if isinstance(value, SequenceNode) else [value]
        out: dict[str, Any] = {}
        for source in sources:
            if not isinstance(source, MappingNode):
                self.error(source, path, "'<<' merges only mappings")
                continue
            if id(source) in self._active:
                self.error(source, path, "an alias refers to a node that contains it")
                continue
            self._active.add(id(source))
            try:
                # earlier sources win, as in YAML's merge key spec
                for key, item in self._mapping(source, path).items():
                    out.setdefault(key, item)
            finally:
                self._active.discard(id(source))
        return out


def _syntax_error(exc: yaml.MarkedYAMLError, file: str) -> Diagnostic:
    mark = exc.problem_mark or exc.context_mark
    line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
    problem = exc.problem or exc.context or "syntax error"
    if exc.context and exc.problem:  # PyYAML's own order: "while parsing X, expected Y"
        began = exc.context_mark
        where = f" (line {began.line + 1})" if began and mark and began.line != mark.line else ""
        problem = f"{exc.context}{where}, {exc.problem}"
    return Diagnostic(file, line, col, "", f"invalid YAML: {problem}")


def _reader_error(exc: yaml.YAMLError, text: str, file: str) -> Diagnostic:
    position = getattr(exc, "position", None)
    line = col = 0
    if isinstance(position, int):
        before = text[:position]
        line = before.count("\n") + 1
        col = position - (before.rfind("\n") + 1) + 1
    character = getattr(exc, "character", None)
    if isinstance(character, str) and character:
        character = ord(character[0])
    what = f" #x{character:04x}" if isinstance(character, int) else ""
    return Diagnostic(file, line, col, "", f"invalid YAML: unacceptable character{what}")


class Reporter:
    """Collects diagnostics about one document, placed by path via its marks."""

    def __init__(self, file: str, document: Document) -> None:
        self.file = file
        self.document = document
        self.diagnostics: list[Diagnostic] = []

    def error(self, path: Path, message: str, *, shown: Path | None = None,
              at_key: bool = False) -> None:
        """An error at ``path``; ``shown`` is the path printed when it differs."""
        self._add(path, message, shown, at_key, "error")

    def warning(self, path: Path, message: str, *, shown: Path | None = None,
                at_key: bool = False) -> None:
        self._add(path, message, shown, at_key, "warning")

    def _add(self, path: Path, message: str, shown: Path | None, at_key: bool,
             severity: Literal["error", "warning"]) -> None:
        marks = self.document.marks
        line, col = marks.locate(path, at_key=at_key)
        printed = marks.known(path) if shown is None else shown
        self.diagnostics.append(Diagnostic(marks.file_of(path, self.file), line, col,
                                           format_path(printed), message, severity))


def ordered(diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    """Errors first, each group in file order (file by file, when a pipeline includes
    others); exact repeats dropped."""
    unique = list(dict.fromkeys(diagnostics))
    return sorted(unique, key=lambda d: (d.severity != "error", d.file, d.line, d.column))
