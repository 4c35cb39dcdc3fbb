"""MemoryRunViews: the RunViews contract."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from shared.adapters.runviews.memory import MemoryRunViews
from shared.ports.runviews import RunViews
from tests.contracts.runviews import RunViewsContract, run_ids, view_of


class TestMemoryRunViews(RunViewsContract):
    @pytest.fixture
    async def views(self) -> AsyncIterator[RunViews]:
        views = MemoryRunViews()
        yield views
        await views.close()


async def test_runs_is_the_dict_of_stored_views() -> None:
    views = MemoryRunViews()
    run = run_ids(1)[0]
    await views.put(view_of(run, upto=4))
    await views.put(view_of(run, upto=2))

    assert views.runs == {run: view_of(run, upto=4)}
