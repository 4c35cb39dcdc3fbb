"""Trigger rules: ``on:`` as written, as linted, as compiled, and the decisions it makes."""

from __future__ import annotations

import json
from textwrap import dedent

import pytest

from shared.errors import PipelineError
from shared.forge import ForgeEvent
from shared.pipeline import load
from shared.pipeline.lint import lint
from shared.pipeline.plan import Plan
from shared.pipeline.triggers import (
    Decision,
    Filter,
    PullRequestTrigger,
    PushTrigger,
    Triggers,
    allows_manual,
    decide,
    glob_error,
    glob_match,
    schedules,
    select,
)

FILE = ".cyclone.yml"
JOBS = """
jobs:
  build:
    image: cyclone-test/busybox:latest
    steps: [{run: make}]
"""


def triggers_of(on: str) -> Triggers:
    return load(dedent(on) + JOBS, FILE).plan.triggers


def problems(on: str) -> list[str]:
    return [str(d) for d in lint(dedent(on) + JOBS, FILE)]


def push(branch: str, paths: tuple[str, ...] | None = None, **kw: object) -> ForgeEvent:
    return ForgeEvent("push", "github", ref=f"refs/heads/{branch}", branch=branch,
                      changed_paths=paths, **kw)  # type: ignore[arg-type]


def tag(name: str, **kw: object) -> ForgeEvent:
    return ForgeEvent("tag", "github", ref=f"refs/tags/{name}", tag=name,
                      **kw)  # type: ignore[arg-type]


def pr(target: str, paths: tuple[str, ...] | None = None, action: str = "opened",
       ) -> ForgeEvent:
    return ForgeEvent("pull_request", "github", branch="feature/x", target_branch=target,
                      pr_number=7, action=action, changed_paths=paths)


# --- patterns --------------------------------------------------------------------------------


@pytest.mark.parametrize(("pattern", "name", "expected"), [
    ("main", "main", True),
    ("main", "main2", False),
    ("*", "feature", True),
    ("*", "feature/x", False),  # * stops at /
    ("**", "feature/x/y", True),
    ("release/**", "release/1.0/hotfix", True),
    ("release/*", "release/1.0/hotfix", False),
    ("v*", "v1.2.3", True),
    ("v?.?", "v1.2", True),
    ("v?.?", "v1.23", False),
    ("a?c", "a/c", False),  # ? does not match /
    ("v[0-9].*", "v3.x", True),
    ("v[0-9].*", "vx.x", False),
    ("[CB]at", "Cat", True),
    ("[!CB]at", "Rat", True),
    ("[!CB]at", "Cat", False),
    ("**.md", "README.md", True),
    ("**.md", "docs/deep/a.md", True),
    ("*.md", "docs/a.md", False),
    ("docs/**/*.md", "docs/a.md", True),  # **/ may match no directory
    ("docs/**/*.md", "docs/x/y/a.md", True),
    ("**/README.md", "README.md", True),
    ("**/docs/**", "space/docs/plan/space.doc", True),
    ("feature+x", "feature+x", True),  # + is literal (see the module docstring)
    ("feature+x", "featurex", False),
    ("a\\*b", "a*b", True),
    ("a\\*b", "axb", False),
    ("a.b", "axb", False),  # regex characters are literal
])
def test_glob_match(pattern: str, name: str, expected: bool) -> None:
    assert glob_match(pattern, name) is expected


@pytest.mark.parametrize(("pattern", "problem"), [
    ("", "a pattern must not be empty"),
    ("!", "'!' must be followed by a pattern"),
    ("v[0-9", "'[' is not closed"),
    ("a[]", "empty character class '[]'"),
    ("[z-a]", "range 'z-a' runs backwards"),
    ("a\\", "a trailing '\\' escapes nothing"),
])
def test_glob_error(pattern: str, problem: str) -> None:
    assert glob_error(pattern) == problem
    if pattern not in ("", "!"):  # the same problem after a leading "!"
        assert glob_error("!" + pattern) == problem


@pytest.mark.parametrize("pattern", ["main", "!release/old*", "**/*.py", "[a-z]?", "a\\[b"])
def test_valid_patterns_have_no_error(pattern: str) -> None:
    assert glob_error(pattern) is None


