"""Load hookstream's delivery-log topic into DuckDB and report on it.

    pip install confluent-kafka fastavro duckdb
    python delivery_log_to_duckdb.py --bootstrap 127.0.0.1:9092 \
        --topic hookstream.delivery-log --schemas path/to/hookstream/schemas

Reads every retained record (from the beginning to the end of each partition, without a
consumer group, so it commits nothing), decodes the Avro single-object encoding by each
record's writer-schema fingerprint, loads the attempts into a DuckDB table `attempts` and
prints the success rate and latency per webhook. `--database file.duckdb` keeps the table.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

import duckdb
import fastavro
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from fastavro.schema import fingerprint, to_parsing_canonical_form

MAGIC = b"\xc3\x01"  # Avro single-object encoding marker
HEADER = len(MAGIC) + 8  # marker + CRC-64-AVRO fingerprint, little-endian

COLUMNS = (
    "attempt_id VARCHAR PRIMARY KEY, delivery_id VARCHAR, event_id VARCHAR, "
    "webhook_id VARCHAR, tenant_id VARCHAR, event_type VARCHAR, attempt_number INTEGER, "
    "trigger VARCHAR, url VARCHAR, started_at TIMESTAMPTZ, duration_ms INTEGER, "
    "status_code INTEGER, outcome VARCHAR, error VARCHAR, next_attempt_at TIMESTAMPTZ"
)

REPORT = """
SELECT webhook_id,
       count(DISTINCT delivery_id) AS deliveries,
       count(*) AS attempts,
       count(DISTINCT delivery_id) FILTER (WHERE outcome = 'success') AS delivered,
       round(100.0 * count(DISTINCT delivery_id) FILTER (WHERE outcome = 'success')
             / count(DISTINCT delivery_id), 1) AS success_rate_pct,
       count(*) FILTER (WHERE outcome <> 'success') AS failed_attempts,
       quantile_cont(duration_ms, 0.95) AS p95_duration_ms
FROM attempts
GROUP BY webhook_id
ORDER BY webhook_id
"""


def load_schemas(directory: Path) -> tuple[dict[bytes, Any], Any]:
    """Every Attempt schema, current and historical, by fingerprint; and today's schema.

    Records written under an older (compatible) schema are read into today's shape.
    """
    current = None
    by_fingerprint: dict[bytes, Any] = {}
    for path in [directory / "attempt.avsc", *sorted((directory / "history").glob("attempt*"))]:
        raw = json.loads(path.read_text())
        canonical = to_parsing_canonical_form(raw)
        by_fingerprint[bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))] = (
            fastavro.parse_schema(raw)
        )
        if current is None:
            current = fastavro.parse_schema(raw)
    return by_fingerprint, current


def decode(value: bytes, writers: dict[bytes, Any], reader: Any) -> dict[str, Any]:
    if value[:2] != MAGIC:
        raise ValueError("not Avro single-object encoding")
    writer = writers.get(value[2:HEADER])
    if writer is None:
        raise ValueError(f"unknown writer schema {value[2:HEADER].hex()}: update --schemas")
    record: dict[str, Any] = fastavro.schemaless_reader(io.BytesIO(value[HEADER:]), writer, reader)
    return record


def read_attempts(bootstrap: str, topic: str, schemas: Path) -> list[dict[str, Any]]:
    writers, reader = load_schemas(schemas)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "delivery-log-analysis",  # required by the client; nothing is committed
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        if not partitions:
            raise SystemExit(f"topic {topic} not found")
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        finished: set[int] = set()
        attempts: list[dict[str, Any]] = []
        deadline = time.monotonic() + 120
        while len(finished) < len(partitions):
            if time.monotonic() > deadline:
                raise SystemExit("timed out reading the topic to its end")
            for message in consumer.consume(1000, timeout=0.5):
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        finished.add(message.partition())
                        continue
                    raise SystemExit(f"kafka: {error}")
                value = message.value()
                if value is not None:
                    attempts.append(decode(value, writers, reader))
        return attempts
    finally:
        consumer.close()


def load(database: duckdb.DuckDBPyConnection, attempts: list[dict[str, Any]]) -> None:
    database.execute(f"CREATE OR REPLACE TABLE attempts ({COLUMNS})")
    # INSERT OR REPLACE: the topic is at-least-once, a record may appear twice.
    database.executemany(
        "INSERT OR REPLACE INTO attempts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, "
        "to_timestamp(? / 1000.0), ?, ?, ?, ?, to_timestamp(? / 1000.0))",
        [
            (
                a["attempt_id"],
                a["delivery_id"],
                a["event_id"],
                a["webhook_id"],
                a["tenant_id"],
                a["event_type"],
                a["attempt_number"],
                a["trigger"],
                a["url"],
                a["started_at_ms"],
                a["duration_ms"],
                a["status_code"],
                a["outcome"],
                a["error"],
                a["next_attempt_at_ms"],
            )
            for a in attempts
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--topic", default="hookstream.delivery-log")
    parser.add_argument("--schemas", type=Path, default=Path("schemas"))
    parser.add_argument("--database", default=":memory:", help="a DuckDB file to keep")
    parser.add_argument("--json", action="store_true", help="the report as JSON lines")
    args = parser.parse_args()

    attempts = read_attempts(args.bootstrap, args.topic, args.schemas)
    database = duckdb.connect(args.database)
    load(database, attempts)
    result = database.execute(REPORT)
    columns = [column[0] for column in result.description]
    rows = result.fetchall()
    if args.json:
        for row in rows:
            print(json.dumps(dict(zip(columns, row, strict=True)), default=str))
        return
    print(f"{len(attempts)} attempts read from {args.topic}\n")
    if not rows:
        return
    widths = [max(len(c), *(len(str(r[i])) for r in rows)) for i, c in enumerate(columns)]
    for row in [columns, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))


if __name__ == "__main__":
    sys.exit(main())
