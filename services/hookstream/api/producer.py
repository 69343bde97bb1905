"""An asyncio face on the idempotent Kafka producer: await each record's acknowledgement."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import KafkaError, Message, Producer

from hookstream.core.kafka import producer_config
from hookstream.core.settings import Settings


class WriteFailedError(Exception):
    """Kafka did not acknowledge a record in time, or refused it."""


@dataclass(frozen=True, slots=True)
class Written:
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    key: bytes | None
    value: bytes | None


class KafkaWriter:
    def __init__(self, settings: Settings) -> None:
        self._timeout = settings.write_timeout
        # librdkafka gives up on a record at about the time we answer 503, so a write the
        # client saw fail rarely lands later.
        timeout_ms = max(1000, int(settings.write_timeout * 1000))
        self.producer = Producer(
            producer_config(settings, extra={"message.timeout.ms": timeout_ms, "linger.ms": 1})
        )
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="api-producer", daemon=True)

    def start(self) -> KafkaWriter:
        self._poller.start()
        return self

    def close(self) -> None:
        self.producer.flush(self._timeout)
        self._stop.set()
        self._poller.join(5)

    async def write(self, record: Record) -> Written:
        return (await self.write_all([record]))[0]

    async def write_all(self, records: list[Record]) -> list[Written]:
        """Produce every record; return once Kafka acknowledged all of them, in order."""
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Written]] = []
        for record in records:
            future: asyncio.Future[Written] = loop.create_future()
            futures.append(future)
            while True:
                try:
                    self.producer.produce(
                        record.topic,
                        key=record.key,
                        value=record.value,
                        on_delivery=_settle(loop, future),
                    )
                    break
                except BufferError:
                    # The local queue is full: give librdkafka a moment to drain it.
                    await asyncio.sleep(0.01)
        try:
            async with asyncio.timeout(self._timeout):
                results = await asyncio.gather(*futures, return_exceptions=True)
        except TimeoutError:
            raise WriteFailedError(
                f"Kafka did not acknowledge the write within {self._timeout:g} s"
            ) from None
        written: list[Written] = []
        for result in results:
            if isinstance(result, BaseException):
                raise result
            written.append(result)
        return written

    def _poll(self) -> None:
        # Delivery callbacks run inside poll(); this thread keeps them flowing.
        while not self._stop.is_set():
            self.producer.poll(0.1)


def _settle(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future[Written]
) -> Callable[[KafkaError | None, Message], None]:
    def callback(error: KafkaError | None, message: Message) -> None:
        if error is not None:
            outcome: Written | BaseException = WriteFailedError(f"Kafka refused the write: {error}")
        else:
            outcome = Written(message.partition() or 0, message.offset() or 0)
        loop.call_soon_threadsafe(_resolve, future, outcome)

    return callback


def _resolve(future: asyncio.Future[Written], outcome: Written | BaseException) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
