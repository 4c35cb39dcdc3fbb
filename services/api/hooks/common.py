"""What the forge modules share: authenticity checks, JSON field access, refs and paths
(and, re-exported, the errors, the ``Ignored`` verdict and the decoding layer).

Everything here is pure (no I/O). Messages name what is wrong with a JSON-pointer-ish
path (``pull_request.head.sha is missing``) and never contain a secret or a signature.
Every string read is storable text (``decode`` refused the rest); refs, branch and tag
names are what git accepts, at most ``MAX_REF_BYTES``; pull request numbers fit 31 bits.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs

from services.api.hooks.decode import (
    decode_json,
    delivery_header,
    first_header,
    json_type,
    lower_headers,
)
from services.api.hooks.errors import HookAuthError, Ignored, PayloadError

__all__ = [
    "Headers",
    "HookAuthError",
    "Ignored",
    "PayloadError",
    "check_hmac",
    "check_token",
    "delivery_header",
    "first_header",
    "head_commit",
    "is_fork",
    "is_zero",
    "load_json",
    "lower_headers",
    "need_branch",
    "need_int",
    "need_obj",
    "need_pr_number",
    "need_ref",
    "need_sha",
    "need_str",
    "need_tag",
    "opt_int",
    "opt_list",
    "opt_sha",
    "opt_str",
    "paths_of",
    "ref_fields",
    "split_ref",
]

Headers = Mapping[str, str]


# -- authenticity -----------------------------------------------------------------------

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


def _need_secret(secret: str) -> bytes:
    if not secret:
        # An empty HMAC key is a signature anyone can compute: fail closed.
        raise HookAuthError("the project has no webhook secret; set one to accept deliveries")
    return secret.encode()


def check_hmac(headers: Mapping[str, str], names: tuple[str, ...], body: bytes, secret: str,
               prefix: str = "") -> None:
    """The first present of ``names`` must be ``prefix`` + the hex HMAC-SHA256 of ``body``
    keyed with ``secret`` (compared in constant time)."""
    key = _need_secret(secret)
    found = first_header(headers, *names, auth=True)
    if found is None:
        raise HookAuthError(f"{names[0]} header is missing")
    name, value = found
    digest = value[len(prefix):] if value.startswith(prefix) else ""
    if not _HEX64.fullmatch(digest):
        raise HookAuthError(f"{name} is not {prefix!r} followed by 64 hex digits"
                            if prefix else f"{name} is not 64 hex digits")
    expected = hmac.new(key, body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(digest.lower().encode(), expected.encode()):
        raise HookAuthError(f"{name} does not match the body signed with the project's "
                            "webhook secret")


def check_token(headers: Mapping[str, str], name: str, secret: str) -> None:
    """Header ``name`` must be the secret itself (GitLab), compared in constant time."""
    key = _need_secret(secret)
    found = first_header(headers, name, auth=True)
    if found is None:
        raise HookAuthError(f"{name} header is missing")
    if not hmac.compare_digest(found[1].encode(), key):
        raise HookAuthError(f"{name} does not match the project's webhook secret")


# -- the body ---------------------------------------------------------------------------

def load_json(headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
    """The payload as a JSON object (see ``decode``). A form-encoded body (GitHub's and
    Gitea's ``application/x-www-form-urlencoded`` option) carries it in its ``payload``
    field."""
    found = first_header(headers, "Content-Type")
    if found and found[1].startswith("application/x-www-form-urlencoded"):
        try:
            fields = parse_qs(body.decode(), strict_parsing=True)
        except (UnicodeDecodeError, ValueError) as exc:
            raise PayloadError(f"body is not a valid form: {exc}") from None
        if "payload" not in fields:
            raise PayloadError("form body has no 'payload' field")
        body = fields["payload"][0].encode()
    return decode_json(body)


_ABSENT = object()


def _where(at: str, path: str) -> str:
    return f"{at}.{path}" if at else path


def _lookup(data: dict[str, Any], path: str, at: str) -> Any:
    """The value at dotted ``path`` under ``data`` (itself at ``at`` in the payload, for
    messages); ``_ABSENT`` when missing or null."""
    node: Any = data
    walked = [at] if at else []
    for part in path.split("."):
        if not isinstance(node, dict):
            raise PayloadError(f"{'.'.join(walked)} is not an object (got {json_type(node)})")
        node = node.get(part)
        if node is None:
            return _ABSENT
        walked.append(part)
    return node


def is_fork(data: dict[str, Any], head: str, base: str, at: str = "") -> bool:
    """Whether a pull request comes from another repository than its base: the values at
    ``head`` and ``base`` (its head's and its base's repository name or id) differ, or the
    head's is gone (a deleted fork) while the base's is there."""
    theirs, ours = _lookup(data, head, at), _lookup(data, base, at)
    return ours is not _ABSENT and theirs != ours


def need_obj(data: dict[str, Any], path: str, at: str = "") -> dict[str, Any]:
    value = _lookup(data, path, at)
    if value is _ABSENT:
        raise PayloadError(f"{_where(at, path)} is missing")
    if not isinstance(value, dict):
        raise PayloadError(f"{_where(at, path)} is not an object (got {json_type(value)})")
    return value


def opt_str(data: dict[str, Any], path: str, default: str = "", at: str = "") -> str:
    value = _lookup(data, path, at)
    if value is _ABSENT:
        return default
    if not isinstance(value, str):
        raise PayloadError(f"{_where(at, path)} is not a string (got {json_type(value)})")
    return value


def need_str(data: dict[str, Any], path: str, at: str = "") -> str:
    value = opt_str(data, path, at=at)
    if not value:
        raise PayloadError(f"{_where(at, path)} is missing")
    return value


def need_int(data: dict[str, Any], path: str, at: str = "") -> int:
    value = _lookup(data, path, at)
    if value is _ABSENT:
        raise PayloadError(f"{_where(at, path)} is missing")
    if isinstance(value, bool) or not isinstance(value, int):
        raise PayloadError(f"{_where(at, path)} is not an integer (got {json_type(value)})")
    return value


def opt_int(data: dict[str, Any], path: str, at: str = "") -> int | None:
    if _lookup(data, path, at) is _ABSENT:
        return None
    return need_int(data, path, at)


def opt_list(data: dict[str, Any], path: str, at: str = "") -> list[Any] | None:
    value = _lookup(data, path, at)
    if value is _ABSENT:
        return None
    if not isinstance(value, list):
        raise PayloadError(f"{_where(at, path)} is not an array (got {json_type(value)})")
    return value


# Commit ids flow into git commands later: accept only what a SHA-1 or SHA-256 id is.
_SHA = re.compile(r"[0-9a-fA-F]{40}|[0-9a-fA-F]{64}")


def opt_sha(data: dict[str, Any], path: str, at: str = "") -> str:
    value = opt_str(data, path, at=at)
    if value and not _SHA.fullmatch(value):
        raise PayloadError(f"{_where(at, path)} is not a commit id (40 or 64 hex digits)")
    return value.lower()


def need_sha(data: dict[str, Any], path: str, at: str = "") -> str:
    value = opt_sha(data, path, at)
    if not value:
        raise PayloadError(f"{_where(at, path)} is missing")
    return value


def is_zero(sha: str) -> bool:
    """The all-zero id git and the forges use for "no commit" (ref created or deleted)."""
    return bool(sha) and set(sha) == {"0"}


# What ``git check-ref-format`` refuses, so a ref or branch name from a payload is safe
# to hand to git (no option-looking or path-escaping names).
_BAD_REF = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//|/[.-]|\.lock(/|$)|[/.]$")


MAX_REF_BYTES = 255  # what a file name (a loose ref) can be; GitHub's limit too


def _check_ref(ref: str, where: str, what: str) -> None:
    if len(ref.encode()) > MAX_REF_BYTES:
        raise PayloadError(f"{where} is not a valid {what}: longer than {MAX_REF_BYTES} "
                           "bytes as a full ref")
    if _BAD_REF.search(ref):
        raise PayloadError(f"{where} is not a valid {what}")


def need_ref(data: dict[str, Any], path: str, at: str = "") -> str:
    ref = need_str(data, path, at)
    if not ref.startswith("refs/"):
        raise PayloadError(f"{_where(at, path)} is not a valid full ref name (refs/...)")
    _check_ref(ref, _where(at, path), "full ref name (refs/...)")
    return ref


def _need_short(data: dict[str, Any], path: str, at: str, prefix: str, what: str) -> str:
    name = need_str(data, path, at)
    if name.startswith(("-", "refs/")):
        raise PayloadError(f"{_where(at, path)} is not a valid {what}")
    _check_ref(prefix + name, _where(at, path), what)
    return name


def need_branch(data: dict[str, Any], path: str, at: str = "") -> str:
    """A branch's short name (``main``), safe to hand to git."""
    return _need_short(data, path, at, "refs/heads/", "branch name")


def need_tag(data: dict[str, Any], path: str, at: str = "") -> str:
    """A tag's short name (``v1.2``), safe to hand to git."""
    return _need_short(data, path, at, "refs/tags/", "tag name")


MAX_PR_NUMBER = 2**31 - 1  # every forge keeps them in a 32-bit signed column or less


def need_pr_number(data: dict[str, Any], path: str, at: str = "") -> int:
    number = need_int(data, path, at)
    if not 0 < number <= MAX_PR_NUMBER:
        raise PayloadError(f"{_where(at, path)} is not a pull request number "
                           f"(1 to {MAX_PR_NUMBER})")
    return number


def split_ref(ref: str) -> tuple[str, str] | None:
    """``("push", branch)`` for refs/heads/..., ``("tag", tag)`` for refs/tags/..., else
    None (notes, pull refs and the like are not built)."""
    for prefix, kind in (("refs/heads/", "push"), ("refs/tags/", "tag")):
        if ref.startswith(prefix) and len(ref) > len(prefix):
            return kind, ref[len(prefix):]
    return None


def ref_fields(ref: str) -> dict[str, Any] | Ignored:
    """The ``ForgeEvent`` fields ``kind``, ``ref``, ``branch`` and ``tag`` of a pushed ref;
    ``Ignored`` for a ref that is neither a branch nor a tag."""
    split = split_ref(ref)
    if split is None:
        return Ignored(f"push to {ref} is ignored: neither a branch nor a tag")
    kind, name = split
    return {"kind": kind, "ref": ref, "branch": name if kind == "push" else "",
            "tag": name if kind == "tag" else ""}


def paths_of(commits: list[Any] | None, path: str) -> tuple[str, ...] | None:
    """The sorted union of the commits' ``added``, ``modified`` and ``removed`` lists;
    None when there is no commits list or a commit lists none of the three (an old forge
    that does not say which files changed: unknown is not "none")."""
    if commits is None:
        return None
    found: set[str] = set()
    for i, commit in enumerate(commits):
        if not isinstance(commit, dict):
            raise PayloadError(f"{path}[{i}] is not an object (got {json_type(commit)})")
        keys = [key for key in ("added", "modified", "removed") if commit.get(key) is not None]
        if not keys:
            return None
        for key in keys:
            files = commit[key]
            if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
                raise PayloadError(f"{path}[{i}].{key} is not an array of strings")
            found.update(files)
    return tuple(sorted(found))


def head_commit(commits: list[Any] | None, sha: str,
                path: str = "commits") -> tuple[dict[str, Any], str]:
    """The commit of ``commits`` whose ``id`` is ``sha``, with its path in the payload;
    ``({}, "")`` when it is not listed."""
    for i, commit in enumerate(commits or ()):
        if isinstance(commit, dict) and str(commit.get("id", "")).lower() == sha:
            return commit, f"{path}[{i}]"
    return {}, ""
