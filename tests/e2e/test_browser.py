"""The web UI in a real browser (Debian's Chromium through Playwright: tests/browser_support.py)
against a real ``cyclone up`` with Docker steps and a real ``git daemon``: what a person
sees and does. Each page is saved as a screenshot in ``test-output/browser/<test name>/``.

Every wait has a deadline that only catches a hang (the CI machine has 2 cores and is
loaded); how fast the pages are is ``bench/ui.py``'s business.
"""

from __future__ import annotations

import json
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, expect

from tests.api.hooks.support import headers_for
from tests.browser_support import Api, BrowserPage, ui_built, ui_dist, wait_until
from tests.docker_support import TEST_IMAGE, cyclone_leftovers
from tests.e2e.server_support import CycloneServer
from tests.e2e.test_forks import fork_commit, github_fork_pr
from tests.e2e.test_webhooks import SECRET
from tests.git_support import GitRepo, GitServer

PASSWORD = "a browser's password"
ENDED = ("success", "failure", "cancelled", "errored", "skipped", "timeout")
MILLION = 1_000_000

# A step that prints a numbered line twice a second for five minutes: it is still
# printing whenever the test looks, until it is cancelled.
TICKING = f"""
jobs:
  build:
    image: {TEST_IMAGE}
    steps:
      - name: ticks
        run: ["for i in $(seq 1 600); do echo tick-$i; sleep 0.5; done"]
"""

APPROVAL = f"""
jobs:
  test:
    image: {TEST_IMAGE}
    steps:
      - run: echo tested
  release:
    needs: test
    image: {TEST_IMAGE}
    environment: production
    approval: {{role: maintainer}}
    steps:
      - run: echo released
"""

FORK = f"""
jobs:
  build:
    image: {TEST_IMAGE}
    steps:
      - run: echo built from a fork
"""

MILLION_LINES = f"""
jobs:
  print:
    image: {TEST_IMAGE}
    steps:
      - name: lines
        run: ["seq 1 {MILLION}"]
"""


@dataclass
class Site:
    """A ``cyclone up`` serving the UI, its admin's API and a git repository."""

    server: CycloneServer
    admin: Api
    repo: GitRepo

    def project(self, pipeline: str) -> str:
        """The project ``demo`` on the repository, whose main branch holds ``pipeline``."""
        self.repo.commit({".cyclone.yml": pipeline})
        self.admin.call("POST", "/projects", 201, {"name": "demo", "repo": self.repo.url,
                                                   "hook_secret": SECRET})
        return "demo"

    def user(self, name: str, role: str) -> Api:
        """A user with a password and ``role`` in ``demo``; the API with a token of theirs."""
        self.admin.call("POST", "/users", 201, {"name": name, "password": PASSWORD,
                                                "roles": {"demo": role}})
        token = self.admin.call("POST", "/tokens", 201, {"name": name, "user": name})["token"]
        return self.admin.as_user(token)

    def start(self) -> str:
        return str(self.admin.call("POST", "/projects/demo/runs", 202, {})["id"])

    def run(self, run_id: str) -> Any:
        return self.admin.get(f"/runs/{run_id}")

    def ended(self, run_id: str, timeout: float = 180) -> Any:
        def check() -> Any:
            run = self.run(run_id)
            return run if run["status"] in ENDED else None

        return wait_until(check, f"run {run_id} ends", timeout=timeout)


@pytest.fixture
def built() -> None:
    ui_built()


@pytest.fixture
def site(built: None, ui_server: CycloneServer, git_server: GitServer) -> Iterator[Site]:
    yield Site(ui_server, Api(ui_server.url, ui_server.token), git_server.create("demo"))


def log_in(view: BrowserPage, site: Site, name: str) -> Page:
    page = view.page
    page.goto(f"{site.server.url}/")  # not logged in: the app sends us to its login page
    expect(page).to_have_url(re.compile(r"/login"))
    page.get_by_test_id("login-user").fill(name)
    page.get_by_test_id("login-password").fill(PASSWORD)
    view.shot("login")
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("whoami")).to_contain_text(name)
    expect(page).not_to_have_url(re.compile(r"/login"))
    return page