@pytest.mark.parametrize(("patterns", "name", "expected"), [
    (["main", "release/**"], "release/1", (True, "release/**")),
    (["main"], "dev", (False, None)),
    (["release/**", "!release/old*"], "release/old1", (False, "!release/old*")),
    (["release/**", "!release/old*", "release/old-lts"], "release/old-lts",
     (True, "release/old-lts")),  # a later positive re-includes
    (["!release/old*"], "main", (True, None)),  # only negatives: everything except
    (["!release/old*"], "release/old1", (False, "!release/old*")),
    ([], "main", (False, None)),  # an empty list selects nothing
])
def test_select_reads_patterns_in_order(patterns: list[str], name: str,
                                        expected: tuple[bool, str | None]) -> None:
    assert select(patterns, name) == expected


# --- decide ----------------------------------------------------------------------------------

FULL = """
on:
  push:
    branches: [main, "release/**", "!release/old*"]
    tags: ["v*"]
    paths: ["src/**", "!src/docs/**"]
  pull_request:
    branches: [main]
    paths-ignore: ["**.md"]
"""


@pytest.mark.parametrize(("event", "start", "reason"), [
    (push("main", ("src/app.py",)), True,
     "push to 'main' matches on.push.branches 'main'; changed file 'src/app.py' matches "
     "on.push.paths 'src/**'"),
    (push("release/2.0", ("README", "src/lib/x.py")), True,
     "push to 'release/2.0' matches on.push.branches 'release/**'; changed file "
     "'src/lib/x.py' matches on.push.paths 'src/**'"),
    (push("feature/x", ("src/app.py",)), False,
     "push to 'feature/x' matches no branch of on.push.branches"),
    (push("release/old-1", ("src/app.py",)), False,
     "push to 'release/old-1' is excluded by on.push.branches '!release/old*'"),
    (push("main", ("src/docs/guide.md",)), False,
     "push to 'main': changed file 'src/docs/guide.md' is excluded by on.push.paths "
     "'!src/docs/**'"),
    (push("main", ("README", "src/docs/guide.md")), False,
     "push to 'main': no changed file matches on.push.paths (2 changed)"),
    (push("main", None), True,
     "push to 'main' matches on.push.branches 'main'; changed files unknown: on.push.paths "
     "not judged"),
    (push("main", ()), True,
     "push to 'main' matches on.push.branches 'main'; changed files unknown: on.push.paths "
     "not judged"),
    (push("main", ("src/app.py",), deleted=True), False, "branch 'main' deleted: nothing to build"),
    (tag("v1.2", changed_paths=("README",)), True,
     "tag 'v1.2' matches on.push.tags 'v*'; on.push.paths is not judged for tags"),
    (tag("1.2"), False, "tag '1.2' matches no tag of on.push.tags"),
    (tag("v1.2", deleted=True), False, "tag 'v1.2' deleted: nothing to build"),
    (ForgeEvent("ping", "github"), False, "ping: nothing to build"),
    (pr("main", ("src/app.py",)), True,
     "pull request #7 into 'main' matches on.pull_request.branches 'main'; changed file "
     "'src/app.py' is not ignored by on.pull_request.paths-ignore"),
    (pr("main", ("README.md", "docs/a.md")), False,
     "pull request #7 into 'main': all 2 changed files are ignored by "
     "on.pull_request.paths-ignore"),
    (pr("main", ("README.md",)), False,
     "pull request #7 into 'main': changed file 'README.md' is ignored by "
     "on.pull_request.paths-ignore '**.md'"),
    (pr("develop", ("src/app.py",)), False,
     "pull request #7 into 'develop' matches no branch of on.pull_request.branches"),
    (pr("main"), True,
     "pull request #7 into 'main' matches on.pull_request.branches 'main'; changed files "
     "unknown: on.pull_request.paths-ignore not judged"),
])
def test_decide_full_example(event: ForgeEvent, start: bool, reason: str) -> None:
    assert decide(triggers_of(FULL), event) == Decision(start, reason)


def test_without_on_every_push_tag_and_pull_request_starts_and_no_schedule() -> None:
    triggers = triggers_of("")
    assert triggers == Triggers()
    assert decide(triggers, push("any/branch", ("x",))) == Decision(
        True, "push to 'any/branch' (on.push: any branch)")
    assert decide(triggers, tag("anything")) == Decision(True, "tag 'anything' (on.push: any tag)")
    assert decide(triggers, pr("dev")).start
    assert decide(triggers, push("x", deleted=True)).start is False
    assert decide(triggers, ForgeEvent("ping", "gitea")).start is False
    assert allows_manual(triggers) and schedules(triggers) == []


