"""The pipeline front end: YAML text -> lenient file types -> lint -> compiled ``Plan``.

Backends (executors) and the event manager see only ``shared.pipeline.plan``;
nothing past ``compile`` sees YAML types.
"""

from __future__ import annotations

from shared.pipeline.caicloud import BUILT_IMAGE
from shared.pipeline.compile import LoadResult, load
from shared.pipeline.lint import detect_format, lint

__all__ = ["BUILT_IMAGE", "LoadResult", "detect_format", "lint", "load"]
