"""The original Cyclone's whole flow from ``examples/caicloud/caicloud.yml``, on a real
``cyclone up``: pre_build in the source's own path writing outputs, the build section's
image pushed to a real registry (the project's registry setting, with a login), the
integration and post_build sections running that image by its digest, and the deploy
entry setting the Deployment of the project's cluster (the Kubernetes API stand-in, its
server, token and CA from the project's secrets) to that digest."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from tests.e2e.server_support import CycloneServer
from tests.e2e.test_forks import call
from tests.e2e.test_webhooks import ended
from tests.git_support import GitServer
from tests.k8s_standin import K8sStandin
from tests.registry_support import RegistryServer

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "caicloud" / "caicloud.yml"


async def test_the_originals_flow_builds_pushes_tests_the_image_and_deploys_its_digest(
        server: CycloneServer, git_server: GitServer, auth_registry: RegistryServer,
        k8s: K8sStandin) -> None:
    k8s.add("demo", {"demo": "registry.example/team/demo:old", "sidecar": "proxy:1"},
            namespace="web")
    repo = git_server.create("demo")
    commit = repo.commit({"caicloud.yml": EXAMPLE.read_text()})
    api, admin = f"{server.url}/api/v1", server.token
    async with aiohttp.ClientSession() as http:
        await call(http, "POST", f"{api}/projects", admin, 201, {
            "name": "demo", "repo": repo.url, "pipeline_file": "caicloud.yml",
            "registry": {"url": f"{auth_registry.host}/team", "username": auth_registry.username,
                         "password_secret": "REGISTRY_PASSWORD"},
            "clusters": {"prod": {"server": "PROD_SERVER", "token": "PROD_TOKEN",
                                  "ca": "PROD_CA", "namespace": "web"}}})
        for name, value in (("REGISTRY_PASSWORD", auth_registry.password),
                            ("PROD_SERVER", k8s.url), ("PROD_TOKEN", k8s.token),
                            ("PROD_CA", k8s.ca_pem)):
            await call(http, "PUT", f"{api}/projects/demo/secrets/{name}", admin, 200,
                       {"value": value})
        run_id = (await call(http, "POST", f"{api}/projects/demo/runs", admin, 202, {}))["id"]
        run = await ended(http, server, run_id)
        assert run["status"] == "success", run
        [image] = run["images"]
        assert image["tags"] == [f"{auth_registry.host}/team/demo:{commit}"]
        assert image["digest"] == auth_registry.manifest_digest("team/demo", commit)
        reference = f"{auth_registry.host}/team/demo@{image['digest']}"
        [deployment] = run["deployments"]
        assert (deployment["environment"], deployment["state"]) == ("prod", "succeeded")
        assert deployment["image"] == reference
        assert deployment["previous"] == "registry.example/team/demo:old"
        assert k8s.deployment("demo", "web").images == {"demo": reference,
                                                        "sidecar": "proxy:1"}
        async with http.get(f"{api}/runs/{run_id}/logs",
                            headers={"Authorization": f"Bearer {admin}"}) as response:
            log = await response.text()
        assert "built demo" in log  # integration ran in the pushed image (its app.txt)
        for secret in (auth_registry.password, k8s.token):
            assert secret not in log
