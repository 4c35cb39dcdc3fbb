"""Webhook ingestion, the forge-specific part: verify a delivery's authenticity and turn
its payload into a ``shared.forge.ForgeEvent`` (see ``providers`` for the contract)."""

from __future__ import annotations

from services.api.hooks.decode import delivery_header, lower_headers
from services.api.hooks.errors import HookAuthError, Ignored, PayloadError
from services.api.hooks.providers import PROVIDERS, parse, verify

__all__ = ["PROVIDERS", "HookAuthError", "Ignored", "PayloadError", "delivery_header",
           "lower_headers", "parse", "verify"]
