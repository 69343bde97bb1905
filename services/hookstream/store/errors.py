"""Errors the store raises for bad input, as opposed to database failures."""

from __future__ import annotations


class InvalidCursorError(ValueError):
    """A pagination cursor that this store did not issue, or that was altered."""


class UnsupportedStoreUrlError(ValueError):
    """A store URL naming a database or driver that hookstream does not run on."""
