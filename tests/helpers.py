"""Helpers for tests: subprocess environments and waiting on conditions with a deadline."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

import pytest

from hookstream.core.settings import Settings


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a `hookstream` subprocess see exactly these settings."""
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        if isinstance(value, dict):
            text = json.dumps(value)
        elif isinstance(value, tuple | list):
            text = ",".join(str(item) for item in value)
        else:
            text = str(value)
        env[f"HOOKSTREAM_{name.upper()}"] = text
    return env


def wait_for(
    condition: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05, what: str = ""
) -> Any:
    """Poll `condition` until it returns something truthy; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what or condition!r}")
        time.sleep(interval)
