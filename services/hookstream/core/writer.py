"""An asyncio face on the idempotent Kafka producer: await a group of records' acknowledgement.

Shared by the API (answers only once its writes are durable) and the sender (a record's
offset is finished only once its attempt, retry and dead letter are durable). Delivery
callbacks run on a poll thread; a group wakes the event loop once, when its last record is
acknowledged, not once per record.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from hookstream.core.kafka import producer_config
from hookstream.core.settings import Settings


class WriteFailedError(Exception):
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
    """The acknowledgements of one `write_all`, collected on the poll thread."""

    __slots__ = ("_future", "_loop", "_remaining", "_results")

    def __init__(self, loop: asyncio.AbstractEventLoop, size: int) -> None:
        self._loop = loop
        self._future: asyncio.Future[list[Written]] = loop.create_future()
        self._results: list[Written | None] = [None] * size
        self._remaining = size

    def callback(self, index: int) -> Callable[[KafkaError | None, Message], None]:
        def acknowledged(error: KafkaError | None, message: Message) -> None:
            if error is not None:
                failure = WriteFailedError(f"Kafka refused the write: {error}")
                self._loop.call_soon_threadsafe(_fail, self._future, failure)
                return
            self._results[index] = Written(message.partition() or 0, message.offset() or 0)
            self._remaining -= 1
            if self._remaining == 0:
                done = [result for result in self._results if result is not None]
                self._loop.call_soon_threadsafe(_succeed, self._future, done)

        return acknowledged

    async def wait(self) -> list[Written]:
        return await self._future


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
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name=name, daemon=True)

    def start(self) -> KafkaWriter:
        self._poller.start()
        return self

    def close(self, flush_timeout: float = 10.0) -> None:
        self.producer.flush(flush_timeout)
        self._stop.set()
        self._poller.join(5)

    async def write(self, record: Record) -> Written:
        return (await self.write_all([record]))[0]

    async def write_all(self, records: Sequence[Record]) -> list[Written]:
        """Produce every record; return once Kafka acknowledged all of them, in order."""
        if not records:
            return []
        group = _Group(asyncio.get_running_loop(), len(records))
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


def _succeed(future: asyncio.Future[list[Written]], results: list[Written]) -> None:
    if not future.done():
        future.set_result(results)


def _fail(future: asyncio.Future[list[Written]], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)
