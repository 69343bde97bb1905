"""Which offset of a partition may be committed while many of its records are in flight, and
which records above it are finished already (the commit's metadata)."""

from __future__ import annotations

import heapq
from collections.abc import Iterable

# Commit metadata: the finished offsets above the commit point, as distances from it, in
# ranges ("3,5-9"). The broker refuses metadata above offset.metadata.max.bytes (4096 by
# default); past this many characters the rest is left out, and a next owner redoes those
# records (the retry tiers' origin check keeps their retries from doubling a chain).
METADATA_PREFIX = "finished:"
MAX_METADATA = 3000


class OffsetTracker:
    """Offsets of one partition handed out for work; the commit point is the lowest unfinished.

    A finished record above an unfinished one is not committable yet: the commit's metadata
    names it, so a next owner skips it (`already_finished`) rather than sending it again.
    """

    __slots__ = ("_already", "_done", "_done_heap", "_heap", "_next", "_pending")

    def __init__(self, already_finished: Iterable[int] = ()) -> None:
        self._pending: set[int] = set()
        self._heap: list[int] = []
        self._next: int | None = None
        # Finished offsets not yet below the commit point.
        self._done: set[int] = set()
        self._done_heap: list[int] = []
        # Named finished by the commit this assignment started from.
        self._already = frozenset(already_finished)

    def already_finished(self, offset: int) -> bool:
        """Whether the previous owner finished this record (its commit's metadata says so)."""
        return offset in self._already

    def started(self, offset: int) -> None:
        if offset not in self._pending:
            self._pending.add(offset)
            heapq.heappush(self._heap, offset)
            self._done.discard(offset)
        if self._next is None or offset >= self._next:
            self._next = offset + 1

    def finished(self, offset: int) -> None:
        if offset in self._pending:
            self._pending.discard(offset)
            if offset not in self._done:
                self._done.add(offset)
                heapq.heappush(self._done_heap, offset)

    def committable(self) -> int | None:
        """The offset to commit (the next one to read after a restart), or None if nothing ran."""
        while self._heap and self._heap[0] not in self._pending:
            heapq.heappop(self._heap)
        point = self._heap[0] if self._heap else self._next
        if point is not None:
            while self._done_heap and self._done_heap[0] < point:
                self._done.discard(heapq.heappop(self._done_heap))
        return point

    def metadata(self) -> str:
        """The commit's metadata: the finished records above `committable()`."""
        point = self.committable()
        if point is None or not self._done:
            return ""
        return encode_finished(point, sorted(self._done))

    @property
    def in_flight(self) -> int:
        return len(self._pending)


def encode_finished(point: int, offsets: list[int]) -> str:
    """`offsets` (sorted, all above `point`) as ranges of distances from `point`, at most
    `MAX_METADATA` characters: the lowest first, the rest left out."""
    parts: list[str] = []
    size = len(METADATA_PREFIX)
    index = 0
    while index < len(offsets):
        start = end = offsets[index]
        index += 1
        while index < len(offsets) and offsets[index] == end + 1:
            end = offsets[index]
            index += 1
        part = f"{start - point}" if start == end else f"{start - point}-{end - point}"
        size += len(part) + (1 if parts else 0)
        if size > MAX_METADATA:
            break
        parts.append(part)
    return METADATA_PREFIX + ",".join(parts) if parts else ""


def decode_finished(point: int, metadata: str | None) -> set[int]:
    """The finished offsets a commit at `point` names; none for metadata not written by
    `encode_finished` (an older sender's, or damaged)."""
    if not metadata or not metadata.startswith(METADATA_PREFIX):
        return set()
    finished: set[int] = set()
    try:
        for part in metadata[len(METADATA_PREFIX) :].split(","):
            low, _, high = part.partition("-")
            first, last = int(low), int(high or low)
            if first < 1 or last < first or last - first > 1_000_000:
                return set()
            finished.update(range(point + first, point + last + 1))
    except ValueError:
        return set()
    return finished
