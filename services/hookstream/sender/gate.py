"""Per-webhook admission: how many requests go to one webhook at a time, and how fast.

Every request to a webhook passes its gate. The gate holds the webhook's concurrency limit
(`max_concurrency`, or adaptive: sender/limits.py), its rate limit (`rate_limit`, a token bucket)
and a pause after a 429/503 that asked for one (`Retry-After`). A record that has to wait is
not an attempt: it waits here, in arrival order, without holding a global slot.

Waiting in memory is bounded per webhook: a record arriving while its webhook already has
about a second's worth of sending waiting (`held`) is put off to a retry tier instead, due when
its turn would come, so one webhook's huge backlog neither fills the sender's window of
outstanding records nor holds up the other webhooks of its partition behind it.

The limits hold per sender process, which is all there is for a webhook: `deliveries` is keyed
by webhook id, so one webhook's records are in one partition, read by one process.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from hookstream.core.records import Webhook
from hookstream.sender import metrics
from hookstream.sender.limits import MAX_FIXED, ConcurrencyLimit, TokenBucket
from hookstream.sender.outcome import HttpResult

# Idle webhooks whose learnt limit is remembered (the least recently used go first).
IDLE_KEPT = 10_000
# Seconds of a webhook's sending that may wait in memory; more is put off to a retry tier.
HOLD_SECONDS = 1.0
# Records one webhook may keep waiting in memory whatever its rate...
MIN_HELD = 16
# ...and at most, as a share of the sender's window of outstanding records.
MAX_HELD_SHARE = 0.5
# Longest pause a Retry-After imposes on new requests.
MAX_PAUSE_SECONDS = 60.0
# A pause longer than this puts arriving records off instead of keeping them waiting.
PAUSE_HOLD_SECONDS = 1.0
# Put-off records are due on multiples of this (ms): a retry tier's partition is paused until
# its head is due, so records due a millisecond apart would cost a pause and a fetch each.
PUT_OFF_GRANULARITY_MS = 100
# Requests per second assumed of a webhook not yet answered and without a rate limit.
UNKNOWN_RATE = 1000.0
# Weight of the newest answer time in the latency estimate used for put-off due times.
_NEWEST_WEIGHT = 0.2
# Statuses that mean "too much": they shrink an adaptive limit (so do timeouts and refused
# connections, which have none).
OVERLOAD_STATUSES = frozenset({429, 503})


@dataclass(frozen=True, slots=True)
class Ticket:
    """One admitted request: what its release reports against."""

    webhook_id: str
    in_flight: int  # requests in flight to the webhook once this one was admitted


@dataclass(slots=True)
class _State:
    limit: ConcurrencyLimit
    settings: tuple[int | None, float | None]  # (max_concurrency, rate_limit) it was made for
    bucket: TokenBucket | None
    waiters: deque[asyncio.Future[None]] = field(default_factory=deque)
    in_flight: int = 0
    paused_until: float = 0.0  # monotonic
    latency: float | None = None  # running average of answer times, seconds
    fastest: float | None = None  # the fastest answer, seconds
    next_put_off: float = 0.0  # monotonic: when the last put-off record was due
    timer: asyncio.TimerHandle | None = None


def _limits_of(webhook: Webhook | None) -> tuple[int | None, float | None]:
    """The webhook's max_concurrency and rate_limit as the gate holds them. The API keeps them
    in range, but a record may reach the topic another way: a limit out of range is brought
    into it, and a rate that is not a positive number counts as none, rather than failing
    every delivery of the webhook."""
    if webhook is None:
        return None, None
    fixed, rate = webhook.max_concurrency, webhook.rate_limit
    if fixed is not None:
        fixed = min(max(fixed, 1), MAX_FIXED)
    if rate is not None and not (math.isfinite(rate) and rate > 0):
        rate = None
    return fixed, rate


def put_off_due_ms(now_ms: int, seconds: float) -> int:
    """When a record put off by `seconds` is due: never sooner, on the granularity."""
    due = now_ms + math.ceil(seconds * 1000)
    return -(-due // PUT_OFF_GRANULARITY_MS) * PUT_OFF_GRANULARITY_MS


def overloaded(result: HttpResult) -> bool:
    """Whether an answer says the endpoint has too much to do."""
    if result.status_code is None:
        return not result.refused  # a timeout or a connection that failed
    return result.status_code in OVERLOAD_STATUSES


class WebhookGate:
    def __init__(self, ceiling: int, window: int) -> None:
        """`ceiling`: the most requests in flight to one webhook (the adaptive limit's top);
        `window`: the sender's bound of outstanding records, of which a webhook may hold a
        share waiting."""
        self._ceiling = ceiling
        self._max_held = max(MIN_HELD, int(window * MAX_HELD_SHARE))
        # Busy webhooks, and idle ones in least-recently-used order.
        self._states: OrderedDict[str, _State] = OrderedDict()

    def waiting(self, webhook_id: str) -> int:
        state = self._states.get(webhook_id)
        return 0 if state is None else len(state.waiters)

    def put_off(self, webhook: Webhook | None, webhook_id: str) -> float | None:
        """Seconds to put a record of this webhook off by, or None to let it wait here."""
        state = self._state(webhook, webhook_id)
        now = time.monotonic()
        pause = state.paused_until - now
        if pause <= PAUSE_HOLD_SECONDS and len(state.waiters) < self._held_bound(state):
            return None
        # Planned at the best rate the webhook may reach, because errors cost unevenly: a
        # record back too early waits here or is put off once more, one planned too late
        # leaves the webhook idle while it waits for nothing.
        rate = self._drain_rate(state, planning=True)
        # Its turn: after the records waiting here and in flight, and after the last record
        # put off, so records put off together come back spread out, not all at once.
        turn = now + max(pause, 0.0) + (len(state.waiters) + state.in_flight) / rate
        due = max(turn, state.next_put_off + 1 / rate)
        state.next_put_off = due
        return due - now

    async def acquire(self, webhook: Webhook | None, webhook_id: str) -> Ticket:
        """Wait for the webhook's turn: a free slot under its limit, a token of its rate,
        the end of a pause."""
        state = self._state(webhook, webhook_id)
        if not state.waiters and self._may_start(state):
            return self._start(webhook_id, state)
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        state.waiters.append(waiter)
        self._schedule(webhook_id, state)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._finish(webhook_id, state)  # admitted, then cancelled: give it back
            elif waiter in state.waiters:
                state.waiters.remove(waiter)
            raise
        return Ticket(webhook_id, state.in_flight)

    def observe(self, ticket: Ticket, result: HttpResult) -> None:
        """What the admitted request's answer says about the endpoint."""
        state = self._states[ticket.webhook_id]
        now = time.monotonic()
        seconds = result.duration_ms / 1000
        busy = overloaded(result)
        state.limit.observe(now, seconds, ticket.in_flight, busy)
        state.latency = (
            seconds
            if state.latency is None
            else state.latency + _NEWEST_WEIGHT * (seconds - state.latency)
        )
        if not busy and (state.fastest is None or seconds < state.fastest):
            state.fastest = seconds

    def pause(self, ticket: Ticket, seconds: float) -> None:
        """No new request to the webhook for `seconds` (a 429/503 asked, with Retry-After)."""
        state = self._states[ticket.webhook_id]
        until = time.monotonic() + min(seconds, MAX_PAUSE_SECONDS)
        state.paused_until = max(state.paused_until, until)

    def release(self, ticket: Ticket) -> None:
        """The admitted record is done with its request (or sent none after all)."""
        self._finish(ticket.webhook_id, self._states[ticket.webhook_id])

    # -- inside ---------------------------------------------------------------------------

    def _state(self, webhook: Webhook | None, webhook_id: str) -> _State:
        settings = _limits_of(webhook)
        state = self._states.get(webhook_id)
        if state is None:
            state = self._new_state(settings)
            self._states[webhook_id] = state
            if len(self._states) > IDLE_KEPT:
                self._evict_idle()
        elif state.settings != settings:
            # The webhook's settings changed; what is in flight stays counted.
            fresh = self._new_state(settings)
            if settings[0] != state.settings[0]:
                state.limit = fresh.limit
            if state.bucket is not None and fresh.bucket is not None:
                state.bucket.set_rate(fresh.bucket.rate)  # its tokens carry over
            else:
                state.bucket = fresh.bucket
            state.settings = settings
            self._schedule(webhook_id, state)
        self._states.move_to_end(webhook_id)
        return state

    def _new_state(self, settings: tuple[int | None, float | None]) -> _State:
        fixed, rate = settings
        ceiling = max(self._ceiling, fixed or 0)
        limit = ConcurrencyLimit(ceiling, fixed=fixed)
        return _State(limit, settings, None if rate is None else TokenBucket(rate))

    def _held_bound(self, state: _State) -> int:
        if state.latency is None and state.bucket is None:
            return self._max_held  # nothing known yet about how fast it drains
        wanted = math.ceil(self._drain_rate(state) * HOLD_SECONDS)
        return min(self._max_held, max(MIN_HELD, wanted))

    @staticmethod
    def _drain_rate(state: _State, *, planning: bool = False) -> float:
        """Requests per second the webhook takes: at its limit and usual answer time, or,
        `planning`, at its fastest answer and the ceiling an adaptive limit still growing
        may reach."""
        rate = math.inf
        latency = state.fastest if planning else state.latency
        if latency is not None:
            limit = state.limit.limit
            if planning and not state.limit.settled:
                limit = state.limit.ceiling
            rate = limit / max(latency, 0.001)
        if state.bucket is not None:
            rate = min(rate, state.bucket.rate)
        return rate if math.isfinite(rate) else UNKNOWN_RATE

    def _may_start(self, state: _State) -> bool:
        now = time.monotonic()
        if state.in_flight >= state.limit.limit or now < state.paused_until:
            return False
        return state.bucket is None or state.bucket.take(now) == 0.0

    def _start(self, webhook_id: str, state: _State) -> Ticket:
        state.in_flight += 1
        self._report(webhook_id, state)
        return Ticket(webhook_id, state.in_flight)

    def _finish(self, webhook_id: str, state: _State) -> None:
        state.in_flight -= 1
        self._schedule(webhook_id, state)

    def _schedule(self, webhook_id: str, state: _State) -> None:
        """Admit the waiters that may start now; wake up later for the next one if needed."""
        if state.timer is not None:
            state.timer.cancel()
            state.timer = None
        while state.waiters and state.in_flight < state.limit.limit:
            if state.waiters[0].done():  # cancelled while waiting
                state.waiters.popleft()
                continue
            now = time.monotonic()
            wait = state.paused_until - now
            if wait <= 0 and state.bucket is not None:
                wait = state.bucket.take(now)
            if wait > 0:
                loop = asyncio.get_running_loop()
                state.timer = loop.call_later(wait, self._schedule, webhook_id, state)
                break
            state.in_flight += 1
            state.waiters.popleft().set_result(None)
        self._report(webhook_id, state)

    def _evict_idle(self) -> None:
        """Forget the least recently used idle webhook (its learnt limit with it): one look at
        the oldest per new webhook, not a walk over all of them."""
        for _ in range(len(self._states)):
            if len(self._states) <= IDLE_KEPT:
                return
            webhook_id, state = next(iter(self._states.items()))
            if state.in_flight or state.waiters:
                self._states.move_to_end(webhook_id)  # busy: as good as just used
                continue
            del self._states[webhook_id]
            metrics.forget_webhook(webhook_id)

    @staticmethod
    def _report(webhook_id: str, state: _State) -> None:
        metrics.webhook_gauges(webhook_id, state.limit.limit, state.in_flight)
