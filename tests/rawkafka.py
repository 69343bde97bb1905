"""Produce records byte for byte over the Kafka wire protocol, bypassing every client check.

confluent-kafka turns a header name into text before it sends it (bytes become their repr),
so it cannot write a header whose name is not valid UTF-8; a producer in another language, or
a broken one, can. This writes one uncompressed record batch (magic 2) in a Produce request
(v3, the oldest a Kafka 4 broker accepts) straight to the partition's leader. For tests only:
no retries, no idempotence, acks=all.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass

from confluent_kafka import Producer

PRODUCE = 0
PRODUCE_VERSION = 3
# The broker's answer to a record without a key on a compacted topic.
INVALID_RECORD = 87


class RefusedBatch(Exception):
    """The broker refused the batch; `code` is the Kafka error code."""

    def __init__(self, code: int) -> None:
        super().__init__(f"the broker refused the raw batch: Kafka error code {code}")
        self.code = code


@dataclass(frozen=True)
class RawRecord:
    value: bytes | None
    key: bytes | None = None
    # Names and values as raw bytes: nothing is encoded or checked.
    headers: Sequence[tuple[bytes, bytes | None]] = ()


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        crc = n
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _varint(value: int) -> bytes:
    zigzag = (value << 1) ^ (value >> 63)
    out = bytearray()
    while True:
        byte = zigzag & 0x7F
        zigzag >>= 7
        if zigzag:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _sized(data: bytes | None) -> bytes:
    return _varint(-1) if data is None else _varint(len(data)) + data


def _record(offset_delta: int, record: RawRecord) -> bytes:
    body = bytearray()
    body += struct.pack(">b", 0)  # attributes
    body += _varint(0)  # timestamp delta
    body += _varint(offset_delta)
    body += _sized(record.key)
    body += _sized(record.value)
    body += _varint(len(record.headers))
    for name, value in record.headers:
        body += _sized(name) + _sized(value)
    return _varint(len(body)) + bytes(body)


def record_batch(records: Sequence[RawRecord], timestamp_ms: int) -> bytes:
    """One uncompressed v2 record batch holding `records`, all stamped `timestamp_ms`."""
    payload = b"".join(_record(i, r) for i, r in enumerate(records))
    after_crc = (
        struct.pack(
            ">hiqqqhii",
            0,  # attributes: no compression, create time, not transactional
            len(records) - 1,  # last offset delta
            timestamp_ms,
            timestamp_ms,
            -1,  # producer id
            -1,  # producer epoch
            -1,  # base sequence
            len(records),
        )
        + payload
    )
    after_length = struct.pack(">ibI", -1, 2, crc32c(after_crc)) + after_crc
    return struct.pack(">qi", 0, len(after_length)) + after_length


def _string(text: str) -> bytes:
    data = text.encode()
    return struct.pack(">h", len(data)) + data


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the broker closed the connection")
        data += chunk
    return bytes(data)


class RawProducer:
    """Writes record batches to one topic's partitions; `produce` returns the first offset."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        metadata = Producer({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
        brokers = {b.id: (b.host, b.port) for b in metadata.brokers.values()}
        self._leaders = {
            p.id: brokers[p.leader] for p in metadata.topics[topic].partitions.values()
        }
        self._correlation = 0

    def produce(self, partition: int, records: Sequence[RawRecord]) -> int:
        batch = record_batch(records, int(time.time() * 1000))
        self._correlation += 1
        request = (
            struct.pack(">hhi", PRODUCE, PRODUCE_VERSION, self._correlation)
            + _string("hookstream-tests-raw")
            + struct.pack(">hhi", -1, -1, 30_000)  # no transactional id, acks=all, timeout
            + struct.pack(">i", 1)
            + _string(self.topic)
            + struct.pack(">ii", 1, partition)
            + struct.pack(">i", len(batch))
            + batch
        )
        with socket.create_connection(self._leaders[partition], timeout=30) as sock:
            sock.sendall(struct.pack(">i", len(request)) + request)
            (size,) = struct.unpack(">i", _read_exactly(sock, 4))
            response = _read_exactly(sock, size)
        (correlation,) = struct.unpack_from(">i", response, 0)
        assert correlation == self._correlation
        position = 4 + 4  # correlation id, topic count (1)
        (name_length,) = struct.unpack_from(">h", response, position)
        position += 2 + name_length + 4  # name, partition count (1)
        _index, error, base_offset = struct.unpack_from(">ihq", response, position)
        if error != 0:
            raise RefusedBatch(error)
        return int(base_offset)
