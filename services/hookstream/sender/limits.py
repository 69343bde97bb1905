"""How hard the sender may push one webhook: an in-flight limit and a delivery rate. Pure logic.

A webhook without an operator's `max_concurrency` gets an adaptive limit, so that a receiver
that can take 100 requests at once gets them and one that can take 5 is not buried. The rule
is AIMD with a latency floor (after Netflix's concurrency-limits): grow by one per window of
answers while answers come back about as fast as the fastest seen and the limit is in use;
shrink by a fraction when the receiver says it is overloaded or answers grow slow, at most
once per round trip, since the answers to requests sent under the old limit say nothing about
the new one. A webhook's `rate_limit` is a token bucket. Every time is passed in (seconds of a
monotonic clock), so both are driven by simulated time in the tests.
"""

from __future__ import annotations

import math

# A webhook's own max_concurrency at most (the API's bound too).
MAX_FIXED = 256
# Adaptive limit.
INITIAL_LIMIT = 8
# An answer counts as fast while latency <= floor * TOLERANCE_FACTOR + TOLERANCE_SLACK. The
# slack keeps a few ms of jitter on a very fast receiver from reading as queueing.
TOLERANCE_FACTOR = 2.0
TOLERANCE_SLACK = 0.02
# Multiplicative decreases: an explicit "overloaded" answer costs more than a slow one.
OVERLOAD_DECREASE = 0.8
LATENCY_DECREASE = 0.9
# At most one decrease for slowness per max(recent latency, this): answers queued behind the
# ones that were slow are slow too, and say nothing new.
DECREASE_MIN_GAP = 0.05
# Near the limit where the receiver last refused, grow this many times slower: probing a hard
# capacity one request above it costs a refusal each time (about one per window of answers at
# full speed, a fifth of all requests to a receiver taking 4 at a time).
PROBE_SLOWDOWN = 8
# Weight of the newest answer in the running average of recent latency.
RECENT_WEIGHT = 0.2
# How far the floor moves toward a slower answer seen with nothing else in flight.
FLOOR_RISE = 0.1

# Rate limit: tokens held at most, in seconds of rate. A second's worth would let the first
# second after a quiet spell carry twice the rate; 100 ms keeps any 30 s within a few percent.
BURST_SECONDS = 0.1
# Float slack when a caller wakes exactly at the wait it was given.
_EPSILON = 1e-9


