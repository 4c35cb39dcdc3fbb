"""The Docker executor's translation of the plan into Docker's API (``docker_convert``) and
of image references, registry logins and push streams (``registry``): what a user would
notice of each container, network, build and push, checked without a daemon."""

from __future__ import annotations

import base64
import json
import re
import subprocess
from collections.abc import Mapping
from typing import Any

import pytest

from services.workermanager.jobs import step_env
from shared.adapters.executor.docker_convert import (
    BUILT_IMAGE,
    build_context_dir,
    build_params,
    built_image,
    container_name,
    helper_config,
    label_filter,
    labels,
    network_config,
    network_name,
    sandbox_config,
    sandbox_image,
    service_config,
    split_tag,
    step_config,
    step_network_mode,
    volume_name,
    wants_sandbox,
)
from shared.adapters.registry import (
    ImageRef,
    ProgressLog,
    auth_header,
    auth_hint,
    credentials_for,
    digest_changes,
    parse_reference,
    pull_params,
    pushed_images,
    redact,
    registry_config_header,
)
from shared.pipeline.plan import BuildSpec, JobSpec, ServiceSpec, StepSpec
from shared.pipeline.resources import Resources
from shared.ports.executor import NO_REGISTRIES, PushedImage, RegistryAuth
from shared.projections.runs import RunView

RUN = "r0123456789abcdef"
WORKER = "worker-1@/home/cyclone/work"
DB = ServiceSpec(name="db", image="postgres:16", env={"POSTGRES_PASSWORD": "secret"})
# Docker's rule for container names
DOCKER_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")


def step(name: str = "test", *commands: str, image: str = "python:3.11",
         **kwargs: object) -> StepSpec:
    return StepSpec(name=name, image=image, commands=commands, **kwargs)  # type: ignore[arg-type]


def job(*steps: StepSpec, services: tuple[ServiceSpec, ...] = (), image: str = "alpine",
        name: str = "build") -> JobSpec:
    return JobSpec(name=name, image=image, steps=steps, services=services)


def env_of(config: Mapping[str, object]) -> dict[str, str]:
    entries = config["Env"]
    assert isinstance(entries, list)
    return dict(entry.split("=", 1) for entry in entries)


def selects(selector: Mapping[str, list[str]], found: Mapping[str, str]) -> bool:
    """Whether Docker's label filter ``selector`` matches an object labelled ``found``."""
    for wanted in selector["label"]:
        key, sep, value = wanted.partition("=")
        if key not in found or (sep and found[key] != value):
            return False
    return True


# -- steps --------------------------------------------------------------------------------

def test_a_steps_commands_are_the_script_its_shell_runs_in_the_workspace() -> None:
    config = step_config(RUN, job(), step("t", "echo one", "false", "echo never"), {},
                         network_mode="bridge")
    assert config["Entrypoint"] == ["/bin/sh", "-c"]
    assert config["WorkingDir"] == "/workspace"
    # the script itself, run by a shell as the container would: each command echoed,
    # the first failure ends it
    done = subprocess.run([*config["Entrypoint"], *config["Cmd"]], capture_output=True,
                          text=True, timeout=10, check=False)
    assert (done.returncode, done.stdout) == (1, "+ echo one\none\n+ false\n")


def test_a_step_without_commands_runs_its_images_own_entrypoint() -> None:
    config = step_config(RUN, job(), step("plugin", image="plugins/slack"), {},
                         network_mode="bridge")
    assert config["Image"] == "plugins/slack"
    assert "Entrypoint" not in config and "Cmd" not in config


def test_the_job_and_step_env_merge_with_the_step_winning() -> None:
    the_step = step("t", "env", env={"LEVEL": "step", "ONLY_STEP": "s"})
    the_job = JobSpec(name="build", image="alpine", steps=(the_step,),
                      env={"LEVEL": "job", "ONLY_JOB": "j"})
    env = step_env(RunView(id=RUN, branch="main"), the_job, the_step)
    container_env = env_of(step_config(RUN, the_job, the_step, env, network_mode="bridge"))
    assert container_env["LEVEL"] == "step"
    assert (container_env["ONLY_JOB"], container_env["ONLY_STEP"]) == ("j", "s")
    assert container_env["CYCLONE_BRANCH"] == "main"
    assert container_env["CYCLONE_WORKSPACE"] == "/workspace"