def status_of(page: Page) -> Locator:
    return page.get_by_test_id("run-status")


def log_text(page: Page, text: str | re.Pattern[str]) -> Locator:
    """The log viewer's lines (those in the DOM) whose text is ``text``."""
    pattern = text if isinstance(text, re.Pattern) else re.compile(f"^{re.escape(text)}$")
    return page.locator("[data-test=log-line] .text").filter(has_text=pattern)


def last_tick(page: Page) -> int:
    texts = page.locator("[data-test=log-line] .text").all_inner_texts()
    return max((int(t[5:]) for t in texts if re.fullmatch(r"tick-\d+", t)), default=0)


def test_the_root_page_opens_in_chromium(ui_server: CycloneServer,
                                         browser_page: BrowserPage) -> None:
    """``/`` is the app once `make ui` has built it, else the api's JSON 503 saying how."""
    page = browser_page.page
    response = page.goto(f"{ui_server.url}/")
    assert response is not None
    if (ui_dist() / "index.html").is_file():
        assert response.status == 200
        expect(page.get_by_test_id("login-form")).to_be_visible()
        browser_page.shot("app")
    else:
        assert response.status == 503
        body = json.loads(page.locator("body").inner_text())
        assert body["error"] == "ui_not_built" and "make ui" in body["detail"]
        browser_page.shot("not-built")


def test_a_developer_logs_in_starts_a_run_watches_its_log_live_and_cancels_it(
        site: Site, browser_page: BrowserPage) -> None:
    site.project(TICKING)
    site.user("dev", "developer")
    page = log_in(browser_page, site, "dev")
    expect(page.get_by_test_id("project")).to_contain_text("demo")
    browser_page.shot("projects")

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Runs").click()
    expect(page.get_by_test_id("runs-table")).to_be_visible()
    page.get_by_test_id("start-run").click()
    page.get_by_test_id("start-project").select_option("demo")
    browser_page.shot("start-run-form")
    page.get_by_test_id("start-submit").click()

    expect(page).to_have_url(re.compile(r"/runs/[0-9a-f]{20}$"))
    run_id = page.url.rsplit("/", 1)[1]
    expect(status_of(page)).to_have_attribute("data-status", "running")
    expect(log_text(page, re.compile(r"^tick-\d+$")).last).to_be_visible()
    seen = last_tick(page)
    step = site.run(run_id)["jobs"][0]["steps"][0]
    assert (step["name"], step["status"]) == ("ticks", "running")  # still printing
    # lines printed after the page had its log come on their own (no reload)
    expect(log_text(page, f"tick-{seen + 3}")).to_be_visible()
    assert site.run(run_id)["status"] == "running"
    browser_page.shot("run-live-log")

    page.once("dialog", lambda dialog: dialog.accept())  # "Cancel run …?"
    page.get_by_test_id("cancel").click()
    expect(status_of(page)).to_have_attribute("data-status", "cancelled")
    expect(page.get_by_test_id("cancel")).to_have_count(0)
    browser_page.shot("cancelled")
    run = site.ended(run_id)
    assert run["status"] == "cancelled"
    assert run["jobs"][0]["status"] == "cancelled"
    # the step has stopped: its container is gone, and so is everything else of the run
    wait_until(lambda: not cyclone_leftovers(run_id), "the run's containers removed")


