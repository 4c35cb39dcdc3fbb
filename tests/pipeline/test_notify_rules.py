"""The pipeline file's ``notify:``: every problem at its line, as a user reads it, and the
rules it compiles to (``Plan.notify``), which survive the plan's trip through an event."""

from __future__ import annotations

import json
from textwrap import dedent

import pytest

from shared.errors import PipelineError
from shared.pipeline import load
from shared.pipeline.lint import lint
from shared.pipeline.notify import DEFAULT_WHEN, Channel, NotifyRule
from shared.pipeline.plan import Plan

FILE = ".cyclone.yml"
JOBS = """\
jobs:
  build:
    image: cyclone-test/busybox:latest
    steps: [{run: make}]
"""
LITERAL = ("a webhook {} in the pipeline file is readable by everyone who can read the "
           "repository; put it in the project's env and write ${{NAME}}")


def problems(notify: str) -> list[str]:
    """The diagnostics of a file whose jobs take lines 1-4 and ``notify`` the rest."""
    return [str(d) for d in lint(JOBS + dedent(notify), FILE)]


def plan(notify: str) -> Plan:
    return load(JOBS + dedent(notify), FILE).plan


def test_an_unknown_when_word_says_did_you_mean() -> None:
    assert problems("""\
        notify:
          - email: dev@example.com
            when: [failure, sucess]
    """) == [".cyclone.yml:7: notify[0].when[1]: unknown condition 'sucess', did you mean "
             "'success'? (expected one of: started, failure, success, fixed, changed, always)"]


def test_a_bad_address_is_named_at_its_line() -> None:
    assert problems("""\
        notify:
          - email:
              - dev@example.com
              - dev at example.com
    """) == [".cyclone.yml:8: notify[0].email[1]: not an email address: 'dev at example.com'"]


def test_a_rule_without_a_channel_is_an_error_at_the_rule() -> None:
    assert problems("""\
        notify:
          - email: dev@example.com
          - name: quiet
            when: always
    """) == [".cyclone.yml:7: notify[1]: a rule needs at least one channel: email, slack, "
             "mattermost, discord, webhook"]


def test_names_are_unique_including_those_given_by_position() -> None:
    assert problems("""\
        notify:
          - name: team
            email: a@example.com
          - name: team
            email: b@example.com
          - name: "4"
            email: c@example.com
          - email: d@example.com
    """) == [
        ".cyclone.yml:8: notify[1].name: duplicate rule name 'team' (first at line 6)",
        ".cyclone.yml:12: notify[3]: this rule is named '4' by its position, as the rule at "
        "line 10 is; give it a name",
    ]


def test_unknown_keys_are_named_with_did_you_mean_even_in_the_webhook_mapping() -> None:
    assert problems("""\
        notify:
          emial: dev@example.com
          webhook:
            url: https://ci-bot.example.com/cyclone
            secrt: ${HOOK_KEY}
    """) == [
        ".cyclone.yml:6: notify.emial: unknown key 'emial', did you mean 'email'?",
        ".cyclone.yml:9: notify.webhook.secrt: unknown key 'secrt', did you mean 'secret'?",
    ]


def test_a_literal_chat_url_and_a_literal_webhook_secret_are_warnings() -> None:
    text = """\
        notify:
          slack: https://hooks.slack.com/services/T000/B000/XXXX
          discord: ${DISCORD_HOOK}
          webhook: {url: "https://ci-bot.example.com/cyclone", secret: s3cret}
    """
    assert problems(text) == [
        f".cyclone.yml:6: warning: notify.slack: {LITERAL.format('URL')}",
        f".cyclone.yml:8: warning: notify.webhook.secret: {LITERAL.format('secret')}",
    ]
    assert len(plan(text).notify) == 1  # warnings do not stop the pipeline


@pytest.mark.parametrize(("value", "message"), [
    ("ftp://chat.example.com/x", "expected an http(s) URL with a host, or a whole ${NAME}"),
    ("$SLACK_HOOK", "expected an http(s) URL with a host, or a whole ${NAME}"),
    ("https://hooks.slack.com/…", "this is the URL as the API shows it"),
])
def test_a_chat_url_must_be_a_url_or_a_whole_variable(value: str, message: str) -> None:
    found = problems(f"""\
        notify:
          mattermost: "{value}"
    """)
    assert found[0].startswith(f".cyclone.yml:6: notify.mattermost: {message}"), found


