"""Random mutations and truncations of valid files give a Plan or a PipelineError, nothing
else, and every diagnostic is placed in the file."""

from __future__ import annotations

import random
from pathlib import Path

from shared.errors import PipelineError
from shared.pipeline import load
from shared.pipeline.lint import lint
from shared.pipeline.plan import Plan

FIXTURES = Path(__file__).parent / "fixtures"
SEEDS = [p.read_text() for p in sorted(FIXTURES.glob("*.yml"))]
PIECES = [*" :-[]{}\n\t'\"#&*!|>%@`,?019az$", "${{ matrix.python }}", "BUILT_IMAGE",
          "<<: *a", "&a ", "*a", "!!int ", "!tag ", "null", "~", "\x00", "\u00e9", "true",
          "- ", "    ", "jobs:", "needs: [", "steps: []", "timeout: -1"]
CASES = 1500


def _mutate(rng: random.Random, text: str) -> str:
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(text) + 1)
        op = rng.randrange(5)
        if op == 0:
            text = text[:at]
        elif op == 1:
            text = text[:at] + rng.choice(PIECES) + text[at:]
        elif op == 2:
            text = text[:at] + text[at + rng.randint(1, 12):]
        elif op == 3:
            lines = text.split("\n")
            a, b = rng.randrange(len(lines)), rng.randrange(len(lines))
            lines[a], lines[b] = lines[b], lines[a]
            text = "\n".join(lines)
        else:
            text = text.replace(rng.choice(PIECES[:12]), rng.choice(PIECES), 1)
    return text


def test_mutated_files_give_a_plan_or_a_pipeline_error() -> None:
    rng = random.Random(20240607)
    outcomes = {"plan": 0, "error": 0}
    for case in range(CASES):
        text = _mutate(rng, rng.choice(SEEDS))
        file = rng.choice([".cyclone.yml", "caicloud.yml", "pipeline.yml"])
        try:
            result = load(text, file)
        except PipelineError as exc:
            outcomes["error"] += 1
            assert exc.diagnostics, f"case {case}: an error without diagnostics"
            assert exc.diagnostics[0].severity == "error"
            assert all(d.file == file and d.line <= text.count("\n") + 1
                       for d in exc.diagnostics), f"case {case}: {exc}"
            continue
        except Exception as exc:  # the property under test: nothing else escapes
            raise AssertionError(f"case {case} raised {exc!r} for:\n{text!r}") from exc
        outcomes["plan"] += 1
        assert isinstance(result.plan, Plan)
        assert all(d.severity == "warning" for d in result.warnings)
        assert [d for d in lint(text, file) if d.severity == "error"] == []
    # the mutations hit both sides, or the test proves little
    assert outcomes["plan"] > 10 and outcomes["error"] > 100, outcomes