def test_values_with_equals_signs_and_spaces_reach_the_container_whole() -> None:
    env = {"URL": "postgres://u:p@db/x?a=b", "GREETING": "hello world"}
    config = step_config(RUN, job(), step(), env, network_mode="bridge")
    assert {k: env_of(config)[k] for k in env} == env


def test_steps_and_services_of_a_run_share_its_workspace_volume() -> None:
    the_job = job(step(), services=(DB,))
    step_binds = step_config(RUN, the_job, step(), {}, "bridge")["HostConfig"]["Binds"]
    service_binds = service_config(RUN, the_job, DB)["HostConfig"]["Binds"]
    assert step_binds == service_binds == [f"{volume_name(RUN)}:/workspace"]
    helper_mount = helper_config(RUN)["HostConfig"]["Mounts"][0]
    assert (helper_mount["Source"], helper_mount["Target"]) == (volume_name(RUN), "/workspace")


def test_a_step_with_a_workdir_has_the_workspace_there_too_and_works_in_it() -> None:
    source = "/go/src/github.com/acme/app"  # caicloud.yml's volumes: [".:/go/src/..."]
    socket = "/var/run/docker.sock:/var/run/docker.sock"
    config = step_config(RUN, job(), step("t", "go build", workdir=source, volumes=(socket,)),
                         {}, "bridge", WORKER)
    assert config["WorkingDir"] == source
    assert config["HostConfig"]["Binds"] == [f"{volume_name(RUN, WORKER)}:/workspace",
                                             f"{volume_name(RUN, WORKER)}:{source}", socket]
    assert env_of(config)["CYCLONE_WORKSPACE"] == "/workspace"  # still there as well
    plain = step_config(RUN, job(), step("t", "go build"), {}, "bridge", WORKER)
    assert plain["WorkingDir"] == "/workspace"
    assert plain["HostConfig"]["Binds"] == [f"{volume_name(RUN, WORKER)}:/workspace"]


def test_a_step_whose_image_is_the_built_one_runs_the_runs_build() -> None:
    config = step_config(RUN, job(), step("run", "app", image=BUILT_IMAGE), {}, "bridge")
    assert config["Image"] == built_image(RUN)
    assert build_params(RUN, BuildSpec())["t"] == built_image(RUN)


def test_step_output_has_no_log_driver_and_services_keep_a_readable_one() -> None:
    the_job = job(step(), services=(DB,))
    step_logs = step_config(RUN, the_job, step(), {}, "bridge")["HostConfig"]["LogConfig"]
    sandbox_logs = sandbox_config(RUN, the_job, "alpine", "bridge")["HostConfig"]["LogConfig"]
    service_logs = service_config(RUN, the_job, DB)["HostConfig"]["LogConfig"]
    assert step_logs["Type"] == sandbox_logs["Type"] == "none"
    assert service_logs["Type"] == "json-file"


# -- safe by default -------------------------------------------------------------------------

MiB = 1024 * 1024


def test_step_and_service_containers_are_unprivileged_and_gain_no_privileges() -> None:
    the_job = job(step(), services=(DB,))
    for config in (step_config(RUN, the_job, step(), {}, "bridge"),
                   service_config(RUN, the_job, DB),
                   sandbox_config(RUN, the_job, "alpine", "bridge")):
        host = config["HostConfig"]
        assert host["Privileged"] is False
        assert host["SecurityOpt"] == ["no-new-privileges"]
        assert [b for b in host.get("Binds", []) if not b.startswith(volume_name(RUN))] == []


