"""The asyncio event loop the async services run on: uvloop where it is installed.

uvloop runs the same asyncio programs with a loop written in C: `make bench` measured the
signed-POST ceiling 1.5x faster on it (the sender itself gained nothing measurable, its time
goes elsewhere; see BENCHMARKS.md). Without it (e.g. on Windows) the standard loop is used.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)

_T = TypeVar("_T")


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        log.info("uvloop is not installed: running on the standard asyncio loop")
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def run(main: Coroutine[Any, Any, _T]) -> _T:
    """`asyncio.run` on the loop from `new_event_loop`."""
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(main)


def threadsafe_set(event: asyncio.Event) -> Callable[..., None]:
    """A callback that sets `event` from any thread, on the loop running now.

    For a thread that must wake a coroutine at once (a consumer thread or a view that
    died); it takes and ignores any arguments, so it can be handed to `when_dead` as is.
    """
    loop = asyncio.get_running_loop()

    def set_event(*_: object) -> None:
        # Closed already: whoever awaited the event has finished.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(event.set)

    return set_event
