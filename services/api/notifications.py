"""Notification tests: ``POST /api/v1/projects/{name}/notifications/test`` asks the
notifier to send a test message to every channel of a project; ``GET
/api/v1/notifications/tests/{id}`` shows each channel's outcome as it comes in.

The API sends nothing itself: the notifier holds the SMTP settings and the
channels' secrets, and it is the one whose sending is being tested.
"""

from __future__ import annotations

import uuid

from aiohttp import web

from services.api.context import CONTEXT
from services.api.errors import ApiError
from services.api.projects import require_project
from shared import events as ev
from shared.events import NewEvent, notify_test_stream
from shared.projections.notifications import fold_notification_test

__all__ = ["notification_routes"]


async def _request_test(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    project = await require_project(ctx.store, request.match_info["name"])
    test_id = uuid.uuid4().hex
    await ctx.store.append(notify_test_stream(test_id),
                           [NewEvent(ev.NotificationTestRequested(project=project.name))], 0)
    return web.json_response({"id": test_id, "project": project.name,
                              "url": f"/api/v1/notifications/tests/{test_id}"}, status=202)


async def _show_test(request: web.Request) -> web.Response:
    test_id = request.match_info["id"]
    events = await request.app[CONTEXT].store.read(notify_test_stream(test_id))
    view = fold_notification_test(test_id, events)
    if view is None:
        raise ApiError(404, f"no notification test {test_id!r}")
    return web.json_response(view.to_json())


def notification_routes() -> list[web.RouteDef]:
    return [
        web.post("/api/v1/projects/{name}/notifications/test", _request_test),
        web.get("/api/v1/notifications/tests/{id}", _show_test),
    ]
