"""Which of a partition's records may still send a request and produce what follows it.

A record's work is fenced by the assignment (epoch) of the partition it was read from. Once
that partition is revoked, or the sender shuts down, its committed offset is all the next
owner goes by: it redoes every record at or above it that is not listed as finished. So a
record of a revoked assignment must either finish before that commit (and be committed as
finished), or produce nothing at all; a record that produced its retry after the commit
would start a second retry chain beside the one the next owner starts.

The states of an epoch:

- open: its records may start a request, or produce when they make none;
- closing (a revoke or a stop is waiting for its work): no record may start, those already
  in a request may still produce what follows it;
- fenced: nothing more; a record still in its request produces nothing when it returns,
  and its offset stays uncommitted, so the next owner makes that attempt once more.

The fetcher moves an epoch along on its thread (waiting on this object), the record tasks
ask it on the event loop: the state is kept under one lock.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Iterable


class FencedError(Exception):
    """The record's partition is no longer this sender's: drop the record's work unfinished."""


class Fence:
    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._open: set[int] = set()
        self._closing: set[int] = set()
        # Records of each epoch that passed `enter` and have not yet called `leave`.
        self._inside: collections.Counter[int] = collections.Counter()
        # Of those, the ones producing now (between `produce` and `leave`).
        self._producing: collections.Counter[int] = collections.Counter()

    def open(self, epoch: int) -> None:
        with self._changed:
            self._open.add(epoch)

    def enter(self, epoch: int) -> bool:
        """Whether a record of `epoch` may start its request (or, making none, produce)."""
        with self._changed:
            if epoch not in self._open:
                return False
            self._inside[epoch] += 1
            return True

    def produce(self, epoch: int) -> bool:
        """Whether a record inside (see `enter`) may produce what follows its attempt.

        Once this says yes, the fetcher waits for the record's `leave` before it commits:
        records being produced are acknowledged within moments.
        """
        with self._changed:
            if epoch not in self._open and epoch not in self._closing:
                return False
            self._producing[epoch] += 1
            return True

    def leave(self, epoch: int, produced: bool) -> None:
        """The record inside is done: finished (and handed back) or refused."""
        with self._changed:
            _decrement(self._inside, epoch)
            if produced:
                _decrement(self._producing, epoch)
            self._changed.notify_all()

    def close(self, epochs: Iterable[int], requests_wait: float, produce_wait: float) -> int:
        """Let `epochs`' requests in flight end (up to `requests_wait` seconds), then fence
        them, and wait (up to `produce_wait`) for what is being produced.

        Returns how many records were still in their request when fenced. Called by the
        fetcher before it commits a revoked partition or its last offsets.
        """
        with self._changed:
            # One already fenced (a stop's last commit, then the revoke closing the consumer
            # makes) has nothing left to wait for.
            closing = {e for e in epochs if e in self._open or e in self._closing}
            self._open -= closing
            self._closing |= closing
            deadline = time.monotonic() + requests_wait
            self._changed.wait_for(
                lambda: not any(self._inside[e] for e in closing),
                timeout=max(0.0, deadline - time.monotonic()),
            )
            self._closing -= closing
            left = sum(self._inside[e] - self._producing[e] for e in closing)
            self._changed.wait_for(
                lambda: not any(self._producing[e] for e in closing), timeout=produce_wait
            )
            return left


def _decrement(counter: collections.Counter[int], epoch: int) -> None:
    counter[epoch] -= 1
    if counter[epoch] <= 0:
        del counter[epoch]


class Permit:
    """One record's passage through the fence: asked right before its request is sent and
    right before anything that follows it is produced."""

    __slots__ = ("_epoch", "_fence", "_inside", "_producing")

    def __init__(self, fence: Fence, epoch: int) -> None:
        self._fence = fence
        self._epoch = epoch
        self._inside = False
        self._producing = False

    def send(self) -> None:
        """Raise `FencedError` unless the record may send its request now."""
        self._enter()

    def produce(self) -> None:
        """Raise `FencedError` unless the record may produce its follow-up records now."""
        self._enter()
        if not self._producing:
            if not self._fence.produce(self._epoch):
                raise FencedError("the partition was revoked during the request")
            self._producing = True

    def release(self) -> None:
        """The record is done (its finish handed back to the fetcher, or refused)."""
        if self._inside:
            self._inside = False
            self._fence.leave(self._epoch, self._producing)
            self._producing = False

    def _enter(self) -> None:
        if not self._inside:
            if not self._fence.enter(self._epoch):
                raise FencedError("the partition is no longer assigned to this sender")
            self._inside = True
