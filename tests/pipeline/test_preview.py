"""``cyclone run --dry-run``'s plan: jobs in order, images, and what ``when:`` skips and
why, judged by the rules the run uses; what the run decides is said, not guessed."""

from __future__ import annotations

from textwrap import dedent

from shared.pipeline import load
from shared.pipeline.preview import lines, preview

TEXT = dedent("""\
    stages: [build, test, deploy]
    on: [push]
    jobs:
      compile:
        stage: build
        image: alpine:3.20
        steps:
          - {name: make, run: make}
          - {name: image, build: {tags: ["registry.test/app:1"]}}
      unit:
        stage: test
        image: python:${{ matrix.py }}
        matrix: {py: ["3.12", "3.13"]}
        services: {db: {image: "postgres:16"}}
        steps:
          - {name: test, run: make test}
          - {name: report, run: make report, when: {status: failure}}
          - {name: notes, run: make notes, when: {branch: "release/*"}}
      ship:
        stage: deploy
        image: alpine:3.20
        when: {branch: main, event: push}
        steps: [{name: ship, run: make ship}]
      cleanup:
        image: alpine:3.20
        needs: [ship]
        when: {status: always, outputs: {deployed: "yes"}}
        steps: [{name: clean, run: make clean}]
""")


def test_the_plan_as_text() -> None:
    plan = load(TEXT, ".cyclone.yml").plan
    shown = preview(plan, "feature/x", "cli", overrides=("jobs.ship.image=alpine:3.21",))
    assert lines(shown) == [
        ".cyclone.yml: 5 jobs, branch feature/x, event cli (dry run: nothing is run)",
        "  --set jobs.ship.image=alpine:3.21",
        "",
        "1. compile",
        "   - make   alpine:3.20",
        "   - image  (build)",
        "",
        "2. unit (py=3.12)  needs compile",
        "   services: postgres:16",
        "   - test    python:3.12",
        "   - report  python:3.12",
        "       depends on the run: runs only if an earlier step fails",
        "   - notes   python:3.12",
        "       SKIPPED: when: does not match branch 'feature/x' / event 'cli' "
        "(when.branch: release/*)",
        "",
        "3. unit (py=3.13)  needs compile",
        "   services: postgres:16",
        "   - test    python:3.13",
        "   - report  python:3.13",
        "       depends on the run: runs only if an earlier step fails",
        "   - notes   python:3.13",
        "       SKIPPED: when: does not match branch 'feature/x' / event 'cli' "
        "(when.branch: release/*)",
        "",
        "4. ship  needs unit (py=3.12), unit (py=3.13)",
        "   SKIPPED: when: does not match branch 'feature/x' / event 'cli' "
        "(when.branch: main; when.event: push)",
        "   - ship  alpine:3.20",
        "",
        "5. cleanup  needs ship",
        "   depends on the run: runs whether or not one of its needs fails; outputs of its "
        "needs: deployed matches 'yes'",
        "   - clean  alpine:3.20",
    ]


def test_on_main_for_a_push_nothing_is_skipped_by_branch_or_event() -> None:
    shown = preview(load(TEXT, ".cyclone.yml").plan, "main", "push")
    assert [job.skipped for job in shown.jobs] == [""] * 5
    assert shown.skipped == ""


def test_a_manual_run_the_on_rules_refuse_is_skipped_whole() -> None:
    shown = preview(load(TEXT, ".cyclone.yml").plan, "main", "manual")
    assert shown.skipped == "the pipeline's on: does not list manual"
    assert "the run would be skipped: the pipeline's on: does not list manual" in lines(shown)


def test_a_failure_only_job_with_nothing_before_it_is_skipped() -> None:
    text = ("jobs:\n  alarm:\n    image: alpine\n    when: {status: failure}\n"
            "    steps: [{run: page}]\n")
    job = preview(load(text, ".cyclone.yml").plan, "main", "cli").jobs[0]
    assert job.skipped == "when.status: runs only on failure"


def test_json_names_each_part() -> None:
    data = preview(load(TEXT, ".cyclone.yml").plan, "main", "push").to_json()
    unit = data["jobs"][1]
    assert (unit["name"], unit["image"], unit["needs"], unit["matrix"]) == (
        "unit (py=3.12)", "python:3.12", ["compile"], {"py": "3.12"})
    assert unit["steps"][1] == {"name": "report", "image": "python:3.12", "kind": "run",
                                "skipped": "",
                                "depends": "runs only if an earlier step fails"}
