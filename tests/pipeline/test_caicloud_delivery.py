"""caicloud.yml as the original ran it: the build pushed to the project's registry, the
source at the path its ``volumes: [".:/path"]`` names, pre_build's outputs and its own image,
deploy entries of every vintage as Kubernetes deploys to the project's clusters, the keys
it ignored as warnings, and the Docker socket for trusted projects only.

The files below have the shapes of real caicloud.yml files (the original's docs and its
users' repositories), written anew."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from textwrap import dedent

import pytest

from shared.errors import PipelineError
from shared.pipeline import BUILT_IMAGE, LoadResult, load
from shared.pipeline.caicloud import DOCKER_SOCKET, PUSHED_IMAGE
from shared.pipeline.lint import lint
from shared.pipeline.plan import (
    BuildSpec,
    DeploySpec,
    KubernetesTarget,
    Plan,
    RegistryLogin,
    StepSpec,
)
from shared.pipeline.resources import ClusterSetting, Policy, RegistrySetting

FILE = "caicloud.yml"
REGISTRY = RegistrySetting(url="registry.example:5000/team", username="ci",
                           password_secret="REGISTRY_PASSWORD")
CLUSTERS = {
    "prod": ClusterSetting(server="PROD_SERVER", token="PROD_TOKEN", ca="PROD_CA",
                           namespace="web"),
    "9f26-cluster": ClusterSetting(server="C2_SERVER", token="C2_TOKEN"),
}
SHOP = Policy(trusted=False, project="Shop", registry=REGISTRY, clusters=CLUSTERS)
BARE = Policy(trusted=False, project="shop")  # no delivery settings


def load_as(text: str, policy: Policy = SHOP) -> LoadResult:
    return load(dedent(text), FILE, policy)


def warnings(result: LoadResult) -> list[str]:
    return [f"{w.path}: {w.message}" for w in result.warnings]


def test_a_workspace_path_here_is_the_executors_one() -> None:
    from shared.pipeline import caicloud
    from shared.ports.executor import WORKSPACE
    assert caicloud._WORKSPACE == WORKSPACE


# -- build: tagged and pushed ----------------------------------------------------------------

FULL_FLOW = """
    build:
      context_dir: publish
      dockerfile_name: Dockerfile_publish
    integration:
      services:
        app:
          image: BUILT_IMAGE
          command: ./serve
      commands: [./smoke-test]
    post_build:
      image: BUILT_IMAGE
      commands: [./report]
    deploy:
      - image: BUILT_IMAGE
        commands: [./notify]
