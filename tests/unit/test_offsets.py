from __future__ import annotations

from hookstream.sender.offsets import MAX_METADATA, OffsetTracker, decode_finished, encode_finished


def test_nothing_started_commits_nothing() -> None:
    assert OffsetTracker().committable() is None


def test_commit_point_is_lowest_unfinished() -> None:
    tracker = OffsetTracker()
    for offset in (10, 11, 12, 13):
        tracker.started(offset)
    assert tracker.committable() == 10
    tracker.finished(11)
    tracker.finished(13)
    assert tracker.committable() == 10  # 10 still in flight: 11 and 13 wait behind it
    tracker.finished(10)
    assert tracker.committable() == 12
    tracker.finished(12)
    assert tracker.committable() == 14
    assert tracker.in_flight == 0


def test_out_of_order_finish_and_restart_of_same_offset() -> None:
    tracker = OffsetTracker()
    tracker.started(5)
    tracker.finished(5)
    tracker.started(5)  # re-read after a seek back: pending again, never double counted
    assert tracker.committable() == 5
    tracker.finished(5)
    assert tracker.committable() == 6


def test_metadata_names_the_finished_records_above_the_commit_point() -> None:
    tracker = OffsetTracker()
    for offset in range(10, 20):
        tracker.started(offset)
    for offset in (11, 12, 13, 15, 19):
        tracker.finished(offset)
    assert tracker.committable() == 10
    metadata = tracker.metadata()
    assert metadata == "finished:1-3,5,9"
    assert decode_finished(10, metadata) == {11, 12, 13, 15, 19}
    tracker.finished(10)  # the commit point moves past 11-13; 15 and 19 stay named
    assert tracker.committable() == 14
    assert decode_finished(14, tracker.metadata()) == {15, 19}


def test_a_next_owner_skips_what_the_metadata_names() -> None:
    tracker = OffsetTracker(decode_finished(10, "finished:2,4-5"))
    assert [o for o in range(10, 17) if tracker.already_finished(o)] == [12, 14, 15]
    assert not tracker.already_finished(10)


def test_metadata_is_bounded_and_keeps_the_lowest() -> None:
    point = 1000
    offsets = list(range(point + 1, point + 20_000, 2))  # no two adjacent: one part each
    metadata = encode_finished(point, offsets)
    assert len(metadata) <= MAX_METADATA
    named = decode_finished(point, metadata)
    assert named and named == set(offsets[: len(named)])


def test_foreign_or_damaged_metadata_names_nothing() -> None:
    for metadata in ("", None, "something else", "finished:x", "finished:0", "finished:5-2"):
        assert decode_finished(10, metadata) == set()
