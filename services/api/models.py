"""Request bodies, validated with pydantic: unknown fields are errors that name the field."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["ProjectCreate", "ProjectPatch", "RunCreate", "TokenCreate", "check_ref"]

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SHA = re.compile(r"^[0-9a-f]{7,40}$")


def check_ref(ref: str) -> str:
    """Git's rules for a ref name (git check-ref-format), as far as a client can break them."""
    bad = (not ref or ref.startswith(("-", "/")) or ref.endswith(("/", ".", ".lock"))
           or ".." in ref or "//" in ref or "@{" in ref
           or any(c in ref for c in " ~^:?*[\\") or any(ord(c) < 32 or ord(c) == 127
                                                          for c in ref))
    if bad:
        raise ValueError(f"not a valid git ref: {ref!r}")
    return ref


def _check_env(env: dict[str, str]) -> dict[str, str]:
    for key in env:
        if not _ENV_KEY.match(key):
            raise ValueError(f"not a valid environment variable name: {key!r}")
    return env


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ProjectCreate(_Body):
    name: Annotated[str, Field(pattern=_NAME)]
    repo: Annotated[str, Field(min_length=1, max_length=2000)]
    default_branch: str = "main"
    pipeline_file: Annotated[str, Field(min_length=1, max_length=500)] = ".cyclone.yml"
    env: dict[str, str] = {}
    max_concurrent_runs: Annotated[int, Field(ge=0)] = 0

    _branch = field_validator("default_branch")(check_ref)
    _env = field_validator("env")(_check_env)


class ProjectPatch(_Body):
    repo: Annotated[str, Field(min_length=1, max_length=2000)] | None = None
    default_branch: str | None = None
    pipeline_file: Annotated[str, Field(min_length=1, max_length=500)] | None = None
    env: dict[str, str] | None = None
    max_concurrent_runs: Annotated[int, Field(ge=0)] | None = None

    @field_validator("default_branch")
    @classmethod
    def _branch(cls, value: str | None) -> str | None:
        return None if value is None else check_ref(value)

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return None if value is None else _check_env(value)


class RunCreate(_Body):
    ref: str | None = None
    commit: str | None = None
    params: dict[str, str] = {}

    @field_validator("ref")
    @classmethod
    def _ref(cls, value: str | None) -> str | None:
        return None if value is None else check_ref(value)

    @field_validator("commit")
    @classmethod
    def _commit(cls, value: str | None) -> str | None:
        if value is not None and not _SHA.match(value):
            raise ValueError(f"not a commit SHA (7 to 40 lower-case hex digits): {value!r}")
        return value

    _params = field_validator("params")(_check_env)


class TokenCreate(_Body):
    name: Annotated[str, Field(min_length=1, max_length=100)]
