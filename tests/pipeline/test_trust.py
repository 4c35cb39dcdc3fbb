"""What a pipeline asks of the Docker host: privileged containers, host volumes (the Docker
socket) and resources, judged against its project's policy, in both formats."""

from __future__ import annotations

import json
from textwrap import dedent

import pytest

from shared.errors import PipelineError
from shared.pipeline import load
from shared.pipeline.lint import lint
from shared.pipeline.plan import Plan, ServiceSpec, StepSpec
from shared.pipeline.resources import (
    Policy,
    Resources,
    format_size,
    oom_message,
    parse_size,
)

UNTRUSTED = Policy(trusted=False, project="demo")
TRUSTED = Policy(trusted=True, project="demo")
MiB, GiB = 1024 * 1024, 1024 * 1024 * 1024

DIND = """
jobs:
  build:
    image: docker:cli
    services:
      dind: {image: "docker:dind", privileged: true}
    steps:
      - run: docker ps
        volumes: ["/var/run/docker.sock:/var/run/docker.sock"]
      - name: priv
        run: id
        privileged: true
"""

CAI_DIND = """
pre_build:
  image: docker:cli
  privileged: true
  volumes:
    - /var/run/docker.sock:/var/run/docker.sock
  commands: [docker build .]
integration:
  image: alpine
  services:
    db:
      image: postgres
      volumes: [/srv/data:/var/lib/postgresql]
  commands: ["true"]
"""


def errors(text: str, file: str = ".cyclone.yml", policy: Policy = UNTRUSTED) -> list[str]:
    with pytest.raises(PipelineError) as caught:
        load(dedent(text), file, policy)
    return [str(d) for d in caught.value.diagnostics]


def test_untrusted_project_privileged_socket_and_host_mounts_are_errors_with_lines() -> None:
    hint = ("needs a trusted project, and project 'demo' is not (an admin can mark it "
            "trusted: cyclone project update demo --trusted)")
    assert errors(DIND) == [
        f".cyclone.yml:6: jobs.build.services.dind.privileged: a privileged container {hint}",
        f".cyclone.yml:9: jobs.build.steps[0].volumes[0]: mounting the Docker socket "
        f"(control of the whole Docker host) {hint}",
        f".cyclone.yml:12: jobs.build.steps[1].privileged: a privileged container {hint}",
    ]


def test_caicloud_privileged_and_volumes_follow_the_same_rule() -> None:
    found = errors(CAI_DIND, "caicloud.yml")
    assert [line.split(": ", 2)[:2] for line in found] == [
        ["caicloud.yml:4", "pre_build.privileged"],
        ["caicloud.yml:6", "pre_build.volumes[0]"],
        ["caicloud.yml:13", "integration.services.db.volumes[0]"],
    ]
    assert all("project 'demo' is not" in line for line in found)
    assert "Docker socket" in found[1]


@pytest.mark.parametrize(("text", "file"), [(DIND, ".cyclone.yml"),
                                            (CAI_DIND, "caicloud.yml")])
def test_a_trusted_project_gets_them_passed_through(text: str, file: str) -> None:
    result = load(dedent(text), file, TRUSTED)
    assert result.warnings == []
    parts: list[StepSpec | ServiceSpec] = [s for job in result.plan.jobs for s in job.steps]
    parts += [service for job in result.plan.jobs for service in job.services]
    assert any(part.privileged for part in parts)
    assert "/var/run/docker.sock:/var/run/docker.sock" in [v for p in parts for v in p.volumes]


def test_without_a_project_lint_warns_that_a_trusted_project_is_needed() -> None:
    found = [str(d) for d in lint(dedent(DIND), ".cyclone.yml")]
    assert len(found) == 3
    assert all(": warning: " in line and "needs a trusted project" in line
               and "cyclone project update NAME --trusted" in line for line in found)