def test_a_viewer_sees_no_cancel_button_and_the_api_refuses_them(
        site: Site, browser_page: BrowserPage) -> None:
    site.project(TICKING)
    viewer = site.user("val", "viewer")
    run_id = site.start()
    page = log_in(browser_page, site, "val")
    page.goto(f"{site.server.url}/runs/{run_id}")
    expect(status_of(page)).to_have_attribute("data-status", "running")
    expect(page.get_by_test_id("rerun")).to_be_visible()  # the run's actions are drawn...
    expect(page.get_by_test_id("cancel")).to_have_count(0)  # ...but not cancel
    browser_page.shot("run-as-viewer")

    # The API refuses them all the same: through the page's own session (cookie and CSRF
    # token, as the app would send it) and with their API token.
    answer = page.evaluate("""async (id) => {
        const session = await (await fetch('/api/v1/session')).json()
        const response = await fetch(`/api/v1/runs/${id}/cancel`, {method: 'POST',
            headers: {'X-CSRF-Token': session.csrf_token, 'Content-Type': 'application/json'},
            body: '{}'})
        return {status: response.status, body: await response.json()}
    }""", run_id)
    assert answer["status"] == 403, answer
    refused = viewer.call("POST", f"/runs/{run_id}/cancel", 403, {})
    assert "developer" in refused["detail"]
    assert site.run(run_id)["status"] == "running"
    assert not site.run(run_id)["cancel_requested"]

    site.admin.call("POST", f"/runs/{run_id}/cancel", 202, {})
    expect(status_of(page)).to_have_attribute("data-status", "cancelled")
    browser_page.shot("cancelled-by-admin")


def test_a_maintainer_approves_a_waiting_job(site: Site, browser_page: BrowserPage) -> None:
    site.project(APPROVAL)
    site.user("lead", "maintainer")
    run_id = site.start()
    page = log_in(browser_page, site, "lead")

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Runs").click()
    row = page.locator(f"[data-test=run-row][data-run-id='{run_id}']")
    expect(row).to_be_visible()
    browser_page.shot("runs")
    row.get_by_test_id("run-link").click()
    expect(page).to_have_url(re.compile(f"/runs/{run_id}$"))

    reason = page.locator("[data-test=waiting-reason][data-job=release]")
    expect(reason).to_have_attribute("data-kind", "job_approval")
    expect(reason).to_contain_text("maintainer")
    release = page.locator("[data-test=graph-node][data-job=release]")
    expect(release).to_have_attribute("data-status", "waiting")
    expect(page.locator("[data-test=graph-node][data-job=test]")).to_have_attribute(
        "data-status", "success")
    waiting = page.locator("[data-test=job-approval][data-job=release]")
    waiting.get_by_test_id("approval-comment").fill("ship it")
    browser_page.shot("waiting-for-approval")
    waiting.get_by_test_id("approve-job").click()

    expect(release).to_have_attribute("data-status", "success")
    expect(status_of(page)).to_have_attribute("data-status", "success")
    expect(page.get_by_test_id("waiting")).to_have_count(0)
    browser_page.shot("approved")
    jobs = {j["name"]: j for j in site.ended(run_id)["jobs"]}
    assert (jobs["release"]["status"], jobs["release"]["approved_by"]) == ("success", "lead")


def test_a_fork_pr_run_shows_why_it_waits_and_runs_once_approved(
        site: Site, browser_page: BrowserPage) -> None:
    site.project(FORK)
    site.user("lead", "maintainer")
    sha = fork_commit(site.repo, 7)
    body = github_fork_pr(site.repo, 7, sha)
    headers = headers_for("github", "pull_request", body, secret=SECRET, delivery="pr-7")
    [run_id] = site.admin.send("POST", "/hooks/github/demo", 202, body, headers,
                               token=False)["runs"]

    page = log_in(browser_page, site, "lead")
    page.goto(f"{site.server.url}/runs/{run_id}")
    expect(status_of(page)).to_have_attribute("data-status", "requested")
    reason = page.locator("[data-test=waiting-reason][data-kind=approval]")
    expect(reason).to_contain_text("pull request #7 from a fork")
    expect(page.get_by_test_id("approve-run")).to_be_visible()
    browser_page.shot("fork-run-waiting")
    assert site.run(run_id)["status"] == "requested"  # nothing of it ran meanwhile

    page.get_by_test_id("approve-run").click()
    expect(status_of(page)).to_have_attribute("data-status", "success")
    expect(page.get_by_test_id("waiting")).to_have_count(0)
    expect(log_text(page, "built from a fork")).to_be_visible()
    browser_page.shot("fork-run-approved")
    run = site.ended(run_id)
    assert (run["status"], run["commit"], run["approved_by"]) == ("success", sha, "lead")


