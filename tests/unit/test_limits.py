"""The per-webhook limits, driven by simulated time: bounds, and how they behave against
simulated receivers (unlimited, capacity-capped with 503s, slowing under load)."""

from __future__ import annotations

import heapq
import statistics
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hookstream.sender.limits import (
    TOLERANCE_FACTOR,
    TOLERANCE_SLACK,
    ConcurrencyLimit,
    TokenBucket,
)

# A receiver: given how many requests it holds (this one included), the answer's latency and
# whether it is a refusal.
Receiver = Callable[[int], tuple[float, bool]]


class _Run:
    def __init__(self) -> None:
        self.samples: list[tuple[float, int]] = []  # (time, limit) every 10 ms
        self.sent = 0
        self.refused = 0

    def mean_limit(self, start: float) -> float:
        return statistics.fmean(limit for t, limit in self.samples if t >= start)


def _simulate(
    limiter: ConcurrencyLimit,
    receiver: Callable[[float, int], tuple[float, bool]],
    seconds: float,
) -> _Run:
    """A client that always keeps `limit` requests out, as a discrete-event loop."""
    run = _Run()
    # (finish time, sequence, client in-flight at start, latency, refused)
    pending: list[tuple[float, int, int, float, bool]] = []
    held = 0  # requests the receiver is working on (refusals hold nothing)
    now = 0.0
    next_sample = 0.0
    while now <= seconds:
        while len(pending) < limiter.limit:
            latency, refused = receiver(now, held + 1)
            held += not refused
            run.sent += 1
            # A limit that never stops instant refusals would spin here at one instant.
            assert run.sent < 1_000_000, "the simulation is not advancing"
            run.refused += refused
            heapq.heappush(pending, (now + latency, run.sent, len(pending) + 1, latency, refused))
        finish, _, in_flight, latency, refused = heapq.heappop(pending)
        while next_sample <= finish:
            run.samples.append((next_sample, limiter.limit))
            next_sample += 0.01
        now = finish
        held -= not refused
        limiter.observe(now, latency, in_flight, refused)
    return run


def test_unlimited_receiver_is_found_quickly() -> None:
    limiter = ConcurrencyLimit(128)
    run = _simulate(limiter, lambda _now, _held: (0.05, False), 10.0)
    assert max(limit for _, limit in run.samples) >= 64
    assert limiter.limit >= 64
    assert run.refused == 0


@pytest.mark.parametrize("refusal_latency", [0.0, 0.005])
def test_capacity_of_twenty_with_503s_beyond(refusal_latency: float) -> None:
    def receiver(_now: float, held: int) -> tuple[float, bool]:
        return (refusal_latency, True) if held > 20 else (0.05, False)

    limiter = ConcurrencyLimit(128)
    run = _simulate(limiter, receiver, 60.0)
    assert 14 <= run.mean_limit(30.0) <= 22
    assert run.refused < 0.1 * run.sent


def test_latency_rising_with_load_holds_the_limit_near_the_knee() -> None:
    # 50 ms up to 30 at once, then 10 ms more per extra request: queueing at the receiver.
    def receiver(_now: float, held: int) -> tuple[float, bool]:
        return 0.05 + 0.01 * max(0, held - 30), False

    limiter = ConcurrencyLimit(128)
    run = _simulate(limiter, receiver, 120.0)
    assert 25 <= run.mean_limit(60.0) <= 40
    assert max(limit for t, limit in run.samples if t >= 10.0) <= 45


def test_receiver_slower_for_good_is_relearnt() -> None:
    def receiver(now: float, _held: int) -> tuple[float, bool]:
        return (0.05 if now < 10.0 else 0.5), False

    limiter = ConcurrencyLimit(128)
    run = _simulate(limiter, receiver, 120.0)
    # The floor rose far enough that 500 ms answers count as fast again.
    assert limiter.floor is not None
    assert limiter.floor * TOLERANCE_FACTOR + TOLERANCE_SLACK >= 0.5
    assert run.mean_limit(100.0) >= 20  # growing again against the new floor


def test_burst_of_refusals_costs_one_decrease() -> None:
    """20 requests out together, refused together: all were sent under the old limit."""
    limiter = ConcurrencyLimit(128, initial=50)
    for i in range(20):
        limiter.observe(10.0 + i * 0.001, 0.05, 50, True)
    assert limiter.limit == 40  # 50 * 0.8, once


