"""Avro single-object encoding for every topic value.

A value is `C3 01`, the 8-byte little-endian CRC-64-AVRO fingerprint of the writer schema's
Parsing Canonical Form, then the Avro binary body. The fingerprint lets readers pick the exact
writer schema (current or historical) and resolve it against today's schema, so records
written before a compatible schema change still decode.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any, TypeVar

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint as avro_fingerprint
from fastavro.schema import to_parsing_canonical_form

from hookstream.core.records import TopicRecord
from hookstream.core.resources import schemas_dir

_R = TypeVar("_R", bound=TopicRecord)

MAGIC = b"\xc3\x01"
HEADER_SIZE = len(MAGIC) + 8
HISTORY_DIR = "history"


class DecodeError(Exception):
    """Bytes that are not a valid value of the expected record; the message says what is wrong."""


def schema_fingerprint(schema: Mapping[str, Any] | str) -> bytes:
    """The 8-byte CRC-64-AVRO fingerprint of a schema, in wire (little-endian) order."""
    canonical = to_parsing_canonical_form(schema if isinstance(schema, str) else dict(schema))
    # fastavro already returns the little-endian byte sequence as hex, matching the Java library.
    return bytes.fromhex(avro_fingerprint(canonical, "CRC-64-AVRO"))


def record_name(schema: Mapping[str, Any]) -> str:
    """The short name of a record schema (`Event` for `hookstream.Event`)."""
    name = schema.get("name")
    if schema.get("type") != "record" or not isinstance(name, str):
        raise ValueError("a topic value schema must be a named Avro record")
    return name.rsplit(".", 1)[-1]


@dataclass(frozen=True, slots=True)
class _Schema:
    name: str
    parsed: Any
    header: bytes
    required: frozenset[str]
    current: bool


def _compile(schema: Mapping[str, Any], *, current: bool) -> _Schema:
    required = frozenset(
        field["name"] for field in schema.get("fields", ()) if "default" not in field
    )
    return _Schema(
        name=record_name(schema),
        # A fresh named-types registry per schema: historical versions reuse current names.
        parsed=parse_schema(dict(schema), named_schemas={}),
        header=MAGIC + schema_fingerprint(schema),
        required=required,
        current=current,
    )


class Codec:
    """Encodes and decodes every hookstream record type; build once, share everywhere."""

    def __init__(
        self,
        current: Iterable[Mapping[str, Any]],
        history: Iterable[Mapping[str, Any]] = (),
    ) -> None:
        self._current: dict[str, _Schema] = {}
        self._writers: dict[bytes, _Schema] = {}
        for schema in current:
            self._add_current(_compile(schema, current=True))
        for schema in history:
            self._add_history(_compile(schema, current=False))

    @classmethod
    def load(cls, directory: Path | None = None) -> Codec:
        """Read `*.avsc` (current) and `history/*.avsc` (older writers) from the schema folder."""
        root = schemas_dir(directory)
        return cls(
            current=_read_schemas(root.glob("*.avsc")),
            history=_read_schemas((root / HISTORY_DIR).glob("*.avsc")),
        )

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._current)

    def fingerprint(self, name: str) -> bytes:
        """The 8-byte fingerprint of the current schema of `name`."""
        return self._schema(name).header[len(MAGIC) :]

    def encode(self, name: str, record: Mapping[str, Any]) -> bytes:
        """Encode with the current schema; a record that does not fit raises ValueError."""
        return _encode(self._schema(name), record)

    def decode(self, name: str, data: bytes) -> dict[str, Any]:
        """Decode a `name` record written with any known version of its schema."""
        reader = self._schema(name)
        writer = self._writer(data)
        if writer.name != name:
            raise DecodeError(f"expected a {name} record, got a {writer.name} record")
        return _read_body(data, writer, reader)

    def write(self, record: TopicRecord) -> bytes:
        """The Avro single-object encoding of a typed record, with its current schema."""
        return self.encode(record.SCHEMA, record.to_record())

    def writer(self, kind: type[TopicRecord]) -> Callable[[TopicRecord], bytes]:
        """`write` for records of `kind` only, with the schema looked up once (hot paths)."""
        schema = self._schema(kind.SCHEMA)

        def write(record: TopicRecord) -> bytes:
            return _encode(schema, record.to_record())

        return write

    def read(self, kind: type[_R], data: bytes | None) -> _R:
        """Decode a value of `kind`'s topic into a `kind`.

        `DecodeError` says what is wrong with the bytes; `InvalidRecordError` names a decoded
        value the type does not allow (an unknown trigger, say).
        """
        if data is None:
            raise DecodeError("the record has no value (a tombstone)")
        return kind.from_record(self.decode(kind.SCHEMA, data))  # type: ignore[return-value]

    def identify(self, data: bytes) -> str:
        """The record name a value was written as, without decoding its body."""
        return self._writer(data).name

    def _schema(self, name: str) -> _Schema:
        try:
            return self._current[name]
        except KeyError:
            raise ValueError(f"unknown record type {name!r}") from None

    def _writer(self, data: bytes) -> _Schema:
        if len(data) < HEADER_SIZE:
            raise DecodeError(
                f"{len(data)} bytes is shorter than the "
                f"{HEADER_SIZE}-byte Avro single-object header"
            )
        if data[: len(MAGIC)] != MAGIC:
            raise DecodeError(
                f"not Avro single-object encoding: starts with {bytes(data[:2]).hex()}, "
                f"expected {MAGIC.hex()}"
            )
        fingerprint = bytes(data[len(MAGIC) : HEADER_SIZE])
        writer = self._writers.get(fingerprint)
        if writer is None:
            raise DecodeError(f"unknown writer schema fingerprint {fingerprint.hex()}")
        return writer

    def _add_current(self, schema: _Schema) -> None:
        if schema.name in self._current:
            raise ValueError(f"two current schemas define record {schema.name}")
        self._current[schema.name] = schema
        self._writers[schema.header[len(MAGIC) :]] = schema

    def _add_history(self, schema: _Schema) -> None:
        if schema.name not in self._current:
            raise ValueError(f"historical schema for {schema.name} has no current version")
        # An unchanged historical copy shares the current fingerprint; keep the current entry.
        self._writers.setdefault(schema.header[len(MAGIC) :], schema)


def _encode(schema: _Schema, record: Mapping[str, Any]) -> bytes:
    out = BytesIO()
    out.write(schema.header)
    try:
        schemaless_writer(out, schema.parsed, record)
    except (TypeError, ValueError, AttributeError, KeyError, OverflowError) as exc:
        raise ValueError(_encode_failure(schema, record, exc)) from exc
    return out.getvalue()


def _read_schemas(paths: Iterable[Path]) -> list[dict[str, Any]]:
    schemas: list[dict[str, Any]] = []
    for path in sorted(paths):
        with path.open("rb") as handle:
            loaded = json.load(handle)
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: a schema file must hold one Avro record schema")
        schemas.append(loaded)
    return schemas


def _read_body(data: bytes, writer: _Schema, reader: _Schema) -> dict[str, Any]:
    stream = BytesIO(data)
    stream.seek(HEADER_SIZE)
    # Same fingerprint means no resolution is needed; skipping it keeps the hot path cheap.
    reader_schema = None if writer.current else reader.parsed
    try:
        record = schemaless_reader(stream, writer.parsed, reader_schema)
    except Exception as exc:
        # fastavro signals bad bytes with many types (EOFError, UnicodeDecodeError, IndexError…).
        raise DecodeError(f"malformed {reader.name} body: {type(exc).__name__}: {exc}") from exc
    trailing = len(data) - stream.tell()
    if trailing:
        raise DecodeError(f"{trailing} unexpected trailing bytes after the {reader.name} record")
    if not isinstance(record, dict):
        raise DecodeError(f"{reader.name} body did not decode to a record")
    return record


def _encode_failure(schema: _Schema, record: Mapping[str, Any], exc: Exception) -> str:
    missing = sorted(schema.required - record.keys()) if isinstance(record, Mapping) else []
    if missing:
        return f"cannot encode {schema.name}: missing field(s) {', '.join(missing)}"
    return f"cannot encode {schema.name}: {exc}"


@functools.cache
def default_codec() -> Codec:
    """The process-wide codec over the installed schema folder."""
    return Codec.load()
