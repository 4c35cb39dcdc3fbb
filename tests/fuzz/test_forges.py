"""Each forge's ``verify`` and ``parse`` over arbitrary headers and bodies: real payloads
with any field replaced or removed, arbitrary JSON, arbitrary bytes. ``verify`` returns
or raises ``HookAuthError``; ``parse`` returns an event or ``Ignored``, or raises
``PayloadError``; nothing else, and what it returns can be stored."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from services.api.hooks import PROVIDERS, HookAuthError, Ignored, PayloadError, parse, verify
from services.api.hooks.errors import MAX_REASON
from shared.forge import ForgeEvent
from tests.api.hooks.support import SECRET, headers_for, payload
from tests.fuzz.budget import examples

# The deliveries each provider sends (event header value, fixture), system hooks included.
SAMPLES: dict[str, list[tuple[str, str]]] = {
    "github": [("push", "github/push.json"), ("push", "github/push_tag.json"),
               ("pull_request", "github/pull_request_synchronize.json"),
               ("ping", "github/ping.json"), ("create", "github/push_tag.json")],
    "gitlab": [("Push Hook", "gitlab/push.json"), ("Tag Push Hook", "gitlab/tag_push.json"),
               ("Merge Request Hook", "gitlab/merge_request_update.json"),
               ("System Hook", "gitlab/push.json"),
               ("System Hook", "gitlab/merge_request_open.json")],
    "gitea": [("push", "gitea/push.json"), ("delete", "gitea/delete_branch.json"),
              ("pull_request", "gitea/pull_request_opened.json"),
              ("create", "gitea/create_tag.json")],
    "gogs": [("create", "gogs/create_tag.json"), ("push", "gitea/push_tag.json"),
             ("pull_request", "gogs/pull_request_opened.json")],
    "generic": [("", "generic/push_commits.json"), ("", "generic/tag.json"),
                ("", "generic/ping.json")],
}
SAMPLES["forgejo"] = SAMPLES["gitea"]
assert set(SAMPLES) == set(PROVIDERS)
CASES = [(provider, event, fixture) for provider, samples in SAMPLES.items()
         for event, fixture in samples]

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-2**200, 2**200),
                    st.floats(), st.text(max_size=30),
                    st.sampled_from(["", "0" * 40, "a" * 64, "refs/heads/x", "refs/tags/v1",
                                     "opened", "synchronize", "tag", "branch", "push",
                                     "\ud800", "refs/heads/" + "x" * 300]))
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=20)
# What aiohttp hands over for any header bytes: UTF-8, undecodable bytes as surrogates.
header_values = st.one_of(st.text(max_size=40),
                          st.binary(max_size=40).map(lambda b: b.decode("utf-8",
                                                                        "surrogateescape")))


def _paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path] if path else []
    children = node.items() if isinstance(node, dict) else enumerate(node) \
        if isinstance(node, list) else ()
    for key, child in children:
        found.extend(_paths(child, (*path, key)))
    return found


def _mutate(data: Any, draw: st.DataObject) -> Any:
    for _ in range(draw.draw(st.integers(1, 3))):
        paths = _paths(data)
        if not paths:
            break
        *parents, last = draw.draw(st.sampled_from(paths))
        node = data
        for part in parents:
            node = node[part]
        if draw.draw(st.booleans()) and isinstance(node, dict):
            del node[last]
        else:
            node[last] = draw.draw(json_values)
    return data


def _headers(provider: str, event: str, body: bytes, draw: st.DataObject) -> dict[str, str]:
    headers = headers_for(provider, event, body, delivery=draw.draw(st.text(max_size=10)))
    for name in draw.draw(st.lists(st.sampled_from(sorted(headers)), max_size=3, unique=True)):
        if draw.draw(st.booleans()):
            headers[name] = draw.draw(header_values)
        else:
            del headers[name]
    return headers


def _check(provider: str, headers: dict[str, str], body: bytes) -> None:
    try:
        verify(provider, headers, body, SECRET)
    except HookAuthError as exc:
        assert SECRET not in str(exc)
    try:
        got = parse(provider, headers, body)
    except PayloadError as exc:
        str(exc).encode()  # the message is answered: it must be text
        return
    if isinstance(got, Ignored):
        assert len(got.reason) <= MAX_REASON
        got.reason.encode()
        return
    assert isinstance(got, ForgeEvent)
    json.dumps(got.to_json(), ensure_ascii=False).encode()  # storable: no lone surrogates
    assert len(got.ref.encode()) <= 255 and 0 <= got.pr_number < 2**31
    assert (got.pr_number > 0) == (got.kind == "pull_request")


@examples(400)
@given(st.sampled_from(CASES), st.data())
def test_real_payloads_with_fields_replaced_or_removed(case: tuple[str, str, str],
                                                       draw: st.DataObject) -> None:
    provider, event, fixture = case
    body = json.dumps(_mutate(payload(fixture), draw)).encode()
    _check(provider, _headers(provider, event, body, draw), body)


@examples(150)
@given(st.sampled_from(CASES), json_values, st.data())
def test_arbitrary_json(case: tuple[str, str, str], value: Any, draw: st.DataObject) -> None:
    provider, event, _ = case
    body = json.dumps(value).encode()
    _check(provider, _headers(provider, event, body, draw), body)


bodies = st.one_of(
    st.binary(max_size=200),
    st.integers(1, 3000).map(lambda n: b"[" * n),
    st.integers(1, 3000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
    st.integers(1, 6000).map(lambda n: b'{"number": ' + b"7" * n + b"}"),
    st.text(max_size=100).map(lambda t: ("payload=" + t).encode()))


@examples(150)
@given(st.sampled_from(CASES), bodies, st.booleans(), st.data())
def test_arbitrary_bytes(case: tuple[str, str, str], body: bytes, form: bool,
                         draw: st.DataObject) -> None:
    provider, event, _ = case
    headers = _headers(provider, event, body, draw)
    if form:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    _check(provider, headers, body)
