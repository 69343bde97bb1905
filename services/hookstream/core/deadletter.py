"""Dead letters, and the one boundary every consumer loop puts around each record.

A record whose handling raises anything but an error of the process itself is refused: it
becomes a `DeadLetter` (reason, exception type and message, the original bytes, headers,
topic, partition and offset), the service logs one line and goes on with the next record.
Only `PROCESS_ERRORS` stop a service: no single record can cause them, and skipping records
while they last would dead-letter good input.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaException, Message, Producer

from hookstream.core.codec import Codec, DecodeError
from hookstream.core.kafka import Headers, header_pairs, producer_config
from hookstream.core.records import MAX_UNIX_MS, DeadLetter
from hookstream.core.settings import Settings

log = logging.getLogger(__name__)

# The reason of a record whose handling raised something the code did not expect: a bug, or
# an input shape nobody thought of. Either way the record is kept and the service goes on.
INTERNAL_ERROR = "internal_error"
UNDECODABLE = "undecodable"

# A detail longer than this is cut: it is for a person reading the dead letter.
MAX_DETAIL = 2000
# Ids travel as Kafka keys, HTTP headers (`webhook-id`), log fields and store columns: a
# bounded length and no control characters (a header cannot carry them).
MAX_ID_LENGTH = 256


class ProcessError(Exception):
    """An error of the process, not of one record (e.g. the store is unreachable): stop."""


class RejectedRecord(Exception):
    """A record a service refuses; `reason` is stable and machine-readable, `detail` human."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _getter(record: object) -> Callable[[str], Any]:
    """How to read a field of `record`: a decoded record (a dict) or a typed record."""
    # Decoded records are plain dicts: tested by exact type, the cheap check on the hot path.
    if type(record) is dict or isinstance(record, Mapping):
        return record.get
    return lambda name: getattr(record, name, None)


def require_ids(record: object, names: Iterable[str], reason: str) -> None:
    """Refuse `record` (a decoded mapping or a typed record) unless each named field is 1 to
    MAX_ID_LENGTH printable characters without spaces at either end: receivers strip those
    from a header value, and would then verify the signature against another `webhook-id`
    than the one signed."""
    get = _getter(record)
    for name in names:
        text = get(name)
        if not (
            isinstance(text, str)
            and 0 < len(text) <= MAX_ID_LENGTH
            and text.isprintable()
            and text[0] != " "
            and text[-1] != " "
        ):
            raise RejectedRecord(
                reason,
                f"field {name!r} must be 1 to {MAX_ID_LENGTH} printable characters, "
                "with no space at either end",
            )


def require_unix_ms(record: object, names: Iterable[str], reason: str) -> None:
    """Refuse `record` unless each named field is absent (None) or a Unix ms in years 1970-9999."""
    get = _getter(record)
    for name in names:
        moment = get(name)
        if moment is not None and not 0 <= moment <= MAX_UNIX_MS:
            raise RejectedRecord(reason, f"field {name!r} is out of range (Unix milliseconds)")