"""


def test_the_build_is_tagged_with_the_commit_and_pushed_to_the_projects_registry() -> None:
    result = load_as(FULL_FLOW)
    (step,) = result.plan.job("build").steps
    assert step.build == BuildSpec(
        context_dir="publish", dockerfile="Dockerfile_publish", name="built",
        tags=("registry.example:5000/team/shop:${CYCLONE_COMMIT}",), push=True)
    assert result.plan.registries == (
        RegistryLogin("registry.example:5000", "ci", "REGISTRY_PASSWORD"),)
    assert result.warnings == []


def test_later_sections_run_the_pushed_image_by_its_digest() -> None:
    plan = load_as(FULL_FLOW).plan
    integration = plan.job("integration")
    assert PUSHED_IMAGE == "${{ images.built }}"
    assert integration.image == integration.steps[0].image == PUSHED_IMAGE
    assert integration.services[0].image == PUSHED_IMAGE
    assert plan.job("post_build").steps[0].image == PUSHED_IMAGE
    assert plan.job("deploy").steps[0].image == PUSHED_IMAGE
    assert [job.needs for job in plan.jobs] == [(), ("build",), ("integration",),
                                                ("post_build",)]


def test_a_registry_without_a_login_is_pushed_to_without_one() -> None:
    open_registry = Policy(trusted=False, project="shop",
                           registry=RegistrySetting(url="127.0.0.1:5000"))
    result = load_as("build:\n", open_registry)
    assert result.plan.jobs[0].steps[0].build == BuildSpec(
        name="built", tags=("127.0.0.1:5000/shop:${CYCLONE_COMMIT}",), push=True)
    assert result.plan.registries == ()


def test_without_a_registry_the_image_stays_local_and_a_warning_says_so() -> None:
    result = load_as(FULL_FLOW, BARE)
    assert result.plan.job("build").steps[0].build == BuildSpec(
        context_dir="publish", dockerfile="Dockerfile_publish")
    assert result.plan.job("integration").image == BUILT_IMAGE  # the worker's local one
    assert result.plan.registries == ()
    assert warnings(result) == [
        "build: the image is built on the worker and not pushed: project 'shop' has no "
        "registry (a maintainer sets one to push it as <registry>/shop:<commit>: cyclone "
        "project update shop --registry HOST[:PORT][/PATH])"]


def test_the_plan_with_pushes_and_deploys_survives_its_json_round_trip() -> None:
    result = load_as(DEPLOYS)
    data = json.loads(json.dumps(result.plan.to_data()))
    assert Plan.from_data(data) == result.plan
    assert data["registries"] == [{"registry": "registry.example:5000", "username": "ci",
                                   "password_secret": "REGISTRY_PASSWORD"}]


# -- volumes: [".:/some/path"] ---------------------------------------------------------------

def test_a_dot_volume_puts_the_source_at_that_path_and_the_step_works_there() -> None:
    result = load_as("""
        pre_build:
          image: golang:1.6
          volumes:
            - .:/go/src/github.com/acme/shop/
          commands: [go build -v -o app]
        integration:
          image: golang:1.6
          commands: [go test]
    """, BARE)
    (step,) = result.plan.job("pre_build").steps
    assert (step.workdir, step.volumes) == ("/go/src/github.com/acme/shop", ())
    assert result.plan.job("integration").steps[0].workdir == ""
    assert result.warnings == []


def test_only_one_dot_volume_counts_and_not_at_the_workspace_itself() -> None:
    found = [str(d) for d in lint(dedent("""
        post_build:
          image: alpine
          volumes: [".:/workspace", ".:/src", ".:/other", "/srv/cache:/cache"]
          commands: [ls]
    """), FILE, BARE)]
    assert found == [
        "caicloud.yml:4: post_build.volumes[3]: the volume '/srv/cache:/cache' needs a "
        "trusted project, and project 'shop' is not (an admin can mark it trusted: cyclone "
        "project update shop --trusted)",
        "caicloud.yml:4: warning: post_build.volumes[0]: '.:/workspace' is ignored: the "
        "source is at /workspace already (mount it at another path)",
        "caicloud.yml:4: warning: post_build.volumes[2]: '.:/other' is ignored: the source "
        "is at /src already",
    ]


# -- pre_build: outputs, and an image of its own ---------------------------------------------

MAVEN = """
    pre_build:
      image: maven:3
      volumes:
        - .:/root/inventory
      commands:
        - cd /root/inventory
        - mvn clean package -DskipTests
      outputs:
        - /root/inventory/target/inventory.jar
        - docs
    build:
      context_dir: publish