def test_containers_are_limited_to_the_jobs_resources_with_no_swap_past_the_memory() -> None:
    limited = JobSpec(name="build", image="alpine", steps=(step(),), services=(DB,),
                      resources=Resources(memory=512 * MiB, cpus=1.5, pids=256))
    for config in (step_config(RUN, limited, step(), {}, "bridge"),
                   service_config(RUN, limited, DB)):
        host = config["HostConfig"]
        assert (host["Memory"], host["MemorySwap"]) == (512 * MiB, 512 * MiB)
        assert (host["NanoCpus"], host["PidsLimit"]) == (1_500_000_000, 256)


def test_more_cpus_than_the_host_has_are_lowered_to_what_it_has() -> None:
    greedy = JobSpec(name="build", image="alpine", steps=(step(),),
                     resources=Resources(cpus=8))
    host = step_config(RUN, greedy, step(), {}, "bridge", host_cpus=2)["HostConfig"]
    assert host["NanoCpus"] == 2_000_000_000


def test_a_trusted_projects_privileged_step_and_host_volumes_are_passed_through() -> None:
    socket = "/var/run/docker.sock:/var/run/docker.sock"
    dind = ServiceSpec(name="dind", image="docker:dind", privileged=True,
                       volumes=("/srv/cache:/cache:ro",))
    builder = step("build", "docker build .", privileged=True, volumes=(socket,))
    the_job = job(builder, services=(dind,))
    step_host = step_config(RUN, the_job, builder, {}, "bridge")["HostConfig"]
    service_host = service_config(RUN, the_job, dind)["HostConfig"]
    assert step_host["Privileged"] is service_host["Privileged"] is True
    assert step_host["Binds"] == [f"{volume_name(RUN)}:/workspace", socket]
    assert service_host["Binds"] == [f"{volume_name(RUN)}:/workspace", "/srv/cache:/cache:ro"]


# -- networks and services ------------------------------------------------------------------

def test_a_service_is_on_the_runs_network_under_its_name() -> None:
    config = service_config(RUN, job(services=(DB,)), DB, WORKER)
    network = network_name(RUN, WORKER)
    assert config["HostConfig"]["NetworkMode"] == network
    assert config["NetworkingConfig"]["EndpointsConfig"] == {network: {"Aliases": ["db"]}}
    assert config["Image"] == "postgres:16"
    assert env_of(config) == {"POSTGRES_PASSWORD": "secret"}


def test_a_services_command_replaces_the_images_and_none_keeps_it() -> None:
    redis = ServiceSpec(name="cache", image="redis", command=("redis-server", "--port", "7000"))
    assert service_config(RUN, job(), redis)["Cmd"] == ["redis-server", "--port", "7000"]
    assert "Cmd" not in service_config(RUN, job(), DB)


def test_a_job_without_services_gets_no_network_of_its_own() -> None:
    assert step_network_mode(RUN, job(step()), sandbox=None) == "bridge"
    assert step_network_mode(RUN, job(step(), services=(DB,)), sandbox=None, worker=WORKER) \
        == network_name(RUN, WORKER)


def test_steps_join_the_jobs_sandbox_when_there_is_one() -> None:
    mode = step_network_mode(RUN, job(step(), services=(DB,)), sandbox="abc123")
    assert mode == "container:abc123"
    sandbox = sandbox_config(RUN, job(step()), "alpine", network_name(RUN))
    assert sandbox["HostConfig"]["NetworkMode"] == network_name(RUN)
    # it only has to stay up: a shell loop that ends when the container is stopped
    assert sandbox["Entrypoint"][:2] == ["/bin/sh", "-c"]
    assert "trap 'exit 0' TERM" in sandbox["Entrypoint"][2]


def test_a_sandbox_pays_off_from_the_second_container_step() -> None:
    build = step("image", build=BuildSpec())
    assert not wants_sandbox(job(step("one")))
    assert not wants_sandbox(job(step("one"), build))  # a build runs no container
    assert wants_sandbox(job(step("one"), step("two")))


def test_the_sandbox_runs_the_first_container_steps_image_or_the_jobs() -> None:
    build = step("image", build=BuildSpec(), image="")
    assert sandbox_image(job(build, step("t", image="node:20"), image="alpine")) == "node:20"
    assert sandbox_image(job(build, step("t", image=""), image="alpine")) == "alpine"
    built = sandbox_config(RUN, job(), BUILT_IMAGE, "bridge")
    assert built["Image"] == built_image(RUN)


