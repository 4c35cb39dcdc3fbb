"""Hypothesis settings profiles for the fuzzers (see README, "Fuzzing"), loaded when a
fuzz module imports this one.

* ``ci`` (the default): a bounded budget, so the whole suite's fuzzers take a minute or
  two on a loaded two-core machine; no example database is written.
* ``fuzz``: the long run ``make fuzz`` selects (``HYPOTHESIS_PROFILE=fuzz``), keeping
  what it finds in ``.hypothesis/`` so a failure is replayed first next time.

``FUZZ_SCALE`` multiplies each test's example count (its ``examples(n)``), so a test
states how much of the budget it takes in one place.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings
from hypothesis.database import DirectoryBasedExampleDatabase

__all__ = ["PROFILE", "SCALE", "examples"]

_SLOW = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]

settings.register_profile("ci", deadline=None, database=None, print_blob=True,
                          suppress_health_check=_SLOW)
settings.register_profile("fuzz", deadline=None, print_blob=True, suppress_health_check=_SLOW,
                          database=DirectoryBasedExampleDatabase(".hypothesis/examples"))
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
settings.load_profile(PROFILE)
# How many times the ci budget a profile runs.
SCALE = {"ci": 1, "fuzz": 50}.get(PROFILE, 1)


def examples(n: int) -> settings:
    """Settings running ``n`` examples under ``ci``, ``SCALE`` times as many otherwise."""
    return settings(max_examples=n * SCALE)
