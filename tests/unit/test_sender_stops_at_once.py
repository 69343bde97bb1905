"""The sender learns of a failure the moment it happens, never by polling for it: a record
task that cannot finish, the fetcher's consumer thread dying (a view's death: test_runner.py).

Each wait has a deadline far above the time a wake-up takes; none would end without it.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from hookstream.core.settings import Settings, load_settings
from hookstream.sender.fetcher import Fetcher
from hookstream.sender.service import Sender
from tests.helpers import TEST_ENCRYPTION_KEY

DEADLINE = 30.0


@pytest.fixture
def settings() -> Settings:
    return load_settings(encryption_key=TEST_ENCRYPTION_KEY, metrics_port=0)


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


def test_the_fetcher_reports_its_death_on_its_own_thread(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    reported: list[tuple[BaseException, str]] = []
    told = threading.Event()

    def on_failure(error: BaseException) -> None:
        reported.append((error, threading.current_thread().name))
        told.set()

    fetcher = Fetcher(settings, ["deliveries"], {}, lambda batch: None, 10, on_failure)

    def poll_once(consumer: object) -> None:
        raise ConnectionError("the broker went away")

    monkeypatch.setattr(fetcher, "_poll_once", poll_once)
    fetcher.start()
    assert told.wait(DEADLINE)
    fetcher.join(DEADLINE)
    [(error, thread)] = reported
    assert error is fetcher.error and isinstance(error, ConnectionError)
    assert thread == "sender-fetcher"
