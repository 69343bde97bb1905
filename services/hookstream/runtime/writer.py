"""An asyncio face on the idempotent Kafka producer: await a group of records' acknowledgement.

Shared by the API (answers only once its writes are durable) and the sender (a record's
offset is finished only once its attempt, retry and dead letter are durable). Delivery
callbacks run on a poll thread. They only note which groups are settled; once a poll has
served every acknowledgement it had, the thread wakes each event loop once for all of them,
so a burst of acknowledgements costs one cross-thread wake-up rather than one per group.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from hookstream.core.deadletter import ProcessError
from hookstream.core.kafka import producer_config
from hookstream.core.settings import Settings


class WriteFailedError(ProcessError):
    """Kafka did not acknowledge a record in time, or refused it."""


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, str | bytes | None]] | None = None


@dataclass(frozen=True, slots=True)
class Written:
    partition: int
    offset: int


class _Group:
    """The acknowledgements of one `write_all`, collected on whichever thread polls."""

    __slots__ = ("_remaining", "_results", "_settled", "failure", "future", "loop")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        size: int,
        settled: collections.deque[_Group],
    ) -> None:
        self.loop = loop
        self.future: asyncio.Future[list[Written]] = loop.create_future()
        self.failure: WriteFailedError | None = None
        self._results: list[Written | None] = [None] * size
        self._remaining = size
        self._settled = settled

    def callback(self, index: int) -> Callable[[KafkaError | None, Message], None]:
        def acknowledged(error: KafkaError | None, message: Message) -> None:
            if self._remaining <= 0:
                return  # already failed: the later acknowledgements change nothing
            if error is not None:
                self.failure = WriteFailedError(f"Kafka refused the write: {error}")
                self._remaining = 0
                self._settled.append(self)
                return
            self._results[index] = Written(message.partition() or 0, message.offset() or 0)
            self._remaining -= 1
            if self._remaining == 0:
                self._settled.append(self)

        return acknowledged

    def settle(self) -> None:
        """On the group's event loop: hand the outcome to the waiting `write_all`."""
        if self.future.done():
            return
        if self.failure is not None:
            self.future.set_exception(self.failure)
        else:
            self.future.set_result([result for result in self._results if result is not None])

    async def wait(self) -> list[Written]:
        return await self.future


class KafkaWriter:
    def __init__(
        self,
        settings: Settings,
        *,
        timeout: float | None = None,
        extra: dict[str, Any] | None = None,
        name: str = "kafka-writer",
    ) -> None:
        self._timeout = timeout
        self.producer = Producer(producer_config(settings, extra=extra))
        # Groups whose last acknowledgement arrived, not yet handed to their loop. A deque:
        # its append and popleft are atomic, and close()'s flush may serve callbacks on
        # another thread while the poll thread is still running.
        self._settled: collections.deque[_Group] = collections.deque()
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name=name, daemon=True)

    def start(self) -> KafkaWriter:
        self._poller.start()
        return self

    def close(self, flush_timeout: float = 10.0) -> None:
        self.producer.flush(flush_timeout)
        self._stop.set()
        self._poller.join(5)
        self._hand_over()

    async def write(self, record: Record) -> Written:
        return (await self.write_all([record]))[0]

    async def write_all(self, records: Sequence[Record]) -> list[Written]:
        """Produce every record; return once Kafka acknowledged all of them, in order."""
        if not records:
            return []
        group = _Group(asyncio.get_running_loop(), len(records), self._settled)
        for index, record in enumerate(records):
            callback = group.callback(index)
            while True:
                try:
                    self.producer.produce(
                        record.topic,
                        key=record.key,
                        value=record.value,
                        headers=list(record.headers) if record.headers else None,
                        on_delivery=callback,
                    )
                    break
                except BufferError:
                    # The local queue is full: give librdkafka a moment to drain it.
                    await asyncio.sleep(0.01)
        if self._timeout is None:
            return await group.wait()
        try:
            async with asyncio.timeout(self._timeout):
                return await group.wait()
        except TimeoutError:
            raise WriteFailedError(
                f"Kafka did not acknowledge the write within {self._timeout:g} s"
            ) from None

    def _poll(self) -> None:
        # Delivery callbacks run inside poll(); this thread keeps them flowing.
        while not self._stop.is_set():
            self.producer.poll(0.1)
            self._hand_over()

    def _hand_over(self) -> None:
        """Wake each loop once with every group settled since the last hand-over."""
        settled = self._settled
        if not settled:
            return
        by_loop: dict[asyncio.AbstractEventLoop, list[_Group]] = {}
        while True:
            try:
                group = settled.popleft()
            except IndexError:
                break
            by_loop.setdefault(group.loop, []).append(group)
        for loop, groups in by_loop.items():
            # A closed loop has nobody waiting for these any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, groups)


def _settle(groups: list[_Group]) -> None:
    for group in groups:
        group.settle()
