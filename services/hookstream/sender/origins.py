"""Which record a retry record follows from, so that a retry tier keeps only one copy of it.

A fenced revoke and a commit naming every finished record keep a partition's next owner from
redoing work whose retry was produced. A sender killed with -9 cannot commit: the records it
finished since its last commit (a fraction of a second of work) are done again by the next
owner, and each of them that failed produces its retry a second time. Both copies follow
from the same record, so every retry record names that record, its origin
(`topic:partition:offset`), in a header; both copies go to the same retry partition (the
key is the webhook id, the tier the attempt number), and its reader takes the first record
of an origin and drops any later one: one chain.

A copy is made only by a next owner redoing the origin record, and it takes over a killed
member's partitions once the group's session timeout (45 s by default, broker side) has
passed; it starts at the committed offset, within its first fetches. So a copy follows the
first record by about the session timeout and a few seconds: a reader remembers the origins
of the last `WINDOW_MS` of its partition (by record time), and an assignment reads that much
of the partition back below the committed offset to remember them again.
"""

from __future__ import annotations

import collections

from hookstream.core.kafka import Headers

ORIGIN_HEADER = "hookstream-origin"
# How far back (record time) a retry partition's reader remembers origins: well above the
# broker's session timeout (`group.consumer.session.timeout.ms`, 45 s by default). Raise it
# with the session timeout.
WINDOW_MS = 120_000
# At most this many origins per partition (about 10 MB), whatever the rate: past it the
# oldest are forgotten early.
MAX_ORIGINS = 50_000


def origin_header(topic: str, partition: int, offset: int) -> tuple[str, bytes]:
    """The header naming the record a follow-up record follows from."""
    return ORIGIN_HEADER, f"{topic}:{partition}:{offset}".encode()


def origin_of(headers: Headers) -> bytes | None:
    for key, value in headers:
        if key == ORIGIN_HEADER:
            return value or None
    return None


def without_origin(headers: Headers) -> Headers:
    return [(key, value) for key, value in headers if key != ORIGIN_HEADER]


class OriginLog:
    """The origins of one retry partition's records over the last `WINDOW_MS`."""

    __slots__ = ("_first", "_order")

    def __init__(self) -> None:
        self._first: dict[bytes, int] = {}  # origin -> offset of its first record
        self._order: collections.deque[tuple[int, bytes]] = collections.deque()

    def is_copy(self, origin: bytes, offset: int, timestamp_ms: int) -> bool:
        """Whether the record at `offset` repeats an earlier record's origin; else note it.

        The same record read again (held back, then re-read when due) is no copy.
        """
        self._forget_before(timestamp_ms - WINDOW_MS)
        first = self._first.get(origin)
        if first is not None:
            return offset > first
        self._first[origin] = offset
        self._order.append((timestamp_ms, origin))
        if len(self._order) > MAX_ORIGINS:
            self._forget_oldest()
        return False

    def __len__(self) -> int:
        return len(self._first)

    def _forget_before(self, timestamp_ms: int) -> None:
        while self._order and self._order[0][0] < timestamp_ms:
            self._forget_oldest()

    def _forget_oldest(self) -> None:
        _, origin = self._order.popleft()
        self._first.pop(origin, None)
