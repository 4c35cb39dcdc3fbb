"""The Jinja2 environment of notification mails, shared by the notifier (which renders)
and the API (which checks a project's templates before storing them).

Templates come from project settings, so from users: they are rendered in Jinja2's
sandbox (no attribute access to internals, no file or module access). The HTML
template is autoescaped; the subject and text templates are not. An undefined
variable is an error (``StrictUndefined``), not an empty string.

Filters added to Jinja2's own: ``duration`` (seconds, or None, to ``"1m 05s"``,
``"12s"`` or ``""``).
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment

__all__ = ["MAX_TEMPLATE", "TEMPLATE_NAMES", "check_template", "environment",
           "format_duration", "render_template"]

TEMPLATE_NAMES = ("subject", "text", "html")
MAX_TEMPLATE = 100_000  # characters
_PROBLEM_MAX = 200  # characters of a render error's message kept in the reason


def format_duration(seconds: float | None) -> str:
    """``"1m 05s"``, ``"12s"``, or ``""`` when unknown (None)."""
    if seconds is None:
        return ""
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m {rest:02d}s" if minutes else f"{rest}s"


def environment(name: str) -> ImmutableSandboxedEnvironment:
    """The environment template ``name`` (one of ``TEMPLATE_NAMES``) is rendered in."""
    env = ImmutableSandboxedEnvironment(autoescape=name == "html", undefined=StrictUndefined,
                                        keep_trailing_newline=True)
    env.filters["duration"] = format_duration
    return env


def check_template(name: str, source: str) -> None:
    """Raise ``ValueError`` naming the template, line and problem if ``source`` does not
    compile (or ``name`` is not a template Cyclone has). Compiling, not only parsing,
    also finds an unknown filter or test."""
    if name not in TEMPLATE_NAMES:
        raise ValueError(f"unknown template {name!r} (expected one of: "
                         f"{', '.join(TEMPLATE_NAMES)})")
    if len(source) > MAX_TEMPLATE:
        raise ValueError(f"{name}: longer than {MAX_TEMPLATE} characters")
    try:
        environment(name).compile(source)
    except TemplateSyntaxError as exc:
        raise ValueError(f"{name}: line {exc.lineno}: {exc.message}") from None


def render_template(name: str, source: str, context: Mapping[str, Any]) -> str:
    """``source`` rendered as template ``name`` with ``context``.

    Raises ``ValueError("<name> template: line <n>: <problem>")`` when it does not
    compile or fails while rendering (an undefined variable, an unsafe attribute, an
    error in an expression); the line is the template's, when known.
    """
    if len(source) > MAX_TEMPLATE:
        raise ValueError(f"{name} template: longer than {MAX_TEMPLATE} characters")
    try:
        return environment(name).from_string(source).render(context)
    except TemplateSyntaxError as exc:
        raise ValueError(_problem(name, exc.lineno, exc.message or str(exc))) from None
    except Exception as exc:  # anything a user's expression can raise
        raise ValueError(_problem(name, _template_line(exc), str(exc) or
                                  type(exc).__name__)) from None


def _template_line(exc: BaseException) -> int | None:
    """The template line being rendered when ``exc`` was raised: Jinja2 rewrites the
    traceback so template frames carry the template's file name and line numbers."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == "<template>"]
    return frames[-1].lineno if frames else None


def _problem(name: str, line: int | None, message: str) -> str:
    message = " ".join(message.split())[:_PROBLEM_MAX]
    where = f"line {line}: " if line is not None else ""
    return f"{name} template: {where}{message}"
