"""A JSON request body the decoder must not trust, sent to the API's JSON routes on a real
server: a 400 ``invalid_json`` saying what is wrong, never a 500, and nothing stored."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.api import support


@pytest.mark.parametrize(("body", "detail"), [
    (b" \xda", "body is not JSON: not UTF-8 text"),  # found by schemathesis: was a 500
    (b"[" * 100_000, "body is nested deeper than 64 levels"),
    (b'{"name": ' + b"9" * 5000 + b"}", "body holds an integer of 5000 digits"),
    (b'{"name": "demo", "repo": "https://x.example/r.git", "hook_secret": "\\ud800"}',
     "hook_secret is not valid Unicode text"),
])
@pytest.mark.parametrize("path", ["/api/v1/projects", "/api/v1/tokens"])
async def test_an_untrustworthy_json_body_is_a_400(tmp_path: Path, path: str, body: bytes,
                                                   detail: str) -> None:
    async with support.serving(tmp_path, support.Api) as api:
        headers = {**api.headers, "Content-Type": "application/json"}
        async with api.client.post(path, data=body, headers=headers) as response:
            assert response.status == 400, await response.text()
            answer = await response.json()
        assert answer["error"] == "invalid_json" and detail in answer["detail"], answer
        listed = (await api.call("GET", "/api/v1/projects", 200))[0]
        assert listed["projects"] == []
