"""deploy/compose.yaml and the Helm chart deploy/helm/cyclone, checked by the tools that
read them, without a cluster: the compose file by Docker Compose itself (`docker-compose
config`, built by scripts/setup-deploy-compose.sh), the chart by Helm 4 (`helm lint`, `helm
template`, built by scripts/setup-deploy-helm.sh) with its output validated against
Kubernetes' own schemas (kubernetes-validate), with the default values and others.
A missing tool SKIPS the tests that need it, loudly, and FAILS them under CI.

Every CYCLONE_* variable either sets must be one shared/config.py declares.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from shared.secretbox import new_key

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / ".cache" / "compose" / "bin" / "docker-compose"
HELM = ROOT / ".cache" / "helm" / "bin" / "helm"
CHART = ROOT / "deploy" / "helm" / "cyclone"
SERVICES = ("api", "eventmanager", "logserver", "notifier", "workermanager")
INFRA = ("kafka", "etcd", "mongodb")
# The oldest Kubernetes the chart supports (Chart.yaml's kubeVersion) and the newest
# kubernetes-validate ships schemas for.
KUBERNETES_VERSIONS = ("1.25.0", kubernetes_validate.latest_version())
# Besides Cyclone's own settings: the Docker client's address, read by aiodocker.
FOREIGN_VARIABLES = {"DOCKER_HOST"}


def _tool(path: Path, setup: str) -> Path:
    if not path.exists():
        message = f"{path} is missing: run scripts/{setup}"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return path


def _declared_settings() -> set[str]:
    """The CYCLONE_* names shared/config.py reads (its one place for settings)."""
    return set(re.findall(r"\"(CYCLONE_[A-Z0-9_]+)\"",
                          (ROOT / "shared" / "config.py").read_text()))


def _undeclared(names: set[str]) -> set[str]:
    return {n for n in names if n not in FOREIGN_VARIABLES} - _declared_settings()


# -- compose ------------------------------------------------------------------------------


def _compose(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    compose = _tool(COMPOSE, "setup-deploy-compose.sh")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CYCLONE_")}
    return subprocess.run([str(compose), "-f", str(ROOT / "deploy" / "compose.yaml"), *args],
                          env={**clean, **env}, capture_output=True, text=True, timeout=120,
                          check=False)


@pytest.fixture(scope="module")
def compose_model() -> dict[str, Any]:
    """The compose file as Docker Compose resolves it (anchors, merges, variables)."""
    env = {"CYCLONE_SECRET_KEY": new_key(), "DOCKER_GID": "998"}
    checked = _compose("config", "-q", env=env)
    assert checked.returncode == 0, checked.stderr
    done = _compose("config", "--format", "json", env=env)
    assert done.returncode == 0, done.stderr
    model: dict[str, Any] = json.loads(done.stdout)
    return model


def test_docker_compose_accepts_the_compose_file(compose_model: dict[str, Any]) -> None:
    assert set(compose_model["services"]) == {*SERVICES, *INFRA}
    assert set(compose_model["volumes"]) >= {*INFRA, "workermanager"}


def test_each_service_runs_the_image_once_its_infrastructure_is_healthy(
    compose_model: dict[str, Any],
) -> None:
    services = compose_model["services"]
    for name in SERVICES:
        service = services[name]
        assert service["command"] == ["service", name]
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        needs = service["depends_on"]
        assert {n: needs[n]["condition"] for n in INFRA} == dict.fromkeys(
            INFRA, "service_healthy"), name
        assert service["environment"]["CYCLONE_BUS"] == "kafka://kafka:9092"
    for name in INFRA:
        assert services[name]["healthcheck"]["test"], name


def test_the_workermanager_uses_the_docker_of_its_host(compose_model: dict[str, Any]) -> None:
    worker = compose_model["services"]["workermanager"]
    sockets = [v for v in worker["volumes"] if v["type"] == "bind"]
    assert [(v["source"], v["target"]) for v in sockets] == [
        ("/var/run/docker.sock", "/var/run/docker.sock")]
    assert worker["group_add"] == ["998"]
    assert worker["environment"]["CYCLONE_EXECUTOR"] == "docker"


def test_the_compose_file_sets_only_declared_settings(compose_model: dict[str, Any]) -> None:
    names = {n for s in SERVICES for n in compose_model["services"][s]["environment"]}
    assert not _undeclared(names)


def test_compose_without_the_secret_key_says_what_to_set() -> None:
    done = _compose("config", "-q", env={"DOCKER_GID": "998"})
    assert done.returncode != 0
    assert "CYCLONE_SECRET_KEY" in done.stderr


# -- Helm ---------------------------------------------------------------------------------

NON_DEFAULT = [
    "ingress.enabled=true", "ingress.className=nginx", "ingress.host=ci.example.org",
    "ingress.tls[0].secretName=ci-tls", "ingress.tls[0].hosts[0]=ci.example.org",
    "workermanager.kind=DaemonSet", "workermanager.docker.host=tcp://dind.ci.svc:2375",
    "secret.existingSecret=cyclone-managed-keys", "podDisruptionBudget.maxUnavailable=2",
    "api.replicas=3", "env.CYCLONE_LOG_LEVEL=DEBUG", "metrics.scrape=false",
    "infra.artifactStore=s3://minio.ci.svc:9000/cyclone?tls=0",
]


def _run_helm(*args: str) -> subprocess.CompletedProcess[str]:
    helm = _tool(HELM, "setup-deploy-helm.sh")
    return subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=120,
                          check=False)


def _helm(*args: str) -> str:
    done = _run_helm(*args)
    assert done.returncode == 0, f"helm {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _render(*settings: str) -> list[dict[str, Any]]:
    flags = [f for setting in settings for f in ("--set", setting)]
    out = _helm("template", "ci", str(CHART), "--namespace", "ci", *flags)
    return [d for d in yaml.safe_load_all(out) if d]


def _of(documents: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in documents if d["kind"] == kind}


def _pods(documents: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(service, pod template) of each workload."""
    for doc in documents:
        if doc["kind"] in ("Deployment", "DaemonSet"):
            yield doc["metadata"]["labels"]["app.kubernetes.io/component"], doc["spec"]["template"]


