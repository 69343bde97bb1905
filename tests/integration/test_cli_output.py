"""The `hookstream` command's output as a shell pipeline sees it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hookstream.core.kafka import consumer_config, producer_config
from hookstream.core.settings import load_settings

pytestmark = pytest.mark.integration


def test_a_reader_that_stops_early_gets_no_traceback() -> None:
    # `true` exits without reading, long before the interpreter has started: every write
    # finds the pipe closed, as the tail of a long output does behind `head`.
    pipeline = subprocess.run(
        f"{sys.executable} -m hookstream config --reference | true",
        shell=True,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "Traceback" not in pipeline.stderr and "BrokenPipe" not in pipeline.stderr, (
        pipeline.stderr
    )


def test_kafka_clients_are_named_after_the_instance() -> None:
    settings = load_settings(instance_id="sender-7")
    assert producer_config(settings)["client.id"] == "hookstream-sender-7"
    assert consumer_config(settings, "sender")["client.id"] == "hookstream-sender-7"
