"""The one defensive decoding layer a delivery passes through before a forge module reads
it: header values and the JSON body. Anyone who can reach a webhook URL can send
anything, and headers are read *before* the secret is checked, so nothing here raises
anything but ``HookAuthError`` (for the headers that authenticate) or ``PayloadError``,
each naming the header, or the body and where in it.

* Header values: aiohttp decodes header bytes as UTF-8 with ``surrogateescape``, so bytes
  that are not UTF-8 arrive as lone surrogates. A value with those, or with control
  characters, is refused; a delivery id is at most ``MAX_DELIVERY`` characters.
* The body: at most ``MAX_BODY`` bytes, UTF-8, JSON nested at most ``MAX_DEPTH`` deep
  (the decoder recurses: 100 000 ``[`` raise RecursionError, a few hundred would make
  anything recursive that later walks the data fail),
  integers of at most ``MAX_INT_DIGITS`` digits (Python refuses to convert longer ones,
  with a ValueError), no NaN or Infinity, and an object at the top.
* No string or key of the body holds a lone surrogate (a ``\\ud800`` escape decodes to
  one, and no store or encoder takes it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, NoReturn

from services.api.hooks.errors import HookAuthError, PayloadError

__all__ = [
    "MAX_BODY",
    "MAX_DELIVERY",
    "MAX_DEPTH",
    "MAX_INT_DIGITS",
    "check_text",
    "decode_json",
    "decode_value",
    "delivery_header",
    "first_header",
    "json_type",
    "lower_headers",
]

MAX_BODY = 25 * 1024 * 1024  # GitHub caps payloads at 25 MB; so does the api (max_body)
MAX_DEPTH = 64  # forge payloads nest about 6 deep
MAX_INT_DIGITS = 40  # ids are 64-bit at most (20 digits)
MAX_DELIVERY = 255

_SURROGATE = re.compile("[\ud800-\udfff]")
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f]")  # tab is allowed in a header value


def lower_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Header names folded to lower case (HTTP header names are case-insensitive)."""
    return {name.lower(): value for name, value in headers.items()}


def _header_value(name: str, value: str, auth: bool) -> str:
    error = HookAuthError if auth else PayloadError
    if _SURROGATE.search(value):
        raise error(f"header {name} is not text: it holds bytes that are not UTF-8")
    if _CONTROL.search(value):
        raise error(f"header {name} holds control characters")
    return value.strip()


def first_header(headers: Mapping[str, str], *names: str,
                 auth: bool = False) -> tuple[str, str] | None:
    """The first of ``names`` present and non-empty in lower-cased ``headers``, as
    ``(name as given, value)``. A value that is not clean text raises ``HookAuthError``
    when ``auth`` (the header authenticates: 401), else ``PayloadError``."""
    for name in names:
        value = _header_value(name, headers.get(name.lower(), ""), auth)
        if value:
            return name, value
    return None


def delivery_header(headers: Mapping[str, str], *names: str) -> str:
    """The delivery id from the first of ``names`` present; "" when none is."""
    found = first_header(headers, *names)
    if found is None:
        return ""
    name, value = found
    if len(value) > MAX_DELIVERY:
        raise PayloadError(f"header {name} is longer than {MAX_DELIVERY} characters")
    return value


def check_text(value: str, where: str) -> str:
    """``value`` (at ``where`` in the body) if it is storable text."""
    if _SURROGATE.search(value):
        raise PayloadError(f"{where} is not valid Unicode text (a lone surrogate escape)")
    return value


def json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number",
             float: "number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


_CONTAINERS = (dict, list)  # what json.loads makes (exact types: this loop is hot)


def _check_depth(data: Any) -> None:
    """Refuse nesting deeper than MAX_DEPTH, level by level (no recursion of our own)."""
    level: list[Any] = [data] if type(data) in _CONTAINERS else []
    depth = 0
    while level:
        depth += 1
        if depth > MAX_DEPTH:
            raise PayloadError(f"body is nested deeper than {MAX_DEPTH} levels")
        level = [child for node in level
                 for child in (node.values() if type(node) is dict else node)
                 if type(child) in _CONTAINERS]


# A \uD800-\uDFFF escape: only text that has one can decode to a lone surrogate.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _check_surrogates(data: Any) -> None:
    """Refuse a string (or key) holding a lone surrogate, naming where it is."""
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, str):
            check_text(node, path or "body")
        elif isinstance(node, dict):
            for key, value in node.items():
                check_text(key, f"a key in {path or 'body'}")
                stack.append((f"{path}.{key}" if path else key, value))
        elif isinstance(node, list):
            stack.extend((f"{path}[{i}]", value) for i, value in enumerate(node))


def _int(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_INT_DIGITS:
        raise PayloadError(f"body holds an integer of {len(digits.lstrip('-'))} digits "
                           f"(at most {MAX_INT_DIGITS})")
    return int(digits)


def _constant(name: str) -> NoReturn:
    raise PayloadError(f"body holds {name}, which is not JSON")


def decode_value(body: bytes) -> Any:
    """``body`` as any JSON value, within the limits above."""
    if len(body) > MAX_BODY:
        raise PayloadError(f"body is larger than {MAX_BODY} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(f"body is not JSON: not UTF-8 text ({exc.reason} at byte "
                           f"{exc.start})") from None
    text = text.removeprefix("\ufeff")  # a byte order mark, as json.loads(bytes) allowed
    if not text.strip():
        raise PayloadError("body is empty")
    try:
        data = json.loads(text, parse_int=_int, parse_constant=_constant)
    except json.JSONDecodeError as exc:
        raise PayloadError(f"body is not JSON: {exc.msg} at line {exc.lineno} "
                           f"column {exc.colno}") from None
    except RecursionError:  # the C decoder's own guard, far deeper than MAX_DEPTH
        raise PayloadError(f"body is nested deeper than {MAX_DEPTH} levels") from None
    _check_depth(data)
    if _SURROGATE_ESCAPE.search(text):
        _check_surrogates(data)
    return data


def decode_json(body: bytes) -> dict[str, Any]:
    """``body`` as a JSON object, within the limits above."""
    data = decode_value(body)
    if not isinstance(data, dict):
        raise PayloadError(f"body is not a JSON object (got {json_type(data)})")
    return data
