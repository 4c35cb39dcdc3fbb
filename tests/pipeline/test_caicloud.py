"""caicloud.yml, Cyclone's original format, translated into the same Plan."""

from __future__ import annotations

from textwrap import dedent

import pytest

from shared.errors import PipelineError
from shared.pipeline import BUILT_IMAGE, LoadResult, load
from shared.pipeline.lint import lint
from shared.pipeline.plan import BuildSpec

FILE = "caicloud.yml"


def load_cai(text: str) -> LoadResult:
    return load(dedent(text), FILE)


def problems(text: str) -> list[str]:
    return [str(d) for d in lint(dedent(text), FILE)]


def test_sections_become_jobs_in_the_fixed_order_each_needing_the_previous() -> None:
    result = load_cai("""
        post_build: {image: alpine, commands: [echo post]}
        integration: {commands: [go test]}
        build: {context_dir: publish, dockerfile_name: Dockerfile_publish}
        pre_build: {image: golang:1.6, commands: [go build]}
    """)
    jobs = result.plan.jobs
    assert [(job.name, job.needs) for job in jobs] == [
        ("pre_build", ()), ("build", ("pre_build",)), ("integration", ("build",)),
        ("post_build", ("integration",))]
    build = result.plan.job("build").steps[0]
    assert build.build == BuildSpec(context_dir="publish", dockerfile="Dockerfile_publish")
    assert build.commands == ()
    integration = result.plan.job("integration")
    assert integration.image == BUILT_IMAGE == "BUILT_IMAGE"  # defaults to the built image
    assert integration.steps[0].commands == ("go test",)
    assert [w.path for w in result.warnings] == ["build"]  # not pushed: no project registry


def test_missing_sections_are_skipped_in_the_chain() -> None:
    result = load_cai("""
        integration: {image: golang, commands: [go test]}
        pre_build: {image: golang, commands: [go build]}
    """)
    assert [(job.name, job.needs) for job in result.plan.jobs] == [
        ("pre_build", ()), ("integration", ("pre_build",))]


def test_build_defaults_to_the_root_dockerfile() -> None:
    result = load_cai("build:\n")
    (job,) = result.plan.jobs
    assert job.steps[0].build == BuildSpec(context_dir=".", dockerfile="Dockerfile")


@pytest.mark.parametrize("environment", [
    "[GOOS=linux, 'A = b c', EMPTY=, 'EQ=x=y']",
    "{GOOS: linux, A: b c, EMPTY: '', EQ: x=y}",
])
def test_environment_as_a_list_or_a_mapping(environment: str) -> None:
    result = load_cai(f"""
        integration:
          image: golang:1.5
          environment: {environment}
          commands: [go run main.go]
    """)
    job = result.plan.job("integration")
    assert job.env == {"GOOS": "linux", "A": "b c", "EMPTY": "", "EQ": "x=y"}
    assert job.steps[0].env == {}


def test_services_of_integration() -> None:
    result = load_cai("""
        build: {}
        integration:
          image: golang
          services:
            postgres:
              image: postgres:9.4.5
              environment: [POSTGRES_PASSWORD=secret]
              command: postgres -c fsync=off
            app:
              image: BUILT_IMAGE
              commands: [./migrate, ./serve]
            redis:
          commands: [go test]
    """)
    postgres, app, redis = result.plan.job("integration").services
    assert (postgres.image, postgres.env, postgres.command) == (
        "postgres:9.4.5", {"POSTGRES_PASSWORD": "secret"}, ("postgres", "-c", "fsync=off"))
    assert (app.image, app.command) == (BUILT_IMAGE, ("/bin/sh", "-c", "./migrate && ./serve"))
    assert (redis.name, redis.image, redis.command) == ("redis", "redis", ())


