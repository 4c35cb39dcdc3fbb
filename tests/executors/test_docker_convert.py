"""The Docker executor's translation of the plan into Docker's API (``docker_convert``):
what a user would notice of each container, network and build, checked without a daemon."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping

import pytest

from services.workermanager.jobs import step_env
from shared.adapters.executor.docker_convert import (
    BUILT_IMAGE,
    build_context_dir,
    build_options,
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
from shared.pipeline.plan import BuildSpec, JobSpec, ServiceSpec, StepSpec
from shared.pipeline.resources import Resources
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
    assert build_options(RUN, BuildSpec())["tag"] == built_image(RUN)


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
    options = build_options(RUN, BuildSpec(dockerfile="docker/Dockerfile.ci"))
    assert options["path_dockerfile"] == "docker/Dockerfile.ci"
    assert options["tag"] == built_image(RUN)
    assert options["labels"]["io.cyclone.managed"] == "1"
    assert options["forcerm"] is True  # a failed build leaves no intermediate containers


@pytest.mark.parametrize(("reference", "split"), [
    ("app", ("app", "latest")),
    ("app:1.2", ("app", "1.2")),
    ("registry:5000/team/app", ("registry:5000/team/app", "latest")),
    ("registry:5000/team/app:rc-1", ("registry:5000/team/app", "rc-1")),
])
def test_a_build_tag_is_split_into_repository_and_tag(reference: str,
                                                      split: tuple[str, str]) -> None:
    assert split_tag(reference) == split
