"""A project's status badge: ``GET /api/v1/projects/{name}/badge.svg[?branch=B]``.

An SVG to paste into a README (``![cyclone](https://ci.example.com/api/v1/projects/demo/
badge.svg)``): "cyclone | passing" in the flat layout shields.io made familiar, for the
latest run of the branch (the project's default branch when none is given), read from the
run views. ``Cache-Control: no-cache``: a forge's image proxy asks again each time.

Who may read it is the access table's: a viewer of the project, or anyone when reads are
public (``CYCLONE_PUBLIC_READ``), which is what an image in a public README needs.

Text widths are Verdana's at 11px (the font the badge names first), from its advance
widths, so each half fits its text; ``textLength`` makes a fallback font fit the same box.
"""

from __future__ import annotations

from xml.sax.saxutils import escape

from aiohttp import web

from services.api.context import CONTEXT
from services.api.errors import ApiError
from services.api.projects import require_project
from shared.status import RunStatus

__all__ = ["LOOKS", "badge_routes", "badge_svg", "text_width"]

LABEL = "cyclone"
MAX_BRANCH = 255  # a Git ref name longer than this is no branch of a real repository
# a run's status -> what the badge says, and its colour
LOOKS: dict[str, tuple[str, str]] = {
    RunStatus.SUCCESS: ("passing", "#4c1"),
    RunStatus.FAILURE: ("failing", "#e05d44"),
    RunStatus.ERRORED: ("errored", "#fe7d37"),
    RunStatus.RUNNING: ("running", "#007ec6"),
    RunStatus.REQUESTED: ("pending", "#dfb317"),
    RunStatus.CANCELLED: ("cancelled", "#9f9f9f"),
    RunStatus.SKIPPED: ("skipped", "#9f9f9f"),
}
NO_RUN = ("no runs", "#9f9f9f")

# Verdana's advance widths (units of 1/2048 em) for printable ASCII, from " " to "~".
_VERDANA = (
    720, 817, 918, 1716, 1302, 2215, 1487, 510, 910, 910, 1302, 1716, 745, 923, 745, 910,
    1302, 1302, 1302, 1302, 1302, 1302, 1302, 1302, 1302, 1302, 910, 910, 1716, 1716, 1716,
    1110, 2048, 1401, 1405, 1430, 1577, 1294, 1178, 1587, 1540, 862, 936, 1424, 1146, 1722,
    1533, 1617, 1243, 1617, 1431, 1402, 1239, 1501, 1401, 2025, 1403, 1238, 1403, 910, 910,
    910, 1716, 1302, 1302, 1229, 1270, 1067, 1270, 1211, 720, 1270, 1296, 562, 676, 1208,
    562, 1992, 1296, 1243, 1270, 1270, 874, 1067, 807, 1296, 1208, 1675, 1208, 1208, 1051,
    1302, 910, 1302, 1716,
)
_FONT_PX = 11
_PAD = 5  # px either side of a text


def text_width(text: str) -> float:
    """``text``'s width in px in Verdana 11px (a character past ASCII: as wide as "W",
    enough for most scripts)."""
    units = sum(_VERDANA[ord(c) - 32] if " " <= c <= "~" else 2025 for c in text)
    return units * _FONT_PX / 2048


def badge_svg(label: str, message: str, colour: str) -> str:
    """The flat two-part badge: ``label`` on grey, ``message`` on ``colour``."""
    label_text, message_text = text_width(label), text_width(message)
    left = round(label_text + 2 * _PAD)
    right = round(message_text + 2 * _PAD)
    total = left + right
    title = escape(f"{label}: {message}", {'"': "&quot;"})
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{total}" height="20" role="img" '
        f'aria-label="{title}"><title>{title}</title>'
        '<linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb" '
        'stop-opacity=".1"/><stop offset="1" stop-opacity=".1"/></linearGradient>'
        f'<clipPath id="r"><rect width="{total}" height="20" rx="3" fill="#fff"/></clipPath>'
        f'<g clip-path="url(#r)"><rect width="{left}" height="20" fill="#555"/>'
        f'<rect x="{left}" width="{right}" height="20" fill="{colour}"/>'
        f'<rect width="{total}" height="20" fill="url(#s)"/></g>'
        '<g fill="#fff" text-anchor="middle" font-family="Verdana,Geneva,DejaVu Sans,'
        'sans-serif" text-rendering="geometricPrecision" font-size="11">'
        f"{_text(label, left / 2, label_text)}{_text(message, left + right / 2, message_text)}"
        "</g></svg>"
    )


def _text(text: str, centre: float, width: float) -> str:
    """The text with its shadow, centred at ``centre``."""
    shown, fit = escape(text), f'textLength="{width:.1f}"'
    return (f'<text aria-hidden="true" x="{centre:.1f}" y="15" fill="#010101" '
            f'fill-opacity=".3" {fit}>{shown}</text>'
            f'<text x="{centre:.1f}" y="14" {fit}>{shown}</text>')


async def _badge(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    project = await require_project(ctx.store, request.match_info["name"])
    branch = request.query.get("branch") or project.default_branch
    if len(branch) > MAX_BRANCH or any(c < " " for c in branch):
        raise ApiError(400, f"branch: expected a branch name (at most {MAX_BRANCH} "
                            "characters, no control characters)")
    latest = await ctx.readmodel.views.page(project=project.name, branch=branch, limit=1)
    message, colour = LOOKS.get(latest[0].status, NO_RUN) if latest else NO_RUN
    return web.Response(text=badge_svg(LABEL, message, colour), content_type="image/svg+xml",
                        headers={"Cache-Control": "no-cache"})


def badge_routes() -> list[web.RouteDef]:
    return [web.get("/api/v1/projects/{name}/badge.svg", _badge)]