def test_only_branches_given_tags_do_not_trigger() -> None:
    triggers = triggers_of("on: {push: {branches: [main]}}")
    assert decide(triggers, tag("v1")) == Decision(
        False, "tag 'v1': on.push.branches is set and no tag filter is, so tags do not trigger")
    assert decide(triggers, push("main")).start


def test_only_tags_given_branches_do_not_trigger() -> None:
    triggers = triggers_of("on: {push: {tags: ['v*']}}")
    assert decide(triggers, push("main")) == Decision(
        False, "push to 'main': on.push.tags is set and no branch filter is, so branches do "
        "not trigger")
    assert decide(triggers, tag("v2")).start


def test_only_paths_given_every_branch_and_tag_is_judged_by_paths_alone() -> None:
    triggers = triggers_of("on: {push: {paths: ['src/**']}}")
    assert decide(triggers, push("any", ("src/a",))) == Decision(
        True, "push to 'any' (on.push: any branch); changed file 'src/a' matches "
        "on.push.paths 'src/**'")
    assert not decide(triggers, push("any", ("doc/a",))).start
    assert decide(triggers, tag("v1", changed_paths=("doc/a",))).start  # not judged for tags


def test_ignore_lists() -> None:
    triggers = triggers_of("""
        on:
          push:
            branches-ignore: ["dependabot/**"]
            tags-ignore: ["nightly-*"]
            paths-ignore: ["docs/**", "!docs/api/**"]
    """)
    assert decide(triggers, push("dependabot/pip/x")) == Decision(
        False, "push to 'dependabot/pip/x' is ignored by on.push.branches-ignore "
        "'dependabot/**'")
    assert decide(triggers, tag("nightly-3")) == Decision(
        False, "tag 'nightly-3' is ignored by on.push.tags-ignore 'nightly-*'")
    assert decide(triggers, tag("v3")) == Decision(
        True, "tag 'v3' is not ignored by on.push.tags-ignore; on.push.paths-ignore is not "
        "judged for tags")
    assert decide(triggers, push("main", ("docs/a.md",))) == Decision(
        False, "push to 'main': changed file 'docs/a.md' is ignored by on.push.paths-ignore "
        "'docs/**'")
    assert decide(triggers, push("main", ("docs/api/x.md",))) == Decision(
        True, "push to 'main' is not ignored by on.push.branches-ignore; changed file "
        "'docs/api/x.md' is re-included by on.push.paths-ignore '!docs/api/**'")


def test_only_negative_branches_mean_everything_except() -> None:
    triggers = triggers_of("on: {push: {branches: ['!gh-pages']}}")
    assert decide(triggers, push("main")) == Decision(
        True, "push to 'main' is not excluded by on.push.branches")
    assert decide(triggers, push("gh-pages")) == Decision(
        False, "push to 'gh-pages' is excluded by on.push.branches '!gh-pages'")


def test_events_not_listed_do_not_trigger() -> None:
    triggers = triggers_of("on: pull_request")
    assert decide(triggers, push("main")) == Decision(
        False, "push to 'main': on does not list push")
    assert decide(triggers, tag("v1")) == Decision(False, "tag 'v1': on does not list push")
    assert decide(triggers, pr("main")).start
    assert not allows_manual(triggers)
    assert decide(triggers_of("on: push"), pr("main")) == Decision(
        False, "pull request #7 into 'main': on does not list pull_request")


def test_pull_request_types() -> None:
    triggers = triggers_of("on: {pull_request: {types: [opened, reopened]}}")
    assert decide(triggers, pr("main", action="opened")).start
    assert decide(triggers, pr("main", action="synchronize")) == Decision(
        False, "pull request #7 into 'main': action 'synchronize' is not in "
        "on.pull_request.types")


# --- on: as written, compiled ----------------------------------------------------------------