def test_cluster_deploys_are_dropped_with_a_warning_and_runnable_ones_kept() -> None:
    text = """
        post_build: {image: alpine, commands: [echo]}
        deploy:
          - deployment: redis-master
            cluster: cluster1_id
            namespace: ns
            containers: [redis]
          - image: alpine
            commands: [./deploy.sh]
            environment: [TARGET=prod]
    """
    result = load_cai(text)
    assert [str(w) for w in result.warnings] == [
        "caicloud.yml:4: warning: deploy[0]: deploying to cluster 'cluster1_id' needs the "
        "project's cluster setting of that name (cyclone project update NAME --cluster "
        "cluster1_id=server=SECRET,token=SECRET); entry dropped"]
    deploy = result.plan.job("deploy")
    assert deploy.needs == ("post_build",)
    (step,) = deploy.steps
    assert (step.name, step.image, step.commands, step.env) == (
        "deploy-2", "alpine", ("./deploy.sh",), {"TARGET": "prod"})


def test_a_deploy_section_with_only_cluster_entries_is_dropped() -> None:
    result = load_cai("""
        integration: {image: golang, commands: [go test]}
        deploy:
          - {type: kubernetes, host: h, token: t, cluster: c, namespace: n, deployment: d}
    """)
    assert [job.name for job in result.plan.jobs] == ["integration"]
    assert [w.path for w in result.warnings] == ["deploy[0]", "deploy[0].host",
                                                 "deploy[0].token"]
    assert "needs the project's cluster setting" in result.warnings[0].message


def test_unsupported_container_keys_are_warnings() -> None:
    assert problems("""
        post_build:
          image: golang
          volumes: ["./sub:/src"]
          outputs: [app]
          ports: ["8080:80"]
          commands: [go build]
    """) == [
        "caicloud.yml:4: warning: post_build.volumes[0]: './sub:/src' is ignored: a relative "
        "path cannot be mounted (the repository is in the workspace already)",
        "caicloud.yml:5: warning: post_build.outputs: 'outputs' is used in pre_build only; "
        "ignored here",
        "caicloud.yml:6: warning: post_build.ports: 'ports' is ignored: not supported by this "
        "runner",
    ]


def test_errors_have_lines_and_are_all_reported() -> None:
    text = """
        pre_build:
          image: BUILT_IMAGE
          commands: [make]
        integration:
          enviroment: [GOOS=linux]
          commands: go test
        post_build:
          image: alpine
          environment: [NOEQUALS]
        deploy:
          - image: alpine
        release: {}
    """
    expected = [
        "caicloud.yml:3: pre_build.image: BUILT_IMAGE needs a build section",
        "caicloud.yml:5: integration: missing required key 'image'",
        "caicloud.yml:6: integration.enviroment: unknown key 'enviroment', did you mean "
        "'environment'?",
        "caicloud.yml:8: post_build: missing required key 'commands'",
        "caicloud.yml:10: post_build.environment[0]: expected KEY=VALUE, got 'NOEQUALS'",
        "caicloud.yml:12: deploy[0]: missing required key 'commands' (a deploy entry needs "
        "image and commands, or a cluster)",
        "caicloud.yml:13: release: unknown key 'release'",
    ]
    assert problems(text) == expected
    with pytest.raises(PipelineError) as caught:
        load_cai(text)
    assert [str(d) for d in caught.value.diagnostics] == expected


def test_integration_without_image_or_build() -> None:
    assert problems("integration: {commands: [x]}") == [
        "caicloud.yml:1: integration: missing required key 'image'"]


def test_services_belong_to_integration() -> None:
    assert problems("""
        post_build:
          image: alpine
          commands: [x]
          services: {db: {image: postgres}}
    """) == ["caicloud.yml:5: post_build.services: services are supported in integration only"]


def test_a_file_without_sections() -> None:
    assert problems("{}") == [
        "caicloud.yml:1: no section to run (expected some of: pre_build, build, integration, "
        "post_build, deploy)"]
    assert problems("- integration") == ["caicloud.yml:1: expected a mapping, got a list"]


def test_a_file_whose_only_section_cannot_run_here() -> None:
    assert problems("deploy: [{cluster: c, deployment: d}]") == [
        "caicloud.yml:1: no section can run here (each is left out: see the warnings)",
        "caicloud.yml:1: warning: deploy[0]: deploying to cluster 'c' needs the project's "
        "cluster setting of that name (cyclone project update NAME --cluster "
        "c=server=SECRET,token=SECRET); entry dropped",
    ]
