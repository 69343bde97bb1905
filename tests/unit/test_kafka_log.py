"""librdkafka's records as the Kafka log filter rewrites and thins them."""

from __future__ import annotations

import logging

from hypothesis import given
from hypothesis import strategies as st

from hookstream.runtime.kafkalog import KafkaLogLines


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _record(facility: str, client: str, text: str, level: int = logging.ERROR) -> logging.LogRecord:
    # The shape confluent-kafka logs in: logger.log(level, "%s [%s] %s", fac, name, buf).
    return logging.LogRecord(
        "librdkafka", level, __file__, 0, "%s [%s] %s", (facility, client, text), None
    )


REFUSED = (
    "[thrd:127.0.0.1:1/bootstrap]: 127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: "
    "Connection refused (after {}ms in state CONNECT)"
)


def test_a_line_loses_its_thread_prefix_and_keeps_client_and_facility() -> None:
    lines = KafkaLogLines(clock=Clock())
    record = _record("FAIL", "hookstream-a#consumer-1", REFUSED.format(0))
    assert lines.filter(record)
    assert record.getMessage() == (
        "librdkafka FAIL: 127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: "
        "Connection refused (after 0ms in state CONNECT)"
    )
    assert record.__dict__["kafka_client"] == "hookstream-a#consumer-1"
    assert "repeated" not in record.__dict__


def test_repeats_within_the_window_are_counted_and_reported_on_the_next_line_shown() -> None:
    clock = Clock()
    lines = KafkaLogLines(window=60, clock=clock)
    assert lines.filter(_record("FAIL", "c1", REFUSED.format(0)))
    for step in range(1, 40):
        clock.now = step
        # Timings differ, the line says the same: held back.
        assert not lines.filter(_record("FAIL", "c1", REFUSED.format(step * 7)))
    # Another client, or another line, is news.
    assert lines.filter(_record("FAIL", "c2", REFUSED.format(0)))
    assert lines.filter(_record("GETPID", "c1", "[thrd:main]: Coordinator load in progress"))
    clock.now = 61
    again = _record("FAIL", "c1", REFUSED.format(3))
    assert lines.filter(again)
    assert again.__dict__["repeated"] == 39


def test_records_of_another_shape_pass_untouched() -> None:
    lines = KafkaLogLines(clock=Clock())
    record = logging.LogRecord("librdkafka", logging.WARNING, __file__, 0, "odd %s", ("x",), None)
    assert lines.filter(record)
    assert record.getMessage() == "odd x"


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["FAIL", "GETPID", "REQTMOUT"]),
            st.sampled_from(["c1", "c2"]),
            # No digits and no thread prefix: the line is its own key.
            st.text(alphabet="abc :/#", max_size=12),
            st.floats(min_value=0, max_value=5),
        ),
        max_size=80,
    )
)
def test_a_line_passes_exactly_when_it_was_not_shown_within_the_window(
    events: list[tuple[str, str, str, float]],
) -> None:
    clock = Clock()
    window = 10.0
    lines = KafkaLogLines(window=window, clock=clock)
    shown_at: dict[tuple[str, str, str], float] = {}
    held: dict[tuple[str, str, str], int] = {}
    for facility, client, text, advance in events:
        clock.now += advance
        key = (client, facility, text)
        expected = key not in shown_at or clock.now - shown_at[key] >= window
        record = _record(facility, client, text)
        assert lines.filter(record) == expected
        if expected:
            assert record.__dict__.get("repeated", 0) == held.pop(key, 0)
            shown_at[key] = clock.now
        else:
            held[key] = held.get(key, 0) + 1
