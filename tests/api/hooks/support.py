"""Payload fixtures and the headers each forge sends with them, signed as the forge signs."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

__all__ = ["PAYLOADS", "SECRET", "SHA", "ZERO", "headers_for", "load", "payload", "without"]

PAYLOADS = Path(__file__).parent / "payloads"
SECRET = "It's a Secret to Everybody"
ZERO = "0" * 40
# The commit ids the fixtures use.
SHA = {
    "base": "1405df66cbe219b0bf6355bc3d60361a8376b6b4",
    "first": "e0996a37c13d44c3b06074939d43fa3759bd32c1",
    "second": "352f7829a2384b001cc12b0c2613c756454a1f6a",
    "pr": "e84cc64499f50d72071c1a2ce65752ff3838f03f",
    "tag": "4a41e5f28c775de6ac8c161b63ce721a272d4109",
}


def load(name: str) -> bytes:
    return (PAYLOADS / name).read_bytes()


def payload(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(load(name))
    return data


def without(data: dict[str, Any], path: str) -> bytes:
    """``data`` as a body, with the key at dotted ``path`` removed."""
    data = copy.deepcopy(data)
    *parents, last = path.split(".")
    node = data
    for part in parents:
        node = node[part]
    del node[last]
    return json.dumps(data).encode()


def _hex(body: bytes, secret: str) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def headers_for(provider: str, event: str, body: bytes, secret: str = SECRET,
                delivery: str = "delivery-1") -> dict[str, str]:
    """The headers ``provider`` sends with ``body`` (as their docs show them)."""
    common = {"Content-Type": "application/json"}
    if provider == "github":
        return {**common, "User-Agent": "GitHub-Hookshot/044aadd", "X-GitHub-Event": event,
                "X-GitHub-Delivery": delivery, "X-GitHub-Hook-ID": "479352171",
                "X-Hub-Signature-256": f"sha256={_hex(body, secret)}"}
    if provider == "gitlab":
        return {**common, "User-Agent": "GitLab/17.5.0", "X-Gitlab-Event": event,
                "X-Gitlab-Token": secret, "X-Gitlab-Event-UUID": delivery,
                "X-Gitlab-Instance": "https://gitlab.example.com"}
    if provider == "gitea":  # Gitea sends the GitHub and Gogs names along with its own
        return {**common, "X-Gitea-Event": event, "X-Gitea-Event-Type": event,
                "X-Gitea-Delivery": delivery, "X-Gitea-Signature": _hex(body, secret),
                "X-GitHub-Event": event, "X-GitHub-Delivery": delivery,
                "X-Gogs-Event": event, "X-Gogs-Delivery": delivery,
                "X-Gogs-Signature": _hex(body, secret)}
    if provider == "forgejo":
        return {**common, "X-Forgejo-Event": event, "X-Forgejo-Delivery": delivery,
                "X-Forgejo-Signature": _hex(body, secret), "X-Gitea-Event": event,
                "X-Gitea-Delivery": delivery, "X-Gitea-Signature": _hex(body, secret)}
    if provider == "gogs":
        return {**common, "X-Gogs-Event": event, "X-Gogs-Delivery": delivery,
                "X-Gogs-Signature": _hex(body, secret)}
    if provider == "generic":
        return {**common, "X-Cyclone-Delivery": delivery,
                "X-Cyclone-Signature": f"sha256={_hex(body, secret)}"}
    raise AssertionError(f"no headers for {provider}")
