"""Stage 3, the router: a full `events` topic routed by one router process.

10,000 webhooks across 100 tenants (100 per tenant). For fan-out f, f webhooks of every tenant
subscribe to the measured event type and the others to different types, so each event makes
exactly f deliveries while the subscription index still holds every webhook. Events (bodies
of about 1 KiB) are spread round-robin over the tenants and produced before the router starts.

Progress is the router group's committed offset on `events` (committed inside each routing
transaction, so it counts events whose deliveries are committed) times f, sampled every
100 ms from the first commit to the last; the end offsets of `deliveries` are sampled too and
checked afterwards (they also count one transaction marker per partition and transaction).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from bench import workload
from bench.cluster import Offsets, Publisher, Stage
from bench.context import Context
from bench.machine import load_average

MEASURED_TYPE = "invoice.paid"
OTHER_TYPES = ("invoice.created", "offer.created", "milestone.approved")
ROUTE_TIMEOUT = 600.0


def run(ctx: Context, fanout: int) -> dict[str, Any]:
    sizes = ctx.sizes
    events = sizes.router_events[fanout]
    stage = Stage.create(f"router-f{fanout}", ctx.broker, ctx.codec, ctx.workdir)
    run_id = uuid.uuid4().hex[:6]
    per_tenant = sizes.router_webhooks // sizes.router_tenants
    if fanout > per_tenant:
        raise ValueError(f"fan-out {fanout} needs at least {fanout} webhooks per tenant")
    hooks = []
    for index in range(sizes.router_webhooks):
        tenant_number, slot = divmod(index, per_tenant)
        subscribed = (MEASURED_TYPE,) if slot < fanout else (OTHER_TYPES[slot % 3],)
        url = ctx.nginx.url(f"/hook/{index}")
        hooks.append(workload.webhook(index, f"tnt_{tenant_number:03d}", url, subscribed, run_id))
    publisher = Publisher(stage)
    publisher.webhooks(hooks)
    bodies = workload.BodyMaker.of_size(sizes.body_size)
    filled = time.monotonic()
    for index in range(events):
        tenant = f"tnt_{index % sizes.router_tenants:03d}"
        value = workload.event_value(ctx.codec, run_id, index, tenant, MEASURED_TYPE, bodies)
        publisher.produce(stage.topics.events, value, tenant.encode())
    publisher.flush()
    fill_seconds = time.monotonic() - filled

    group = stage.group("router")
    load_before = load_average()
    with Offsets(stage) as offsets:
        router = ctx.start(stage, "router")
        spawned = time.monotonic()
        samples: list[tuple[float, int, int, float]] = []
        try:
            while True:
                routed = offsets.committed(group, stage.topics.events)
                produced = offsets.end(stage.topics.deliveries)
                process = router.sample()
                cpu = process.cpu_seconds if process else 0.0
                samples.append((time.monotonic(), routed, produced, cpu))
                if routed >= events:
                    break
                router.check_alive()
                if time.monotonic() - spawned > ROUTE_TIMEOUT:
                    raise TimeoutError(f"router: {routed} of {events} events in {ROUTE_TIMEOUT} s")
                time.sleep(0.1)
            final = router.sample()
        finally:
            router.stop()
        load_after = load_average()
        end_offsets = offsets.end(stage.topics.deliveries)
        dead = offsets.end(stage.topics.dlq)

    first = next(sample for sample in samples if sample[1] > 0)
    last = samples[-1]
    window = last[0] - first[0]
    routed_deliveries = (last[1] - first[1]) * fanout
    end_offset_rate = (last[2] - first[2]) / window if window > 0 else None
    return {
        "events": events,
        "fanout": fanout,
        "webhooks": sizes.router_webhooks,
        "tenants": sizes.router_tenants,
        "deliveries_expected": events * fanout,
        "deliveries_end_offsets": end_offsets,
        "dead_letters": dead,
        "prefill_seconds": round(fill_seconds, 2),
        "startup_seconds": round(first[0] - spawned, 2),
        "route_seconds": round(window, 2),
        "deliveries_per_second": round(routed_deliveries / window, 1) if window > 0 else None,
        "events_per_second": round((last[1] - first[1]) / window, 1) if window > 0 else None,
        "end_offsets_per_second": round(end_offset_rate, 1) if end_offset_rate else None,
        "cpu_seconds_per_1000": round((last[3] - first[3]) / routed_deliveries * 1000, 4)
        if routed_deliveries
        else None,
        "cpu_utilisation": round((last[3] - first[3]) / window, 2) if window > 0 else None,
        "peak_rss_mb": round(final.peak_rss_bytes / 2**20, 1) if final else None,
        "load_average_before": load_before,
        "load_average_after": load_after,
    }