# Errors that mean the process cannot work, whichever record it handles: never dead-letter.
PROCESS_ERRORS: tuple[type[BaseException], ...] = (ProcessError, KafkaException, MemoryError)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why one record was refused, from the exception its handling raised."""

    reason: str
    detail: str
    error_type: str

    @classmethod
    def of(cls, exc: BaseException) -> Refusal:
        if isinstance(exc, RejectedRecord):
            return cls(exc.reason, exc.detail, type(exc).__name__)
        if isinstance(exc, DecodeError):
            return cls(UNDECODABLE, str(exc), type(exc).__name__)
        # Where it was raised: with the type and message, usually enough to find the bug.
        frames = traceback.extract_tb(exc.__traceback__)
        where = f" (at {frames[-1].name}, {frames[-1].filename}:{frames[-1].lineno})"
        return cls(
            INTERNAL_ERROR,
            f"{type(exc).__name__}: {exc}{where if frames else ''}",
            type(exc).__name__,
        )


def refuse(
    service: str, message: Message, headers: Headers, exc: BaseException
) -> tuple[Refusal, DeadLetter]:
    """The boundary's verdict on `message`: why it was refused and its `DeadLetter` record.

    `headers` are the record's, as the loop read them (`core.kafka.header_pairs`, once).
    Logs the one line the refusal gets; the caller produces the record and counts it.
    """
    refusal = Refusal.of(exc)
    log.warning(
        "%s: dead-lettered %s[%s]@%s: %s: %s",
        service,
        message.topic(),
        message.partition(),
        message.offset(),
        refusal.reason,
        _clip(refusal.detail, 300),
        extra={"dead_letter_reason": refusal.reason, "error_type": refusal.error_type},
    )
    record = dead_letter(
        message,
        headers,
        refusal.reason,
        refusal.detail,
        service=service,
        error_type=refusal.error_type,
    )
    return refusal, record


def dead_letter(
    message: Message,
    headers: Headers,
    reason: str,
    detail: str,
    *,
    service: str | None = None,
    error_type: str | None = None,
    webhook_id: str | None = None,
    delivery_id: str | None = None,
    event_id: str | None = None,
) -> DeadLetter:
    """A `DeadLetter` record for `message`, keeping its key, value and headers byte for byte."""
    key = message.key()
    value = message.value()
    return DeadLetter(
        reason=reason,
        detail=_clip(detail, MAX_DETAIL),
        source_topic=message.topic() or "",
        source_partition=message.partition() or 0,
        source_offset=message.offset() or 0,
        key=key if isinstance(key, bytes) else None,
        value=value if isinstance(value, bytes) else b"",
        webhook_id=_text(webhook_id),
        delivery_id=_text(delivery_id),
        event_id=_text(event_id),
        failed_at_ms=int(time.time() * 1000),
        error_type=error_type,
        service=service,
        headers=tuple((_text(name) or "", value) for name, value in headers),
    )


def _text(value: str | None) -> str | None:
    # Lone surrogates (from text that was never valid UTF-8) cannot be encoded as Avro strings.
    if value is None:
        return None
    return value.encode("utf-8", "replace").decode("utf-8")


def _clip(text: str, limit: int) -> str:
    text = _text(text) or ""
    return text if len(text) <= limit else text[: limit - 1] + "…"


class DeadLetterSink:
    """Dead letters of records refused outside any transaction (views, the log-sink).

    An idempotent producer of its own, made on the first refusal: most processes never need
    one. `produce` is thread-safe, so every view of a service shares one sink.
    """

    def __init__(
        self,
        settings: Settings,
        codec: Codec,
        topic: str,
        service: str,
        count: Callable[[str], None],
    ) -> None:
        self.service = service
        # Counts each refusal by reason: the service's metrics live outside the contract.
        self._count = count
        self._settings = settings
        self._codec = codec
        self._topic = topic
        self._lock = threading.Lock()
        self._producer: Producer | None = None

    def refuse(
        self, message: Message, exc: BaseException, headers: Headers | None = None
    ) -> Refusal:
        """Log, count and dead-letter `message`, refused with `exc`.

        For loops that read the record's headers themselves only at times (the log-sink, to
        link spans): `headers` are those, else they are read here.
        """
        if headers is None:
            headers = header_pairs(message)
        refusal, record = refuse(self.service, message, headers, exc)
        self.send(record, key=None)
        self._count(refusal.reason)
        return refusal

    def send(self, record: DeadLetter, key: bytes | None) -> None:
        value = self._codec.write(record)
        producer = self._get()
        while True:
            try:
                producer.produce(self._topic, key=key, value=value)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every dead letter sent is durable; raise if Kafka did not take them."""
        if self._producer is not None and self._producer.flush(timeout) != 0:
            raise ProcessError(f"{self.service}: dead letters were not acknowledged by Kafka")

    def _get(self) -> Producer:
        with self._lock:
            if self._producer is None:
                self._producer = Producer(producer_config(self._settings))
            return self._producer