@pytest.mark.parametrize(("notify", "expected"), [
    ("notify: [email: a@example.com, 3]",
     ".cyclone.yml:5: notify[1]: expected a mapping, got an integer"),
    ("notify: dev@example.com",
     ".cyclone.yml:5: notify: expected a rule (a mapping) or a list of them, got a string"),
    ("notify: {webhook: 42}",
     ".cyclone.yml:5: notify.webhook: expected a URL or a mapping {url, secret}"),
    ("notify: {webhook: {secret: x}}",
     ".cyclone.yml:5: notify.webhook: missing required key 'url'"),
    ("notify: {email: a@example.com, branches: ['[main']}",
     ".cyclone.yml:5: notify.branches[0]: bad pattern '[main': '[' is not closed"),
    ("notify: {email: a@example.com, when: []}", ".cyclone.yml:5: notify.when: must not be empty"),
    ("notify: {email: a@example.com, name: 'a b'}",
     ".cyclone.yml:5: notify.name: invalid rule name 'a b' (1 to 64 letters, digits, '_', '.' "
     "and '-')"),
    ("notify: {email: a@example.com, slack: }",
     ".cyclone.yml:5: notify.slack: must not be empty (leave the key out instead)"),
])
def test_shape_errors(notify: str, expected: str) -> None:
    assert problems(notify)[0] == expected


def test_errors_block_the_pipeline_and_every_rule_is_reported() -> None:
    with pytest.raises(PipelineError) as caught:
        plan("""\
            notify:
              - {}
              - {email: nobody}
        """)
    assert [d.line for d in caught.value.diagnostics] == [6, 7]


def test_rules_compile_in_order_with_defaults_and_channels_in_a_fixed_order() -> None:
    compiled = plan("""\
        notify:
          - name: team
            when: [failure, fixed, failure]
            branches: [main, "release/*"]
            webhook: {url: "https://ci-bot.example.com/cyclone", secret: "${HOOK_KEY}"}
            discord: ${DISCORD}
            email: [Dev@example.com, ops@example.com, dev@EXAMPLE.com]
            slack: ${SLACK}
            mattermost: ${MM}
          - email: solo@example.com
    """).notify
    assert compiled == (
        NotifyRule(name="team", when=("failure", "fixed"), branches=("main", "release/*"),
                   source="file", channels=(
                       Channel("email", "Dev@example.com"), Channel("email", "ops@example.com"),
                       Channel("slack", "${SLACK}"), Channel("mattermost", "${MM}"),
                       Channel("discord", "${DISCORD}"),
                       Channel("webhook", "https://ci-bot.example.com/cyclone", "${HOOK_KEY}"))),
        NotifyRule(name="2", when=DEFAULT_WHEN, branches=(), source="file",
                   channels=(Channel("email", "solo@example.com"),)),
    )
    # the secrets compiled are exactly what the notifier must keep out of sight
    assert compiled[0].channels[-1].secrets() == ("https://ci-bot.example.com/cyclone",
                                                  "${HOOK_KEY}")


def test_a_single_mapping_and_a_webhook_string_are_accepted() -> None:
    compiled = plan("""\
        notify:
          when: always
          webhook: https://ci-bot.example.com/cyclone
    """).notify
    assert compiled == (NotifyRule(name="1", when=("always",), source="file",
                                   channels=(Channel("webhook",
                                                     "https://ci-bot.example.com/cyclone"),)),)


def test_the_rules_survive_the_plan_json_round_trip() -> None:
    compiled = plan("""\
        notify:
          - email: [a@example.com]
            when: [started, changed]
            branches: ["!wip/*"]
          - webhook: {url: "${HOOK_URL}", secret: "${HOOK_KEY}"}
    """)
    data = json.loads(json.dumps(compiled.to_data()))
    assert [rule["name"] for rule in data["notify"]] == ["1", "2"]
    assert Plan.from_data(data) == compiled
    assert Plan.from_data(data).notify[1].channels[0].secret == "${HOOK_KEY}"


def test_a_plan_without_rules_is_recorded_as_before_and_an_old_plan_reads_as_none() -> None:
    bare = plan("")
    assert bare.notify == ()
    assert "notify" not in bare.to_data()
    assert Plan.from_data(json.loads(json.dumps(bare.to_data()))).notify == ()


def test_an_empty_notify_is_a_warning() -> None:
    assert problems("notify: []") == [
        ".cyclone.yml:5: warning: notify: lists no rule (remove 'notify' if none is meant)"]
