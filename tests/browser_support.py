"""Real-browser fixtures: Debian's Chromium (``/usr/bin/chromium``, installed by
``scripts/setup-infra-browser.sh``) driven by Playwright's sync API, whose Python package
brings its own driver (no ``playwright install``: no browser is ever downloaded).

* ``chromium`` (session fixture): one headless Chromium for the whole session
  (``--no-sandbox`` when running as root, as CI does). Without ``/usr/bin/chromium`` the
  test is SKIPPED with a loud reason locally and FAILS when ``CI`` is set.
* ``browser_page`` (fixture): a fresh browser context (no cookies shared between tests)
  and a page in it, as a ``BrowserPage`` (``page.get_by_test_id(X)`` finds the UI's
  ``data-test="X"``): ``shot("runs")`` saves
  ``test-output/browser/<test name>/NN-runs.png`` (the folder is emptied when the test
  starts, its path printed, and listed at the end of the session); a last screenshot
  (``NN-end.png``) and the page's console (``console.log``) are saved whatever the
  outcome, and an uncaught error in the page fails the test.
* ``ui_server`` (fixture): a real ``cyclone up`` (``CycloneServer``, Docker steps) that
  serves the web UI: ``CYCLONE_UI_DIST`` is set to the build under test, the package's
  own ``services/api/web/dist`` unless the environment names another.
* ``ui_built()``: skip (fail under CI) unless that build exists (``make ui``).
* ``Api``: the JSON API over plain HTTP, for what a test arranges or checks behind the
  browser's back (users, tokens, projects, refusals); ``wait_until``: a deadline on a
  condition, for the API (the page has Playwright's own ``expect``).

Waits are long (``TIMEOUT_MS``): they only catch a hang on a loaded 2-core machine; how
fast the UI is belongs to ``bench/ui.py``.

Playwright's sync API runs its event loop inside a greenlet and leaves it marked as the
thread's running loop between calls, which would make every later ``asyncio.run`` (and
pytest-asyncio's own loop) fail with "another loop is running". So the loop is *parked*
(unmarked) whenever no browser test is running, and marked again for the next one:
the session's Chromium coexists with the async tests of the rest of the suite.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, expect, sync_playwright

from services.api.context import UI_DIST
from tests.e2e.server_support import CycloneServer

__all__ = ["CHROMIUM", "OUTPUT", "TIMEOUT_MS", "Api", "BrowserPage", "browser_page_fixture",
           "chromium_fixture", "launch_chromium", "pytest_terminal_summary", "ui_built",
           "ui_dist", "ui_server_fixture", "wait_until"]

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
OUTPUT = ROOT / "test-output" / "browser"
TIMEOUT_MS = 90_000  # any single wait of a page: only a hang comes near it
SETUP_HINT = "run scripts/setup-infra-browser.sh (Debian's chromium package)"

_written: list[Path] = []  # the folders this session saved screenshots in


def launch_chromium(playwright: Playwright) -> Browser:
    """Debian's Chromium, headless (the benchmark launches it the same way); the UI's
    ``data-test="X"`` attributes are what ``get_by_test_id("X")`` finds."""
    playwright.selectors.set_test_id_attribute("data-test")
    args = ["--no-sandbox"] if os.geteuid() == 0 else []  # Chromium refuses root otherwise
    return playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                      args=[*args, "--disable-dev-shm-usage"])


def ui_dist() -> Path:
    """The build of the web UI under test: ``$CYCLONE_UI_DIST`` or the package's own."""
    named = os.environ.get("CYCLONE_UI_DIST")
    return Path(named).expanduser() if named else UI_DIST


def ui_built() -> None:
    """Skip (fail under CI) unless the web UI is built."""
    index = ui_dist() / "index.html"
    if not index.is_file():
        _unusable(f"the web UI is not built ({index} is missing): run `make ui`")


def _unusable(reason: str) -> None:
    message = f"BROWSER TESTS NOT RUN: {reason}"
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI is set: browser tests must not be skipped)", pytrace=False)
    pytest.skip(message)


