"""Every error the API answers is JSON ``{"error": code, "detail": text}``; never a traceback.

``ApiError`` is raised by handlers; ``read_json`` reads a request's JSON body through the
same defensive decoding as webhook payloads (UTF-8, nesting depth, integer length, no
lone surrogates: ``services/api/hooks/decode.py``), a 400 naming what is wrong. The
middleware also turns aiohttp's own HTTP
errors (unknown route, wrong method, body too large), invalid JSON and pydantic
validation errors (naming the field) into that shape, and any other exception into
a 500 whose details go to the log only.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from services.api.hooks.decode import decode_value
from services.api.hooks.errors import PayloadError

__all__ = ["ApiError", "error_middleware", "field_problem", "json_error", "read_json"]

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
          405: "method_not_allowed", 409: "conflict", 413: "payload_too_large",
          415: "unsupported_media_type", 422: "invalid", 429: "too_many_requests"}


class ApiError(Exception):
    def __init__(self, status: int, detail: str, error: str | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.error = error or _CODES.get(status, "error")
        self.headers = headers or {}


def json_error(status: int, detail: str, error: str | None = None,
               headers: Mapping[str, str] | None = None) -> web.Response:
    body = {"error": error or _CODES.get(status, "error"), "detail": detail}
    return web.json_response(body, status=status, headers=headers)


async def read_json(request: web.Request) -> Any:
    """The request's body as a JSON value; ``ApiError`` 400 when it is not one."""
    try:
        return decode_value(await request.read())
    except PayloadError as exc:
        raise ApiError(400, str(exc), "invalid_json") from None


def field_problem(err: ErrorDetails) -> str:
    """One pydantic error as ``field.path: what is wrong``."""
    where = ".".join(str(part) for part in err["loc"]) or "body"
    message = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
    return f"{where}: {message}"


def _validation_detail(exc: ValidationError) -> str:
    return "; ".join(field_problem(err) for err in exc.errors())


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return json_error(exc.status, exc.detail, exc.error, exc.headers)
    except ValidationError as exc:
        return json_error(400, _validation_detail(exc), "invalid_body")
    except json.JSONDecodeError as exc:
        return json_error(400, f"body is not valid JSON: {exc.msg} at line {exc.lineno} "
                               f"column {exc.colno}", "invalid_json")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        detail = exc.reason
        if exc.status == 404:
            detail = f"no route {request.method} {request.path}"
        elif exc.status == 413:
            # the app's limit (ApiContext.max_body), as the request itself knows it
            detail = f"request body larger than {request.client_max_size} bytes"
        return json_error(exc.status, detail)
    except Exception:
        log.exception("unhandled error", extra={"path": request.path, "method": request.method})
        return json_error(500, "internal error; the server log has the details", "internal")
