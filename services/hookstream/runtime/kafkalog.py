"""librdkafka's own log lines, made lines of the service's log.

Every Kafka client hands its log to the `librdkafka` logger (`core.kafka` configures that),
where this filter turns confluent-kafka's `FAC [client] [thrd:…]: text` into a message with
the facility and client as fields, and holds back repeats: a client that cannot reach its
broker says so again every few seconds for as long as the outage lasts, and a person reading
the log needs the first line, then one a minute saying how many were left out.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable

from hookstream.core.kafka import KAFKA_LOG

# A line says the same as an earlier one if it differs only in these (timings, state ages).
_VARYING = re.compile(r"\(after \d+ms in state \w+\)|\d+ms|\d+ ms")
# librdkafka prefixes a line with the thread that wrote it: noise for a reader.
_THREAD = re.compile(r"^\[thrd:[^\]]*\]: ")
# Seconds during which a repeated line is only counted.
REPEAT_WINDOW = 60.0
# Distinct lines remembered at most; older ones are forgotten first.
_REMEMBERED = 1024


class KafkaLogLines(logging.Filter):
    """Rewrites librdkafka's records and lets each distinct line through once per window."""

    def __init__(
        self, window: float = REPEAT_WINDOW, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self._window = window
        self._clock = clock
        self._lock = threading.Lock()  # records arrive on whichever thread polls a client
        # line -> (when it was last let through, repeats counted since)
        self._seen: dict[tuple[str, str, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != "%s [%s] %s" or not isinstance(record.args, tuple):
            return True  # not confluent-kafka's shape: leave it as it is
        if len(record.args) != 3:
            return True
        facility, client, text = (str(part) for part in record.args)
        text = _THREAD.sub("", text)
        key = (client, facility, _VARYING.sub("", text))
        now = self._clock()
        with self._lock:
            shown_at, repeats = self._seen.get(key, (None, 0))
            if shown_at is not None and now - shown_at < self._window:
                self._seen[key] = (shown_at, repeats + 1)
                return False
            self._seen.pop(key, None)  # re-inserted last: the dict stays in age order
            self._seen[key] = (now, 0)
            while len(self._seen) > _REMEMBERED:
                del self._seen[next(iter(self._seen))]
        record.msg, record.args = "librdkafka %s: %s", (facility, text)
        record.kafka_client = client
        if repeats:
            record.repeated = repeats
        return True


def route_kafka_log(level: int) -> None:
    """Let librdkafka's lines through at `level` or above (never below WARNING unless the
    service logs at DEBUG: its INFO lines are every disconnect of every idle connection)."""
    KAFKA_LOG.setLevel(level if level <= logging.DEBUG else max(level, logging.WARNING))
    for old in [f for f in KAFKA_LOG.filters if isinstance(f, KafkaLogLines)]:
        KAFKA_LOG.removeFilter(old)
    KAFKA_LOG.addFilter(KafkaLogLines())