def test_full_example_compiles() -> None:
    triggers = triggers_of(FULL + """
  schedule:
    - cron: "0 3 * * *"
    - "*/15 * * * 1-5"
    - cron: " 0 3 * * * "
  manual: true
""")
    assert triggers == Triggers(
        push=PushTrigger(
            branches=Filter("branches", ("main", "release/**", "!release/old*")),
            tags=Filter("tags", ("v*",)),
            paths=Filter("paths", ("src/**", "!src/docs/**"))),
        pull_request=PullRequestTrigger(branches=Filter("branches", ("main",)),
                                        paths=Filter("paths-ignore", ("**.md",))),
        schedule=("0 3 * * *", "*/15 * * * 1-5"),  # stripped, the repeat dropped
        manual=True,
    )
    assert schedules(triggers) == ["0 3 * * *", "*/15 * * * 1-5"]


@pytest.mark.parametrize(("on", "expected"), [
    ("on: push", Triggers(pull_request=None, manual=False)),
    ("on: [push, pull_request]", Triggers(manual=False)),
    ("on: [manual]", Triggers(push=None, pull_request=None, manual=True)),
    ("on: {push: , manual: }", Triggers(pull_request=None, manual=True)),
    ("on: {push: true, pull_request: false}", Triggers(pull_request=None, manual=False)),
    ("on: {push: {branches: main}}",
     Triggers(push=PushTrigger(branches=Filter("branches", ("main",))), pull_request=None,
              manual=False)),
    ("on: {schedule: '@daily'}",
     Triggers(push=None, pull_request=None, schedule=("@daily",), manual=False)),
])
def test_shorthands(on: str, expected: Triggers) -> None:
    assert triggers_of(on) == expected


def test_schedule_only_pipeline_starts_nothing_from_the_forge() -> None:
    triggers = triggers_of("on: {schedule: [{cron: '0 3 * * *'}]}")
    assert not decide(triggers, push("main")).start
    assert not decide(triggers, pr("main")).start
    assert not allows_manual(triggers)
    assert schedules(triggers) == ["0 3 * * *"]


def test_plan_round_trips_with_its_triggers_through_json() -> None:
    plan = load(dedent(FULL + "  schedule: ['0 3 * * *']\n") + JOBS, FILE).plan
    data = json.loads(json.dumps(plan.to_data()))
    assert data["triggers"]["push"]["branches"] == {
        "key": "branches", "patterns": ["main", "release/**", "!release/old*"]}
    assert Plan.from_data(data) == plan
    assert Triggers.from_data(json.loads(json.dumps(plan.triggers.to_data()))) == plan.triggers


def test_a_plan_recorded_before_triggers_reads_as_everything() -> None:
    data = load(dedent(JOBS), FILE).plan.to_data()
    del data["triggers"]
    plan = Plan.from_data(json.loads(json.dumps(data)))
    assert plan.triggers == Triggers()
    assert decide(plan.triggers, tag("v9")).start and allows_manual(plan.triggers)


def test_disabled_events_round_trip() -> None:
    triggers = triggers_of("on: {schedule: ['0 3 * * *']}")
    assert Triggers.from_data(json.loads(json.dumps(triggers.to_data()))) == triggers


# --- on: lint --------------------------------------------------------------------------------


def test_lint_reports_every_problem_in_on_with_its_line() -> None:
    assert problems("""
        on:
          push:
            branchs: [main]
            branches: ["v[0-9", "!", main]
            paths: ["src/**"]
            paths-ignore: ["**.md"]
            tags: "refs/tags/v*"
          pull_request: main
          schedule:
            - cron: "0 25 * * *"
            - "*/15 * * * mun"
            - cron: "0 0 30 feb *"
            - crn: "@daily"
          manual: "yes"
          release: {}
    """) == [
        ".cyclone.yml:4: on.push.branchs: unknown key 'branchs', did you mean 'branches'?",
        ".cyclone.yml:5: on.push.branches[0]: bad pattern 'v[0-9': '[' is not closed",
        ".cyclone.yml:5: on.push.branches[1]: bad pattern '!': '!' must be followed by a "
        "pattern",
        ".cyclone.yml:7: on.push.paths-ignore: use either 'paths' or 'paths-ignore', not both "
        "(put '!' patterns in 'paths' instead)",
        ".cyclone.yml:9: on.pull_request: expected a mapping, true or false, got a string",
        ".cyclone.yml:11: on.schedule[0].cron: invalid cron line '0 25 * * *': hour: '25' is "
        "out of range 0-23",
        ".cyclone.yml:12: on.schedule[1]: invalid cron line '*/15 * * * mun': day-of-week: "
        "'mun' is not a number (use 0-7 or sun-sat)",
        ".cyclone.yml:13: on.schedule[2].cron: invalid cron line '0 0 30 feb *': "
        "day-of-month: '30' never occurs in month 'feb'",
        ".cyclone.yml:14: on.schedule[3]: missing required key 'cron'",
        ".cyclone.yml:14: on.schedule[3].crn: unknown key 'crn', did you mean 'cron'?",
        ".cyclone.yml:15: on.manual: expected a boolean, got a string",
        ".cyclone.yml:16: on.release: unknown key 'release'",
        ".cyclone.yml:8: warning: on.push.tags: tags are matched by name: 'refs/tags/v*' never "
        "matches (write 'v*')",
    ]