def test_resources_are_parsed_into_the_plan_and_survive_its_json_round_trip() -> None:
    result = load(dedent("""
        jobs:
          big:
            image: alpine
            resources: {memory: 1GiB, cpus: 1.5, pids: 512}
            steps: [{run: make}]
          small:
            image: alpine
            resources: {memory: 512m}
            steps: [{run: make}]
    """), ".cyclone.yml", Policy(max_resources=Resources(memory=2 * GiB)))
    plan = result.plan
    assert plan.job("big").resources == Resources(memory=GiB, cpus=1.5, pids=512)
    assert plan.job("small").resources == Resources(memory=512 * MiB)
    assert plan.max_resources == Resources(memory=2 * GiB)
    assert Plan.from_data(json.loads(json.dumps(plan.to_data()))) == plan


def test_bad_resource_values_are_errors_at_their_line() -> None:
    assert errors("""
        jobs:
          build:
            image: alpine
            resources:
              memory: lots
              cpus: 0
              pids: -1
            steps: [{run: make}]
    """) == [
        ".cyclone.yml:6: jobs.build.resources.memory: invalid size 'lots' (write e.g. "
        "\"512MiB\" or \"2GiB\")",
        ".cyclone.yml:7: jobs.build.resources.cpus: must be at least 0.01, got 0",
        ".cyclone.yml:8: jobs.build.resources.pids: must be at least 1, got -1",
    ]


def test_a_memory_limit_docker_cannot_take_is_an_error() -> None:
    assert errors("""
        jobs:
          build:
            image: alpine
            resources: {memory: 1MiB}
            steps: [{run: make}]
    """) == [".cyclone.yml:5: jobs.build.resources.memory: must be at least 6 MiB, got '1MiB'"]


def test_resources_above_the_project_maximum_are_errors_naming_the_maximum() -> None:
    policy = Policy(trusted=False, project="demo",
                    max_resources=Resources(memory=GiB, cpus=2, pids=1000))
    assert errors("""
        jobs:
          build:
            image: alpine
            resources: {memory: 4GiB, cpus: 2, pids: 4096}
            steps: [{run: make}]
    """, policy=policy) == [
        ".cyclone.yml:5: jobs.build.resources.memory: 4 GiB is above the maximum of project "
        "'demo' (1 GiB); an admin can raise it with cyclone project update --max-memory",
        ".cyclone.yml:5: jobs.build.resources.pids: 4096 is above the maximum of project "
        "'demo' (1000); an admin can raise it with cyclone project update --max-pids",
    ]


@pytest.mark.parametrize(("written", "size"), [
    ("512MiB", 512 * MiB), ("512m", 512 * MiB), ("512Mi", 512 * MiB), ("1GiB", GiB),
    ("1g", GiB), ("1.5 GiB", 3 * GiB // 2), ("1GB", 10**9), (4096, 4096), ("64", 64)])
def test_sizes_read_as_docker_kubernetes_and_si_write_them(written: object, size: int) -> None:
    assert parse_size(written) == size


@pytest.mark.parametrize("written", ["", "lots", "1XB", "-1MiB", True, 1.5, None])
def test_bad_sizes_are_refused_with_a_message(written: object) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(written)


def test_sizes_are_shown_the_way_people_read_them() -> None:
    assert [format_size(n) for n in (512 * MiB, GiB, 3 * GiB // 2, 32 * MiB, 100)] == [
        "512 MiB", "1 GiB", "1.5 GiB", "32 MiB", "100 B"]
    assert oom_message(512 * MiB) == "out of memory (limit 512 MiB)"


def test_defaults_are_laid_under_a_request_and_capped_at_the_maximum() -> None:
    defaults = Resources(memory=512 * MiB, cpus=2, pids=4096)
    asked = Resources(memory=GiB)
    assert asked.over(defaults) == Resources(memory=GiB, cpus=2, pids=4096)
    assert Resources().over(defaults).capped(Resources(memory=256 * MiB)) == Resources(
        memory=256 * MiB, cpus=2, pids=4096)