def test_a_million_line_log_opens_scrolls_to_its_end_and_finds_a_line(
        site: Site, browser_page: BrowserPage) -> None:
    site.project(MILLION_LINES)
    site.user("dev", "developer")
    run_id = site.start()
    run = site.ended(run_id, timeout=900)
    assert run["status"] == "success", run["reason"]
    # the checkout's lines, the command's echo, then every number: N at index ``at + N``
    total = run["log_lines"]
    at = total - 1 - MILLION
    assert at > 0, run

    page = log_in(browser_page, site, "dev")
    page.goto(f"{site.server.url}/runs/{run_id}")
    viewer = page.get_by_test_id("log-viewer")
    expect(viewer).to_have_attribute("data-lines", str(total))
    expect(page.get_by_test_id("log-count")).to_contain_text(f"{total:,} lines")
    expect(log_text(page, f"+ seq 1 {MILLION}")).to_be_visible()
    viewer.scroll_into_view_if_needed()
    browser_page.shot("million-line-log")

    # to the end, as a reader does: the log focused, the End key
    lines = page.get_by_test_id("log-lines")
    lines.click()
    lines.press("End")
    last = page.locator(f"[data-test=log-line][data-index='{total - 1}']")
    expect(last).to_be_in_viewport()
    expect(last.locator(".text")).to_have_text(str(MILLION))
    browser_page.shot("million-line-log-end")

    # a line by search: the server's search, the viewer jumps to the match
    search = page.get_by_test_id("log-search")
    search.fill("765432")
    search.press("Enter")
    expect(page.get_by_test_id("log-search-status")).to_have_text("1 of 1")
    found = page.locator(f"[data-test=log-line][data-index='{at + 765432}']")
    expect(found).to_be_in_viewport()
    expect(found.locator(".text")).to_have_text("765432")
    expect(found).to_have_class(re.compile(r"\bpicked\b"))
    expect(page).to_have_url(re.compile(f"#L{at + 765432 + 1}$"))
    browser_page.shot("million-line-log-search")


KEPT = f"""
jobs:
  build:
    image: {TEST_IMAGE}
    artifacts: {{name: site, paths: [site/]}}
    reports: {{junit: "reports/*.xml"}}
    steps:
      - run:
          - mkdir -p site reports && echo '<h1>hi</h1>' > site/index.html
          - echo "version=3.1" >> "$CYCLONE_OUTPUT"
          - |
            cat > reports/junit.xml <<XML
            <testsuite name="site" tests="2">
              <testcase classname="site" name="renders" time="0.5"/>
              <testcase classname="site" name="links" time="0.2"><failure message="404 on /about">x</failure></testcase>
            </testsuite>
            XML
"""


def test_a_viewer_sees_the_runs_tests_outputs_and_downloads_its_artifact(
        site: Site, browser_page: BrowserPage, tmp_path: Any) -> None:
    site.project(KEPT)
    site.user("val", "viewer")
    run_id = site.start()
    site.ended(run_id)
    page = log_in(browser_page, site, "val")
    page.goto(f"{site.server.url}/runs/{run_id}")

    failure = page.get_by_test_id("test-failure")
    expect(failure).to_contain_text("site.links")
    expect(failure).to_contain_text("404 on /about")
    expect(page.locator("[data-test=test-report]")).to_contain_text("2")
    expect(page.get_by_test_id("output")).to_contain_text("3.1")
    browser_page.shot("kept")
    with page.expect_download() as download:
        page.get_by_test_id("artifact").get_by_role("link", name="site").click()
    saved = tmp_path / "site.tar"
    download.value.save_as(saved)
    with tarfile.open(saved) as tar:
        assert tar.extractfile("site/index.html").read() == b"<h1>hi</h1>\n"  # type: ignore[union-attr]