@pytest.mark.parametrize(("on", "expected"), [
    ("on: pussh", [".cyclone.yml:2: on: unknown event 'pussh', did you mean 'push'? "
                   "(expected one of: push, pull_request, schedule, manual)"]),
    ("on: [push, schedule, 3]", [
        ".cyclone.yml:2: on[1]: schedule needs cron lines: write "
        "'on: {schedule: [{cron: \"0 3 * * *\"}]}'",
        ".cyclone.yml:2: on[2]: expected an event name, got an integer"]),
    ("on: {}", [".cyclone.yml:2: on: lists no event (remove 'on' to trigger on every event)"]),
    ("on: []", [".cyclone.yml:2: on: lists no event (remove 'on' to trigger on every event)"]),
    ("on:", [".cyclone.yml:2: on: expected an event name, a list of them or a mapping, "
             "got null"]),
    ("on: {schedule: []}", [".cyclone.yml:2: on.schedule: must not be empty"]),
    ("on: {pull_request: {types: opend}}", [
        ".cyclone.yml:2: on.pull_request.types: unknown pull request action 'opend', did you "
        "mean 'opened'? (expected one of: opened, reopened, synchronize)"]),
    ("on: {push: {branches: [1.0]}}", [
        ".cyclone.yml:2: on.push.branches[0]: expected a string, got a number"]),
    ("on: {push: {tags: v1, tags-ignore: v2}}", [
        ".cyclone.yml:2: on.push.tags-ignore: use either 'tags' or 'tags-ignore', not both "
        "(put '!' patterns in 'tags' instead)"]),
    ("on: {push: {paths_ignore: x}}", [
        ".cyclone.yml:2: on.push.paths_ignore: unknown key 'paths_ignore', did you mean "
        "'paths-ignore'?"]),
])
def test_lint_errors(on: str, expected: list[str]) -> None:
    assert problems("\n" + on) == expected
    with pytest.raises(PipelineError):
        load(dedent("\n" + on) + JOBS, FILE)


@pytest.mark.parametrize(("on", "expected"), [
    ("on: [push, push]", [".cyclone.yml:2: warning: on[1]: event 'push' is listed twice"]),
    ("on: {push: false}", [".cyclone.yml:2: warning: on: no event triggers this pipeline"]),
    ("on: {pull_request: {branches: []}}", [
        ".cyclone.yml:2: warning: on.pull_request.branches: an empty list matches no branch"]),
    ("on: {push: {paths: ['/src/**']}}", [
        ".cyclone.yml:2: warning: on.push.paths[0]: paths are matched from the repository "
        "root without a leading '/' or './': '/src/**' never matches"]),
    ("on: {push: {branches: '!refs/heads/main'}}", [
        ".cyclone.yml:2: warning: on.push.branches: branches are matched by name: "
        "'!refs/heads/main' never matches (write 'main')"]),
])
def test_lint_warnings_do_not_block(on: str, expected: list[str]) -> None:
    assert problems("\n" + on) == expected
    assert [str(w) for w in load(dedent("\n" + on) + JOBS, FILE).warnings] == expected


def test_on_problems_are_reported_beside_job_problems() -> None:
    text = "on: pusj\njobs:\n  build:\n    steps: [{run: make}]\n"
    assert [str(d) for d in lint(text, FILE)] == [
        ".cyclone.yml:1: on: unknown event 'pusj', did you mean 'push'? (expected one of: "
        "push, pull_request, schedule, manual)",
        ".cyclone.yml:3: jobs.build: missing required key 'image' (step 'step-1' has no image "
        "of its own)",
    ]
