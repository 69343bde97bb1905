"""Per-webhook in-flight slots: at most `max_in_flight_per_webhook` requests to one webhook."""

from __future__ import annotations

import asyncio
import collections
import contextlib


class _WebhookSlot:
    __slots__ = ("holders", "waiters")

    def __init__(self) -> None:
        self.holders = 0
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()


class WebhookSlots:
    """Per-webhook in-flight slots that exist only while the webhook has work.

    Most webhooks have a record or two at a time, far below the limit: taking a slot is then
    a counter increment, with no semaphore built and torn down for every delivery. Beyond
    the limit records wait first come, first served; a released slot passes straight to the
    longest waiting one.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._slots: dict[str, _WebhookSlot] = {}

    async def acquire(self, webhook_id: str) -> None:
        slot = self._slots.get(webhook_id)
        if slot is None:
            slot = self._slots[webhook_id] = _WebhookSlot()
        if slot.holders < self._limit and not slot.waiters:
            slot.holders += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        slot.waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release(webhook_id)  # handed a slot just as it was cancelled: pass it on
            else:
                # A release may already have dropped it (and the slot with it).
                with contextlib.suppress(ValueError):
                    slot.waiters.remove(waiter)
                self._forget_if_idle(webhook_id, slot)
            raise

    def queued(self, webhook_id: str) -> int:
        """Records of this webhook waiting for one of its slots."""
        slot = self._slots.get(webhook_id)
        return 0 if slot is None else len(slot.waiters)

    def release(self, webhook_id: str) -> None:
        slot = self._slots[webhook_id]
        while slot.waiters:
            waiter = slot.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot changes hands; the holder count stays
                return
        slot.holders -= 1
        self._forget_if_idle(webhook_id, slot)

    def _forget_if_idle(self, webhook_id: str, slot: _WebhookSlot) -> None:
        if slot.holders == 0 and not slot.waiters and self._slots.get(webhook_id) is slot:
            del self._slots[webhook_id]