@pytest.fixture(scope="module")
def default_render() -> list[dict[str, Any]]:
    return _render()


@pytest.fixture(scope="module")
def custom_render() -> list[dict[str, Any]]:
    return _render(*NON_DEFAULT)


@pytest.mark.parametrize("settings", [[], NON_DEFAULT], ids=["default", "non-default"])
def test_helm_lint_passes(settings: list[str]) -> None:
    flags = [f for setting in settings for f in ("--set", setting)]
    out = _helm("lint", "--strict", str(CHART), *flags)
    assert "0 chart(s) failed" in out


@pytest.mark.parametrize("render", ["default_render", "custom_render"])
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_rendered_manifest_is_valid_for_kubernetes(
    render: str, version: str, request: pytest.FixtureRequest,
) -> None:
    documents: list[dict[str, Any]] = request.getfixturevalue(render)
    assert documents
    for doc in documents:
        try:  # strict: a misspelt or misplaced field is an error, not ignored
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(f"{doc['kind']} {doc['metadata']['name']}: {exc}") from None


def test_the_defaults_make_a_deployment_service_and_budget_per_service(
    default_render: list[dict[str, Any]],
) -> None:
    names = {f"ci-cyclone-{s}" for s in SERVICES}
    assert set(_of(default_render, "Deployment")) == names
    assert set(_of(default_render, "Service")) == names
    assert set(_of(default_render, "PodDisruptionBudget")) == names
    assert not _of(default_render, "Ingress")
    deployments = _of(default_render, "Deployment")
    assert deployments["ci-cyclone-api"]["spec"]["replicas"] == 2
    for service, pod in _pods(default_render):
        container = pod["spec"]["containers"][0]
        assert container["args"] == ["service", service]
        assert container["image"] == "cyclone:0.1.0"
        assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
        assert container["resources"]["requests"]["memory"]
        assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
        assert pod["metadata"]["annotations"]["prometheus.io/port"] == "8080"
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_the_keys_are_in_a_secret_and_the_rest_in_a_config_map(
    default_render: list[dict[str, Any]],
) -> None:
    secret = _of(default_render, "Secret")["ci-cyclone-keys"]
    values = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert len(base64.b64decode(values["CYCLONE_SECRET_KEY"])) == 32  # made at install
    assert values["CYCLONE_STORE"].startswith("mongodb://")
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    settings = _of(default_render, "ConfigMap")["ci-cyclone-settings"]["data"]
    assert settings["CYCLONE_BUS"].startswith("kafka://")
    assert settings["CYCLONE_COORD"].startswith("etcd://")
    assert not {"CYCLONE_SECRET_KEY", "CYCLONE_STORE"} & set(settings)
    for _, pod in _pods(default_render):
        sources = pod["spec"]["containers"][0]["envFrom"]
        assert {"secretRef": {"name": "ci-cyclone-keys"}} in sources


