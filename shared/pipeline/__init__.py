"""The pipeline front end: YAML text -> lenient file types -> lint -> compiled ``Plan``.

Backends (executors) and the event manager see only ``shared.pipeline.plan``;
nothing past ``compile`` sees YAML types.

The names below are imported when first used, not with the package: every event and run
view imports ``shared.pipeline.plan``, and the front end behind ``load`` (the pydantic
schema above all) took ~0.7 s of each CLI command's start. ``lint`` is imported from
``shared.pipeline.lint``: a submodule of that name would shadow a lazy one here.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared.pipeline.caicloud import BUILT_IMAGE
    from shared.pipeline.compile import LoadResult, load
    from shared.pipeline.lint import detect_format

__all__ = ["BUILT_IMAGE", "LoadResult", "detect_format", "load"]

_WHERE = {"BUILT_IMAGE": "caicloud", "LoadResult": "compile", "load": "compile",
          "detect_format": "lint"}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
