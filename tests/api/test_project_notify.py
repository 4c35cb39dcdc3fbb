"""A project's notification rules and email templates: validated on create and PATCH with
the pipeline file's rule model, stored for the notifier, never shown with their secrets."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from shared.pipeline.notify import Channel, NotifyRule
from shared.projections.projects import ProjectView, fold_project, project_stream
from tests.api import support

SLACK = "https://hooks.slack.com/services/T0001/B0001/sEcReTtOkEn"
HOOK_KEY = "hmac-key-that-is-secret"
RULES: list[dict[str, Any]] = [
    {"name": "team", "when": ["failure", "fixed"], "branches": ["main"],
     "email": ["dev@example.com", "ops@example.com"], "slack": SLACK},
    {"when": "always", "mattermost": "${MM_HOOK}",
     "webhook": {"url": "https://ci-bot.example.com/cyclone/path-token", "secret": HOOK_KEY}},
]
ENV = {"MM_HOOK": "https://chat.example.com/hooks/xyz"}


class Api(support.Api):
    async def create(self, status: int = 201, **fields: Any) -> dict[str, Any]:
        body = {"name": "demo", "repo": "https://github.com/octo-org/hello.git", **fields}
        return (await self.call("POST", "/api/v1/projects", status, body))[0]

    async def patch(self, status: int = 200, **fields: Any) -> dict[str, Any]:
        return (await self.call("PATCH", "/api/v1/projects/demo", status, fields))[0]

    async def stored(self) -> ProjectView:
        view = fold_project(await self.store.read(project_stream("demo")))
        assert view is not None
        return view


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with support.serving(tmp_path, Api) as serving:
        yield serving


def assert_no_secret(text: str) -> None:
    for secret in (SLACK, "/services/", "sEcReTtOkEn", HOOK_KEY, "path-token"):
        assert secret not in text


async def test_rules_are_stored_for_the_notifier_and_shown_without_secrets(api: Api) -> None:
    created = await api.create(notify=RULES, env=ENV)
    stored = await api.stored()
    assert stored.notify == (
        NotifyRule(name="team", when=("failure", "fixed"), branches=("main",), channels=(
            Channel("email", "dev@example.com"), Channel("email", "ops@example.com"),
            Channel("slack", SLACK))),
        NotifyRule(name="2", when=("always",), channels=(
            Channel("mattermost", "${MM_HOOK}"),
            Channel("webhook", "https://ci-bot.example.com/cyclone/path-token", HOOK_KEY))),
    )
    assert all(rule.source == "project" for rule in stored.notify)
    assert_no_secret(repr(stored))
    for path in ("/api/v1/projects/demo", "/api/v1/projects"):
        _, text = await api.call("GET", path, 200)
        assert_no_secret(text)
    shown, _ = await api.call("GET", "/api/v1/projects/demo", 200)
    assert shown["notify"] == created["notify"]
    team, second = shown["notify"]
    assert [c["target"] for c in team["channels"]] == [
        "dev@example.com", "ops@example.com", "https://hooks.slack.com/…"]
    assert second["channels"] == [
        {"kind": "mattermost", "id": Channel("mattermost", "${MM_HOOK}").id,
         "target": "${MM_HOOK}"},
        {"kind": "webhook", "id": stored.notify[1].channels[1].id,
         "target": "https://ci-bot.example.com/…", "secret_set": True},
    ]
    assert (second["name"], second["source"], second["when"]) == ("2", "project", ["always"])


async def test_patch_replaces_the_whole_list_and_an_empty_list_removes_every_rule(
        api: Api) -> None:
    await api.create(notify=RULES, env=ENV)
    changed = await api.patch(notify=[{"name": "ops", "email": "ops@example.com"}])
    assert [rule["name"] for rule in changed["notify"]] == ["ops"]
    assert (await api.stored()).notify == (
        NotifyRule(name="ops", channels=(Channel("email", "ops@example.com"),)),)

    untouched = await api.patch(max_concurrent_runs=3)
    assert [rule["name"] for rule in untouched["notify"]] == ["ops"]

    assert (await api.patch(notify=[]))["notify"] == []
    assert (await api.stored()).notify == ()


async def test_a_url_sent_back_as_the_api_shows_it_is_refused_and_the_stored_one_kept(
        api: Api) -> None:
    await api.create(notify=RULES, env=ENV)
    shown = (await api.call("GET", "/api/v1/projects/demo", 200))[0]["notify"][0]
    slack_shown = shown["channels"][2]["target"]
    sent_back = {**RULES[0], "slack": slack_shown}
    refused = await api.patch(400, notify=[sent_back, RULES[1]])
    assert refused == {"error": "invalid_body", "detail": (
        "notify[0].slack: this is the URL as the API shows it (shortened: the API never shows "
        "a URL's path); send the full URL again")}
    assert (await api.stored()).notify[0].channels[2].target == SLACK


@pytest.mark.parametrize(("rules", "detail"), [
    ([{"email": ["dev@example.com", "dev at example"]}],
     "notify[0].email[1]: not an email address: 'dev at example'"),
    ([{"email": "a@example.com"}, {"name": "quiet"}],
     "notify[1]: a rule needs at least one channel: email, slack, mattermost, discord, "
     "webhook"),
    ([{"email": "a@example.com", "when": ["sucess"]}],
     "notify[0].when[0]: unknown condition 'sucess', did you mean 'success'? (expected one "
     "of: started, failure, success, fixed, changed, always)"),
    ([{"emial": "a@example.com"}],
     "notify[0].emial: unknown key 'emial', did you mean 'email'?"),
    ([{"webhook": {"url": "https://x.example/h", "secret_set": True}}],
     "notify[0].webhook.secret_set: unknown key 'secret_set', did you mean 'secret'?"),
    ([{"webhook": {"secret": HOOK_KEY}}], "notify[0].webhook: missing required key 'url'"),
    ([{"discord": "discord.com/api/webhooks/1/abc"}],
     "notify[0].discord: expected an http(s) URL with a host, or a whole ${NAME}"),
    ([{"slack": "${SLACK_HOOK}"}],
     "notify[0].slack: ${SLACK_HOOK} is not set in the project's env"),
    ([{"webhook": {"url": "https://x.example/h", "secret": "${KEY}"}}],
     "notify[0].webhook.secret: ${KEY} is not set in the project's env"),
    ([{"name": "a", "email": "a@example.com"}, {"name": "a", "email": "b@example.com"}],
     "notify[1].name: duplicate rule name 'a' (as notify[0])"),
    ([{"name": "2", "email": "a@example.com"}, {"email": "b@example.com"}],
     "notify[1]: named '2' by its position, as notify[0] is; give it a name"),
    ([{"email": "a@example.com", "branches": ["[main"]}],
     "notify[0].branches[0]: bad pattern '[main': '[' is not closed"),
    (["dev@example.com"], "notify[0]: expected a mapping, got a string"),
    ({"email": "a@example.com"}, "notify: Input should be a valid list"),
])
async def test_a_bad_rule_is_refused_naming_the_field(api: Api, rules: Any,
                                                      detail: str) -> None:
    answer = await api.create(400, notify=rules)
    assert answer["error"] == "invalid_body"
    assert answer["detail"].startswith(detail), answer["detail"]
    await api.call("GET", "/api/v1/projects/demo", 404)  # nothing stored

    await api.create()
    refused = await api.patch(400, notify=rules)
    assert refused["detail"].startswith(detail), refused["detail"]
    assert (await api.stored()).notify == ()


async def test_a_variable_may_be_set_in_the_same_patch_and_other_errors_keep_their_format(
        api: Api) -> None:
    await api.create()
    answer = await api.patch(notify=[{"slack": "${SLACK_HOOK}"}],
                             env={"SLACK_HOOK": SLACK})
    assert answer["notify"][0]["channels"][0]["target"] == "${SLACK_HOOK}"
    assert_no_secret(str(answer["notify"]))
    both = await api.patch(400, notify=[{"slak": "x"}], max_concurrent_runs=-1)
    assert both["detail"] == (
        "max_concurrent_runs: Input should be greater than or equal to 0; "
        "notify[0].slak: unknown key 'slak', did you mean 'slack'?")


async def test_email_templates_are_checked_stored_and_reset(api: Api) -> None:
    templates = {"subject": "[{{ project }}] {{ status }}", "html": "<p>{{ run_url }}</p>"}
    created = await api.create(email_templates=templates)
    assert created["email_templates"] == templates
    assert (await api.stored()).email_templates == templates

    bad = await api.patch(400, email_templates={"text": "Hello\n\nRun {{ run.id }\n"})
    assert bad["detail"] == "email_templates.text: line 3: unexpected '}'"
    assert (await api.stored()).email_templates == templates

    unknown = await api.patch(400, email_templates={"body": "x"})
    assert unknown["detail"] == ("email_templates.body: unknown template 'body' (expected one "
                                 "of: subject, text, html)")

    replaced = await api.patch(email_templates={"text": "{{ status }}"})
    assert replaced["email_templates"] == {"text": "{{ status }}"}
    assert (await api.patch(email_templates={}))["email_templates"] == {}
    assert (await api.stored()).email_templates == {}


async def test_a_bad_template_on_create_names_the_template_and_line(api: Api) -> None:
    answer = await api.create(400, email_templates={"subject": "ok", "html": "<b>{{ x }</b>"})
    assert answer["detail"].startswith("email_templates.html: line 1: "), answer["detail"]
    await api.call("GET", "/api/v1/projects/demo", 404)


def test_the_openapi_document_describes_both_fields() -> None:
    from services.api.openapi import openapi_document

    document = openapi_document()
    schemas = document["components"]["schemas"]
    for body in ("ProjectCreate", "ProjectPatch"):
        op = "post" if body == "ProjectCreate" else "patch"
        path = "/api/v1/projects" if op == "post" else "/api/v1/projects/{name}"
        schema = document["paths"][path][op]["requestBody"]["content"]["application/json"]
        properties = schema["schema"]["properties"]
        assert {"notify", "email_templates"} <= set(properties)
    rule = schemas["NotifyRuleModel"]["properties"]
    assert set(rule) == {"name", "when", "branches", "email", "slack", "mattermost",
                         "discord", "webhook"}
    assert rule["when"]["anyOf"][0]["enum"] == ["started", "failure", "success", "fixed",
                                                "changed", "always"]
    assert set(schemas["EmailTemplates"]["properties"]) == {"subject", "text", "html"}


async def test_env_values_that_are_secrets_are_shown_hidden_and_kept_when_sent_back(
        api: Api) -> None:
    env = {**ENV, "GREETING": "hello"}
    created = await api.create(notify=RULES, env=env)
    # used by a channel (its URL carries a token): hidden
    assert created["env"] == {"MM_HOOK": "***", "GREETING": "hello"}
    assert ENV["MM_HOOK"] not in str(created)

    shown = await api.patch(env={**created["env"], "GREETING": "hi"})  # read, change, send
    assert shown["env"]["GREETING"] == "hi"
    assert (await api.stored()).env == {**env, "GREETING": "hi"}  # the channel's URL kept

    problem, _ = await api.call("PATCH", "/api/v1/projects/demo", 400,
                                {"env": {"NEW_TOKEN": "***"}})
    assert "env.NEW_TOKEN" in problem["detail"]
    assert (await api.stored()).env == {**env, "GREETING": "hi"}


async def test_an_env_value_named_like_a_secret_is_refused_for_the_secret_store(
        api: Api) -> None:
    problem, _ = await api.call("POST", "/api/v1/projects", 400, {
        "name": "demo", "repo": "git://x", "env": {"DEPLOY_TOKEN": "dt-0123456789"}})
    assert problem["detail"].startswith("env.DEPLOY_TOKEN: named like a secret")
    assert "cyclone secret set demo DEPLOY_TOKEN" in problem["detail"]
    assert "dt-0123456789" not in problem["detail"]
    assert await api.store.read("project-demo") == []  # nothing stored
