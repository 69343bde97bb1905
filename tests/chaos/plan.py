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
    # kill | kill-random | add-sender | remove-sender | restart-broker | outage
    # | kill-leader | kill-controller | restart-nodes (the last three on a cluster)
    action: str
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
    # Kafka nodes: 1, or a cluster whose topics have replication factor 3 and
    # min.insync.replicas 2, as in production.
    brokers: int = 1
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
    brokers: int = 1,
) -> ChaosPlan:
    """`make chaos`: random kill -9s all along, a member joining and leaving, and a broker
    restart (on a cluster: the busiest node killed and restarted, then the controller)."""
    duration = events / rate
    chooser = random.Random(seed)
    faults = [Fault(t, "kill-random") for t in _every(3.0, duration, kill_every)]
    faults += [
        Fault(0.0, "outage"),
        Fault(duration * 0.25, "add-sender"),
        Fault(duration * 0.6, "outage"),
        Fault(duration * 0.75, "remove-sender"),
    ]
    faults += _broker_faults(duration, brokers)
    # Jitter the kills so they do not line up with the other faults.
    faults = [
        Fault(f.at + chooser.uniform(0, 1.0), f.action) if f.action == "kill-random" else f
        for f in faults
    ]
    return ChaosPlan(
        events=events,
        tenants=tenants,
        rate=rate,
        faults=_sorted(faults),
        seed=seed,
        brokers=brokers,
    )


def _broker_faults(duration: float, brokers: int) -> list[Fault]:
    if brokers == 1:
        return [Fault(duration * 0.45, "restart-broker")]
    # One node down at a time: a restart returns once its replicas are in sync again, so
    # the next kill never takes a partition below min.insync.replicas.
    return [
        Fault(duration * 0.2, "kill-leader"),
        Fault(duration * 0.35, "restart-nodes"),
        Fault(duration * 0.5, "kill-controller"),
        Fault(duration * 0.65, "restart-nodes"),
    ]


def short_cluster_plan(events: int = 4_000, tenants: int = 2, rate: float = 100.0) -> ChaosPlan:
    """The cluster variant in `make test`: while the load runs, kill -9 the node leading the
    most `deliveries` partitions, start it again, then the same for the controller."""
    duration = events / rate
    faults = [Fault(duration * 0.1, "outage"), *_broker_faults(duration, 3)]
    return ChaosPlan(events=events, tenants=tenants, rate=rate, faults=_sorted(faults), brokers=3)


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