def test_the_runs_network_is_a_labelled_bridge_named_per_worker() -> None:
    config = network_config(RUN, WORKER)
    assert (config["Name"], config["Driver"]) == (network_name(RUN, WORKER), "bridge")
    assert selects(label_filter(RUN, WORKER), config["Labels"])


# -- names and labels -----------------------------------------------------------------------

def test_container_names_are_valid_readable_and_unique() -> None:
    first = container_name(RUN, "test (python=3.11, os=linux)", "unit tests")
    second = container_name(RUN, "test (python=3.11, os=linux)", "unit tests")
    assert DOCKER_NAME.match(first), first
    assert first.startswith(f"cyclone-{RUN}-test_python_3.11_os_linux-unit_tests-")
    assert first != second  # a retried step's container never clashes with the last one


def test_each_worker_has_its_own_network_and_volume_of_a_run() -> None:
    assert network_name(RUN) == f"cyclone-{RUN}"
    assert volume_name(RUN) == f"cyclone-{RUN}-ws"
    assert network_name(RUN, "a") != network_name(RUN, "b")
    assert volume_name(RUN, "a") != volume_name(RUN, "b")
    assert network_name(RUN, "a") == network_name(RUN, "a")  # stable across restarts


def test_built_images_have_a_lowercase_name_as_docker_requires() -> None:
    assert built_image("RunABC") == "cyclone-built/runabc:latest"


def test_everything_made_for_a_run_carries_its_id_so_leftovers_can_be_reaped() -> None:
    the_job = job(step(), services=(DB,))
    made = {
        "step": step_config(RUN, the_job, step(), {}, "bridge", WORKER)["Labels"],
        "service": service_config(RUN, the_job, DB, WORKER)["Labels"],
        "sandbox": sandbox_config(RUN, the_job, "alpine", "bridge", WORKER)["Labels"],
        "helper": helper_config(RUN, WORKER)["Labels"],
        "volume": helper_config(RUN, WORKER)["HostConfig"]["Mounts"][0]["VolumeOptions"]
                  ["Labels"],
        "network": network_config(RUN, WORKER)["Labels"],
    }
    for what, found in made.items():
        assert found["io.cyclone.managed"] == "1", what
        assert selects(label_filter(RUN), found), what  # destroy_run finds it
        assert selects(label_filter(None, WORKER), found), what  # the worker's restart too
        assert not selects(label_filter(None, "another worker"), found), what
        assert not selects(label_filter("another-run"), found), what


def test_labels_say_which_job_step_and_role_a_container_plays() -> None:
    the_job = job(step(), services=(DB,), name="integration")
    step_labels = step_config(RUN, the_job, step("unit"), {}, "bridge")["Labels"]
    assert (step_labels["io.cyclone.job"], step_labels["io.cyclone.step"],
            step_labels["io.cyclone.role"]) == ("integration", "unit", "step")
    assert "io.cyclone.worker" not in step_labels  # not opened for a worker
    service_labels = service_config(RUN, the_job, DB)["Labels"]
    services_of_job = label_filter(RUN, job="integration", role="service")
    assert selects(services_of_job, service_labels)
    assert not selects(services_of_job, step_labels)
    assert labels(RUN, service="db")["io.cyclone.service"] == "db"


# -- image builds ---------------------------------------------------------------------------

@pytest.mark.parametrize(("context", "inside"), [
    (".", "."), ("", "."), ("app", "app"), ("/app/", "app"), ("app/../lib", "lib"),
    ("..", None), ("../other", None), ("app/../../etc", None),
])
def test_a_build_context_is_a_directory_of_the_workspace(context: str,
                                                         inside: str | None) -> None:
    assert build_context_dir(BuildSpec(context_dir=context)) == inside


