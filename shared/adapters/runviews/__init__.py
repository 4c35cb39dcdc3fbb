"""Adapters of ``shared.ports.runviews.RunViews``: ``memory`` (embedded) and ``mongo``."""