def test_the_default_workermanager_reaches_the_docker_socket_of_its_node(
    default_render: list[dict[str, Any]],
) -> None:
    pod = _of(default_render, "Deployment")["ci-cyclone-workermanager"]["spec"]["template"]
    env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
    assert env["DOCKER_HOST"]["value"] == "unix:///var/run/docker.sock"
    assert env["CYCLONE_WORKER_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert pod["spec"]["securityContext"]["supplementalGroups"] == [999]
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["docker-socket"]["hostPath"] == {"path": "/var/run/docker.sock",
                                                    "type": "Socket"}


def test_other_values_give_an_ingress_a_daemon_set_and_an_existing_secret(
    custom_render: list[dict[str, Any]],
) -> None:
    ingress = _of(custom_render, "Ingress")["ci-cyclone-api"]["spec"]
    assert ingress["rules"][0]["host"] == "ci.example.org"
    assert ingress["tls"] == [{"secretName": "ci-tls", "hosts": ["ci.example.org"]}]
    assert ingress["ingressClassName"] == "nginx"
    assert not _of(custom_render, "Secret")  # the existing one is used
    budgets = _of(custom_render, "PodDisruptionBudget")  # none for a DaemonSet's pods
    assert set(budgets) == {f"ci-cyclone-{s}" for s in SERVICES if s != "workermanager"}
    assert {b["spec"]["maxUnavailable"] for b in budgets.values()} == {2}
    settings = _of(custom_render, "ConfigMap")["ci-cyclone-settings"]["data"]
    assert settings["CYCLONE_PUBLIC_URL"] == "https://ci.example.org"
    assert settings["CYCLONE_LOG_LEVEL"] == "DEBUG"
    worker = _of(custom_render, "DaemonSet")["ci-cyclone-workermanager"]["spec"]["template"]
    env = {e["name"]: e for e in worker["spec"]["containers"][0]["env"]}
    assert env["CYCLONE_WORKER_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert env["DOCKER_HOST"]["value"] == "tcp://dind.ci.svc:2375"
    assert "docker-socket" not in {v["name"] for v in worker["spec"]["volumes"]}
    assert _of(custom_render, "Deployment")["ci-cyclone-api"]["spec"]["replicas"] == 3
    for _, pod in _pods(custom_render):
        assert "prometheus.io/scrape" not in pod["metadata"]["annotations"]
        sources = pod["spec"]["containers"][0]["envFrom"]
        assert {"secretRef": {"name": "cyclone-managed-keys"}} in sources


def test_the_chart_sets_only_declared_settings(
    default_render: list[dict[str, Any]], custom_render: list[dict[str, Any]],
) -> None:
    names: set[str] = set()
    for documents in (default_render, custom_render):
        for kind in ("ConfigMap", "Secret"):
            names |= {n for doc in _of(documents, kind).values() for n in doc["data"]}
        names |= {e["name"] for _, pod in _pods(documents)
                  for e in pod["spec"]["containers"][0].get("env", [])}
    assert not _undeclared(names)


@pytest.mark.parametrize(("setting", "named"), [
    ("infra.bus=", "infra.bus (a kafka:// URL) is required"),
    ("infra.coord=", "infra.coord (an etcd:// URL) is required"),
    ("infra.store=", "infra.store (a mongodb:// URL) is required"),
])
def test_the_chart_refuses_to_render_without_an_infrastructure_url(
    setting: str, named: str,
) -> None:
    done = _run_helm("template", "ci", str(CHART), "--set", setting)
    assert done.returncode != 0
    assert named in done.stderr


@pytest.mark.parametrize(("setting", "named"), [
    ("workermanager.kind=StatefulSet", "/workermanager/kind"),
    ("infra.bus=redis://cache:6379", "/infra/bus"),
    ("env.LOG_LEVEL=DEBUG", "'LOG_LEVEL' does not match pattern '^CYCLONE_"),
])
def test_the_values_schema_names_a_wrong_value(setting: str, named: str) -> None:
    done = _run_helm("template", "ci", str(CHART), "--set", setting)
    assert done.returncode != 0
    assert "values don't meet the specifications of the schema" in done.stderr, done.stderr
    assert named in done.stderr
