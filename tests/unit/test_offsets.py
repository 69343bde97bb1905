from __future__ import annotations

from hookstream.sender.offsets import OffsetTracker


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
