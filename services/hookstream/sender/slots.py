"""Per-webhook in-flight slots: at most `max_in_flight_per_webhook` requests to one webhook."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass


@dataclass(slots=True)
class _Slot:
    semaphore: asyncio.Semaphore
    users: int = 0  # records holding or waiting for one of the webhook's slots


class WebhookSlots:
    """A semaphore per webhook, kept only while the webhook has records holding or waiting."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._slots: dict[str, _Slot] = {}

    async def acquire(self, webhook_id: str) -> None:
        slot = self._slots.get(webhook_id)
        if slot is None:
            slot = self._slots[webhook_id] = _Slot(asyncio.Semaphore(self._limit))
        slot.users += 1
        try:
            await slot.semaphore.acquire()
        except BaseException:
            self._leave(webhook_id, slot)  # cancelled while waiting: it holds nothing
            raise

    def queued(self, webhook_id: str) -> int:
        """Records of this webhook waiting for one of its slots."""
        slot = self._slots.get(webhook_id)
        return 0 if slot is None else max(0, slot.users - self._limit)

    def release(self, webhook_id: str) -> None:
        slot = self._slots[webhook_id]
        slot.semaphore.release()
        self._leave(webhook_id, slot)

    def _leave(self, webhook_id: str, slot: _Slot) -> None:
        slot.users -= 1
        if slot.users == 0:
            del self._slots[webhook_id]
