"""``cyclone run`` end to end: the real CLI, the embedded services, the real Docker daemon."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from tests.docker_support import AT_THE_GATE, TEST_IMAGE, cyclone_leftovers, open_gate
from tests.e2e.conftest import Project, run_id_in
from tests.git_support import git_env
from tests.support import HANG_S

pytestmark = pytest.mark.usefixtures("docker_ready")

DAG = """
    env:
      GREETING: hello
    jobs:
      build:
        image: IMAGE
        steps:
          - name: write
            run:
              - mkdir -p out
              - echo "$GREETING from $CYCLONE_JOB/$CYCLONE_STEP" > out/result.txt
      test:
        image: IMAGE
        needs: build
        services:
          web:
            image: IMAGE
            command: [httpd, -f, -p, "8080", -h, /etc]
        steps:
          - name: read
            run: cat out/result.txt
          - name: reach-service
            run:
              - for i in $(seq 1 50); do wget -q -O /dev/null http://web:8080/passwd && break; sleep 0.2; done
              - wget -q -O - http://web:8080/passwd | head -n 1
      lint:
        image: IMAGE
        steps:
          - name: source
            run: cat input.txt
      package:
        image: IMAGE
        needs: [test, lint]
        steps:
          - name: done
            run: echo "packaged $(cat out/result.txt)"
"""


def assert_nothing_left(run_id: str) -> None:
    assert cyclone_leftovers(run_id) == [], "the run left Docker resources behind"


def test_three_job_dag_with_service_and_shared_workspace(project: Project) -> None:
    project.write(DAG)
    (project.dir / "input.txt").write_text("source file content\n")
    done = project.run("run", "--no-color")
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "[build/write] success" in out
    assert "[test/read] hello from build/write" in out  # a file written by one job's step
    assert "[test/reach-service] root:x:0:0" in out  # the service, reached by name
    assert "[lint/source] source file content" in out  # the current directory's files
    assert "[package/done] packaged hello from build/write" in out
    assert out.index("[package] started") > out.index("[test] success")
    assert out.index("[package] started") > out.index("[lint] success")
    assert "run succeeded" in out
    assert_nothing_left(run_id_in(out))


def test_failing_step_fails_run_and_skips_dependents(project: Project) -> None:
    project.write("""
        jobs:
          build:
            image: IMAGE
            steps:
              - name: broken
                run: [echo before, "false", echo never-printed]
              - name: after
                run: echo should-not-run
              - name: on-failure
                when: {status: failure}
                run: echo cleaning up
          deploy:
            image: IMAGE
            needs: build
            steps:
              - run: echo deploying
          report:
            image: IMAGE
            needs: build
            when: {status: failure}
            steps:
              - run: echo build failed, reporting
    """)
    done = project.run("run", "--no-color")
    out = done.stdout
    assert done.returncode == 1, out + done.stderr
    assert "[build/broken] + false" in out
    assert "never-printed" not in out and "should-not-run" not in out
    assert "[build/broken] failure" in out and "exit code 1" in out
    assert "[build/after] skipped: an earlier step failed" in out
    assert "[build/on-failure] cleaning up" in out
    assert "[deploy] skipped: needs failed: build" in out
    assert "[report/step-1] build failed, reporting" in out
    assert "run failed: job failed: build" in out
    assert_nothing_left(run_id_in(out))


def test_step_timeout_kills_the_step(project: Project) -> None:
    project.write("""
        jobs:
          slow:
            image: IMAGE
            steps:
              - name: sleepy
                timeout: 2s
                run: [echo going to sleep, sleep 300, echo woke-up]
    """)
    # Killed at its timeout, not waited for: the run ends long before the step's own
    # sleep would have (a run that waited for it would fail at this deadline).
    done = project.run("run", "--no-color", timeout=200)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "[slow/sleepy] timeout" in done.stdout
    assert "step timed out after 2s" in done.stdout
    assert "woke-up" not in done.stdout
    assert_nothing_left(run_id_in(done.stdout))


def test_logs_stream_live_in_order_while_the_step_runs(project: Project) -> None:
    project.write("""
        jobs:
          talk:
            image: IMAGE
            steps:
              - name: count
                run:
                  - for i in $(seq 1 100); do echo "line $i"; done
                  - echo "phase $((0+1)) done" >&2
                  - GATE
                  - echo "phase $((1+1)) done"
    """.replace("GATE", AT_THE_GATE))
    with project.start("run", "--no-color") as cli:
        # The needles are what the commands print, not the echoed commands themselves.
        cli.read_until("phase 1 done", timeout=HANG_S)
        # The step waits at its gate until the test opens it: what came so far was
        # streamed while it ran, not buffered until its end.
        assert "phase 2 done" not in cli.output
        assert "[talk/count] success" not in cli.output
        open_gate(run_id_in(cli.output))
        cli.read_until("phase 2 done", timeout=HANG_S)
        assert cli.finish(timeout=HANG_S) == 0
    numbers = [int(x.rsplit(" ", 1)[1]) for x in cli.output.splitlines()
               if x.startswith("[talk/count] line ")]
    assert numbers == list(range(1, 101))


def test_cancel_during_a_step_leaves_nothing_behind(project: Project) -> None:
    project.write("""
        jobs:
          long:
            image: IMAGE
            services:
              web:
                image: IMAGE
                command: [httpd, -f, -p, "8080"]
            steps:
              - name: wait
                run: [echo "waiting since $((1+1))", sleep 300]
          after:
            image: IMAGE
            needs: long
            steps:
              - run: echo never
    """)
    with project.start("run", "--no-color") as cli:
        cli.read_until("waiting since 2", timeout=60)
        run_id = run_id_in(cli.output)
        assert cyclone_leftovers(run_id), "the run should own containers while it runs"
        cli.proc.send_signal(signal.SIGINT)
        assert cli.finish(timeout=60) == 1
        out = cli.output
    assert "run cancelled" in out
    assert "[after] skipped: run cancelled" in out
    assert_nothing_left(run_id)


def test_invalid_needs_exits_2_with_file_and_line(project: Project) -> None:
    project.write("""
        jobs:
          build:
            image: IMAGE
            steps:
              - run: echo hi
          test:
            image: IMAGE
            needs: [biuld]
            steps:
              - run: echo hi
    """)
    done = project.run("run")
    assert done.returncode == 2
    assert ".cyclone.yml:9: jobs.test.needs" in done.stderr
    assert "unknown job 'biuld'" in done.stderr


STAGED = """
    stages: [build, test]
    jobs:
      compile:
        stage: build
        image: IMAGE
        steps:
          - name: make
            run: echo "compiled by $GREETING"
      unit:
        stage: test
        image: IMAGE
        steps:
          - name: check
            run: [echo checking, "exit 3"]
          - name: release
            when: {branch: "release/*"}
            run: echo never here
