"""Group commit for the API's store writes: what arrives while one call runs goes in the next.

A request that finds no call running starts one at once (at light load it waits for nobody);
while a call runs, the items of every request that arrives are held and handed to the next
call as one list. So N concurrent requests cost about one store transaction (one fsync on
SQLite) rather than N, without a timer anywhere.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Coalescer(Generic[T, R]):
    def __init__(self, call: Callable[[list[T]], Awaitable[list[R]]], max_items: int) -> None:
        """`call(items)` answers one result per item, in order; at most `max_items` a call
        (a single submission larger than that goes alone)."""
        self._call = call
        self._max_items = max_items
        self._waiting: deque[tuple[list[T], asyncio.Future[list[R]]]] = deque()
        self._runner: asyncio.Task[None] | None = None

    async def submit(self, items: list[T]) -> list[R]:
        """The results of `items`, from whichever call carried them."""
        answer: asyncio.Future[list[R]] = asyncio.get_running_loop().create_future()
        self._waiting.append((items, answer))
        if self._runner is None:
            self._runner = asyncio.create_task(self._run())
        return await answer

    async def _run(self) -> None:
        try:
            while self._waiting:
                taken = self._take()
                flat = [item for items, _ in taken for item in items]
                try:
                    results = await self._call(flat)
                except Exception as exc:
                    # Every submitter of this call gets the failure (each answers it: 503).
                    for _, answer in taken:
                        if not answer.done():
                            answer.set_exception(exc)
                    continue
                start = 0
                for items, answer in taken:
                    if not answer.done():  # its request may have been cancelled meanwhile
                        answer.set_result(results[start : start + len(items)])
                    start += len(items)
        finally:
            self._runner = None

    def _take(self) -> list[tuple[list[T], asyncio.Future[list[R]]]]:
        taken = [self._waiting.popleft()]
        size = len(taken[0][0])
        while self._waiting and size + len(self._waiting[0][0]) <= self._max_items:
            entry = self._waiting.popleft()
            taken.append(entry)
            size += len(entry[0])
        return taken
