"""What runs keep, through ``cyclone up`` and its command line (Docker executor, a Git
project): an artifact downloaded and checked, a test report read by ``cyclone tests``, and
a test that failed, then passed when ``cyclone rerun --failed`` ran it again on the same
commit, marked flaky. The flip comes from a host directory the (trusted) project mounts:
the test decides when the test passes, without a sleep."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import aiohttp

from tests.docker_support import TEST_IMAGE
from tests.e2e.server_support import CycloneServer
from tests.e2e.test_cli_client import cyclone
from tests.e2e.test_forks import call
from tests.e2e.test_webhooks import ended
from tests.git_support import GitServer


def pipeline(flags: Path) -> str:
    return f"""
jobs:
  build:
    image: {TEST_IMAGE}
    artifacts: {{name: site, paths: [site/]}}
    steps:
      - run: ["mkdir -p site/css", "echo '<h1>hi</h1>' > site/index.html",
              "echo 'h1 {{}}' > site/css/main.css"]
  test:
    image: {TEST_IMAGE}
    needs: build
    reports: {{junit: "reports/*.xml"}}
    steps:
      - volumes: ["{flags}:/flags:ro"]
        run:
          - mkdir -p reports
          - if [ -e /flags/pass ]; then OUTCOME=''; else OUTCOME='<failure message="timing">boom</failure>'; fi
          - |
            cat > reports/junit.xml <<XML
            <testsuite name="site" tests="2">
              <testcase classname="site" name="renders" time="0.5"/>
              <testcase classname="site" name="sometimes" time="1.5">$OUTCOME</testcase>
            </testsuite>
            XML
          - test -e /flags/pass
"""


async def test_an_artifact_download_a_report_and_a_flaky_test_after_rerun_failed(
        server: CycloneServer, git_server: GitServer, tmp_path: Path) -> None:
    flags = tmp_path / "flags"
    flags.mkdir()
    repo = git_server.create("site")
    repo.commit({".cyclone.yml": pipeline(flags)})
    env = {**os.environ, "CYCLONE_SERVER": server.url, "CYCLONE_TOKEN": server.token}
    api = f"{server.url}/api/v1"
    async with aiohttp.ClientSession() as http:
        await call(http, "POST", f"{api}/projects", server.token, 201,
                   {"name": "site", "repo": repo.url, "trusted": True})
        first = (await call(http, "POST", f"{api}/projects/site/runs", server.token, 202, {}))
        done = await ended(http, server, first["id"])
        assert done["status"] == "failure", done

        out = tmp_path / "got"
        got = await cyclone(env, "artifacts", first["id"], "site", "--extract", str(out))
        assert got.code == 0, got.err
        assert (out / "site" / "index.html").read_text() == "<h1>hi</h1>\n"
        listed = await cyclone(env, "artifacts", first["id"])
        assert "site" in listed.out and "2" in listed.out  # two files

        failing = await cyclone(env, "tests", first["id"], "--json")
        report = json.loads(failing.out)
        assert (report["tests"], report["failed"]) == (2, 1), report
        assert [f["name"] for f in report["failures"]] == ["sometimes"]

        (flags / "pass").touch()
        rerun = await cyclone(env, "rerun", first["id"], "--failed", "--follow")
        assert rerun.code == 0, rerun.out + rerun.err
        runs = await call(http, "GET", f"{api}/runs?project=site", server.token, 200)
        second = next(r["id"] for r in runs["runs"] if r["id"] != first["id"])
        shown = await cyclone(env, "tests", first["id"])
        assert "flaky" in shown.out, shown.out  # failed here, passed in the rerun
        events = await call(http, "GET", f"{api}/runs/{second}/events", server.token, 200)
        reused = [e["data"] for e in events["events"] if e["type"] == "JobReused"]
        assert [(r["job"], r["from_run"]) for r in reused] == [("build", first["id"])]

        tar_path = tmp_path / "site.tar"
        again = await cyclone(env, "artifacts", second, "site", "-o", str(tar_path))
        assert again.code == 0, again.err  # the reused job's artifact, from the first run
        with tarfile.open(tar_path) as tar:
            assert sorted(m.name for m in tar if m.isfile()) == ["site/css/main.css",
                                                                 "site/index.html"]
