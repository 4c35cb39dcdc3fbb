"""A job's ``artifacts:``, ``cache:`` and ``reports:`` in ``.cyclone.yml``, as pydantic models
(the rest is in ``schema``), and ``when: {outputs: ...}``'s values.

Paths are workspace-relative globs (``*`` within a directory, ``**`` across them, as the
``paths`` filters of ``on:``): never absolute, never leaving the workspace with ``..``.
Loaded at the end of ``schema``, whose job model refers to these.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, Union

from pydantic import AfterValidator, BeforeValidator, Field, Tag
from pydantic_core import PydanticCustomError

from shared.pipeline.schema import (
    LIST_TAG,
    MAP_OR_LIST,
    MAP_TAG,
    NonEmpty,
    StrList,
    _as_list,
    _glob,
    _Model,
)

__all__ = ["HASH_FILES", "ArtifactsModel", "CacheModel", "Caches", "ReportsModel",
           "WorkspacePatterns", "artifact_name", "caches_of", "hash_files_patterns"]

# ${{ hashFiles('a', 'b/**') }} in a cache key: the worker puts the SHA-256 of those files
HASH_FILES = re.compile(r"\$\{\{\s*hashFiles\(([^)]*)\)\s*\}\}")
_QUOTED = re.compile(r"\s*'([^']*)'\s*")
ARTIFACT_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
CACHE_KEY_MAX = 512


def _workspace_path(value: str) -> str:
    """A glob relative to the workspace that cannot reach outside it."""
    value = _glob(value)
    parts = value.split("/")
    if value.startswith("/") or ".." in parts:
        raise PydanticCustomError("workspace_path", "'{value}' must be relative to the "
                                  "workspace and stay inside it (no leading '/', no '..')",
                                  {"value": value})
    return value


def artifact_name(value: str) -> str:
    if not ARTIFACT_NAME.fullmatch(value):
        raise PydanticCustomError("artifact_name", "invalid artifact name '{value}' (1 to 64 "
                                  "letters, digits, '_', '.' and '-')", {"value": value})
    return value


def hash_files_patterns(key: str) -> list[list[str]]:
    """The patterns of each ``${{ hashFiles(...) }}`` in ``key`` (ValueError if malformed)."""
    found = []
    for match in HASH_FILES.finditer(key):
        args = match.group(1).split(",") if match.group(1).strip() else []
        patterns = []
        for arg in args:
            quoted = _QUOTED.fullmatch(arg)
            if quoted is None:
                raise ValueError(f"hashFiles takes quoted patterns, got {arg.strip()!r}")
            patterns.append(_workspace_path(quoted.group(1)))
        if not patterns:
            raise ValueError("hashFiles needs at least one pattern")
        found.append(patterns)
    return found


def _cache_key(value: str) -> str:
    if len(value) > CACHE_KEY_MAX:
        raise PydanticCustomError("cache_key", "a cache key is at most {max} characters",
                                  {"max": CACHE_KEY_MAX})
    try:
        hash_files_patterns(value)
    except ValueError as exc:
        raise PydanticCustomError("cache_key", "bad cache key: {why}", {"why": str(exc)}) from exc
    rest = HASH_FILES.sub("", value)
    if "${{" in rest:
        raise PydanticCustomError("cache_key", "a cache key may use only ${{{{ hashFiles('glob', "
                                  "...) }}}} and ${{{{ matrix.KEY }}}}", {})
    return value


WorkspacePatterns = Annotated[
    list[Annotated[str, AfterValidator(_workspace_path)]], BeforeValidator(_as_list),
    Field(min_length=1)]
CacheKey = Annotated[NonEmpty, AfterValidator(_cache_key)]


class ArtifactsModel(_Model):
    """Files kept after the job: ``needs`` brings them into the jobs that need it."""

    paths: WorkspacePatterns
    name: Annotated[str, AfterValidator(artifact_name)] | None = None
    when: Literal["success", "failure", "always"] = "success"


class CacheModel(_Model):
    key: CacheKey
    paths: WorkspacePatterns
    restore_keys: Annotated[StrList, Field(max_length=10)] = []


# One cache, or a list of them (diagnostics keep the path as written).
Caches = Annotated[
    Union[  # noqa: UP007 - members carry Tag metadata
        Annotated[CacheModel, Tag(MAP_TAG)],
        Annotated[list[CacheModel], Tag(LIST_TAG), Field(min_length=1, max_length=5)],
    ],
    MAP_OR_LIST,
]


def caches_of(value: CacheModel | list[CacheModel] | None) -> list[CacheModel]:
    return [] if value is None else [value] if isinstance(value, CacheModel) else value


class ReportsModel(_Model):
    junit: WorkspacePatterns