"""


def test_pre_build_outputs_are_copied_into_the_build_context_after_its_commands() -> None:
    (step,) = load_as(MAVEN).plan.job("pre_build").steps
    assert step.commands == (
        "cd /root/inventory", "mvn clean package -DskipTests",
        'cd "$CYCLONE_WORKSPACE"', 'mkdir -p "$CYCLONE_WORKSPACE"/publish',
        '[ /root/inventory/target/inventory.jar -ef "$CYCLONE_WORKSPACE"/publish/inventory.jar'
        ' ] || cp -R /root/inventory/target/inventory.jar "$CYCLONE_WORKSPACE"/publish/',
        '[ docs -ef "$CYCLONE_WORKSPACE"/publish/docs ] || cp -R docs '
        '"$CYCLONE_WORKSPACE"/publish/')


def test_the_copy_works_in_a_shell_and_leaves_what_is_there_already(tmp_path: Path) -> None:
    (step,) = load_as(MAVEN.replace("context_dir: publish", "dockerfile_name: Dockerfile")
                      ).plan.job("pre_build").steps
    workspace = tmp_path / "ws"
    (workspace / "docs").mkdir(parents=True)
    (workspace / "docs" / "a.md").write_text("a")
    built = tmp_path / "root" / "inventory" / "target"
    built.mkdir(parents=True)
    (built / "inventory.jar").write_text("jar")
    copy = [c.replace("/root/inventory", str(tmp_path / "root" / "inventory"))
            for c in step.commands[2:]]  # the commands after the user's
    done = subprocess.run(["/bin/sh", "-ec", "\n".join(copy)], capture_output=True, text=True,
                          env={**os.environ, "CYCLONE_WORKSPACE": str(workspace)}, check=False)
    assert done.returncode == 0, done.stderr  # docs is there already: not copied into itself
    assert (workspace / "inventory.jar").read_text() == "jar"
    assert sorted(p.name for p in workspace.iterdir()) == ["docs", "inventory.jar"]


def test_pre_build_builds_its_own_image_then_runs_its_commands_in_it() -> None:
    result = load_as("""
        pre_build:
          context_dir: tools
          dockerfile_name: Dockerfile_prebuild
          image: ignored:latest
          commands: [make dist]
          outputs: [dist/app]
        build: {}
    """)
    image_step, run = result.plan.job("pre_build").steps
    assert image_step == StepSpec(name="pre_build-image", image="",
                                  build=BuildSpec("tools", "Dockerfile_prebuild"))
    assert (run.name, run.image, run.commands[0]) == ("pre_build", BUILT_IMAGE, "make dist")
    assert run.commands[-1].endswith('|| cp -R dist/app "$CYCLONE_WORKSPACE"/')
    assert warnings(result) == [
        "pre_build.image: 'image' is ignored: pre_build builds its image from "
        "tools/Dockerfile_prebuild, as in the original"]


def test_pre_build_without_commands_runs_its_images_own_command_then_copies() -> None:
    steps = load_as("""
        pre_build:
          dockerfile_name: Dockerfile_prebuild
          outputs: /out/app
    """, BARE).plan.job("pre_build").steps
    assert [(s.name, s.image, bool(s.build), len(s.commands)) for s in steps] == [
        ("pre_build-image", "", True, 0), ("pre_build", BUILT_IMAGE, False, 0),
        ("outputs", BUILT_IMAGE, False, 3)]


def test_bad_pre_build_image_keys_and_outputs_are_errors() -> None:
    assert [str(d) for d in lint(dedent("""
        pre_build:
          context_dir: [a, b]
          dockerfile_name: Dockerfile
          outputs: {app: 1}
    """), FILE)] == [
        "caicloud.yml:3: pre_build.context_dir: expected a path (a non-empty string)",
        "caicloud.yml:5: pre_build.outputs: expected a path or a list of paths",
    ]


# -- deploy: every vintage to the project's clusters -----------------------------------------

DEPLOYS = """
    build:
      dockerfile_name: Dockerfile
    deploy:
      - deployment: shop-web
        cluster: prod
        containers: [web, worker]
      - application: shop-api
        cluster: 9f26-cluster
        partition: api
        containers:
        - api
      - type: kubernetes
        host: https://k8s.example:6443
        token: eyJhbGciOiJSUzI1NiJ9.written-in-the-file
        cluster: prod
        namespace: jobs
        deployment: shop-cron
