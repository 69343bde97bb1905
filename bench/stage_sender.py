"""Stage 2 (sender) and stage 5 (isolation): one sender process draining a full `deliveries`.

The topic is filled before the sender starts: N Delivery records with 1 KiB bodies, spread
round-robin over the webhooks, every webhook pointing at the bench's nginx. Progress is the
record count of `delivery-log` (one attempt record per delivery; its producer is idempotent
and not transactional, so end offsets count records exactly), sampled every 100 ms. The rate
runs from the first sample that shows progress to the sample that shows all N, so process
start-up and the webhook view's load are not counted; CPU over the same window comes from
/proc/<pid>/stat (utime + stime, every thread), the peak RSS from VmHWM.

Isolation: every 10th webhook points at `/slow/`, which nginx answers after 2 s. Its figure is
the healthy webhooks' throughput, read back from the attempts themselves (first start to last
finish of a healthy attempt), against the same measure of the run without slow webhooks.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from bench import workload
from bench.cluster import Offsets, Publisher, Stage, read_topic
from bench.context import Context
from bench.machine import load_average
from bench.nginx import SLOW_PREFIX

DRAIN_TIMEOUT = 600.0


def run(ctx: Context, *, slow_fraction: float = 0.0) -> dict[str, Any]:
    sizes = ctx.sizes
    name = "isolation" if slow_fraction else "sender"
    count = sizes.isolation_deliveries if slow_fraction else sizes.sender_deliveries
    stage = Stage.create(name, ctx.broker, ctx.codec, ctx.workdir)
    run_id = uuid.uuid4().hex[:6]
    slow_every = round(1 / slow_fraction) if slow_fraction else 0
    hooks = []
    for index in range(sizes.sender_webhooks):
        slow = slow_every and index % slow_every == 0
        path = f"{SLOW_PREFIX}{index}" if slow else f"/hook/{index}"
        tenant = f"tnt_{index % 100:03d}"
        hooks.append(
            workload.webhook(index, tenant, ctx.nginx.url(path), (workload.EVENT_TYPE,), run_id)
        )
    publisher = Publisher(stage)
    publisher.webhooks(hooks)
    filled = time.monotonic()
    bodies = workload.BodyMaker.of_size(sizes.body_size)
    for key, value in workload.delivery_records(ctx.codec, hooks, count, bodies, run_id):
        publisher.produce(stage.topics.deliveries, value, key)
    publisher.flush()
    fill_seconds = time.monotonic() - filled

    load_before = load_average()
    with Offsets(stage) as offsets:
        sender = ctx.start(stage, "sender")
        spawned = time.monotonic()
        samples: list[tuple[float, int, float]] = []
        try:
            while True:
                logged = offsets.end(stage.topics.delivery_log)
                process = sender.sample()
                cpu = process.cpu_seconds if process else 0.0
                samples.append((time.monotonic(), logged, cpu))
                if logged >= count:
                    break
                sender.check_alive()
                if time.monotonic() - spawned > DRAIN_TIMEOUT:
                    raise TimeoutError(f"{name}: {logged} of {count} sent in {DRAIN_TIMEOUT} s")
                time.sleep(0.1)
            final = sender.sample()
        finally:
            sender.stop()
        load_after = load_average()
        retries = sum(offsets.end(tier.topic) for tier in stage.topics.retry_tiers)
        dead = offsets.end(stage.topics.dlq)

    first = next(sample for sample in samples if sample[1] > 0)
    last = samples[-1]
    window = last[0] - first[0]
    done_in_window = last[1] - first[1]
    attempts = read_topic(stage, stage.topics.delivery_log, "Attempt")
    healthy = _throughput(attempts, lambda url: SLOW_PREFIX not in url)
    result: dict[str, Any] = {
        "deliveries": count,
        "webhooks": sizes.sender_webhooks,
        "body_bytes": sizes.body_size,
        "max_in_flight": stage.settings.max_in_flight,
        "max_in_flight_per_webhook": stage.settings.max_in_flight_per_webhook,
        "prefill_seconds": round(fill_seconds, 2),
        "startup_seconds": round(first[0] - spawned, 2),
        "drain_seconds": round(window, 2),
        "deliveries_per_second": round(done_in_window / window, 1) if window > 0 else None,
        "cpu_seconds_per_1000": round((last[2] - first[2]) / done_in_window * 1000, 4)
        if done_in_window
        else None,
        "cpu_utilisation": round((last[2] - first[2]) / window, 2) if window > 0 else None,
        "peak_rss_mb": round(final.peak_rss_bytes / 2**20, 1) if final else None,
        "attempts_logged": len(attempts),
        "outcomes": _outcomes(attempts),
        "retry_records": retries,
        "dead_letters": dead,
        "healthy": healthy,
        "load_average_before": load_before,
        "load_average_after": load_after,
    }
    if slow_fraction:
        result["slow_fraction"] = slow_fraction
        result["slow_seconds"] = sizes.slow_seconds
        result["slow"] = _throughput(attempts, lambda url: SLOW_PREFIX in url)
    return result


def _outcomes(attempts: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for attempt in attempts:
        counts[attempt["outcome"]] = counts.get(attempt["outcome"], 0) + 1
    return counts


def _throughput(attempts: list[dict[str, Any]], chosen: Any) -> dict[str, Any]:
    """Deliveries per second of the chosen webhooks, from their own attempt timestamps."""
    return attempt_rate([a for a in attempts if chosen(a["url"])])


def attempt_rate(attempts: list[dict[str, Any]]) -> dict[str, Any]:
    """Deliveries per second from attempt records: the first start to the last end."""
    if not attempts:
        return {"attempts": 0, "deliveries_per_second": None}
    start = min(a["started_at_ms"] for a in attempts)
    end = max(a["started_at_ms"] + a["duration_ms"] for a in attempts)
    seconds = max(end - start, 1) / 1000
    durations = sorted(a["duration_ms"] for a in attempts)
    return {
        "attempts": len(attempts),
        "seconds": round(seconds, 2),
        "deliveries_per_second": round(len(attempts) / seconds, 1),
        "request_p50_ms": durations[len(durations) // 2],
        "request_p99_ms": durations[min(len(durations) - 1, int(len(durations) * 0.99))],
    }
