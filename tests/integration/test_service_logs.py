"""A service's log lines in the format HOOKSTREAM_LOG_FORMAT names, whatever stderr is.

A real `hookstream run router` (against a port nobody listens on: its first line, where its
probes listen, comes before it needs the broker), its stderr a pipe as under a supervisor.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from hookstream.core.settings import load_settings
from tests.helpers import settings_env

pytestmark = pytest.mark.integration


@contextmanager
def router_stderr(
    log_format: str, service: str = "router", cwd: Path | None = None
) -> Iterator[list[str]]:
    settings = load_settings(
        kafka_bootstrap_servers="127.0.0.1:1",
        metrics_port=0,
        api_port=0,
        log_format=log_format,
        store_url=f"sqlite:///{cwd or '.'}/store.db",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "hookstream", "run", service],
        env=settings_env(settings),
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    assert process.stderr is not None
    stream = process.stderr
    reader = threading.Thread(target=lambda: lines.extend(stream), daemon=True)
    reader.start()
    try:
        yield lines
    finally:
        process.kill()
        process.wait(10)


def _wait_for_line(lines: list[str], needle: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in list(lines):
            if needle in line:
                return line
        time.sleep(0.05)
    raise AssertionError(f"no line with {needle!r} in:\n{''.join(lines)[-3000:]}")


def test_text_format_gives_short_lines_on_a_pipe_too() -> None:
    with router_stderr("text") as lines:
        line = _wait_for_line(lines, "metrics and probes on port")
        assert not line.startswith("{")
        assert " INFO " in line and "hookstream.runtime.ops" in line


def test_json_format_gives_json_lines() -> None:
    with router_stderr("json") as lines:
        record = json.loads(_wait_for_line(lines, "metrics and probes on port"))
        assert record["level"] == "INFO"
        assert record["logger"] == "hookstream.runtime.ops"


def test_auto_gives_json_lines_when_stderr_is_not_a_terminal() -> None:
    with router_stderr("auto") as lines:
        record = json.loads(_wait_for_line(lines, "metrics and probes on port"))
        assert record["logger"] == "hookstream.runtime.ops"


@pytest.mark.parametrize("service", ["router", "sender", "log-sink", "api"])
def test_librdkafka_speaks_in_the_services_log_format_while_the_broker_is_away(
    service: str, tmp_path: Path
) -> None:
    # Every client waits up to 30 s for a broker that never answers; its complaint must be
    # in the log while it waits (librdkafka hands lines over only when a client is polled),
    # as a JSON line of the service's log, once per distinct line and minute.
    with router_stderr("json", service, tmp_path) as lines:
        line = _wait_for_line(lines, "Connection refused", timeout=20)
        record = json.loads(line)
        assert record["logger"] == "librdkafka", record
        assert record["level"] == "ERROR", record
        assert record["message"].startswith("librdkafka FAIL: 127.0.0.1:1/bootstrap: "), record
        assert "[thrd:" not in record["message"], record
        assert record["kafka_client"].startswith("hookstream-"), record
        # librdkafka retries every 50-100 ms at first: repeats are counted, not printed
        # (the filter itself is tested in tests/unit/test_kafka_log.py).
        shown = [json.loads(x) for x in list(lines) if x.startswith("{")]
        refused = [
            (r["kafka_client"], r["message"].split(" (after")[0])
            for r in shown
            if r["logger"] == "librdkafka"
        ]
        assert len(refused) == len(set(refused)), refused
        assert not [x for x in lines if x.startswith("%")], lines
