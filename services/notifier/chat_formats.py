"""Chat channels: Slack, Mattermost and Discord incoming webhooks, and a generic signed
webhook: what one ``Summary`` becomes, as each receiver documents it (no I/O).

``chat_request`` (pure) builds the request each receiver documents:

* ``slack`` ("Sending messages using incoming webhooks", Block Kit): a top-level
  ``text`` (what notifications show) and one attachment, for its colour bar, holding
  ``blocks``: a section with the linked headline and the facts, a section of fields
  with each job and its status (at most 10), for a failure the failed step and the log
  tail in a code block (section text at most 3000 characters), and a context line.
  User text has ``&``, ``<`` and ``>`` escaped as Slack asks, so a branch or an author
  named ``<!channel>`` pings no one.
* ``mattermost`` ("Incoming webhooks", "Message attachments"): a markdown ``text`` with
  the link, and one Slack-compatible attachment (``fallback``, ``color``, ``title``,
  ``title_link``, ``text`` with the log tail, ``fields``). ``@all``, ``@channel`` and
  ``@here`` in user text are broken with a zero-width space: a commit message does not
  page a channel.
* ``discord`` ("Execute Webhook"): ``username`` Cyclone, one embed (``title`` of at most
  256 characters, ``url``, ``color`` as an integer, ``description`` of at most 4096,
  at most 25 ``fields``, ``timestamp``; 6000 characters in all) and
  ``allowed_mentions`` that allows none.
* ``webhook``: the body is ``json.dumps(summary.to_json())`` (see ``Summary.to_json``),
  with these headers:

  - ``Content-Type: application/json`` and ``User-Agent: Cyclone-CI``;
  - ``X-Cyclone-Event: run.<reason>`` - ``run.failure``, ``run.fixed``, ``run.success``,
    ``run.changed``, ``run.always``, ``run.started`` or ``run.test``; the body's
    ``event``;
  - ``Idempotency-Key: <summary.key>`` - the same on every copy of one notification:
    a receiver that has already seen it drops the copy (the rare resend after a
    notifier died between sending and recording);
  - ``X-Cyclone-Signature-256: sha256=<hex>`` when the channel has a secret: the
    HMAC-SHA256 of the raw body keyed with the secret (GitHub's scheme). A receiver
    computes it over the bytes it got, before parsing, and compares in constant time.

The log tail (already cleaned and masked by ``message.clean_tail``) is cut from the
front to fit each limit: its last lines are the ones that explain a failure. Every
message links to ``summary.url`` and takes ``summary.colour``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from services.notifier.message import JobLine, Summary
from shared.email_templates import format_duration
from shared.pipeline.notify import Channel

__all__ = ["USER_AGENT", "ChatRequest", "chat_request", "discord_body", "mattermost_body",
           "slack_body"]

USER_AGENT = "Cyclone-CI"
_JSON = "application/json; charset=utf-8"
_LINE_MAX = 300  # of one log line: one huge line must not push out all the others
_MESSAGE_MAX = 300  # of the commit message's first line
# Slack Block Kit: section text, a field's text, fields per section.
_SLACK_TEXT, _SLACK_FIELD, _SLACK_FIELDS = 3000, 2000, 10
# Discord embeds: title, description, field name / value, fields, all text together.
# Field names are kept to 80 (not 256): 25 long fields would leave no room in the 6000.
_DC_TITLE, _DC_DESC, _DC_NAME, _DC_FIELDS, _DC_TOTAL = 256, 4096, 80, 25, 6000
_MM_TAIL = 4000  # Mattermost posts hold 16383 characters; a tail need not take them all
_MM_JOBS = 20
_ICONS = {"success": "✅", "failure": "❌", "timeout": "⏱", "errored": "⚠️",
          "cancelled": "⏹", "skipped": "⏭", "running": "▶", "queued": "⏳", "pending": "⏳"}
_CODED = ("Branch", "Commit")  # facts shown as inline code
_MASS_MENTION = re.compile(r"@(all|channel|here)\b", re.IGNORECASE)


@dataclass(frozen=True)
class ChatRequest:
    """One POST: ``url`` holds the webhook's token, so it is kept out of ``repr``."""

    url: str = field(repr=False)
    headers: dict[str, str]
    body: bytes


