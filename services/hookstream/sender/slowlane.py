"""Keeping slow webhooks from crowding out healthy ones.

A webhook that answers slowly holds its in-flight slots for as long as it takes. Left alone,
enough of them would take most of the sender's global slots, and the records waiting for
them would fill the sender's window of outstanding records, so healthy webhooks behind them
in the same partitions would wait too. So each webhook's recent answer time is tracked, and
a webhook found slow shares a smaller pool of slots (the slow lane) with the other slow
ones. When the lane is full, its records are not kept waiting in memory: they go to the
first retry tier unattempted and come back shortly, while the partition moves on.
"""

from __future__ import annotations

import asyncio

# Weight of the newest answer time in the running average: a few answers change the verdict.
_NEWEST_WEIGHT = 0.3


class AnswerTimes:
    """A running average of each webhook's answer time, in seconds."""

    def __init__(self, slow_seconds: float) -> None:
        self._slow_seconds = slow_seconds
        self._average: dict[str, float] = {}

    def record(self, webhook_id: str, seconds: float) -> None:
        previous = self._average.get(webhook_id)
        self._average[webhook_id] = (
            seconds if previous is None else previous + _NEWEST_WEIGHT * (seconds - previous)
        )

    def is_slow(self, webhook_id: str) -> bool:
        average = self._average.get(webhook_id)
        return average is not None and average >= self._slow_seconds


class SlowLane:
    """The slots slow webhooks share."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._slots = asyncio.Semaphore(size)

    def full(self) -> bool:
        return self._slots.locked()

    async def __aenter__(self) -> None:
        await self._slots.acquire()

    async def __aexit__(self, *_exc: object) -> None:
        self._slots.release()
