"""Process plumbing shared by every service: logging and a clean stop on SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType

log = logging.getLogger(__name__)


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )


def run_until_signalled(name: str, target: Callable[[threading.Event], None]) -> int:
    """Run `target(stop)` in this thread; SIGTERM or SIGINT sets `stop` for a graceful exit."""
    configure_logging()
    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        log.info("%s: %s received, stopping", name, signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    target(stop)
    log.info("%s: stopped", name)
    return 0