def chat_request(channel: Channel, summary: Summary) -> ChatRequest:
    """The request that tells ``channel`` (resolved: its real URL) about ``summary``;
    ``ValueError`` for a kind that is not a chat channel."""
    headers = {"Content-Type": _JSON, "User-Agent": USER_AGENT}
    if channel.kind == "webhook":
        return _webhook_request(channel, summary, headers)
    builders: dict[str, Callable[[Summary], dict[str, Any]]] = {
        "slack": slack_body, "mattermost": mattermost_body, "discord": discord_body}
    if channel.kind not in builders:
        raise ValueError(f"not a chat channel: {channel.kind!r}")
    return ChatRequest(channel.target, headers, _dump(builders[channel.kind](summary)))


# --- Slack --------------------------------------------------------------------------------


def slack_body(summary: Summary) -> dict[str, Any]:
    """Slack's incoming-webhook payload (see the module docstring)."""
    s = summary
    lines = [f"*<{_slack(s.url)}|{_slack(s.headline)}>*" if s.url else f"*{_slack(s.headline)}*"]
    facts = " · ".join(f"{name} `{_slack(value)}`" if name in _CODED else f"{name} {_slack(value)}"
                       for name, value in _facts(s))
    if s.detail:
        lines.append(_slack(_clip(s.detail, _MESSAGE_MAX)))
    if facts:
        lines.append(facts)
    if s.message:
        lines.append("> " + _slack(_clip(s.message, _MESSAGE_MAX)))
    if s.moment == "test":
        lines.append(_slack(_TEST_SAYS.format(project=s.project)))
    blocks: list[dict[str, Any]] = [_section(_clip("\n".join(lines), _SLACK_TEXT))]
    jobs, more = _pick(s.jobs, _SLACK_FIELDS)
    fields = [_mrkdwn(_clip(f"*{_slack(_clip(j.name, 200))}*\n{_slack(_job_says(j))}",
                            _SLACK_FIELD)) for j in jobs]
    if more:
        fields.append(_mrkdwn(f"*+{more} more*\nsee the run"))
    if fields:
        blocks.append({"type": "section", "fields": fields})
    failure = _failure_text(s, _slack, code=lambda t: f"`{t}`", bold=lambda t: f"*{t}*",
                            budget=_SLACK_TEXT)
    if failure:
        blocks.append(_section(failure))
    why = "a test message" if s.moment == "test" else f"notified on *{_slack(s.reason)}*"
    run = f"<{_slack(s.url)}|run {_slack(s.run_id)}>" if s.url and s.run_id else ""
    context = " · ".join(part for part in ("Cyclone", run, why) if part)
    blocks.append({"type": "context", "elements": [_mrkdwn(context)]})
    return {"text": _slack(s.headline), "attachments": [{"color": s.colour, "blocks": blocks}]}


