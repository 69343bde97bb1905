"""Which offset of a partition may be committed while many of its records are in flight."""

from __future__ import annotations

import heapq


class OffsetTracker:
    """Offsets of one partition handed out for work; the commit point is the lowest unfinished.

    A finished record above an unfinished one is not committable yet: a crash re-sends the
    unfinished one and, at most, the finished ones above it (at-least-once).
    """

    __slots__ = ("_heap", "_next", "_pending")

    def __init__(self) -> None:
        self._pending: set[int] = set()
        self._heap: list[int] = []
        self._next: int | None = None

    def started(self, offset: int) -> None:
        if offset not in self._pending:
            self._pending.add(offset)
            heapq.heappush(self._heap, offset)
        if self._next is None or offset >= self._next:
            self._next = offset + 1

    def finished(self, offset: int) -> None:
        self._pending.discard(offset)

    def committable(self) -> int | None:
        """The offset to commit (the next one to read after a restart), or None if nothing ran."""
        while self._heap and self._heap[0] not in self._pending:
            heapq.heappop(self._heap)
        if self._heap:
            return self._heap[0]
        return self._next

    @property
    def in_flight(self) -> int:
        return len(self._pending)