class ConcurrencyLimit:
    """How many requests may be in flight to one webhook: fixed, or adaptive in [1, ceiling]."""

    def __init__(self, ceiling: int, *, fixed: int | None = None, initial: int = INITIAL_LIMIT):
        if ceiling < 1:
            raise ValueError(f"ceiling must be >= 1, got {ceiling}")
        if fixed is not None and not 1 <= fixed <= MAX_FIXED:
            raise ValueError(f"fixed must be in 1..{MAX_FIXED}, got {fixed}")
        self._ceiling = ceiling
        self._fixed = fixed
        self._estimate = float(min(max(initial, 1), ceiling))
        self._floor: float | None = None
        self._recent: float | None = None
        self._last_decrease = -math.inf
        # The estimate at the last refusal; None once the limit has grown past it unrefused.
        self._refused_at: float | None = None

    @property
    def limit(self) -> int:
        if self._fixed is not None:
            return self._fixed
        return int(self._estimate)

    @property
    def settled(self) -> bool:
        """Whether the limit is where it will stay: fixed, or adaptive and already brought
        down once by the receiver. Until then it may still grow toward the ceiling."""
        return self._fixed is not None or self._last_decrease > -math.inf

    @property
    def ceiling(self) -> int:
        return self._ceiling if self._fixed is None else self._fixed

    @property
    def floor(self) -> float | None:
        """The observed no-load latency, in seconds; None before the first usable answer."""
        return self._floor

    def observe(self, now: float, latency: float, in_flight: int, overloaded: bool) -> None:
        """One finished request; `in_flight` counts the requests out when it started, itself too."""
        if self._fixed is not None:
            return
        latency = max(0.0, latency)
        if overloaded:
            # A refusal's or a timeout's duration is not the receiver's service time: it
            # teaches the floor nothing.
            if self._decrease(now, latency, OVERLOAD_DECREASE, gap=0.0):
                self._refused_at = self._estimate / OVERLOAD_DECREASE
            return
        self._learn(latency, in_flight)
        assert self._floor is not None
        # A limit only counts as tested when at least half of it was in use: one request at a
        # time, fast or slow, says nothing about how many the receiver could take at once.
        in_use = in_flight * 2 >= self._estimate
        if latency <= self._floor * TOLERANCE_FACTOR + TOLERANCE_SLACK:
            if in_use:
                self._grow()
        elif in_use:
            self._decrease(now, latency, LATENCY_DECREASE)

    def _grow(self) -> None:
        """+1 per window of `limit` answers; slower just below the last refusal."""
        step = 1.0 / self._estimate
        refused_at = self._refused_at
        if refused_at is not None:
            if self._estimate >= refused_at + 1.0:
                self._refused_at = None  # grown past it unrefused: the receiver has more room
            elif self._estimate + 1.0 > refused_at:
                step /= PROBE_SLOWDOWN
        self._estimate = min(float(self._ceiling), self._estimate + step)

    def _learn(self, latency: float, in_flight: int) -> None:
        recent = self._recent
        self._recent = latency if recent is None else recent + RECENT_WEIGHT * (latency - recent)
        floor = self._floor
        if floor is None or latency < floor:
            self._floor = latency
        elif in_flight <= 1:
            # The floor rises only on answers to a request that had the receiver to itself (as
            # far as we are concerned), so that slowness we cause by queueing is never learnt
            # as the new normal, which would let the limit creep up without end. A receiver
            # that became slower for good keeps answering slowly, the limit falls to 1, and
            # there the new floor is learnt and the limit grows again.
            self._floor = floor + FLOOR_RISE * (latency - floor)

    def _decrease(
        self, now: float, latency: float, factor: float, gap: float | None = None
    ) -> bool:
        """Decrease by `factor` unless the signal is stale; whether it did."""
        if gap is None:
            gap = max(self._recent or 0.0, DECREASE_MIN_GAP)
        # A request sent before the last decrease was sent under the old limit: its answer
        # is that decrease's signal again. A refusal of one sent since is news, however soon.
        if now < self._last_decrease + gap or now - latency < self._last_decrease:
            return False
        self._last_decrease = now
        self._estimate = max(1.0, self._estimate * factor)
        return True


class TokenBucket:
    """At most `rate` deliveries per second, with `burst` of them allowed back to back."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self._burst_given = burst
        self._rate, self._burst = _checked(rate, burst)
        self._tokens = self._burst  # starts full
        self._updated: float | None = None

    @property
    def rate(self) -> float:
        return self._rate

    @property
    def burst(self) -> float:
        return self._burst

    def take(self, now: float) -> float:
        """0.0 and a token spent, or the seconds until one is due (nothing spent)."""
        self._refill(now)
        if self._tokens >= 1.0 - _EPSILON:
            self._tokens -= 1.0
            return 0.0
        return max(_EPSILON, (1.0 - self._tokens) / self._rate)

    def set_rate(self, rate: float) -> None:
        """The webhook's rate changed. Time since the last call is credited at the new rate."""
        self._rate, self._burst = _checked(rate, self._burst_given)
        self._tokens = min(self._tokens, self._burst)

    def _refill(self, now: float) -> None:
        if self._updated is not None and now > self._updated:
            self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate)
        if self._updated is None or now > self._updated:
            self._updated = now


def _checked(rate: float, burst: float | None) -> tuple[float, float]:
    if not rate > 0.0 or math.isinf(rate):
        raise ValueError(f"rate must be a positive number, got {rate}")
    # Never under one token, or a take could never succeed.
    capacity = max(1.0, rate * BURST_SECONDS) if burst is None else burst
    if not capacity >= 1.0:
        raise ValueError(f"burst must be >= 1, got {burst}")
    return rate, capacity