def test_a_build_uses_its_dockerfile_and_tags_the_runs_image() -> None:
    params = build_params(RUN, BuildSpec(dockerfile="docker/Dockerfile.ci"))
    assert params["dockerfile"] == "docker/Dockerfile.ci"
    assert params["t"] == built_image(RUN)
    assert params["labels"] == {"io.cyclone.managed": "1"}
    assert params["forcerm"] is True  # a failed build leaves no intermediate containers
    assert "buildargs" not in params and "target" not in params  # Docker's defaults


def test_a_build_passes_its_args_target_and_labels() -> None:
    oci = {"org.opencontainers.image.revision": "0" * 40,
           "org.opencontainers.image.source": "https://git.example/app.git"}
    params = build_params(RUN, BuildSpec(args={"VERSION": "1.2", "EMPTY": ""},
                                         target="runtime", labels=oci))
    assert params["buildargs"] == {"VERSION": "1.2", "EMPTY": ""}
    assert params["target"] == "runtime"
    assert params["labels"] == {**oci, "io.cyclone.managed": "1"}


def test_a_builds_labels_cannot_unmark_what_cyclone_made() -> None:
    params = build_params(RUN, BuildSpec(labels={"io.cyclone.managed": "0"}))
    assert params["labels"]["io.cyclone.managed"] == "1"


@pytest.mark.parametrize(("reference", "split"), [
    ("app", ("app", "latest")),
    ("app:1.2", ("app", "1.2")),
    ("registry:5000/team/app", ("registry:5000/team/app", "latest")),
    ("registry:5000/team/app:rc-1", ("registry:5000/team/app", "rc-1")),
])
def test_a_build_tag_is_split_into_repository_and_tag(reference: str,
                                                      split: tuple[str, str]) -> None:
    assert split_tag(reference) == split


# -- image references -----------------------------------------------------------------------

@pytest.mark.parametrize(("reference", "expected"), [
    ("app", ImageRef("docker.io", "app", "library/app")),
    ("app:1.2", ImageRef("docker.io", "app", "library/app", tag="1.2")),
    ("team/app:1.2", ImageRef("docker.io", "team/app", "team/app", tag="1.2")),
    ("docker.io/app", ImageRef("docker.io", "docker.io/app", "library/app")),
    ("index.docker.io/team/app", ImageRef("docker.io", "index.docker.io/team/app", "team/app")),
    ("localhost/app", ImageRef("localhost", "localhost/app", "app")),
    ("localhost:5000/app:rc-1", ImageRef("localhost:5000", "localhost:5000/app", "app", "rc-1")),
    ("127.0.0.1:5000/team/app", ImageRef("127.0.0.1:5000", "127.0.0.1:5000/team/app",
                                         "team/app")),
    ("ghcr.io/o/team/app:v1", ImageRef("ghcr.io", "ghcr.io/o/team/app", "o/team/app", "v1")),
    ("Registry/app", ImageRef("Registry", "Registry/app", "app")),  # uppercase: a host
    ("reg:5000/app@sha256:" + "a" * 64,
     ImageRef("reg:5000", "reg:5000/app", "app", digest="sha256:" + "a" * 64)),
    ("reg:5000/app:1@sha256:" + "b" * 64,
     ImageRef("reg:5000", "reg:5000/app", "app", tag="1", digest="sha256:" + "b" * 64)),
    ("a.b/c__d/e-f.g--h:t_1.x-Y", ImageRef("a.b", "a.b/c__d/e-f.g--h", "c__d/e-f.g--h",
                                           tag="t_1.x-Y")),
])
def test_a_reference_is_split_as_docker_splits_it(reference: str, expected: ImageRef) -> None:
    ref = parse_reference(reference)
    assert ref == expected
    assert ref.reference == reference


