"""A local HTTP server on 127.0.0.1 playing Slack, Mattermost and Discord incoming
webhooks and a generic webhook receiver, checking what it gets against their docs.

::

    async with ChatServer() as server:
        channel = server.channel("slack")        # Channel("slack", server.url("slack"))
        server.script("slack", [503])            # the next answer; then 2xx again
        ...
        assert server.problems == []
        [got] = server.of("slack")               # what it took (server.received: all kinds)

One path per kind (``PATHS``; the last segment is the webhook's token, ``TOKENS``);
the generic webhook also takes any path under its own (``url("webhook") + "/audit"``),
for a second channel. Each request (``Received``: kind, path, headers, parsed JSON,
raw bytes) is added to ``attempts``, and to ``received`` when it is taken (answered
2xx: what people would see in the channel). Each is checked: method, Content-Type,
and the body as each provider documents it - Slack: top-level ``text``, attachment colours, Block Kit block and text object types
and limits (50 blocks, section text 3000, 10 fields of 2000, 10 context elements),
``&``/``<``/``>`` escaped and no ``<!channel>``-style mass mentions; Mattermost:
known keys, attachments with ``fallback``, ``#rrggbb`` colours, fields of
``{short, title, value}``, no live ``@channel``; Discord: known keys, ``username``
(1-80, without "discord"/"clyde"), ``content`` <= 2000, at most 10 embeds, title 256,
description 4096, ``color`` an integer in 0..0xFFFFFF, ISO 8601 ``timestamp``, at most 25
fields (name 256, value 1024), 6000 characters per embed, no ``@everyone`` unless
mentions are off; the generic webhook: ``X-Cyclone-Event`` equal to the body's
``event``, ``Idempotency-Key`` equal to its ``key``, and ``X-Cyclone-Signature-256``
the HMAC-SHA256 of the raw body with ``secret`` wherever it is sent (and required
at ``url("webhook")`` itself when ``secret`` is set; paths under it may be unsigned).
Markdown code fences must be closed.

A request that breaks the docs is answered 422 and its problems are added to
``problems`` (each prefixed with the kind). Otherwise the answer is the next scripted
status of its kind, else success (Slack and Mattermost ``200 ok``, Discord ``204``, the
generic webhook ``200``), with the provider's documented error bodies: Slack plain text
(``invalid_payload``, ``no_service``, ...), Mattermost and Discord JSON with a
``message``. A scripted 401 echoes the request's path (and, for the generic webhook,
the secret), as a careless receiver or proxy might: senders must not repeat it. An
unknown path under a kind's prefix is answered as that provider answers an unknown
hook. ``hold`` makes every answer wait (for timeouts).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any

from aiohttp import web

from shared.pipeline.notify import Channel

__all__ = ["KINDS", "PATHS", "SECRET", "TOKENS", "ChatServer", "Received"]

KINDS = ("slack", "mattermost", "discord", "webhook")
TOKENS = {"slack": "sLaCkT0kEnXXXXXXXXXXXX24", "mattermost": "mm9hookt0ken5ecret26chars",
          "discord": "dIsCoRdWeBhOoKtOkEn-68charsLongEnoughToBeSecret_0123456789abcdefgh",
          "webhook": "hookPathT0ken4242abcdef"}
PATHS = {"slack": f"/slack/services/T0CYCLONE/B0CYCLONE/{TOKENS['slack']}",
         "mattermost": f"/mattermost/hooks/{TOKENS['mattermost']}",
         "discord": f"/discord/api/webhooks/112233445566778899/{TOKENS['discord']}",
         "webhook": f"/hook/{TOKENS['webhook']}"}
SECRET = "hmac-s3cret-k3y-0042"
_PREFIXES = {"slack": "/slack/", "mattermost": "/mattermost/", "discord": "/discord/",
             "webhook": "/hook/"}


@dataclass(frozen=True)
class Received:
    kind: str
    path: str
    headers: dict[str, str]
    body: Any  # the parsed JSON; {} when the body was not JSON
    raw: bytes


@dataclass
class ChatServer:
    secret: str = SECRET  # the generic webhook's HMAC key; "" accepts unsigned bodies
    received: list[Received] = field(default_factory=list)  # taken (answered 2xx)
    attempts: list[Received] = field(default_factory=list)  # every request to a hook
    problems: list[str] = field(default_factory=list)
    hold: asyncio.Event | None = None
    base: str = ""
    _scripts: dict[str, list[int]] = field(default_factory=dict)
    _runner: web.AppRunner | None = None

    async def __aenter__(self) -> ChatServer:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.base = f"http://{host}:{port}"
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self.hold is not None:
            self.hold.set()
        if self._runner is not None:
            await self._runner.cleanup()

    def url(self, kind: str) -> str:
        return self.base + PATHS[kind]

    def channel(self, kind: str) -> Channel:
        return Channel(kind, self.url(kind), secret=self.secret if kind == "webhook" else "")

    def script(self, kind: str, statuses: list[int]) -> None:
        """The next answers to ``kind`` (after them: success again)."""
        self._scripts.setdefault(kind, []).extend(statuses)

    def of(self, kind: str) -> list[Received]:
        """What ``kind`` took (answered 2xx), in order."""
        return [r for r in self.received if r.kind == kind]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        kind = next((k for k, p in _PREFIXES.items() if request.path.startswith(p)), "")
        if not kind:
            return web.Response(status=404, text="not a webhook path")
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = {}
        got = Received(kind, request.path, dict(request.headers), body, raw)
        if not _known(kind, request.path):
            return _answer(kind, 404, got, self.secret)
        self.attempts.append(got)
        if self.hold is not None:
            await self.hold.wait()
        problems = self._check(got, request.method)
        if problems:
            self.problems.extend(f"{kind}: {p}" for p in problems)
            return web.json_response({"message": "; ".join(problems)}, status=422)
        scripted = self._scripts.get(kind)
        status = scripted.pop(0) if scripted else 200
        if status < 300:
            self.received.append(got)
        return _answer(kind, status, got, self.secret)

    def _check(self, got: Received, method: str) -> list[str]:
        problems = [] if method == "POST" else [f"method {method}"]
        content_type = got.headers.get("Content-Type", "")
        if not content_type.startswith("application/json"):
            problems.append(f"Content-Type {content_type!r}")
        if "charset=" in content_type and not content_type.lower().endswith("charset=utf-8"):
            problems.append(f"Content-Type {content_type!r}: JSON is UTF-8")
        if not isinstance(got.body, dict) or not got.body:
            return [*problems, "the body is not a JSON object"]
        check = {"slack": _check_slack, "mattermost": _check_mattermost,
                 "discord": _check_discord}.get(got.kind)
        if check is not None:
            return problems + check(got.body)
        return problems + _check_webhook(got, self.secret,
                                         required=got.path == PATHS["webhook"])


# --- answers ------------------------------------------------------------------------------

_SLACK_ERRORS = {400: "invalid_payload", 403: "action_prohibited", 404: "no_service",
                 410: "channel_is_archived", 429: "rate_limited", 500: "rollup_error"}
_MM_ERRORS = {400: "Unable to parse incoming data", 404: "Invalid webhook",
              429: "Too many requests", 500: "Unable to create post"}
_DC_ERRORS = {400: ("Invalid Form Body", 50035), 401: ("Invalid Webhook Token", 50027),
              404: ("Unknown Webhook", 10015), 429: ("You are being rate limited.", 0)}


def _answer(kind: str, status: int, got: Received, secret: str) -> web.Response:
    if status < 300:
        if kind == "discord":
            return web.Response(status=204)
        if kind == "webhook":
            return web.json_response({"accepted": True}, status=status)
        return web.Response(status=status, text="ok", content_type="text/plain")
    if status == 401:  # a careless receiver (or a proxy) repeats what it was sent
        echoed = f"unauthorized request to {got.path}"
        if kind == "webhook":
            echoed += f"; the signature does not match the key {secret!r}"
        return web.Response(status=401, text=echoed)
    headers = {"Retry-After": "1"} if status == 429 else {}
    if kind == "slack":
        return web.Response(status=status, text=_SLACK_ERRORS.get(status, "Service Unavailable"),
                            headers=headers)
    if kind == "mattermost":
        return web.json_response({"id": "web.incoming_webhook.app_error",
                                  "message": _MM_ERRORS.get(status, "Service unavailable"),
                                  "detailed_error": "", "request_id": "req1",
                                  "status_code": status}, status=status, headers=headers)
    if kind == "discord":
        message, code = _DC_ERRORS.get(status, ("Service Unavailable", 0))
        data: dict[str, Any] = {"message": message, "code": code}
        if status == 400:  # what Discord says of a body over its limits
            data["errors"] = {"embeds": {"0": {"title": {"_errors": [{
                "code": "BASE_TYPE_MAX_LENGTH", "message": "Must be 256 or fewer in length."}]}}}}
        if status == 429:
            data = {"message": message, "retry_after": 0.25, "global": False}
        return web.json_response(data, status=status, headers=headers)
    return web.json_response({"error": f"receiver says {status}"}, status=status,
                             headers=headers)


# --- Slack --------------------------------------------------------------------------------

_SLACK_TOP = {"text", "blocks", "attachments", "thread_ts", "mrkdwn", "username", "icon_emoji",
              "icon_url", "channel", "unfurl_links", "unfurl_media", "metadata"}
_SLACK_ATTACHMENT = {"blocks", "color", "fallback", "author_name", "author_link",
                     "author_icon", "fields", "footer", "footer_icon", "image_url", "mrkdwn_in",
                     "pretext", "text", "thumb_url", "title", "title_link", "ts"}
_SLACK_BLOCKS = {"section", "context", "header", "divider", "actions", "image", "rich_text",
                 "video", "file", "markdown", "input"}
_SLACK_SECTION = {"type", "text", "fields", "block_id", "accessory", "expand"}
_HEX = re.compile(r"^#[0-9a-fA-F]{6}$")
_SLACK_TAG = re.compile(r"<([^<>]*)>")
_SLACK_LINK = re.compile(r"^(https?://|mailto:)[^|\s]+(\|[^|]*)?$")
_SLACK_ENTITY = re.compile(r"&(?!amp;|lt;|gt;)")


def _check_slack(body: dict[str, Any]) -> list[str]:
    problems = _unknown("", body, _SLACK_TOP)
    text = body.get("text")
    if not isinstance(text, str) or not text.strip():
        problems.append("text: no top-level text (notifications would show nothing)")
    elif len(text) > 40000:
        problems.append(f"text: {len(text)} characters (Slack truncates at 40000)")
    else:
        problems += _slack_markup("text", text)
    if "blocks" in body:
        problems += _slack_blocks("blocks", body["blocks"])
    attachments = body.get("attachments", [])
    if not isinstance(attachments, list) or len(attachments) > 20:
        return [*problems, "attachments: not a list of at most 20"]
    for i, attachment in enumerate(attachments):
        where = f"attachments[{i}]"
        if not isinstance(attachment, dict):
            problems.append(f"{where}: not an object")
            continue
        problems += _unknown(where, attachment, _SLACK_ATTACHMENT)
        color = attachment.get("color")
        if color is not None and not (isinstance(color, str) and (
                _HEX.match(color) or color in ("good", "warning", "danger"))):
            problems.append(f"{where}.color: {color!r} is not #rrggbb")
        if "blocks" in attachment:
            problems += _slack_blocks(f"{where}.blocks", attachment["blocks"])
        elif not attachment.get("fallback") and not attachment.get("text"):
            problems.append(f"{where}: no blocks, text nor fallback")
    return problems


def _slack_blocks(where: str, blocks: Any) -> list[str]:
    if not isinstance(blocks, list) or not 1 <= len(blocks) <= 50:
        return [f"{where}: not a list of 1 to 50 blocks"]
    problems: list[str] = []
    for i, block in enumerate(blocks):
        at = f"{where}[{i}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind not in _SLACK_BLOCKS:
            problems.append(f"{at}.type: {kind!r} is not a block type")
        elif kind == "section":
            problems += _unknown(at, block, _SLACK_SECTION)
            if "text" not in block and "fields" not in block:
                problems.append(f"{at}: a section needs text or fields")
            if "text" in block:
                problems += _text_object(f"{at}.text", block["text"], 3000)
            fields = block.get("fields", [None])
            if not isinstance(fields, list) or not 1 <= len(fields) <= 10:
                problems.append(f"{at}.fields: not a list of 1 to 10")
            elif "fields" in block:
                for j, item in enumerate(fields):
                    problems += _text_object(f"{at}.fields[{j}]", item, 2000)
        elif kind == "context":
            problems += _unknown(at, block, {"type", "elements", "block_id"})
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= 10:
                problems.append(f"{at}.elements: not a list of 1 to 10")
            else:
                for j, item in enumerate(elements):
                    problems += _text_object(f"{at}.elements[{j}]", item, 3000)
        elif kind == "header":
            problems += _text_object(f"{at}.text", block.get("text"), 150, plain=True)
        elif kind == "divider":
            problems += _unknown(at, block, {"type", "block_id"})
    return problems


def _text_object(where: str, obj: Any, limit: int, plain: bool = False) -> list[str]:
    if not isinstance(obj, dict):
        return [f"{where}: not a text object"]
    kind, text = obj.get("type"), obj.get("text")
    problems = _unknown(where, obj, {"type", "text", "emoji", "verbatim"})
    if kind not in (("plain_text",) if plain else ("plain_text", "mrkdwn")):
        problems.append(f"{where}.type: {kind!r}")
    if not isinstance(text, str) or not 1 <= len(text) <= limit:
        size = len(text) if isinstance(text, str) else text
        problems.append(f"{where}.text: {size} characters, not 1 to {limit}")
    elif kind == "mrkdwn":
        problems += _slack_markup(f"{where}.text", text) + _fences(f"{where}.text", text)
    if ("emoji" in obj and kind != "plain_text") or ("verbatim" in obj and kind != "mrkdwn"):
        problems.append(f"{where}: emoji is for plain_text, verbatim for mrkdwn")
    return problems


def _slack_markup(where: str, text: str) -> list[str]:
    """Slack's escaping: every ``<...>`` a link (no ``<!channel>``-style pings), every
    ``&`` an entity, no ``<`` or ``>`` left over but the ``>`` of a block quote."""
    problems = []
    for tag in _SLACK_TAG.findall(text):
        if tag.startswith(("!channel", "!here", "!everyone")):
            problems.append(f"{where}: <{tag}> pings the whole channel")
        elif not _SLACK_LINK.match(tag) and not tag.startswith(("@", "#", "!")):
            problems.append(f"{where}: <{tag[:40]}> is neither a link nor escaped")
    rest = "\n".join(line[1:] if line.startswith(">") else line
                     for line in _SLACK_TAG.sub("", text).split("\n"))
    if "<" in rest or ">" in rest:
        problems.append(f"{where}: unescaped < or >")
    if _SLACK_ENTITY.search(text):
        problems.append(f"{where}: unescaped &")
    return problems


# --- Mattermost ---------------------------------------------------------------------------

_MM_TOP = {"text", "channel", "username", "icon_url", "icon_emoji", "attachments", "type",
           "props", "priority"}
_MM_ATTACHMENT = {"fallback", "color", "pretext", "text", "author_name", "author_icon",
                  "author_link", "title", "title_link", "fields", "image_url", "thumb_url",
                  "footer", "footer_icon", "actions", "id"}
_MENTION = re.compile(r"@(all|channel|here|everyone)\b", re.IGNORECASE)


def _check_mattermost(body: dict[str, Any]) -> list[str]:
    problems = _unknown("", body, _MM_TOP)
    text, attachments = body.get("text", ""), body.get("attachments", [])
    if not text and not attachments:
        problems.append("neither text nor attachments")
    if not isinstance(text, str) or len(text) > 16383:
        problems.append("text: not a string of at most 16383 characters")
    else:
        problems += _markdown("text", text)
    if not isinstance(attachments, list):
        return [*problems, "attachments: not a list"]
    for i, attachment in enumerate(attachments):
        where = f"attachments[{i}]"
        if not isinstance(attachment, dict):
            problems.append(f"{where}: not an object")
            continue
        problems += _unknown(where, attachment, _MM_ATTACHMENT)
        if not isinstance(attachment.get("fallback"), str) or not attachment["fallback"]:
            problems.append(f"{where}.fallback: required (a plain-text summary)")
        color = attachment.get("color")
        if color is not None and not (isinstance(color, str) and _HEX.match(color)):
            problems.append(f"{where}.color: {color!r} is not #rrggbb")
        link = attachment.get("title_link")
        if link is not None and not _is_url(link):
            problems.append(f"{where}.title_link: {link!r} is not a URL")
        for key in ("title", "text", "pretext"):
            if key in attachment and not isinstance(attachment[key], str):
                problems.append(f"{where}.{key}: not a string")
        if isinstance(attachment.get("text"), str):
            problems += _markdown(f"{where}.text", attachment["text"])
        for j, item in enumerate(attachment.get("fields", [])):
            if not isinstance(item, dict) or _unknown("", item, {"title", "value", "short"}) \
                    or not isinstance(item.get("title"), str) \
                    or not isinstance(item.get("value"), str) \
                    or not isinstance(item.get("short", False), bool):
                problems.append(f"{where}.fields[{j}]: not {{short: bool, title, value}}")
    return problems


def _markdown(where: str, text: str) -> list[str]:
    """Closed code fences, and no live ``@channel`` outside code."""
    outside = re.sub(r"```.*?```|`[^`\n]*`", "", text, flags=re.DOTALL)
    pings = [f"{where}: {m.group(0)} would notify everyone" for m in _MENTION.finditer(outside)]
    return _fences(where, text) + pings


def _fences(where: str, text: str) -> list[str]:
    return [f"{where}: a code block is not closed"] if text.count("```") % 2 else []


# --- Discord ------------------------------------------------------------------------------

_DC_TOP = {"content", "username", "avatar_url", "tts", "embeds", "allowed_mentions",
           "components", "files", "payload_json", "attachments", "flags", "thread_name",
           "applied_tags", "poll"}
_DC_EMBED = {"title", "type", "description", "url", "timestamp", "color", "footer", "image",
             "thumbnail", "video", "provider", "author", "fields"}


def _check_discord(body: dict[str, Any]) -> list[str]:
    problems = _unknown("", body, _DC_TOP)
    content, embeds = body.get("content", ""), body.get("embeds", [])
    if not content and not embeds:
        problems.append("neither content nor embeds")
    if not isinstance(content, str) or len(content) > 2000:
        problems.append("content: not a string of at most 2000 characters")
    username = body.get("username")
    if username is not None and (not isinstance(username, str) or not 1 <= len(username) <= 80
                                 or re.search("discord|clyde", username, re.IGNORECASE)):
        problems.append(f"username: {username!r} is not allowed")
    if not isinstance(embeds, list) or len(embeds) > 10:
        return [*problems, "embeds: not a list of at most 10"]
    texts = [content if isinstance(content, str) else ""]
    for i, embed in enumerate(embeds):
        if not isinstance(embed, dict):
            problems.append(f"embeds[{i}]: not an object")
            continue
        problems += _discord_embed(f"embeds[{i}]", embed)
        texts.append(str(embed.get("description", "")))
        texts += [str(f.get("value", "")) for f in embed.get("fields", []) if isinstance(f, dict)]
    pings = any(re.search(r"@(everyone|here)\b", t) for t in texts)
    if pings and body.get("allowed_mentions") != {"parse": []}:
        problems.append("@everyone / @here would ping: allowed_mentions must allow none")
    return problems


def _discord_embed(where: str, embed: dict[str, Any]) -> list[str]:
    problems = _unknown(where, embed, _DC_EMBED)
    for key, limit in (("title", 256), ("description", 4096)):
        if key in embed and (not isinstance(embed[key], str) or len(embed[key]) > limit):
            problems.append(f"{where}.{key}: not a string of at most {limit} characters")
    if isinstance(embed.get("description"), str):
        problems += _fences(f"{where}.description", embed["description"])
    if "url" in embed and not _is_url(embed["url"]):
        problems.append(f"{where}.url: {embed['url']!r} is not a URL")
    color = embed.get("color")
    if color is not None and (type(color) is not int or not 0 <= color <= 0xFFFFFF):
        problems.append(f"{where}.color: {color!r} is not an integer in 0..0xFFFFFF")
    if "timestamp" in embed:
        try:
            datetime.fromisoformat(str(embed["timestamp"]).replace("Z", "+00:00"))
        except ValueError:
            problems.append(f"{where}.timestamp: {embed['timestamp']!r} is not ISO 8601")
    footer = embed.get("footer", {"text": ""})
    if not isinstance(footer, dict) or len(str(footer.get("text", ""))) > 2048:
        problems.append(f"{where}.footer: not {{text}} of at most 2048 characters")
    fields = embed.get("fields", [])
    if not isinstance(fields, list) or len(fields) > 25:
        return [*problems, f"{where}.fields: not a list of at most 25"]
    total = len(str(embed.get("title", ""))) + len(str(embed.get("description", ""))) \
        + len(str(footer.get("text", "") if isinstance(footer, dict) else ""))
    for j, item in enumerate(fields):
        name = item.get("name") if isinstance(item, dict) else None
        value = item.get("value") if isinstance(item, dict) else None
        if not isinstance(name, str) or not 1 <= len(name) <= 256 \
                or not isinstance(value, str) or not 1 <= len(value) <= 1024 \
                or not isinstance(item.get("inline", False), bool):
            problems.append(f"{where}.fields[{j}]: not {{name 1-256, value 1-1024, inline}}")
            continue
        total += len(name) + len(value)
    if total > 6000:
        problems.append(f"{where}: {total} characters (an embed holds 6000)")
    return problems


# --- the generic webhook ------------------------------------------------------------------

_SUMMARY_KEYS = {"key", "event", "headline", "run_id", "project", "status", "url", "moment",
                 "reason", "jobs", "log_tail"}


def _known(kind: str, path: str) -> bool:
    # a generic receiver may serve several channels: one path each, under its own
    return path == PATHS[kind] or (kind == "webhook" and path.startswith(PATHS[kind] + "/"))


def _check_webhook(got: Received, secret: str, required: bool) -> list[str]:
    problems, headers, body = [], got.headers, got.body
    missing = _SUMMARY_KEYS - set(body)
    if missing:
        problems.append(f"body: missing {sorted(missing)}")
    if not headers.get("User-Agent", "").startswith("Cyclone-CI"):
        problems.append(f"User-Agent {headers.get('User-Agent')!r}")
    event = headers.get("X-Cyclone-Event", "")
    if not re.fullmatch(r"run\.[a-z]+", event) or event != body.get("event"):
        problems.append(f"X-Cyclone-Event {event!r} (the body's event: {body.get('event')!r})")
    if not headers.get("Idempotency-Key") or headers.get("Idempotency-Key") != body.get("key"):
        problems.append(f"Idempotency-Key {headers.get('Idempotency-Key')!r} is not the key")
    signature = headers.get("X-Cyclone-Signature-256")
    if secret:
        expected = "sha256=" + hmac.new(secret.encode(), got.raw, hashlib.sha256).hexdigest()
        if signature is None and required:
            problems.append("X-Cyclone-Signature-256 missing")
        elif signature is not None and not hmac.compare_digest(signature, expected):
            problems.append("X-Cyclone-Signature-256 does not match the body")
    return problems


# --- shared -------------------------------------------------------------------------------


def _unknown(where: str, obj: dict[str, Any], known: set[str]) -> list[str]:
    unknown = sorted(set(obj) - known)
    return [f"{where or 'body'}: unknown keys {unknown}"] if unknown else []


def _is_url(value: Any) -> bool:
    return isinstance(value, str) and re.match(r"^https?://[^\s/]+", value) is not None