"""


def test_dry_run_prints_the_plan_with_sets_and_runs_nothing(project: Project) -> None:
    project.write(STAGED)
    done = project.run("run", "--dry-run", "--branch", "dev",
                       "--set", "jobs.unit.image=alpine:3.20")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines() == [
        ".cyclone.yml: 2 jobs, branch dev, event cli (dry run: nothing is run)",
        "  --set jobs.unit.image=alpine:3.20", "",
        "1. compile", f"   - make  {TEST_IMAGE}", "",
        "2. unit  needs compile", "   - check    alpine:3.20", "   - release  alpine:3.20",
        "       SKIPPED: when: does not match branch 'dev' / event 'cli' "
        "(when.branch: release/*)"]
    assert not project.home.exists(), "a dry run recorded something"
    bad = project.run("run", "--dry-run", "--set", "jobs.unit.steps.5.name=x")
    assert bad.returncode == 2
    assert bad.stderr.strip() == ("--set jobs.unit.steps.5.name=x: jobs.unit.steps: a list "
                                  "of 2 items: no index 5 (from 0)")


def test_set_is_applied_recorded_and_reported_locally(project: Project) -> None:
    project.write(STAGED)
    done = project.run("run", "--no-color", "--set", "env={GREETING: the-set}",
                       "--set", "jobs.unit.steps.0.retry=1")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "[compile/make] compiled by the-set" in done.stdout
    run_id = run_id_in(done.stdout)
    report = project.run("report", run_id, "--local", "--json")
    assert report.returncode == 0, report.stderr
    summed = json.loads(report.stdout)
    assert summed["overrides"] == ["env={GREETING: the-set}", "jobs.unit.steps.0.retry=1"]
    unit = next(job for job in summed["jobs"] if job["name"] == "unit")
    assert (unit["status"], unit["needs"], unit["exit_codes"]) == ("failure", ["compile"], [3])
    assert unit["steps"][0]["attempts"] == 2  # the retry --set asked for
    text = project.run("report", run_id, "--local", "--job", "unit", "--step", "check")
    assert re.search(r"^exit code\s+3$", text.stdout, re.MULTILINE), text.stdout
    unknown = project.run("report", run_id, "--local", "--job", "test")
    assert (unknown.returncode, unknown.stderr.strip()) == (
        1, f"cyclone: run {run_id} has no job 'test' (jobs: compile, unit)")


def test_included_files_are_read_from_the_directory(project: Project) -> None:
    project.write("""
        include: [ci/lint.yml]
        jobs:
          build:
            image: IMAGE
            needs: [lint]
            steps:
              - run: echo built
    """)
    (project.dir / "ci").mkdir()
    included = project.write("""
        jobs:
          lint:
            image: IMAGE
            steps:
              - run: echo linted by an included job
    """, "ci/lint.yml")
    done = project.run("run", "--no-color")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[lint/step-1] linted by an included job" in done.stdout
    assert done.stdout.index("[build] started") > done.stdout.index("[lint] success")

    included.write_text(included.read_text().replace("lint:", "lint:\n    timeout: soon"))
    refused = project.run("run")
    assert refused.returncode == 2
    assert "ci/lint.yml:4: jobs.lint.timeout: invalid duration 'soon'" in refused.stderr


def test_sigkill_mid_step_then_replay_marks_interrupted_and_cleans_up(
    project: Project,
) -> None:
    project.write("""
        jobs:
          long:
            image: IMAGE
            steps:
              - name: wait
                run: [echo "waiting since $((1+1))", sleep 300]
    """)
    with project.start("run", "--no-color") as cli:
        cli.read_until("waiting since 2", timeout=60)
        run_id = run_id_in(cli.output)
        os.kill(cli.proc.pid, signal.SIGKILL)
        cli.proc.wait(timeout=30)
    assert cyclone_leftovers(run_id), "a SIGKILLed run leaves its containers (until recovery)"

    replay = project.run("replay", "--runs")
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert f"run {run_id}: marked errored (interrupted)" in replay.stdout
    assert "1 runs: errored 1" in replay.stdout
    assert_nothing_left(run_id)

    again = project.run("replay", "--runs")  # the history stays intact and is not redone
    assert "marked errored" not in again.stdout
    assert f"{run_id}  errored" in again.stdout
    assert "interrupted" in again.stdout


def test_no_docker_daemon_falls_back_to_the_host_shell(project: Project) -> None:
    project.write("""
        jobs:
          build:
            image: IMAGE
            steps:
              - run: [echo "on the host in $CYCLONE_WORKSPACE", cat input.txt]
    """)
    (project.dir / "input.txt").write_text("copied source\n")
    project.env["DOCKER_HOST"] = "unix:///nonexistent/docker.sock"
    done = project.run("run", "--no-color")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "warning: no Docker daemon reachable" in done.stdout
    assert "(shell)" in done.stdout
    assert "[build/step-1] copied source" in done.stdout


@pytest.mark.parametrize("executor", ["docker", "shell"])
def test_a_home_inside_the_directory_stays_out_of_the_workspace(
        project: Project, executor: str) -> None:
    """``CYCLONE_HOME=./.cyclone``: the workspace gets what the repository holds as Git
    sees it, not Cyclone's own state (copied, that held the run's own workspace,
    recursively, until "File name too long", and every job errored)."""
    project.env.update({"CYCLONE_HOME": "./.cyclone", "CYCLONE_EXECUTOR": executor})
    project.write("""
        jobs:
          build:
            image: IMAGE
            steps:
              - name: look
                run:
                  - cat tracked.txt untracked.txt
                  - test ! -e .cyclone && test ! -e debug.log && echo "nothing else"
    """)
    (project.dir / ".gitignore").write_text("*.log\n")
    (project.dir / "tracked.txt").write_text("tracked\n")
    git = ["git", "-C", str(project.dir)]
    for args in (["init", "-q", "-b", "main"], ["add", "."], ["commit", "-q", "-m", "first"]):
        subprocess.run([*git, *args], env=git_env(), check=True, capture_output=True)
    (project.dir / "untracked.txt").write_text("untracked\n")
    (project.dir / "debug.log").write_text("ignored\n")
    done = project.run("run", "--no-color")
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "[build/look] tracked\n[build/look] untracked\n" in out
    assert "[build/look] nothing else" in out
    assert (project.dir / ".cyclone" / "events.db").is_file()  # the home was in there
    assert_nothing_left(run_id_in(out))


def test_no_docker_daemon_and_services_say_clearly_why_the_job_cannot_run(
    project: Project,
) -> None:
    project.write("""
        jobs:
          test:
            image: IMAGE
            services:
              db: {image: IMAGE}
            steps:
              - run: echo never
    """)
    project.env["DOCKER_HOST"] = "unix:///nonexistent/docker.sock"
    done = project.run("run", "--no-color")
    assert done.returncode == 1
    assert "cannot run services" in done.stdout
    assert "never" not in done.stdout.replace("+ echo never", "")


def test_caicloud_yml_builds_an_image_and_integration_runs_in_it(project: Project) -> None:
    (project.dir / "caicloud.yml").write_text(
        (Path(__file__).parents[2] / "examples" / "caicloud" / "caicloud.yml").read_text())
    done = project.run("run", "--no-color")
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    order = [out.index(f"[{job}] started")
             for job in ("pre_build", "build", "integration", "post_build")]
    assert order == sorted(order)
    assert "Successfully built" in out
    assert "[integration/integration] built demo" in out  # file baked into the built image
    run_id = run_id_in(out)
    assert_nothing_left(run_id)


def test_a_step_past_the_log_limit_says_so_and_still_succeeds(project: Project) -> None:
    project.env["CYCLONE_STEP_LOG_MAX_LINES"] = "100"
    project.write("""
        jobs:
          chatty:
            image: IMAGE
            steps:
              - name: lines
                run: seq 1 1000
    """)
    done = project.run("run", "--no-color")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "cyclone: log limit reached (100 lines" in done.stdout
    assert ("[chatty/lines] log truncated after 100 lines / 0.0 MB: 901 more lines"
            in done.stdout)
    # kept: the echoed command and 1 to 99
    assert "[chatty/lines] 99\n" in done.stdout
    assert "[chatty/lines] 100\n" not in done.stdout


def test_a_step_killed_for_memory_says_out_of_memory_and_its_limit(project: Project) -> None:
    project.write("""
        jobs:
          hungry:
            image: IMAGE
            resources: {memory: 32MiB}
            steps:
              - name: hog
                run: head -c 64m /dev/zero | tail -c 64m > /dev/null
    """)  # tail keeps the last 64 MiB it read: twice the limit
    done = project.run("run", "--no-color")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "[hungry/hog] cyclone: out of memory (limit 32 MiB)" in done.stdout  # its log
    assert re.search(r"\[hungry/hog\] failure in \S+: out of memory \(limit 32 MiB\)",
                     done.stdout)  # its StepFinished
    assert "[hungry] failure" in done.stdout
    assert "step failed: hog: out of memory (limit 32 MiB)" in done.stdout  # its JobFinished
    assert_nothing_left(run_id_in(done.stdout))


def test_lint_says_the_docker_socket_and_privileged_need_a_trusted_project(
        project: Project) -> None:
    project.write("""
        jobs:
          build:
            image: IMAGE
            steps:
              - run: docker build .
                privileged: true
                volumes: [/var/run/docker.sock:/var/run/docker.sock]
    """)
    warned = project.run("lint", ".cyclone.yml")
    assert warned.returncode == 0, warned.stdout + warned.stderr
    assert ".cyclone.yml:7: warning: jobs.build.steps[0].privileged: a privileged container " \
        "needs a trusted project" in warned.stdout
    refused = project.run("lint", "--untrusted", ".cyclone.yml")
    assert refused.returncode == 2
    assert ".cyclone.yml:8: jobs.build.steps[0].volumes[0]: mounting the Docker socket " \
        "(control of the whole Docker host) needs a trusted project" in refused.stdout


def test_a_job_behind_an_approval_runs_with_approve_and_is_rejected_without(
        project: Project) -> None:
    project.write("""
        jobs:
          test:
            image: IMAGE
            steps:
              - run: echo tested
          release:
            needs: test
            image: IMAGE
            approval: true
            steps:
              - run: echo released
    """)
    rejected = project.run("run", "--no-color")
    assert rejected.returncode == 1, rejected.stdout + rejected.stderr
    assert "[release] waiting for approval by a maintainer" in rejected.stdout
    assert "[release] rejected by cli: cyclone run without --approve" in rejected.stdout
    assert "released" not in rejected.stdout
    approved = project.run("run", "--no-color", "--approve")
    assert approved.returncode == 0, approved.stdout + approved.stderr
    assert "[release] approved by cli" in approved.stdout
    assert "[release/step-1] released" in approved.stdout