@pytest.mark.parametrize(("reference", "why"), [
    ("", "no repository"),
    (":1", "no repository"),
    ("App:1", "lowercase"),
    ("reg:5000/Team/app", "lowercase"),
    ("team//app", "lowercase"),
    ("app:", "bad tag"),
    ("app:-1", "bad tag"),
    ("app:" + "x" * 129, "bad tag"),
    ("app@sha256:abc", "bad digest"),
    ("app@", "bad digest"),
    ("reg_x:5000/app", "bad registry"),
    ("reg:port/app", "bad registry"),
    ("app/" + "x" * 260, "at most 255"),
    ("${CYCLONE_TAG}/app", "bad registry"),  # unexpanded: never pushed anywhere
    ("reg:5000/app:${CYCLONE_TAG}", "bad tag"),
])
def test_a_reference_docker_would_refuse_is_refused_saying_why(reference: str,
                                                                why: str) -> None:
    with pytest.raises(ValueError, match=re.escape(why)):
        parse_reference(reference)


def test_a_pull_names_the_repository_and_its_tag_or_digest() -> None:
    digest = "sha256:" + "c" * 64
    assert pull_params(parse_reference("reg:5000/app")) == {
        "fromImage": "reg:5000/app", "tag": "latest"}  # never "": that pulls every tag
    assert pull_params(parse_reference("reg:5000/app:2")) == {
        "fromImage": "reg:5000/app", "tag": "2"}
    assert pull_params(parse_reference(f"reg:5000/app:2@{digest}")) == {
        "fromImage": "reg:5000/app", "tag": digest}  # the digest wins over the tag


# -- registry logins ------------------------------------------------------------------------

LOGIN = RegistryAuth("ci", "pa55:w/rd")


def _decoded(header: str) -> object:
    return json.loads(base64.urlsafe_b64decode(header))


def test_the_login_is_the_one_for_the_references_registry() -> None:
    registries = {"reg:5000": LOGIN, "other.io": RegistryAuth("x", "y")}
    assert credentials_for(registries, parse_reference("reg:5000/app:1").registry) == LOGIN
    assert credentials_for(registries, "reg") is None  # the port is part of the name
    assert credentials_for(registries, "docker.io") is None
    assert credentials_for(NO_REGISTRIES, "reg:5000") is None


@pytest.mark.parametrize("name", ["docker.io", "index.docker.io", "registry-1.docker.io",
                                  "https://index.docker.io/v1/"])
def test_docker_hubs_login_is_found_under_any_of_its_names(name: str) -> None:
    assert credentials_for({name: LOGIN}, parse_reference("team/app").registry) == LOGIN


def test_the_auth_header_carries_the_login_for_its_registry() -> None:
    assert _decoded(auth_header(LOGIN, "reg:5000")) == {
        "username": "ci", "password": "pa55:w/rd", "serveraddress": "reg:5000"}
    assert _decoded(auth_header(LOGIN, "docker.io"))["serveraddress"] == (  # type: ignore[index]
        "https://index.docker.io/v1/")
    # a push must send one even without a login (the daemon reads the body otherwise)
    assert _decoded(auth_header(None, "reg:5000")) == {}


def test_a_builds_registry_config_has_every_login_keyed_as_the_daemon_looks_it_up() -> None:
    header = registry_config_header({"reg:5000": LOGIN, "docker.io": RegistryAuth("hub", "h")})
    assert _decoded(header) == {
        "reg:5000": {"username": "ci", "password": "pa55:w/rd", "serveraddress": "reg:5000"},
        "https://index.docker.io/v1/": {"username": "hub", "password": "h",
                                        "serveraddress": "https://index.docker.io/v1/"}}


def test_passwords_are_taken_out_of_a_registrys_message() -> None:
    message = "denied: user ci with password pa55:w/rd may not push"
    assert redact(message, {"reg:5000": LOGIN}) == "denied: user ci with password *** may not push"
    assert redact(message, NO_REGISTRIES) == message


@pytest.mark.parametrize(("error", "logged_in", "hint"), [
    ("unauthorized: authentication required", True, " (the login for reg:5000 was refused)"),
    ("no basic auth credentials", False,
     " (the pipeline has no login for reg:5000 in its registries)"),
    ("denied: requested access to the resource is denied", False,
     " (the pipeline has no login for reg:5000 in its registries)"),
    ("manifest unknown", True, ""),
    ("connection refused", False, ""),
])
def test_a_refusal_says_which_login_was_refused_or_that_there_was_none(
        error: str, logged_in: bool, hint: str) -> None:
    assert auth_hint(error, "reg:5000", logged_in) == hint


