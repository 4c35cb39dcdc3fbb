"""Users and their project roles as a pure fold over the ``users`` stream."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from shared import events as ev
from shared.events import RecordedEvent, decode
from shared.status import Role

__all__ = ["USERS_STREAM", "UserView", "fold_users"]

USERS_STREAM = "users"


@dataclass(frozen=True)
class UserView:
    name: str
    password_hash: str = field(repr=False)  # argon2's; "" when no password is set
    admin: bool
    roles: Mapping[str, Role]  # project -> role
    created_at: str
    updated_at: str

    def to_json(self) -> dict[str, Any]:
        """What the API shows: never the password's hash."""
        return {"name": self.name, "admin": self.admin, "password_set": bool(self.password_hash),
                "roles": dict(sorted(self.roles.items())), "created_at": self.created_at,
                "updated_at": self.updated_at}


def fold_users(events: Iterable[RecordedEvent],
               users: Mapping[str, UserView] | None = None) -> dict[str, UserView]:
    """Users by name (after ``users``, the fold of the events before ``events``)."""
    users = dict(users or {})
    for recorded in events:
        event, ts = decode(recorded), recorded.ts
        if isinstance(event, ev.UserAdded):
            users[event.name] = UserView(event.name, event.password_hash, event.admin, {},
                                         ts, ts)
        elif isinstance(event, ev.UserRemoved):
            users.pop(event.name, None)
        elif isinstance(event, ev.UserChanged | ev.ProjectRoleGranted | ev.ProjectRoleRevoked):
            name = event.name if isinstance(event, ev.UserChanged) else event.user
            if (user := users.get(name)) is not None:
                users[name] = replace(_changed(user, event), updated_at=ts)
    return users


def _changed(user: UserView, event: ev.UserChanged | ev.ProjectRoleGranted
             | ev.ProjectRoleRevoked) -> UserView:
    if isinstance(event, ev.UserChanged):
        known = {k: v for k, v in event.changes.items() if k in ("password_hash", "admin")}
        return replace(user, **known)
    roles = dict(user.roles)
    if isinstance(event, ev.ProjectRoleGranted):
        roles[event.project] = event.role
    else:
        roles.pop(event.project, None)
    return replace(user, roles=roles)