"""


def to_prod(deployment: str, namespace: str, containers: tuple[str, ...] = ()) -> DeploySpec:
    return DeploySpec(kubernetes=KubernetesTarget(
        deployment=deployment, image=PUSHED_IMAGE, namespace=namespace, containers=containers,
        server_secret="PROD_SERVER", token_secret="PROD_TOKEN", ca_secret="PROD_CA"))


def test_every_vintage_of_deploy_entry_is_a_kubernetes_deploy_of_the_pushed_image() -> None:
    result = load_as(DEPLOYS)
    prod, other = result.plan.jobs[1:]
    assert (prod.name, prod.environment, prod.needs) == ("deploy (prod)", "prod", ("build",))
    assert (other.name, other.environment) == ("deploy (9f26-cluster)", "9f26-cluster")
    assert [(s.name, s.deploy) for s in prod.steps] == [
        ("deploy-1", to_prod("shop-web", "web", ("web", "worker"))),  # the setting's namespace
        ("deploy-3", to_prod("shop-cron", "jobs")),
    ]
    (api,) = other.steps
    assert (api.name, api.deploy) == ("deploy-2", DeploySpec(kubernetes=KubernetesTarget(
        deployment="shop-api", namespace="api", containers=("api",), image=PUSHED_IMAGE,
        server_secret="C2_SERVER", token_secret="C2_TOKEN", ca_secret="KUBE_CA")))


def test_a_token_in_the_file_is_warned_about_and_never_used() -> None:
    result = load_as(DEPLOYS)
    assert warnings(result) == [
        "deploy[2].host: 'host' is not used: the project's cluster setting names the secret "
        "holding the API server's URL",
        "deploy[2].token: a token written in the file is readable by everyone who can read "
        "the repository (revoke it); it is not used: the project's cluster setting names the "
        "secret holding the token"]
    assert "written-in-the-file" not in json.dumps(result.plan.to_data())


def test_one_cluster_is_one_job_named_deploy() -> None:
    plan = load_as("""
        build:
        deploy:
          - {deployment: web, cluster: prod}
          - {image: alpine, commands: [./smoke]}
    """).plan
    (deploy,) = [job for job in plan.jobs if job.name.startswith("deploy")]
    assert (deploy.name, deploy.environment) == ("deploy", "prod")
    assert [s.name for s in deploy.steps] == ["deploy-1", "deploy-2"]


def test_an_entry_without_its_cluster_setting_is_dropped_naming_the_setting() -> None:
    result = load_as("""
        build:
        deploy:
          - {application: shop, cluster: f25b-0c01, partition: test, containers: [c1]}
    """)
    assert [job.name for job in result.plan.jobs] == ["build"]
    assert warnings(result) == [
        "deploy[0]: project 'Shop' has no cluster 'f25b-0c01' (a maintainer adds it: cyclone "
        "project update Shop --cluster f25b-0c01=server=SECRET,token=SECRET, the secrets "
        "holding its API server's URL and a token); entry dropped"]


def test_an_entry_with_no_pushed_image_to_deploy_is_dropped() -> None:
    unpushed = Policy(trusted=False, project="shop", clusters=CLUSTERS)
    result = load_as("build:\ndeploy: [{deployment: web, cluster: prod}]\n", unpushed)
    assert [job.name for job in result.plan.jobs] == ["build"]
    assert warnings(result)[1] == ("deploy[0]: the built image is not pushed (no registry), so "
                                   "the cluster cannot pull it; entry dropped")
    result = load_as("post_build: {image: a, commands: [x]}\n"
                     "deploy: [{deployment: web, cluster: prod}]\n")
    assert warnings(result) == ["deploy[0]: no build section makes an image to deploy; entry "
                                "dropped"]


def test_deploy_entries_that_cannot_be_read_are_errors_and_other_targets_warnings() -> None:
    with pytest.raises(PipelineError) as caught:
        load_as("""
            build:
            deploy:
              - {deployment: a, application: b, cluster: prod}
              - {cluster: prod, containers: [x]}
              - {type: mesos, deployment: a}
        """)
    assert [str(d) for d in caught.value.diagnostics] == [
        "caicloud.yml:4: deploy[0].application: 'application' is another name of "
        "'deployment': give one of them",
        "caicloud.yml:5: deploy[1]: missing required key 'deployment' (or 'application')",
        "caicloud.yml:6: warning: deploy[2].type: deploying to 'mesos' is not supported here "
        "(kubernetes is); entry dropped",
    ]


# -- keys the original ignored ---------------------------------------------------------------

def test_a_section_with_command_and_no_commands_ran_nothing_and_is_left_out() -> None:
    result = load_as("""
        build:
        integration:
          image: golang
          command: go test ./...
        post_build:
          image: alpine
          commands: [echo done]
    """, BARE)
    assert [job.name for job in result.plan.jobs] == ["build", "post_build"]
    assert warnings(result)[1:] == [
        "integration: integration runs nothing: no 'commands' (the original ran none "
        "either); left out",
        "integration.command: 'command' is ignored: a section runs its 'commands', as in the "
        "original"]


def test_a_build_sections_container_keys_are_ignored_as_the_original_did() -> None:
    result = load_as("""
        build:
          image: golang:1.5
          environment: [GOOS=linux]
          commands: [go run main.go]
    """)
    assert result.plan.jobs[0].steps[0].build is not None
    assert result.plan.jobs[0].env == {"GOOS": "linux"}
    assert warnings(result) == [
        "build.image: 'image' is ignored: the build section builds ./Dockerfile, as in the "
        "original",
        "build.commands: 'commands' is ignored: the build section builds ./Dockerfile, as in "
        "the original"]


def test_a_services_entrypoint_would_change_what_runs_so_it_is_an_error() -> None:
    assert [str(d) for d in lint(dedent("""
        integration:
          image: golang
          services:
            db: {image: postgres, entrypoint: [docker-entrypoint.sh], ports: ["5432"]}
          entrypoint: [/bin/bash]
          commands: [go test]
    """), FILE)] == [
        "caicloud.yml:5: integration.services.db.entrypoint: a service's 'entrypoint' is not "
        "supported here, and ignoring it would change what the service runs: write the "
        "whole command in 'command'",
        "caicloud.yml:5: warning: integration.services.db.ports: 'ports' is ignored: not "
        "supported by this runner",
        "caicloud.yml:6: warning: integration.entrypoint: 'entrypoint' is ignored: a "
        "section's commands run with /bin/sh, as in the original",
    ]


def test_top_level_services_get_the_hint_to_move_them_under_integration() -> None:
    result = load_as("""
        services:
          mongo: {image: mongo:3.0}
        integration:
          image: golang
          commands: [go test]
    """, BARE)
    assert warnings(result) == [
        "services: 'services' at the top level is not read (the original ignored it too): "
        "move it under integration (integration: services: ...)"]
    assert result.plan.jobs[0].services == ()


# -- the Docker socket ---------------------------------------------------------------------

SOCKET_USER = """
    pre_build:
      image: docker:cli
      commands: [docker build -t tool .]
    integration:
      image: alpine
      commands: ["true"]
"""


def test_a_trusted_projects_sections_get_the_socket_the_original_gave_every_one() -> None:
    trusted = Policy(trusted=True, project="shop")
    result = load_as(SOCKET_USER, trusted)
    assert [s.volumes for job in result.plan.jobs for s in job.steps] == [
        (DOCKER_SOCKET,), (DOCKER_SOCKET,)]
    explicit = load_as(SOCKET_USER.replace(
        "image: docker:cli", "image: docker:cli\n      volumes: ['/var/run/docker.sock:"
        "/var/run/docker.sock:ro']"), trusted)
    assert explicit.plan.jobs[0].steps[0].volumes == (
        "/var/run/docker.sock:/var/run/docker.sock:ro",)  # not mounted twice


def test_another_projects_sections_do_not_and_commands_that_run_docker_are_warned() -> None:
    result = load_as(SOCKET_USER, BARE)
    assert [s.volumes for job in result.plan.jobs for s in job.steps] == [(), ()]
    assert warnings(result) == [
        "pre_build.commands: the Docker socket, which the original mounted in every container "
        "(these commands run docker), needs a trusted project, and project 'shop' is not (an "
        "admin can mark it trusted: cyclone project update shop --trusted)"]
