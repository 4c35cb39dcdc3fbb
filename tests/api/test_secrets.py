"""The secret routes over real HTTP, and the start-up migration of project env values
named like secrets."""

from __future__ import annotations

from pathlib import Path

from services.api.context import CONTEXT
from services.api.secrets import migrate_env
from shared import events as ev
from shared.events import NewEvent
from shared.projections.projects import fold_project, project_stream
from shared.secretbox import SecretBox, new_key
from shared.secrets import SecretStore
from tests.api.support import Api, serving


async def test_names_and_dates_only_and_refusals_with_reasons(tmp_path: Path) -> None:
    async with serving(tmp_path, Api) as api:
        assert api.client.app is not None
        api.client.app[CONTEXT].secrets = SecretStore(
            api.store, SecretBox.parse(new_key(), "CYCLONE_SECRET_KEY"))
        await api.call("POST", "/api/v1/projects", 201, {"name": "demo", "repo": "/r"})
        shown, text = await api.call("PUT", "/api/v1/projects/demo/secrets/API_KEY", 200,
                                     {"value": "k-1234567"})
        assert shown["name"] == "API_KEY" and "k-1234567" not in text
        listed, text = await api.call("GET", "/api/v1/projects/demo/secrets", 200)
        assert [s["name"] for s in listed["secrets"]] == ["API_KEY"]
        assert set(listed["secrets"][0]) == {"name", "scope", "implicit", "created_at",
                                             "updated_at"}
        bad, _ = await api.call("PUT", "/api/v1/secrets/9LIVES", 400, {"value": "k-1234567"})
        assert "not an environment variable name" in bad["detail"]
        short, _ = await api.call("PUT", "/api/v1/secrets/PIN", 400, {"value": "123"})
        assert "a secret needs at least 4" in short["detail"]
        await api.call("PUT", "/api/v1/projects/nope/secrets/A_KEY", 404, {"value": "abcd"})
        async with api.client.delete("/api/v1/projects/demo/secrets/API_KEY",
                                     headers=api.headers) as response:
            assert response.status == 204
        await api.call("DELETE", "/api/v1/projects/demo/secrets/API_KEY", 404)
        events = await api.store.read("secrets")
        assert [e.meta for e in events] == [{"actor": "admin"}, {"actor": "admin"}]


async def test_env_values_named_like_secrets_move_to_implicit_secrets_once(
        tmp_path: Path) -> None:
    async with serving(tmp_path, Api) as api:
        await api.call("POST", "/api/v1/projects", 201, {
            "name": "demo", "repo": "/r", "env": {"PLAIN": "x", "HOOK_KEY": "hk-12345"},
            "notify": [{"webhook": {"url": "https://bot.example/x", "secret": "${HOOK_KEY}"}}]})
        # as a Cyclone from before the secret store took it (the API refuses it now)
        older = ev.ProjectUpdated(changes={"env": {"DB_PASSWORD": "pw-12345", "PLAIN": "x",
                                                   "HOOK_KEY": "hk-12345"}})
        await api.store.append(project_stream("demo"), [NewEvent(older)], 1)
        secrets = SecretStore(api.store, SecretBox.parse(new_key(), "CYCLONE_SECRET_KEY"))
        assert await migrate_env(api.store, secrets) == ["demo/DB_PASSWORD"]
        assert await migrate_env(api.store, secrets) == []
        view = fold_project(await api.store.read(project_stream("demo")))
        assert view is not None and view.env == {"PLAIN": "x", "HOOK_KEY": "hk-12345"}
        assert await secrets.values("demo") == {"DB_PASSWORD": "pw-12345"}
        assert [s.implicit for s in await secrets.listed("demo")] == [True]