class Chromium:
    """The session's browser, and the event loop its Playwright runs on, parked (not
    marked as the thread's running loop) between browser tests: see the module's doc."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self._loop: asyncio.AbstractEventLoop | None = None

    def park(self) -> None:
        self._loop = asyncio._get_running_loop()
        asyncio._set_running_loop(None)

    def resume(self) -> None:
        asyncio._set_running_loop(self._loop)


@pytest.fixture(name="chromium", scope="session")
def chromium_fixture() -> Iterator[Chromium]:
    if not os.access(CHROMIUM, os.X_OK):
        _unusable(f"{CHROMIUM} is missing; {SETUP_HINT}")
    playwright = sync_playwright().start()
    try:
        chromium = Chromium(launch_chromium(playwright))
        expect.set_options(timeout=TIMEOUT_MS)
    except BaseException:
        playwright.stop()
        raise
    chromium.park()
    try:
        yield chromium
    finally:
        chromium.resume()
        try:
            chromium.browser.close()
        finally:
            playwright.stop()  # unmarks the loop and closes it


@dataclass
class BrowserPage:
    """A page of its own for one test, and the folder its screenshots go to."""

    page: Page
    out: Path
    shots: list[Path] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # uncaught errors in the page
    console: list[str] = field(default_factory=list)

    def shot(self, name: str, full_page: bool = False) -> Path:
        """Save a screenshot as ``NN-<name>.png`` in the test's folder."""
        path = self.out / f"{len(self.shots) + 1:02d}-{_safe(name)}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        self.shots.append(path)
        return path

    def _on_console(self, message: ConsoleMessage) -> None:
        self.console.append(f"{message.type}: {message.text}")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "page"


@pytest.fixture(name="browser_page")
def browser_page_fixture(chromium: Chromium, request: pytest.FixtureRequest
                         ) -> Iterator[BrowserPage]:
    out = OUTPUT / _safe(request.node.name)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    _written.append(out)
    print(f"browser screenshots: {out}")
    chromium.resume()
    try:
        context = chromium.browser.new_context(viewport={"width": 1280, "height": 800})
        context.set_default_timeout(TIMEOUT_MS)
        view = BrowserPage(context.new_page(), out)
        view.page.on("console", view._on_console)
        view.page.on("pageerror", lambda error: view.errors.append(f"{error.name}: "
                                                                   f"{error.message}"))
        try:
            yield view  # pytest resumes here whatever the test's outcome
        finally:
            try:
                view.shot("end")
            except Exception as exc:  # a crashed page: the test's own failure says more
                print(f"no final screenshot: {exc}")
            (out / "console.log").write_text("".join(f"{line}\n" for line in view.console))
            context.close()
    finally:
        chromium.park()
    errors = view.errors
    assert not errors, f"uncaught errors in the page: {errors}"


@pytest.fixture(name="ui_server")
def ui_server_fixture(tmp_path: Path, docker_ready: None) -> Iterator[CycloneServer]:
    """``cyclone up`` serving the build of the UI under test (built or not)."""
    server = CycloneServer(tmp_path / "cyclone-home")
    server.env["CYCLONE_UI_DIST"] = str(ui_dist())
    server.start()
    try:
        yield server
    finally:
        server.stop()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say where the screenshots are (a hook: tests/conftest.py imports it)."""
    if _written:
        root = os.path.relpath(OUTPUT, Path.cwd())
        terminalreporter.write_line(f"browser screenshots: {len(_written)} test(s) in {root}/")


class ApiFailure(AssertionError):
    pass


@dataclass
class Api:
    """The JSON API of ``url`` with one user's token (stdlib HTTP: no event loop)."""

    url: str
    token: str

    def call(self, method: str, path: str, status: int, body: Any = None) -> Any:
        """The answer's JSON; fails unless its status is ``status``."""
        data = None if body is None else json.dumps(body).encode()
        return self.send(method, path, status, data, {"Content-Type": "application/json"})

    def send(self, method: str, path: str, status: int, data: bytes | None = None,
             headers: dict[str, str] | None = None, token: bool = True) -> Any:
        """``data`` as it is, with ``headers`` (and the token unless ``token`` is false)."""
        sent = {**(headers or {}), **({"Authorization": f"Bearer {self.token}"} if token else {})}
        request = urllib.request.Request(f"{self.url}/api/v1{path}", data=data, method=method,
                                         headers=sent)
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_MS / 1000) as response:
                got, text = response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            got, text = error.code, error.read().decode()
        if got != status:
            raise ApiFailure(f"{method} {path}: {got}, not {status}: {text}")
        return json.loads(text) if text else None

    def get(self, path: str) -> Any:
        return self.call("GET", path, 200)

    def as_user(self, token: str) -> Api:
        return Api(self.url, token)


def wait_until(check: Callable[[], T | None], what: str, timeout: float = TIMEOUT_MS / 1000,
               interval: float = 0.2) -> T:
    """``check()`` once it is truthy; fails after ``timeout`` s (which only catches a hang)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
