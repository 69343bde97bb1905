"""The service runners: a signal stops a service, its error is one CRITICAL line and status 70,
and a failure on another thread wakes an asyncio service at once.

The runners run in the test's own process and main thread (signal handlers need it); every
wait has a deadline, and nothing sleeps for a fixed time.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from collections.abc import Iterator

import pytest

from hookstream.core.deadletter import ProcessError
from hookstream.core.settings import Settings, load_settings
from hookstream.core.view import CompactedView
from hookstream.runtime import eventloop, runner
from hookstream.runtime.runner import (
    FAILED_EXIT,
    run_async_until_signalled,
    run_until_signalled,
)

DEADLINE = 30.0


@pytest.fixture(autouse=True)
def tuned(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Keep the runners from reconfiguring this process's logging and collector, and give
    back the signal handlers they install."""
    monkeypatch.setattr(runner, "configure_logging", lambda level="INFO": None)
    tuned = threading.Event()
    monkeypatch.setattr(runner, "tune_collector", tuned.set)
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    yield tuned
    for signum, handler in handlers.items():
        signal.signal(signum, handler)


@pytest.fixture
def settings() -> Settings:
    return load_settings(metrics_host="127.0.0.1", metrics_port=0)


def _critical(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.levelno == logging.CRITICAL]


def test_an_error_of_a_thread_service_is_one_critical_line_and_status_70(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    def target(stop: threading.Event, ready: threading.Event) -> None:
        raise RuntimeError("the store is gone")

    assert run_until_signalled("svc", settings, target) == FAILED_EXIT
    [critical] = _critical(caplog)
    assert critical.getMessage() == "svc: stopping: RuntimeError: the store is gone"
    assert critical.exc_info is not None


def test_an_error_of_an_async_service_is_one_critical_line_and_status_70(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    async def service(stop: asyncio.Event, ready: threading.Event) -> None:
        raise RuntimeError("the store is gone")

    assert run_async_until_signalled("svc", settings, service) == FAILED_EXIT
    [critical] = _critical(caplog)
    assert critical.getMessage() == "svc: stopping: RuntimeError: the store is gone"
    assert critical.exc_info is not None


def test_sigterm_stops_a_thread_service(
    settings: Settings, caplog: pytest.LogCaptureFixture, tuned: threading.Event
) -> None:
    caplog.set_level(logging.INFO)
    stopped = []

    def target(stop: threading.Event, ready: threading.Event) -> None:
        ready.set()
        signal.raise_signal(signal.SIGTERM)
        stopped.append(stop.wait(DEADLINE))

    assert run_until_signalled("svc", settings, target) == 0
    assert stopped == [True]
    assert tuned.wait(DEADLINE), "the collector is tuned once the service is ready"
    messages = [record.getMessage() for record in caplog.records]
    assert "svc: SIGTERM received, stopping" in messages
    assert messages[-1] == "svc: stopped"
    assert _critical(caplog) == []


def test_sigint_stops_an_async_service(
    settings: Settings, caplog: pytest.LogCaptureFixture, tuned: threading.Event
) -> None:
    caplog.set_level(logging.INFO)
    stopped = []

    async def service(stop: asyncio.Event, ready: threading.Event) -> None:
        ready.set()
        os.kill(os.getpid(), signal.SIGINT)
        await asyncio.wait_for(stop.wait(), DEADLINE)
        stopped.append(True)

    code = run_async_until_signalled("svc", settings, service, stopping="finishing up")
    assert code == 0
    assert stopped == [True]
    assert tuned.wait(DEADLINE)
    messages = [record.getMessage() for record in caplog.records]
    assert "svc: SIGINT received, finishing up" in messages
    assert messages[-1] == "svc: stopped"


def _dying_view(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> CompactedView[bytes]:
    view: CompactedView[bytes] = CompactedView(settings, "some-topic", bytes)

    def consume() -> None:
        raise ConnectionError("the broker went away")

    monkeypatch.setattr(view, "_consume", consume)
    return view


def test_a_failure_on_another_thread_wakes_an_async_service_at_once(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    view = _dying_view(settings, monkeypatch)

    async def service(stop: asyncio.Event, ready: threading.Event) -> None:
        failed = asyncio.Event()
        view.when_dead(eventloop.threadsafe_set(failed))
        view.start()
        # Only the view's thread can end this wait: nothing here looks at the view again.
        await asyncio.wait_for(failed.wait(), DEADLINE)
        view.check()

    assert run_async_until_signalled("svc", settings, service) == FAILED_EXIT
    [critical] = _critical(caplog)
    assert critical.getMessage() == (
        "svc: stopping: ProcessError: the view of some-topic stopped: the broker went away"
    )


def test_a_dead_view_tells_whoever_waits_on_it(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    view = _dying_view(settings, monkeypatch)
    errors: list[BaseException] = []
    told = threading.Event()

    def handler(error: BaseException) -> None:
        errors.append(error)
        told.set()

    view.when_dead(handler)
    view.start()
    assert told.wait(DEADLINE)
    # A handler registered after the death is told at once, on the caller's thread.
    view.when_dead(errors.append)
    assert [type(error) for error in errors] == [ConnectionError, ConnectionError]
    with pytest.raises(ProcessError, match="the view of some-topic stopped"):
        view.check()