def _slack(text: str) -> str:
    """Text as Slack's mrkdwn wants it: only these three characters are escaped (and
    code fences broken, see ``_unfenced``)."""
    return _unfenced(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _mrkdwn(text: str) -> dict[str, str]:
    return {"type": "mrkdwn", "text": text}


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": _mrkdwn(text)}


# --- Mattermost ---------------------------------------------------------------------------


def mattermost_body(summary: Summary) -> dict[str, Any]:
    """Mattermost's incoming-webhook payload with one Slack-compatible attachment."""
    s = summary
    headline = _quiet(s.headline)
    text = f"**[{_md_link_text(headline)}]({s.url})**" if s.url else f"**{headline}**"
    fields = [{"short": True, "title": name,
               "value": _inline(value) if name in _CODED else _quiet(value)}
              for name, value in _facts(s)]
    jobs, more = _pick(s.jobs, _MM_JOBS)
    fields += [{"short": True, "title": _quiet(j.name), "value": _job_says(j)} for j in jobs]
    if more:
        fields.append({"short": True, "title": f"+{more} more jobs", "value": "see the run"})
    parts = [_quiet(_clip(s.detail, _MESSAGE_MAX))] if s.detail else []
    if s.message:
        parts.append("> " + _quiet(_clip(s.message, _MESSAGE_MAX)))
    if s.moment == "test":
        parts.append(_TEST_SAYS.format(project=_quiet(s.project)))
    failure = _failure_text(s, _quiet, code=_inline, bold=lambda t: f"**{t}**",
                            budget=_MM_TAIL)
    if failure:
        parts.append(failure)
    attachment: dict[str, Any] = {
        "fallback": headline, "color": s.colour,
        "title": "Cyclone test notification" if s.moment == "test" else f"Run {s.run_id}"}
    if s.url:
        attachment["title_link"] = s.url
    if parts:
        attachment["text"] = "\n\n".join(parts)
    if fields:
        attachment["fields"] = fields
    return {"text": text, "attachments": [attachment]}


def _quiet(text: str) -> str:
    """``@channel`` and friends broken with a zero-width space, so they page no one
    (and code fences broken, see ``_unfenced``)."""
    return _MASS_MENTION.sub(lambda m: "@\u200b" + m.group(1), _unfenced(text))


def _md_link_text(text: str) -> str:
    return text.replace("[", "\\[").replace("]", "\\]")


# --- Discord ------------------------------------------------------------------------------


def discord_body(summary: Summary) -> dict[str, Any]:
    """Discord's Execute Webhook payload: one embed within Discord's limits."""
    s = summary
    # Names and values kept short enough that 25 fields leave room for the description
    # within the 6000 characters an embed may hold.
    fields: list[dict[str, Any]] = [
        {"name": name, "value": _inline(value) if name in _CODED else value, "inline": True}
        for name, value in _facts(s)]
    jobs, more = _pick(s.jobs, _DC_FIELDS - len(fields))
    fields += [{"name": _clip(j.name, _DC_NAME), "value": _job_says(j), "inline": True}
               for j in jobs]
    if more:
        fields.append({"name": f"+{more} more jobs", "value": "see the run", "inline": True})
    title = _clip(s.headline, _DC_TITLE)
    footer = f"Cyclone · {'test' if s.moment == 'test' else s.reason}"
    used = len(title) + len(footer) + sum(len(f["name"]) + len(f["value"]) for f in fields)
    room = min(_DC_DESC, _DC_TOTAL - used)
    parts = [_unfenced(_clip(s.detail, _MESSAGE_MAX))] if s.detail else []
    if s.message:
        parts.append("> " + _unfenced(_clip(s.message, _MESSAGE_MAX)))
    if s.moment == "test":
        parts.append(_TEST_SAYS.format(project=s.project))
    head = "\n\n".join(parts)
    failure = _failure_text(s, _unfenced, code=_inline, bold=lambda t: f"**{t}**",
                            budget=room - len(head) - 2)
    description = _clip("\n\n".join(p for p in (head, failure) if p), max(room, 0))
    embed: dict[str, Any] = {"title": title, "color": int(s.colour[1:], 16),
                             "footer": {"text": footer}}
    if s.url:
        embed["url"] = s.url
    if description:
        embed["description"] = description
    if fields:
        embed["fields"] = fields
    moment = s.finished_at or s.created_at
    if moment:
        embed["timestamp"] = moment
    return {"username": "Cyclone", "embeds": [embed], "allowed_mentions": {"parse": []}}


# --- generic webhook ----------------------------------------------------------------------


def _webhook_request(channel: Channel, summary: Summary,
                     headers: dict[str, str]) -> ChatRequest:
    body = json.dumps(summary.to_json()).encode()
    headers = {**headers, "Content-Type": "application/json",
               "X-Cyclone-Event": f"run.{summary.reason}", "Idempotency-Key": summary.key}
    if channel.secret:
        digest = hmac.new(channel.secret.encode(), body, hashlib.sha256).hexdigest()
        headers["X-Cyclone-Signature-256"] = f"sha256={digest}"
    return ChatRequest(channel.target, headers, body)


# --- what every chat message says ---------------------------------------------------------

_TEST_SAYS = "This is a test: Cyclone's notifications of {project} reach this channel."


def _facts(s: Summary) -> list[tuple[str, str]]:
    facts = [("Branch", s.branch), ("Commit", s.short_commit), ("Author", s.author),
             ("Trigger", s.trigger), ("Duration", s.duration)]
    return [(name, _unfenced(_clip(value, 120))) for name, value in facts if value]


def _job_says(job: JobLine) -> str:
    says = f"{_ICONS.get(job.status, '•')} {job.status}"
    if job.duration_s is not None:
        says += f" · {format_duration(job.duration_s)}"
    if job.reason and job.status != "success":
        says += f" ({_clip(job.reason.splitlines()[0], 100)})"
    return says


def _pick(jobs: Sequence[JobLine], limit: int) -> tuple[list[JobLine], int]:
    """At most ``limit`` jobs in plan order, the ones that did not succeed first when
    some must be left out (then one slot is kept to say how many: the count returned)."""
    if len(jobs) <= limit:
        return list(jobs), 0
    keep = max(limit - 1, 0)
    order = sorted(range(len(jobs)),
                   key=lambda i: (jobs[i].status in ("success", "skipped"), i))
    return [jobs[i] for i in sorted(order[:keep])], len(jobs) - keep


def _failure_text(s: Summary, escape: Callable[[str], str], *, code: Callable[[str], str],
                  bold: Callable[[str], str], budget: int) -> str:
    """The failed step and the log tail in a code block, within ``budget`` characters."""
    if (s.failed_step is None and not s.log_tail) or budget < 80:
        return ""
    if s.failed_step is None:
        head = bold("Log tail:")
    else:
        step = s.failed_step
        exit_code = f", exit {step.exit_code}" if step.exit_code is not None else ""
        head = (f"{bold('Failed step:')} {code(escape(_clip(step.job, 100)))} / "
                f"{code(escape(_clip(step.step, 100)))} ({escape(step.status)}{exit_code})")
    head = _clip(head, budget)
    block = _code_block(s.log_tail, budget - len(head) - 1, escape)
    return f"{head}\n{block}" if block else head


def _code_block(lines: Sequence[str], budget: int, escape: Callable[[str], str]) -> str:
    """A fenced block of the last ``lines`` that fit in ``budget`` characters, saying
    how many earlier lines it leaves out."""
    fence, reserve = "```", 40  # room for the "… N earlier lines" line
    room = budget - 2 * len(fence) - 2 - reserve
    kept: list[str] = []
    for line in reversed(lines):
        shown = escape(_unfenced(_clip(line, _LINE_MAX)))
        if len(shown) + 1 > room:
            break
        kept.append(shown)
        room -= len(shown) + 1
    if not kept:
        return ""
    dropped = len(lines) - len(kept)
    if dropped:
        kept.append(f"… {dropped} earlier lines")
    return fence + "\n" + "\n".join(reversed(kept)) + "\n" + fence


def _unfenced(text: str) -> str:
    """``text`` with each ````` broken by a zero-width space: a commit message or a log
    line must not open or close a code block."""
    return text.replace("```", "``\u200b`")


def _inline(text: str) -> str:
    return "`" + text.replace("`", "'") + "`"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:max(limit - 1, 0)] + "…"


def _dump(body: dict[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False).encode()
