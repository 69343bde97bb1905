"""What a chaos run does: how much load, which webhooks, which faults and when."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

# Event types the load publishes; two categories, so category subscriptions mean something.
EVENT_TYPES = (
    "invoice.created",
    "invoice.paid",
    "invoice.voided",
    "offer.created",
    "offer.accepted",
    "offer.declined",
)

HEALTHY = "healthy"
SLOW = "slow"
# Answers 503 during outage windows, 2xx otherwise: failing, then recovering.
OUTAGE = "outage"

# Every tenant gets the same ten webhooks: a mix of subscription shapes and behaviours.
# A slow endpoint subscribes narrowly: at 8 requests in flight per webhook and a 250 ms
# answer it takes ~32 deliveries/s, which a `*` subscription would outrun.
TENANT_WEBHOOKS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (HEALTHY, ("*",)),
    (HEALTHY, ("invoice.*",)),
    (HEALTHY, ("invoice.created",)),
    (HEALTHY, ("invoice.paid",)),
    (HEALTHY, ("offer.created",)),
    (HEALTHY, ("offer.accepted", "invoice.voided")),
    (HEALTHY, ("offer.declined",)),
    (OUTAGE, ("offer.accepted",)),
    (OUTAGE, ("offer.*",)),
    (SLOW, ("invoice.paid",)),
)
SLOW_ANSWER_SECONDS = 0.25
# Shorter than the retry schedule below adds up to, so no delivery exhausts its attempts
# in one outage (the last retry comes at least ~12 s after the first failure).
OUTAGE_SECONDS = 5.0
# Six attempts: 0.5 + 1 + 2 + 4 + 8 = 15.5 s between the first and the last (±20 % jitter).
RETRY_SCHEDULE = (0.5, 1.0, 2.0, 4.0, 8.0)

# Services by the name the fleet knows them under, and what `hookstream run` calls them.
SERVICES = {
    "router": "router",
    "sender-1": "sender",
    "sender-2": "sender",
    "log-sink": "log-sink",
    "api": "api",
}
EXTRA_SENDER = "sender-3"


@dataclass(frozen=True)
class Fault:
    at: float  # seconds after the load starts
    action: str  # kill | kill-random | add-sender | remove-sender | restart-broker | outage
    target: str = ""


@dataclass(frozen=True)
class ChaosPlan:
    events: int
    tenants: int
    rate: float  # events offered per second
    faults: tuple[Fault, ...]
    # Every n-th event is published through POST /v1/events, the rest straight to Kafka.
    api_every: int = 10
    seed: int = 7
    # How long the pipeline may take to drain after the load ends before the run fails.
    drain_timeout: float = 300.0
    store_backend: str = "postgresql"
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def webhooks(self) -> int:
        return self.tenants * len(TENANT_WEBHOOKS)

    @property
    def load_seconds(self) -> float:
        return self.events / self.rate


def full_plan(
    events: int = 20_000,
    tenants: int = 5,
    rate: float = 200.0,
    kill_every: float = 7.0,
    seed: int = 7,
) -> ChaosPlan:
    """`make chaos`: random kill -9s all along, a broker restart, a member joining and leaving."""
    duration = events / rate
    chooser = random.Random(seed)
    faults = [Fault(t, "kill-random") for t in _every(3.0, duration, kill_every)]
    faults += [
        Fault(0.0, "outage"),
        Fault(duration * 0.25, "add-sender"),
        Fault(duration * 0.45, "restart-broker"),
        Fault(duration * 0.6, "outage"),
        Fault(duration * 0.75, "remove-sender"),
    ]
    # Jitter the kills so they do not line up with the other faults.
    faults = [
        Fault(f.at + chooser.uniform(0, 1.0), f.action) if f.action == "kill-random" else f
        for f in faults
    ]
    return ChaosPlan(events=events, tenants=tenants, rate=rate, faults=_sorted(faults), seed=seed)


def short_plan(events: int = 2_000, tenants: int = 2, rate: float = 200.0) -> ChaosPlan:
    """The variant in `make test`: one kill -9 of each service while the load runs."""
    duration = events / rate
    names = list(SERVICES)
    step = duration / (len(names) + 1)
    faults = [Fault(step * (i + 1), "kill", name) for i, name in enumerate(names)]
    faults.append(Fault(duration * 0.3, "outage"))
    return ChaosPlan(events=events, tenants=tenants, rate=rate, faults=_sorted(faults))


def _every(start: float, end: float, step: float) -> list[float]:
    times: list[float] = []
    at = start
    while at < end:
        times.append(at)
        at += step
    return times


def _sorted(faults: list[Fault]) -> tuple[Fault, ...]:
    return tuple(sorted(faults, key=lambda f: f.at))
