"""The per-webhook gate: limits held, waiting in order, and put-offs instead of piles."""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hookstream.core.records import Webhook
from hookstream.sender import metrics
from hookstream.sender.gate import (
    MIN_HELD,
    PUT_OFF_GRANULARITY_MS,
    Ticket,
    WebhookGate,
    overloaded,
    put_off_due_ms,
)
from hookstream.sender.outcome import HttpResult

BASE = Webhook(
    id="wh_a", tenant_id="t", name="a", url="https://example.com", events=("*",), secrets=()
)


def hook(webhook_id: str = "wh_a", **settings: object) -> Webhook:
    return replace(BASE, id=webhook_id, **settings)


OK = HttpResult(status_code=204, duration_ms=50)


async def test_a_webhook_never_has_more_than_its_limit_in_flight() -> None:
    gate = WebhookGate(ceiling=8, window=1024)
    webhook = hook(max_concurrency=2)
    first = await gate.acquire(webhook, webhook.id)
    await gate.acquire(webhook, webhook.id)
    third = asyncio.create_task(gate.acquire(webhook, webhook.id))
    await asyncio.sleep(0)
    assert not third.done()
    assert gate.waiting(webhook.id) == 1
    other = hook("wh_b", max_concurrency=2)
    await gate.acquire(other, other.id)  # another webhook is not held up
    gate.release(first)
    await asyncio.wait_for(third, 1)
    assert gate.waiting(webhook.id) == 0


async def test_waiting_records_get_their_turn_first_come_first_served() -> None:
    gate = WebhookGate(ceiling=8, window=1024)
    webhook = hook(max_concurrency=1)
    held = await gate.acquire(webhook, webhook.id)
    order: list[int] = []

    async def take(number: int) -> None:
        ticket = await gate.acquire(webhook, webhook.id)
        order.append(number)
        gate.release(ticket)

    waiting = [asyncio.create_task(take(number)) for number in range(3)]
    await asyncio.sleep(0)
    assert gate.waiting(webhook.id) == 3
    gate.release(held)
    await asyncio.wait_for(asyncio.gather(*waiting), 1)
    assert order == [0, 1, 2]


async def test_a_cancelled_waiter_gives_up_its_place() -> None:
    gate = WebhookGate(ceiling=8, window=1024)
    webhook = hook(max_concurrency=1)
    held = await gate.acquire(webhook, webhook.id)
    cancelled = asyncio.create_task(gate.acquire(webhook, webhook.id))
    behind = asyncio.create_task(gate.acquire(webhook, webhook.id))
    await asyncio.sleep(0)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert gate.waiting(webhook.id) == 1
    gate.release(held)
    gate.release(await asyncio.wait_for(behind, 1))
    assert gate._states[webhook.id].in_flight == 0


async def test_a_turn_handed_to_a_cancelled_waiter_passes_on() -> None:
    gate = WebhookGate(ceiling=8, window=1024)
    webhook = hook(max_concurrency=1)
    held = await gate.acquire(webhook, webhook.id)
    first = asyncio.create_task(gate.acquire(webhook, webhook.id))
    second = asyncio.create_task(gate.acquire(webhook, webhook.id))
    await asyncio.sleep(0)
    gate.release(held)  # hands the turn to `first`, which is cancelled before it resumes
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    gate.release(await asyncio.wait_for(second, 1))
    assert gate._states[webhook.id].in_flight == 0


async def test_the_rate_limit_spaces_requests() -> None:
    gate = WebhookGate(ceiling=8, window=1024)
    webhook = hook(rate_limit=50.0)  # a burst of 5 (100 ms), then one per 20 ms
    started: list[float] = []

    async def send() -> None:
        ticket = await gate.acquire(webhook, webhook.id)
        started.append(time.monotonic())
        gate.release(ticket)

    begin = time.monotonic()
    await asyncio.wait_for(asyncio.gather(*(send() for _ in range(15))), 5)
    # 15 requests at 50/s with 5 at once: the last one no sooner than 10 intervals later.
    assert started[-1] - begin >= 10 / 50 - 0.01


