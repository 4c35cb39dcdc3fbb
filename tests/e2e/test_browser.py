"""The web UI in a real browser (Debian's Chromium through Playwright: tests/browser_support.py)
against a real ``cyclone up``: what a person sees and does, each page saved as a screenshot
in ``test-output/browser/<test name>/``."""

from __future__ import annotations

import json

from playwright.sync_api import expect

from tests.browser_support import BrowserPage, ui_dist
from tests.e2e.server_support import CycloneServer


def test_the_root_page_opens_in_chromium(ui_server: CycloneServer,
                                         browser_page: BrowserPage) -> None:
    """``/`` is the app once `make ui` has built it, else the api's JSON 503 saying how."""
    page = browser_page.page
    response = page.goto(f"{ui_server.url}/")
    assert response is not None
    if (ui_dist() / "index.html").is_file():
        assert response.status == 200
        expect(page.locator("#app")).not_to_be_empty()
        browser_page.shot("app")
    else:
        assert response.status == 503
        body = json.loads(page.locator("body").inner_text())
        assert body["error"] == "ui_not_built" and "make ui" in body["detail"]
        browser_page.shot("not-built")
