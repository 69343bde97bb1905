"""The router's per-event work in one process, no Kafka: CPU microseconds per routed event.

`make bench`'s router stage runs a whole router against the broker, and on a shared 2-core
machine its figure swings by a third between runs of the same code. This measures only what
the router does per record (decode, validate, match, shape, build and encode deliveries) with
the process's CPU clock, the best of several rounds, so two commits can be compared by running
it alternately on each:

    python -m bench.router_hot_path --fanout 10

Shaped like the router stage (`bench/stage_router.py`) at a tenth of its webhooks: 1,000 over
100 tenants, `--fanout` of each tenant's subscribed to the measured type, 1 KiB bodies.
"""

from __future__ import annotations

import argparse
import time

from bench import workload
from bench.stage_router import MEASURED_TYPE, OTHER_TYPES
from hookstream.core.codec import default_codec
from hookstream.core.settings import load_settings
from hookstream.router.service import Router

WEBHOOKS = 1000
TENANTS = 100
EVENTS = 5000
ROUNDS = 5


class _Record:
    """What the router reads of a consumed record: its value (no headers: an Avro event)."""

    def __init__(self, value: bytes) -> None:
        self._value = value

    def value(self) -> bytes:
        return self._value


def measure(fanout: int) -> float:
    """CPU microseconds per event routed to `fanout` webhooks, best of ROUNDS rounds."""
    # Never connects: the views are not started and nothing is produced.
    router = Router(load_settings(kafka_bootstrap_servers="127.0.0.1:1"))
    per_tenant = WEBHOOKS // TENANTS
    for index in range(WEBHOOKS):
        tenant, slot = divmod(index, per_tenant)
        subscribed = (MEASURED_TYPE,) if slot < fanout else (OTHER_TYPES[slot % 3],)
        hook = workload.webhook(index, f"tnt_{tenant:03d}", f"http://x/{index}", subscribed, "hp")
        router._webhook_changed(hook.id, hook)
    codec = default_codec()
    bodies = workload.BodyMaker.of_size(1024)
    records = [
        _Record(
            workload.event_value(codec, "hp", i, f"tnt_{i % TENANTS:03d}", MEASURED_TYPE, bodies)
        )
        for i in range(EVENTS)
    ]
    best = float("inf")
    for _ in range(ROUNDS + 1):  # the first round warms caches and is not counted
        started = time.process_time()
        for record in records:
            router._deliveries(record, [])  # type: ignore[arg-type]
        best = min(best, time.process_time() - started)
    return best / EVENTS * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--fanout", type=int, default=10, help="webhooks per event (1-10)")
    args = parser.parse_args()
    print(f"router hot path, fan-out {args.fanout}: {measure(args.fanout):.1f} us per event")


if __name__ == "__main__":
    main()