async def test_a_retry_after_pauses_new_requests_until_then() -> None:
    gate = WebhookGate(ceiling=8, window=1024)
    webhook = hook()
    ticket = await gate.acquire(webhook, webhook.id)
    gate.pause(ticket, 0.3)
    gate.release(ticket)
    begin = time.monotonic()
    gate.release(await asyncio.wait_for(gate.acquire(webhook, webhook.id), 2))
    assert time.monotonic() - begin >= 0.25
    # A pause longer than a moment puts arriving records off rather than keeping them.
    ticket = await gate.acquire(webhook, webhook.id)
    gate.pause(ticket, 30)
    gate.release(ticket)
    put_off = gate.put_off(webhook, webhook.id)
    assert put_off is not None and put_off >= 29


async def test_beyond_what_may_wait_records_are_put_off_and_spread_out() -> None:
    gate = WebhookGate(ceiling=8, window=1024)
    webhook = hook(rate_limit=10.0)  # holds 16 (MIN_HELD) waiting at most
    tickets: list[asyncio.Task[Ticket]] = []
    while gate.put_off(webhook, webhook.id) is None:
        tickets.append(asyncio.create_task(gate.acquire(webhook, webhook.id)))
        await asyncio.sleep(0)
        assert len(tickets) <= MIN_HELD + 2
    assert gate.waiting(webhook.id) == MIN_HELD
    offs = [gate.put_off(webhook, webhook.id) or 0.0 for _ in range(5)]
    gaps = [later - earlier for earlier, later in itertools.pairwise(offs)]
    assert gaps == pytest.approx([0.1] * 4, abs=0.01)  # one per 1/rate, after those waiting
    assert offs[0] >= MIN_HELD / 10
    for task in tickets:
        task.cancel()


async def test_an_adaptive_limit_grows_with_fast_answers_and_shrinks_on_overload() -> None:
    gate = WebhookGate(ceiling=64, window=1024)
    webhook = hook()
    start = gate._states.get(webhook.id)
    assert start is None
    # Keep the limit full of fast answers for a while: it grows.
    for _ in range(400):
        limit = gate._state(webhook, webhook.id).limit.limit
        tickets = [await gate.acquire(webhook, webhook.id) for _ in range(limit)]
        for ticket in tickets:
            gate.observe(ticket, OK)
            gate.release(ticket)
    grown = gate._states[webhook.id].limit.limit
    assert grown > 8
    tickets = [await gate.acquire(webhook, webhook.id) for _ in range(grown)]
    await asyncio.sleep(0.06)  # a decrease counts once per round trip
    for ticket in tickets:
        gate.observe(ticket, HttpResult(status_code=503, duration_ms=50))
        gate.release(ticket)
    assert gate._states[webhook.id].limit.limit < grown


def test_what_counts_as_overload() -> None:
    assert overloaded(HttpResult(status_code=503, duration_ms=1))
    assert overloaded(HttpResult(status_code=429, duration_ms=1))
    assert overloaded(HttpResult(status_code=None, duration_ms=1, error="timeout after 5 s"))
    assert not overloaded(HttpResult(status_code=500, duration_ms=1))
    assert not overloaded(HttpResult(status_code=None, duration_ms=1, refused=True))


async def test_changed_settings_apply_to_the_next_requests() -> None:
    gate = WebhookGate(ceiling=8, window=1024)
    webhook = hook(max_concurrency=1)
    held = await gate.acquire(webhook, webhook.id)
    wider = replace(webhook, max_concurrency=2, version=2)
    # With the new setting a second request may start while the first is still out.
    second = await asyncio.wait_for(gate.acquire(wider, wider.id), 1)
    gate.release(held)
    gate.release(second)
    assert gate._states[webhook.id].limit.limit == 2


