"""Authenticity: each forge's signature or token, good, tampered, missing, wrong secret."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from services.api import hooks
from services.api.hooks import HookAuthError, verify
from tests.api.hooks.support import SECRET, headers_for, load

# (provider, the header that carries the proof, an event it sends, a fixture)
PROVIDERS = [
    ("github", "X-Hub-Signature-256", "push", "github/push.json"),
    ("gitlab", "X-Gitlab-Token", "Push Hook", "gitlab/push.json"),
    ("gitea", "X-Gitea-Signature", "push", "gitea/push.json"),
    ("forgejo", "X-Forgejo-Signature", "push", "gitea/push.json"),
    ("gogs", "X-Gogs-Signature", "push", "gitea/push.json"),
    ("generic", "X-Cyclone-Signature", "", "generic/push.json"),
]
IDS = [p[0] for p in PROVIDERS]


def test_the_public_surface() -> None:
    assert sorted(hooks.__all__) == sorted(
        ["PROVIDERS", "HookAuthError", "Ignored", "PayloadError", "delivery_header",
         "lower_headers", "parse", "verify"])
    assert hooks.PROVIDERS == ("github", "gitlab", "gitea", "forgejo", "gogs", "generic")


def test_github_signature_matches_the_example_in_githubs_docs() -> None:
    # GitHub's "Validating webhook deliveries" test values.
    verify("github", {"X-Hub-Signature-256": "sha256=757107ea0eb2509fc211221cce984b8a37570b6d"
                                             "7586c22c46f4379c8b043e17"},
           b"Hello, World!", "It's a Secret to Everybody")
    with pytest.raises(HookAuthError):
        verify("github", {"X-Hub-Signature-256": "sha256=757107ea0eb2509fc211221cce984b8a37570b6d"
                                                 "7586c22c46f4379c8b043e17"},
               b"Hello, World?", "It's a Secret to Everybody")


@pytest.mark.parametrize(("provider", "header", "event", "fixture"), PROVIDERS, ids=IDS)
def test_a_delivery_signed_with_the_secret_is_authentic(provider: str, header: str,
                                                        event: str, fixture: str) -> None:
    body = load(fixture)
    verify(provider, headers_for(provider, event, body), body, SECRET)


@pytest.mark.parametrize(("provider", "header", "event", "fixture"), PROVIDERS, ids=IDS)
def test_a_tampered_body_is_refused(provider: str, header: str, event: str,
                                    fixture: str) -> None:
    body = load(fixture)
    headers = headers_for(provider, event, body)
    tampered = body.replace(b"refs/heads/", b"refs/heads/x")
    if provider == "gitlab":  # GitLab does not sign the body: the token is all there is
        verify(provider, headers, tampered, SECRET)
        return
    with pytest.raises(HookAuthError, match=f"{header} does not match"):
        verify(provider, headers, tampered, SECRET)


@pytest.mark.parametrize(("provider", "header", "event", "fixture"), PROVIDERS, ids=IDS)
def test_a_missing_signature_is_named(provider: str, header: str, event: str,
                                      fixture: str) -> None:
    body = load(fixture)
    headers = {name: value for name, value in headers_for(provider, event, body).items()
               if not name.endswith(("-Signature", "-Signature-256", "-Token"))}
    with pytest.raises(HookAuthError, match=f"^{header} header is missing$"):
        verify(provider, headers, body, SECRET)


@pytest.mark.parametrize(("provider", "header", "event", "fixture"), PROVIDERS, ids=IDS)
def test_a_delivery_signed_with_another_secret_is_refused_without_echoing_secrets(
        provider: str, header: str, event: str, fixture: str) -> None:
    body = load(fixture)
    headers = headers_for(provider, event, body, secret="the forge's old secret")
    with pytest.raises(HookAuthError, match=f"{header} does not match") as caught:
        verify(provider, headers, body, SECRET)
    message = str(caught.value)
    assert SECRET not in message and "old secret" not in message
    assert headers[header] not in message


@pytest.mark.parametrize("value", ["757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
                                   "sha1=757107ea0eb2509fc211221cce984b8a37570b6d",
                                   "sha256=not-hex", "sha256="])
def test_a_malformed_github_signature_says_what_form_is_expected(value: str) -> None:
    with pytest.raises(HookAuthError,
                       match="X-Hub-Signature-256 is not 'sha256=' followed by 64 hex digits"):
        verify("github", {"X-Hub-Signature-256": value}, b"{}", SECRET)


def test_a_gitea_signature_has_no_prefix() -> None:
    body = load("gitea/push.json")
    signature = headers_for("gitea", "push", body)["X-Gitea-Signature"]
    with pytest.raises(HookAuthError, match="X-Gitea-Signature is not 64 hex digits"):
        verify("gitea", {"X-Gitea-Signature": f"sha256={signature}"}, body, SECRET)


@pytest.mark.parametrize(("provider", "header", "event", "fixture"), PROVIDERS, ids=IDS)
def test_no_secret_configured_refuses_everything(provider: str, header: str, event: str,
                                                 fixture: str) -> None:
    body = load(fixture)
    headers = headers_for(provider, event, body, secret="")  # what an empty key signs
    with pytest.raises(HookAuthError, match="no webhook secret"):
        verify(provider, headers, body, "")


def test_an_unknown_provider_is_refused() -> None:
    with pytest.raises(HookAuthError, match="unknown webhook provider 'bitbucket'"):
        verify("bitbucket", {}, b"{}", SECRET)


@pytest.mark.parametrize("fold", [str.lower, str.upper], ids=["lower", "upper"])
@pytest.mark.parametrize(("provider", "header", "event", "fixture"), PROVIDERS, ids=IDS)
def test_header_names_are_case_insensitive(provider: str, header: str, event: str,
                                           fixture: str, fold: object) -> None:
    body = load(fixture)
    assert callable(fold)
    headers = {fold(name): value for name, value in headers_for(provider, event, body).items()}
    verify(provider, headers, body, SECRET)
    hooks.parse(provider, headers, body)


def test_aiohttp_request_headers_are_accepted() -> None:
    body = load("github/push.json")
    headers = CIMultiDictProxy(CIMultiDict(headers_for("github", "push", body)))
    verify("github", headers, body, SECRET)
    event = hooks.parse("github", headers, body)
    assert not isinstance(event, hooks.Ignored) and event.delivery == "delivery-1"