def test_a_refusal_of_a_request_sent_after_the_decrease_decreases_again() -> None:
    """Instant refusals at a hard capacity: each one sent under the new limit is news."""
    limiter = ConcurrencyLimit(128, initial=50)
    limiter.observe(10.0, 0.001, 50, True)
    limiter.observe(10.003, 0.001, 40, True)
    assert limiter.limit == 32  # 50 * 0.8 * 0.8


def test_floor_is_the_fastest_answer() -> None:
    limiter = ConcurrencyLimit(128)
    assert limiter.floor is None
    limiter.observe(1.0, 0.2, 8, False)
    limiter.observe(1.1, 0.05, 8, False)
    limiter.observe(1.2, 0.08, 8, False)
    assert limiter.floor == 0.05
    limiter.observe(1.3, 0.01, 8, True)  # a refusal's duration is no service time
    assert limiter.floor == 0.05


def test_initial_is_capped_by_ceiling_and_fixed_is_validated() -> None:
    assert ConcurrencyLimit(4).limit == 4
    assert ConcurrencyLimit(128, initial=0).limit == 1
    for bad in (0, 257):
        with pytest.raises(ValueError):
            ConcurrencyLimit(128, fixed=bad)
    with pytest.raises(ValueError):
        ConcurrencyLimit(0)


_observations = st.lists(
    st.tuples(
        st.floats(0.0, 2.0),  # time since the previous observation
        st.floats(0.0, 5.0),  # latency
        st.integers(1, 300),  # in flight
        st.booleans(),  # overloaded
    ),
    max_size=300,
)


@given(st.integers(1, 256), st.integers(0, 300), _observations)
def test_limit_stays_within_one_and_ceiling(
    ceiling: int, initial: int, observations: list[tuple[float, float, int, bool]]
) -> None:
    limiter = ConcurrencyLimit(ceiling, initial=initial)
    now = 0.0
    for dt, latency, in_flight, overloaded in observations:
        now += dt
        limiter.observe(now, latency, in_flight, overloaded)
        assert 1 <= limiter.limit <= ceiling


@given(st.integers(1, 256), st.integers(1, 256), _observations)
def test_fixed_limit_never_changes(
    ceiling: int, fixed: int, observations: list[tuple[float, float, int, bool]]
) -> None:
    limiter = ConcurrencyLimit(ceiling, fixed=fixed)
    now = 0.0
    for dt, latency, in_flight, overloaded in observations:
        now += dt
        limiter.observe(now, latency, in_flight, overloaded)
        assert limiter.limit == fixed


@given(
    st.integers(2, 128),
    st.lists(st.tuples(st.floats(0.0, 2.0), st.floats(0.0, 5.0), st.booleans()), max_size=300),
)
def test_one_at_a_time_never_grows_the_limit(
    initial: int, observations: list[tuple[float, float, bool]]
) -> None:
    limiter = ConcurrencyLimit(128, initial=initial)
    now = 0.0
    for dt, latency, overloaded in observations:
        now += dt
        limiter.observe(now, latency, 1, overloaded)
        assert limiter.limit <= initial


@given(
    st.floats(0.1, 2000.0),
    st.one_of(st.none(), st.floats(1.0, 50.0)),
    st.lists(st.floats(0.0, 0.5), min_size=1, max_size=150),
)
def test_takes_in_any_interval_are_bounded(
    rate: float, burst: float | None, gaps: list[float]
) -> None:
    bucket = TokenBucket(rate, burst)
    now = 0.0
    taken: list[float] = []
    for gap in gaps:
        now += gap
        wait = bucket.take(now)
        if wait == 0.0:
            taken.append(now)
        else:
            assert wait > 0.0
    for i, a in enumerate(taken):
        for j in range(i, len(taken)):
            count = j - i + 1
            assert count <= rate * (taken[j] - a) + bucket.burst + 1e-6


@pytest.mark.parametrize("rate", [0.5, 1.0, 100.0, 1000.0])
def test_taking_as_fast_as_allowed_gets_the_rate(rate: float) -> None:
    bucket = TokenBucket(rate)
    now = 0.0
    taken = 0
    while now < 30.0:
        wait = bucket.take(now)
        if wait == 0.0:
            taken += 1
        now += wait
    assert abs(taken - rate * 30.0) <= 0.05 * rate * 30.0


def test_set_rate_keeps_tokens_within_the_new_burst() -> None:
    bucket = TokenBucket(100.0)  # burst 10, full
    bucket.set_rate(1.0)  # burst 1
    assert bucket.burst == 1.0
    assert bucket.take(0.0) == 0.0
    assert bucket.take(0.0) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        bucket.set_rate(0.0)
    with pytest.raises(ValueError):
        TokenBucket(1.0, burst=0.5)
