"""Artifacts, caches, step outputs and test reports through ``cyclone run`` (embedded
mode, the Docker executor, the file artifact store under ``$CYCLONE_HOME``): what a user
sees in the run's output and ``cyclone show`` / ``cyclone artifacts`` afterwards."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from shared.config import Settings
from tests.docker_support import TEST_IMAGE
from tests.e2e.conftest import Project, run_id_in

pytestmark = pytest.mark.usefixtures("docker_ready")

SAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "junit"

PIPELINE = """
    jobs:
      build:
        image: IMAGE
        artifacts: {name: dist, paths: [dist/]}
        reports: {junit: "reports/*.xml"}
        steps:
          - name: make
            run:
              - mkdir -p dist/sub
              - echo built > dist/app.txt
              - echo deep > dist/sub/lib.txt
              - echo "version=1.2.3" >> "$CYCLONE_OUTPUT"
              - printf 'notes<<END\\nfirst line\\nsecond = line\\nEND\\n' >> "$CYCLONE_OUTPUT"
          - name: same-job
            run:
              - test "$version" = 1.2.3
              - echo "notes are [$notes]"
      wipe:
        image: IMAGE
        needs: build
        steps:
          - run: rm -rf dist
      ship:
        image: IMAGE
        needs: [build, wipe]
        when: {outputs: {version: "1.*"}}
        steps:
          - name: deliver
            run:
              - cat dist/app.txt dist/sub/lib.txt
              - echo "shipping $version"
      v2-only:
        image: IMAGE
        needs: build
        when: {outputs: {version: "2.*"}}
        steps:
          - run: echo never
"""


def events_of(project: Project, run_id: str) -> list[tuple[str, dict[str, Any]]]:
    """The run's events as the embedded store holds them (type, data)."""
    with sqlite3.connect(Settings.from_env({"CYCLONE_HOME": str(project.home)}).store_path) as db:
        rows = db.execute("SELECT type, data FROM events WHERE stream = ? ORDER BY seq",
                          (f"run-{run_id}",)).fetchall()
    return [(kind, json.loads(data)) for kind, data in rows]


def test_artifacts_outputs_and_a_junit_report_flow_between_jobs(project: Project) -> None:
    project.write(PIPELINE)
    (project.dir / "reports").mkdir()
    shutil.copy(SAMPLES / "pytest.xml", project.dir / "reports" / "pytest.xml")

    done = project.run("run", "--no-color")
    out = done.stdout
    assert done.returncode == 0, out + done.stderr  # failing tests in a report fail nothing
    run_id = run_id_in(out)
    assert "notes are [first line" in out
    # wipe removed dist/ from the shared workspace; ship got it back from the artifact
    assert "[ship/deliver] built" in out and "[ship/deliver] deep" in out
    assert "[ship/deliver] shipping 1.2.3" in out
    events = events_of(project, run_id)
    uploaded = next(data for kind, data in events if kind == "ArtifactUploaded")
    assert (uploaded["job"], uploaded["name"], uploaded["files"]) == ("build", "dist", 2)
    outputs = next(data for kind, data in events if kind == "StepOutputs")
    assert outputs["outputs"] == {"version": "1.2.3", "notes": "first line\nsecond = line"}
    skipped = [data for kind, data in events if kind == "JobSkipped"]
    assert [s["job"] for s in skipped] == ["v2-only"]
    assert "version is '1.2.3', not '2.*'" in str(skipped[0]["reason"])
    report = next(data for kind, data in events if kind == "TestReportRecorded")
    assert report["tests"] > 0 and report["failed"] > 0  # the sample's failing tests
    assert "[build/reports] cyclone: tests:" in out


CACHED = """
    jobs:
      deps:
        image: IMAGE
        cache:
          key: deps-${{ hashFiles('deps.txt') }}
          paths: [.deps]
          restore_keys: [deps-]
        steps:
          - name: install
            run:
              - if [ -f .deps/installed ]; then echo "restored $(cat .deps/installed)"; fi
              - mkdir -p .deps && cat deps.txt > .deps/installed
"""


def test_a_cache_misses_then_hits_then_restores_by_prefix(project: Project) -> None:
    project.write(CACHED)
    (project.dir / "deps.txt").write_text("requests==2\n")

    first = project.run("run", "--no-color")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "cache miss: deps-" in first.stdout and "cache saved: deps-" in first.stdout
    assert "[deps/install] restored" not in first.stdout

    second = project.run("run", "--no-color")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "cache hit: deps-" in second.stdout
    assert "[deps/install] restored requests==2" in second.stdout  # a fresh workspace
    assert "cache saved" not in second.stdout  # the key is not new

    (project.dir / "deps.txt").write_text("requests==3\n")
    third = project.run("run", "--no-color")
    assert third.returncode == 0, third.stdout + third.stderr
    assert "cache partial hit: deps-" in third.stdout  # the older entry, by its prefix
    assert "[deps/install] restored requests==2" in third.stdout
    assert "cache saved: deps-" in third.stdout  # under the new key
    kinds = [k for k, _ in events_of(project, run_id_in(third.stdout))]
    assert kinds.count("CacheRestored") == 1 and kinds.count("CacheSaved") == 1


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "artifacts"


def test_the_example_pipeline_runs_and_hits_its_cache_the_second_time(project: Project) -> None:
    shutil.copytree(EXAMPLE, project.dir, dirs_exist_ok=True)
    pipeline = project.dir / ".cyclone.yml"
    # busybox:1.36 cannot be pulled here: the locally built busybox stands in for it
    pipeline.write_text(pipeline.read_text().replace("busybox:1.36", TEST_IMAGE))

    first = project.run("run", "--no-color")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "[build/install] installing hello-lib==1.0" in first.stdout
    assert "[build/reports] cyclone: tests: 2 run, 1 passed" in first.stdout
    assert "[package/tarball] packaged app-0.4.1.tar.gz with changes:" in first.stdout

    second = project.run("run", "--no-color")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "[build/install] cached hello-lib==1.0" in second.stdout
