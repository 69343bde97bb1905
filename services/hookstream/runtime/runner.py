"""Process plumbing shared by every service: logging, probes and a clean stop on SIGTERM.

Two runners, one per kind of service: `run_until_signalled` runs a thread-based service
(router, log-sink) in the main thread, `run_async_until_signalled` an asyncio one (sender)
on the event loop of `runtime/eventloop.py`. Both hand the service a `stop` and a `ready` event,
serve /metrics, /healthz and /readyz (ready once the service says so), tune the collector
once it is ready, and turn an error of the service into one CRITICAL line and exit status 70.
The API runs on `serve_until_signalled`, the asyncio runner's core: it serves its own probes.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import threading
from collections.abc import Callable, Coroutine
from types import FrameType
from typing import Any

from hookstream.core import tracing
from hookstream.core.settings import Settings
from hookstream.runtime import eventloop
from hookstream.runtime import logging as structured_logging
from hookstream.runtime.kafkalog import route_kafka_log
from hookstream.runtime.ops import OpsServer

log = logging.getLogger(__name__)

# `target(stop, ready)`: returns once `stop` is set; sets `ready` once it works.
ServiceLoop = Callable[[threading.Event, threading.Event], None]
# `service(stop, ready)`: the same for an asyncio service; `ready` is thread-safe to set.
AsyncService = Callable[[asyncio.Event, threading.Event], Coroutine[Any, Any, None]]


# The cyclic garbage collector's first-generation threshold once a service runs (CPython's
# default is 700).
YOUNG_COLLECTION_THRESHOLD = 50_000


def tune_collector() -> None:
    """Keep the garbage collector from dominating the process's CPU once it runs.

    In the sender every outstanding record keeps dozens of container objects (its task and
    coroutines, the decoded delivery, aiohttp's request and response, futures) alive for the
    length of its request, and a fetched batch creates hundreds at once. At the default
    threshold the young collections promote nearly all of them to the oldest generation,
    whose full collections then also walk everything loaded at start-up (modules, the
    webhook view). Freezing the start-up heap takes it out of every later collection; a
    higher young threshold lets most per-record objects die of reference counting before
    any collection. In `make bench`'s sender stage the collector went from about a sixth of
    the loop thread's time to well under 1 %, and peak memory did not change; the router and
    the log-sink make as many short-lived objects per event and attempt record.
    """
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, middle, oldest)


def tune_collector_once_ready(ready: threading.Event) -> None:
    """Tune the collector once the service has loaded what it keeps (its views) and works."""

    def when_ready() -> None:
        ready.wait()
        tune_collector()

    threading.Thread(target=when_ready, name="gc-tuning", daemon=True).start()


# HOOKSTREAM_LOG_FORMAT: JSON lines, text, or (auto) text only when stderr is a terminal.
_JSON_LINES = {"json": True, "text": False, "auto": None}


def configure_logging(settings: Settings) -> None:
    """Logs on stderr at `log_level`, in `log_format`."""
    structured_logging.configure_logging(
        settings.log_level, json_lines=_JSON_LINES[settings.log_format]
    )
    route_kafka_log(logging.getLogger().level)


def configure_tracing(name: str) -> None:
    """Spans exported as the OTEL_* variables say (off unless they choose an exporter)."""
    tracing.configure(name)


def start_ops(settings: Settings, ready: threading.Event) -> OpsServer:
    return OpsServer(settings.metrics_host, settings.metrics_port, ready).start()


def run_until_signalled(
    name: str, settings: Settings, target: ServiceLoop, *, stopping: str = "stopping"
) -> int:
    """Run `target(stop, ready)` in this thread; SIGTERM or SIGINT sets `stop`.

    `ready` is set by the service once it is working; /readyz reports it. The service
    finishes its work in hand within `settings.shutdown_grace` once `stop` is set, and sets
    `stop` itself when one of its threads dies (a view, say), then raises what stopped it.
    Returns the exit status: 0, or `FAILED_EXIT` after the service's error is logged.
    """
    configure_logging(settings)
    try:
        configure_tracing(name)
    except tracing.TracingConfigError as exc:
        return stopped_by(name, exc)
    stop = threading.Event()
    ready = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        log.info("%s: %s received, %s", name, signal.Signals(signum).name, stopping)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    ops = start_ops(settings, ready)
    tune_collector_once_ready(ready)
    try:
        target(stop, ready)
    except Exception as exc:
        return stopped_by(name, exc)
    finally:
        ready.clear()
        ops.stop()
        tracing.shutdown()
    log.info("%s: stopped", name)
    return 0


def run_async_until_signalled(
    name: str, settings: Settings, service: AsyncService, *, stopping: str = "stopping"
) -> int:
    """Run `service(stop, ready)` on a new event loop; SIGTERM or SIGINT sets `stop`.

    As `run_until_signalled`, for asyncio services. An error reported by another thread
    (a consumer thread, a view) must wake the service at once: such a thread sets an
    `asyncio.Event` through `eventloop.threadsafe_set`, never a flag the loop polls.
    """
    configure_logging(settings)
    try:
        configure_tracing(name)
    except tracing.TracingConfigError as exc:
        return stopped_by(name, exc)
    ready = threading.Event()

    async def main() -> None:
        # Started on the loop, as the sender always did: a port already taken is the
        # service's error (status 70), like any other at start.
        ops = start_ops(settings, ready)
        tune_collector_once_ready(ready)
        try:
            await serve_until_signalled(name, service, ready, stopping=stopping)
        finally:
            ready.clear()
            ops.stop()

    try:
        eventloop.run(main())
    except Exception as exc:
        return stopped_by(name, exc)
    finally:
        tracing.shutdown()
    log.info("%s: stopped", name)
    return 0


async def serve_until_signalled(
    name: str, service: AsyncService, ready: threading.Event, *, stopping: str = "stopping"
) -> None:
    """Await `service(stop, ready)`, with SIGTERM and SIGINT setting `stop`; raise its error.

    The core of `run_async_until_signalled`, without its probes and its exit status: for the
    API, which serves its own probes and whose errors at start end the process uncaught.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def request_stop(signum: signal.Signals) -> None:
        log.info("%s: %s received, %s", name, signum.name, stopping)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, request_stop, signum)
    await service(stop, ready)


# The exit status of a service stopped by an error of its own (EX_SOFTWARE).
FAILED_EXIT = 70


def stopped_by(name: str, exc: BaseException) -> int:
    """Report the error that stops a service, in one clear line plus its traceback."""
    log.critical("%s: stopping: %s: %s", name, type(exc).__name__, exc, exc_info=exc)
    return FAILED_EXIT
