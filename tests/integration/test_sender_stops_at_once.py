"""The sender learns of a failure the moment it happens, never by polling for it: here a
record task that cannot finish (a view's death: tests/unit/test_runner.py).

Each wait has a deadline far above the time a wake-up takes; none would end without it.
"""

from __future__ import annotations

import asyncio

import pytest

from hookstream.core.settings import Settings
from hookstream.sender.service import Sender

DEADLINE = 30.0


pytestmark = pytest.mark.integration


def test_a_record_that_cannot_finish_wakes_the_sender(settings: Settings) -> None:
    sender = Sender(settings)

    async def unfinished() -> None:
        # What `_handle` does when Kafka refuses a record's outputs.
        sender._failure = RuntimeError("the producer is fenced")

    async def main() -> None:
        task = asyncio.create_task(unfinished())
        sender._tasks.add(task)
        task.add_done_callback(sender._task_done)
        await asyncio.wait_for(sender._wait_for_stop(asyncio.Event()), DEADLINE)

    asyncio.run(main())
    assert not sender._tasks
    sender.writer.producer.flush(5)