# -- push and pull streams --------------------------------------------------------------------

DIGEST = "sha256:" + "d" * 64
PUSH_STREAM: list[dict[str, Any]] = [
    {"status": "The push refers to repository [reg:5000/app]"},
    {"status": "Preparing", "progressDetail": {}, "id": "602f66425bdd"},
    {"status": "Preparing", "progressDetail": {}, "id": "1d2a3b4c5d6e"},
    {"status": "Waiting", "progressDetail": {}, "id": "1d2a3b4c5d6e"},
    *({"status": "Pushing", "progressDetail": {"current": n, "total": 1984172},
       "progress": f"[=>  ] {n}B/1.984MB", "id": "602f66425bdd"}
      for n in range(19968, 1984172, 100000)),
    {"status": "Pushed", "progressDetail": {}, "id": "602f66425bdd"},
    {"status": "Layer already exists", "progressDetail": {}, "id": "1d2a3b4c5d6e"},
    {"status": f"1.2: digest: {DIGEST} size: 527"},
    {"progressDetail": {}, "aux": {"Tag": "1.2", "Digest": DIGEST, "Size": 527}},
]


def test_a_push_is_logged_a_line_per_layer_status_change_and_its_digest_kept() -> None:
    progress = ProgressLog()
    lines = [line for item in PUSH_STREAM if (line := progress.feed(item)) is not None]
    assert lines == [
        "The push refers to repository [reg:5000/app]",
        "602f66425bdd: Preparing",
        "1d2a3b4c5d6e: Preparing",
        "1d2a3b4c5d6e: Waiting",
        "602f66425bdd: Pushing",  # once, however many ticks
        "602f66425bdd: Pushed",
        "1d2a3b4c5d6e: Layer already exists",
        f"1.2: digest: {DIGEST} size: 527",
    ]
    assert progress.digest == DIGEST
    assert progress.error == ""


def test_an_error_in_the_stream_is_kept_not_logged() -> None:
    progress = ProgressLog()
    assert progress.feed({"status": "Preparing", "id": "602f66425bdd"}) is not None
    assert progress.feed({"errorDetail": {"message": "unauthorized: authentication required"},
                          "error": "unauthorized: authentication required"}) is None
    assert progress.error == "unauthorized: authentication required"
    assert progress.digest == ""
    other = ProgressLog()
    other.feed({"error": "denied"})
    assert other.error == "denied"


def test_what_was_pushed_is_one_image_per_repository_with_every_tag() -> None:
    other = "sha256:" + "e" * 64
    pushes = [(parse_reference(reference), digest) for reference, digest in [
        ("reg:5000/app:1.2", DIGEST), ("reg:5000/app:latest", DIGEST),
        ("mirror.io/team/app:1.2", other), ("reg:5000/app:1.2", DIGEST)]]
    assert pushed_images("web", pushes) == (
        PushedImage("web", "reg:5000/app", ("reg:5000/app:1.2", "reg:5000/app:latest"), DIGEST),
        PushedImage("web", "mirror.io/team/app", ("mirror.io/team/app:1.2",), other),
    )
    assert pushed_images("web", pushes)[0].reference == f"reg:5000/app@{DIGEST}"


def test_a_promote_must_keep_the_digest_it_was_given() -> None:
    other = "sha256:" + "f" * 64
    source = parse_reference(f"reg:5000/app@{DIGEST}")
    kept = PushedImage("web", "reg:5000/prod", ("reg:5000/prod:1",), DIGEST)
    changed = PushedImage("web", "mirror.io/app", ("mirror.io/app:1",), other)
    assert digest_changes(source, [kept]) == []
    [problem] = digest_changes(source, [kept, changed])
    assert problem.startswith(f"pushing reg:5000/app@{DIGEST} to mirror.io/app changed its "
                              f"digest to {other}: ")
    # by tag there is no digest to keep
    assert digest_changes(parse_reference("reg:5000/app:rc"), [kept, changed]) == []
