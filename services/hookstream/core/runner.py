"""Process plumbing shared by every service: logging, probes and a clean stop on SIGTERM."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType

from hookstream.core import logging as structured_logging
from hookstream.core.ops import OpsServer
from hookstream.core.settings import Settings

log = logging.getLogger(__name__)

ServiceLoop = Callable[[threading.Event, threading.Event], None]


def configure_logging(level: str = "INFO") -> None:
    """JSON lines on stderr when it is not a terminal, readable text when it is."""
    structured_logging.configure_logging(level)


def start_ops(settings: Settings, ready: threading.Event) -> OpsServer:
    return OpsServer(settings.metrics_host, settings.metrics_port, ready).start()


def run_until_signalled(name: str, settings: Settings, target: ServiceLoop) -> int:
    """Run `target(stop, ready)` in this thread; SIGTERM or SIGINT sets `stop`.

    `ready` is set by the service once it is working; /readyz reports it.
    """
    configure_logging(settings.log_level)
    stop = threading.Event()
    ready = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        log.info("%s: %s received, stopping", name, signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    ops = start_ops(settings, ready)
    try:
        target(stop, ready)
    finally:
        ops.stop()
    log.info("%s: stopped", name)
    return 0
