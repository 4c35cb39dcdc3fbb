"""Scenario fixtures (Woodpecker's e2e style): fixtures/NAME.yml beside NAME.json.

NAME.json is either the expected ``Plan.to_data()`` (plus an optional "warnings"
list of diagnostic strings), or a list of the expected diagnostic strings of a
file that does not load. The file is read under its own name, so caicloud
fixtures are recognised by their top-level keys.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.errors import PipelineError
from shared.pipeline import load
from shared.pipeline.lint import lint
from shared.pipeline.plan import Plan

FIXTURES = Path(__file__).parent / "fixtures"
SCENARIOS = sorted(p.stem for p in FIXTURES.glob("*.yml"))


def test_there_are_enough_scenarios_each_with_its_expectation() -> None:
    assert len(SCENARIOS) >= 6
    missing = [name for name in SCENARIOS if not (FIXTURES / f"{name}.json").exists()]
    assert missing == []


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario(name: str) -> None:
    text = (FIXTURES / f"{name}.yml").read_text()
    file = f"{name}.yml"
    expected = json.loads((FIXTURES / f"{name}.json").read_text())
    if isinstance(expected, list):
        with pytest.raises(PipelineError) as caught:
            load(text, file)
        assert [str(d) for d in caught.value.diagnostics] == expected
        assert [str(d) for d in lint(text, file)] == expected
        return
    warnings = expected.pop("warnings", [])
    result = load(text, file)
    assert json.loads(json.dumps(result.plan.to_data())) == expected
    assert [str(w) for w in result.warnings] == warnings
    assert [str(d) for d in lint(text, file)] == warnings
    # the plan survives the JSON round trip it takes through the RunPlanned event
    assert Plan.from_data(json.loads(json.dumps(result.plan.to_data()))) == result.plan