def test_put_off_records_are_due_on_the_granularity_never_sooner() -> None:
    assert put_off_due_ms(1_000_000, 0.0) == 1_000_000
    assert put_off_due_ms(1_000_001, 0.0) == 1_000_100
    assert put_off_due_ms(1_000_000, 0.25) == 1_000_300
    for seconds in (0.001, 0.099, 0.1, 1.2345):
        due = put_off_due_ms(1_234_567, seconds)
        assert due % PUT_OFF_GRANULARITY_MS == 0
        assert 0 <= due - (1_234_567 + seconds * 1000) < PUT_OFF_GRANULARITY_MS


async def test_an_adaptive_limit_still_growing_plans_put_offs_at_its_ceiling() -> None:
    """Planned at today's limit, a backlog would come back paced for 8 in flight while the
    limit grows to 64 meanwhile; planned at the ceiling, it comes back when it can go."""
    growing, fixed = WebhookGate(ceiling=64, window=64), WebhookGate(ceiling=64, window=64)
    adaptive, limited = hook("wh_g"), hook("wh_f", max_concurrency=8)
    waiting: list[asyncio.Task[Ticket]] = []
    spacing: list[float] = []
    for gate, webhook in ((growing, adaptive), (fixed, limited)):
        ticket = await gate.acquire(webhook, webhook.id)
        gate.observe(ticket, OK)  # 50 ms answers
        gate.release(ticket)
        while gate.put_off(webhook, webhook.id) is None:
            waiting.append(asyncio.create_task(gate.acquire(webhook, webhook.id)))
            await asyncio.sleep(0)
        first = gate.put_off(webhook, webhook.id) or 0.0
        spacing.append((gate.put_off(webhook, webhook.id) or 0.0) - first)
    assert spacing == pytest.approx([0.05 / 64, 0.05 / 8], rel=0.1)
    for task in waiting:
        task.cancel()


async def test_the_gauges_follow_a_webhook_waiting_on_its_rate() -> None:
    gate = WebhookGate(ceiling=8, window=1024)
    webhook = hook("wh_gauged", rate_limit=5.0)  # a burst of one token, then one per 0.2 s

    def in_flight() -> float:
        return metrics.WEBHOOK_IN_FLIGHT.labels(webhook.id)._value.get()

    first = await gate.acquire(webhook, webhook.id)
    second = asyncio.create_task(gate.acquire(webhook, webhook.id))
    await asyncio.sleep(0)
    gate.release(first)  # the second waits for its token: nothing is in flight
    assert in_flight() == 0
    gate.release(await asyncio.wait_for(second, 1))
    assert in_flight() == 0


async def test_idle_webhooks_beyond_what_is_kept_are_forgotten_oldest_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("hookstream.sender.gate.IDLE_KEPT", 3)
    gate = WebhookGate(ceiling=8, window=1024)
    busy = await gate.acquire(hook("wh_busy"), "wh_busy")  # in flight: never forgotten
    for name in ("wh_1", "wh_2", "wh_3", "wh_4"):
        gate.release(await gate.acquire(hook(name), name))
    assert set(gate._states) == {"wh_busy", "wh_3", "wh_4"}
    gate.release(busy)


@given(
    max_concurrency=st.one_of(st.none(), st.integers(-(2**31), 2**31 - 1)),
    rate_limit=st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
)
async def test_settings_written_around_the_api_never_fail_the_gate(
    max_concurrency: int | None, rate_limit: float | None
) -> None:
    """Whatever a record on the topic holds, the gate admits a request and holds a limit in
    range: a bad setting costs the webhook its setting, not every delivery."""
    gate = WebhookGate(ceiling=8, window=1024)
    webhook = hook("wh_any", max_concurrency=max_concurrency, rate_limit=rate_limit)
    assert gate.put_off(webhook, webhook.id) is None
    ticket = await asyncio.wait_for(gate.acquire(webhook, webhook.id), 1)
    assert 1 <= gate._states[webhook.id].limit.limit <= 256
    gate.release(ticket)
