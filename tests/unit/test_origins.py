"""A retry partition keeps the first record of each origin; a later copy is recognised."""

from __future__ import annotations

from hookstream.sender.origins import (
    ORIGIN_HEADER,
    WINDOW_MS,
    OriginLog,
    origin_header,
    origin_of,
    without_origin,
)

T = 1_700_000_000_000


def test_a_second_record_of_an_origin_is_a_copy_and_a_re_read_is_not() -> None:
    origins = OriginLog()
    assert not origins.is_copy(b"d:0:5", 10, T)
    assert not origins.is_copy(b"d:0:6", 11, T)
    assert not origins.is_copy(b"d:0:5", 10, T + 5)  # the same record, read again when due
    assert origins.is_copy(b"d:0:5", 14, T + 40_000)  # redone after a crash


def test_origins_older_than_the_window_are_forgotten() -> None:
    origins = OriginLog()
    origins.is_copy(b"d:0:5", 10, T)
    origins.is_copy(b"d:0:7", 11, T + WINDOW_MS + 1)
    assert len(origins) == 1
    assert not origins.is_copy(b"d:0:5", 12, T + WINDOW_MS + 2)


def test_origin_headers_round_trip_and_a_requeue_replaces_it() -> None:
    header = origin_header("t.deliveries", 3, 42)
    assert header == (ORIGIN_HEADER, b"t.deliveries:3:42")
    headers = [("hookstream-due-at-ms", b"1"), header]
    assert origin_of(headers) == b"t.deliveries:3:42"
    assert origin_of(without_origin(headers)) is None
    assert origin_of([]) is None
