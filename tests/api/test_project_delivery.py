"""A project's delivery settings, what a caicloud.yml relies on: the registry its build
pushes to and the Kubernetes clusters its deploy entries name (secret names only). Set by
a maintainer (``PATCH /api/v1/projects/{name}``, ``cyclone project add|update``), carried
to the linter in the project's ``Policy``."""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cyclone import cli_client
from shared.pipeline import load
from shared.pipeline.caicloud import PUSHED_IMAGE
from shared.pipeline.resources import ClusterSetting, Policy, RegistrySetting
from shared.projections.projects import fold_project, project_stream
from tests.api import support

REPO = "https://example.com/shop.git"
REGISTRY = {"url": "registry.example:5000/team", "username": "ci",
            "password_secret": "REGISTRY_PASSWORD"}
CLUSTERS = {"prod": {"server": "PROD_SERVER", "token": "PROD_TOKEN", "ca": "PROD_CA",
                     "namespace": "web"},
            "9f261723-0c01": {"server": "C2_SERVER", "token": "C2_TOKEN"}}
CAICLOUD = """
build:
  dockerfile_name: Dockerfile
deploy:
  - application: shop
    cluster: 9f261723-0c01
    partition: shop-test
"""


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[support.Api]:
    async with support.serving(tmp_path, support.Api) as serving:
        yield serving


async def maintainer(api: support.Api) -> support.Api:
    """The same server with a token that is not an admin's (a maintainer of every
    project)."""
    answer, _ = await api.call("POST", "/api/v1/tokens", 201, {"name": "dev"})
    return support.Api(api.client, api.store, answer["token"])


async def policy(api: support.Api, name: str = "shop") -> Policy:
    view = fold_project(await api.store.read(project_stream(name)))
    assert view is not None
    return view.policy


async def test_a_maintainer_sets_the_registry_and_clusters_and_the_linter_gets_them(
        api: support.Api) -> None:
    await api.call("POST", "/api/v1/projects", 201, {"name": "shop", "repo": REPO})
    dev = await maintainer(api)
    shown, _ = await dev.call("PATCH", "/api/v1/projects/shop", 200,
                              {"registry": REGISTRY, "clusters": CLUSTERS})
    assert shown["registry"] == REGISTRY
    assert shown["clusters"] == {
        "prod": CLUSTERS["prod"],
        "9f261723-0c01": {"server": "C2_SERVER", "token": "C2_TOKEN", "ca": "",
                          "namespace": "default"}}
    found = await policy(api)
    assert found.registry == RegistrySetting(**REGISTRY)
    assert found.clusters == {
        "prod": ClusterSetting("PROD_SERVER", "PROD_TOKEN", "PROD_CA", "web"),
        "9f261723-0c01": ClusterSetting("C2_SERVER", "C2_TOKEN")}
    plan = load(CAICLOUD, "caicloud.yml", found).plan
    (deploy,) = plan.job("deploy").steps
    assert deploy.deploy is not None and deploy.deploy.kubernetes is not None
    assert (deploy.deploy.kubernetes.image, deploy.deploy.kubernetes.namespace,
            deploy.deploy.kubernetes.token_secret) == (PUSHED_IMAGE, "shop-test", "C2_TOKEN")


async def test_a_project_is_created_with_them_and_they_are_removed_again(
        api: support.Api) -> None:
    created, _ = await api.call("POST", "/api/v1/projects", 201, {
        "name": "shop", "repo": REPO, "registry": {"url": "127.0.0.1:5000"},
        "clusters": {"prod": CLUSTERS["prod"]}})
    assert created["registry"] == {"url": "127.0.0.1:5000", "username": "",
                                   "password_secret": ""}
    assert (await policy(api)).registry == RegistrySetting(url="127.0.0.1:5000")
    shown, _ = await api.call("PATCH", "/api/v1/projects/shop", 200,
                              {"registry": None, "clusters": {}})
    assert (shown["registry"], shown["clusters"]) == (None, {})
    assert await policy(api) == Policy(trusted=False, project="shop")
    plain, _ = await api.call("POST", "/api/v1/projects", 201, {"name": "other", "repo": REPO})
    assert (plain["registry"], plain["clusters"]) == (None, {})


@pytest.mark.parametrize(("body", "field"), [
    ({"registry": {"url": "https://registry.example/team"}}, "registry.url"),
    ({"registry": {"url": "Registry.Example/Team"}}, "registry.url"),
    ({"registry": {"url": "r.example", "username": "ci"}}, "registry"),
    ({"registry": {"url": "r.example", "username": "ci", "password_secret": "not a name"}},
     "registry.password_secret"),
    ({"registry": {"url": "r.example", "password": "hunter2"}}, "registry.password"),
    ({"clusters": {"prod": {"server": "S"}}}, "clusters.prod.token"),
    ({"clusters": {"prod": {"server": "S", "token": "T", "namespace": "Web_1"}}},
     "clusters.prod.namespace"),
    ({"clusters": {"prod": {"server": "https://k8s.example", "token": "T"}}},
     "clusters.prod.server"),
    ({"clusters": {"-bad": {"server": "S", "token": "T"}}}, "clusters.-bad.[key]"),
])
async def test_bad_settings_are_refused_naming_the_field(api: support.Api, body: dict[str, Any],
                                                        field: str) -> None:
    await api.call("POST", "/api/v1/projects", 201, {"name": "shop", "repo": REPO})
    answer, _ = await api.call("PATCH", "/api/v1/projects/shop", 400, body)
    assert answer["detail"].startswith(f"{field}: "), answer["detail"]
    await api.call("POST", "/api/v1/projects", 400, {"name": "new", "repo": REPO, **body})


def _update_fields(*argv: str) -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    parser.add_argument("name")
    parser.add_argument("--repo")
    cli_client._project_flags(parser)
    return cli_client._project_fields(parser.parse_args(["shop", *argv]))


async def test_cyclone_project_update_flags_make_the_same_request(api: support.Api) -> None:
    fields = _update_fields(
        "--registry", REGISTRY["url"], "--registry-user", "ci",
        "--registry-password-secret", "REGISTRY_PASSWORD",
        "--cluster", "prod=server=PROD_SERVER,token=PROD_TOKEN,ca=PROD_CA,namespace=web",
        "--cluster", "9f261723-0c01=server=C2_SERVER,token=C2_TOKEN")
    assert fields == {"registry": REGISTRY, "clusters": CLUSTERS}
    await api.call("POST", "/api/v1/projects", 201, {"name": "shop", "repo": REPO})
    await api.call("PATCH", "/api/v1/projects/shop", 200, fields)
    assert set((await policy(api)).clusters) == {"prod", "9f261723-0c01"}
    assert _update_fields("--no-registry", "--no-clusters") == {"registry": None, "clusters": {}}
    with pytest.raises(SystemExit):
        _update_fields("--cluster", "prod=server=S")  # no token
    with pytest.raises(SystemExit):
        _update_fields("--registry-user", "ci")  # the whole setting is replaced: no url
