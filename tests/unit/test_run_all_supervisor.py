"""`run all`'s supervision with small stand-in children, and what it quotes of their stderr.

tests/integration/test_run_all.py runs the real services; here `python -c` children exit,
log and ignore SIGTERM exactly when a test needs them to.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import sys
from collections.abc import Iterator

import pytest

from hookstream.tools.supervisor import ERROR_QUOTE_LIMIT, Child, ErrorTail, SharedStderr, supervise
from tests.helpers import wait_for


def _tail(*lines: str) -> str | None:
    tail = ErrorTail()
    for line in lines:
        tail.feed(line + "\n")
    return tail.last


def _log(level: str, message: str) -> str:
    return json.dumps({"ts": "2026-11-27T10:00:00.000Z", "level": level, "message": message})


def test_the_last_error_or_critical_log_line() -> None:
    assert _tail(_log("INFO", "log-sink: started"), _log("WARNING", "slow")) is None
    assert (
        _tail(
            _log("ERROR", "first"),
            _log("CRITICAL", "log-sink: stopping: OperationalError: refused\n\tIs it running?"),
            _log("INFO", "log-sink: stopped"),
        )
        == "log-sink: stopping: OperationalError: refused Is it running?"
    )


def test_a_traceback_is_quoted_by_its_exception_line() -> None:
    traceback = [
        "Traceback (most recent call last):",
        '  File "x.py", line 1, in <module>',
        "    connect()",
        "    ^^^^^^^^^",
        "psycopg.OperationalError: connection failed: refused",
        "\tIs the server running on that host?",
        "",
        "The above exception was the direct cause of the following exception:",
        "",
        "Traceback (most recent call last):",
        '  File "y.py", line 2, in <module>',
        "sqlalchemy.exc.OperationalError: (psycopg.OperationalError) connection failed: refused",
        "\tIs the server running on that host?",
        "(Background on this error at: https://sqlalche.me/e/21/e3q8)",
    ]
    assert _tail(_log("INFO", "api: starting"), *traceback) == (
        "sqlalchemy.exc.OperationalError: (psycopg.OperationalError) connection failed: refused"
    )


def test_other_lines_count_unless_they_are_librdkafka_notices() -> None:
    assert _tail("hookstream: HOOKSTREAM_API_PORT: not a valid integer") == (
        "hookstream: HOOKSTREAM_API_PORT: not a valid integer"
    )
    failed = "%3|1700000000.000|FAIL|rdkafka#consumer-1| [thrd:x]: Connect failed"
    assert _tail(failed, "%5|1700000000.100|REQTMOUT|rdkafka#consumer-1| timed out") == failed
    assert _tail("   indented continuation", "") is None


def test_a_long_message_is_shortened() -> None:
    quoted = _tail(_log("CRITICAL", "x" * 10_000))
    assert quoted is not None
    assert len(quoted) == ERROR_QUOTE_LIMIT
    assert quoted.endswith("…")


Events = queue.SimpleQueue[str | int]
_started: list[Child] = []


@pytest.fixture(autouse=True)
def _no_child_left() -> Iterator[None]:
    yield
    while _started:
        process = _started.pop().process
        if process.poll() is None:
            process.kill()
            process.wait(10)


def _child(name: str, script: str, events: Events) -> Child:
    child = Child(name, [sys.executable, "-c", script], dict(os.environ), SharedStderr(), events)
    _started.append(child)
    return child


SLEEPER = "import time; time.sleep(60)"
# Ignores SIGTERM, then says so on stderr (a plain line: ErrorTail keeps it as the last one).
STUBBORN = (
    "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ignoring SIGTERM', file=sys.stderr, flush=True); time.sleep(60)"
)


def test_even_a_clean_exit_unasked_stops_the_others(capfd: pytest.CaptureFixture[str]) -> None:
    events: Events = queue.SimpleQueue()
    gave_up = json.dumps({"level": "ERROR", "message": "early: gave up"})
    children = {
        "early": _child("early", f"print({gave_up!r}, file=__import__('sys').stderr)", events),
        "sleeper": _child("sleeper", SLEEPER, events),
    }
    assert supervise(children, events, SharedStderr(), grace=30) == 1
    err = capfd.readouterr().err
    early = children["early"].pid
    assert (
        f"hookstream run all: early (pid {early}) stopped unasked: exited with status 0: "
        "early: gave up\n" in err
    )
    assert "hookstream run all: stopping sleeper\n" in err
    # Stopped by the SIGTERM it was sent: as asked, so not reported.
    assert children["sleeper"].process.returncode == -signal.SIGTERM
    assert "sleeper (pid" not in err


def test_a_child_that_ignores_the_stop_gets_sigkill(capfd: pytest.CaptureFixture[str]) -> None:
    events: Events = queue.SimpleQueue()
    children = {
        "stubborn": _child("stubborn", STUBBORN, events),
        "sleeper": _child("sleeper", SLEEPER, events),
    }
    wait_for(lambda: children["stubborn"].errors.last == "ignoring SIGTERM", what="SIG_IGN")
    events.put(signal.SIGTERM)  # as the handler does when `run all` receives one
    assert supervise(children, events, SharedStderr(), grace=0.5) == 1
    err = capfd.readouterr().err
    stubborn = children["stubborn"].pid
    assert (
        f"hookstream run all: stubborn (pid {stubborn}) did not stop within 0.5 s: SIGKILL" in err
    )
    assert children["stubborn"].process.returncode == -signal.SIGKILL
    assert "sleeper (pid" not in err


def test_children_stopping_when_asked_is_success(capfd: pytest.CaptureFixture[str]) -> None:
    events: Events = queue.SimpleQueue()
    children = {name: _child(name, SLEEPER, events) for name in ("one", "two")}
    # SIGTERM, not SIGINT: a suite started in the background may pass on an ignored SIGINT.
    events.put(signal.SIGTERM)
    assert supervise(children, events, SharedStderr(), grace=30) == 0
    assert "hookstream run all:" not in capfd.readouterr().err


def test_at_a_terminal_json_lines_read_as_text(capfdbinary: pytest.CaptureFixture[bytes]) -> None:
    out = SharedStderr()
    out.as_text = True
    line = {"ts": "2026-12-03T10:00:00.000Z", "level": "INFO", "logger": "x", "message": "hi"}
    out.passthrough(json.dumps({**line, "webhook_id": "wh_1"}).encode() + b"\n")
    out.passthrough(b"not json\n")
    out.passthrough(json.dumps({**line, "logger": "librdkafka"}).encode() + b"\n", "router")
    assert capfdbinary.readouterr().err == (
        b"2026-12-03T10:00:00.000Z INFO    x hi webhook_id=wh_1\nnot json\n"
        b"2026-12-03T10:00:00.000Z INFO    router   librdkafka hi\n"
    )
