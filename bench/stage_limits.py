"""Stage `limits`: one webhook's concurrency limit, adaptive limit and rate limit, as sent.

Four scenarios, each on its own topic prefix (`bench-limits-<scenario>-<random>.`), each with
one webhook pointing at the aiohttp receiver (`bench/receiver.py`, its own process, so its CPU
is never the sender's) and one sender process; no router: `deliveries` is filled with all of
the scenario's Delivery records first (all of one webhook, so all in one partition), then the
sender starts, as in the sender stage.

- fixed: `max_concurrency` 64, the endpoint answers 204 after 50 ms; 10,000 deliveries.
  Target: >= 819 deliveries/s (the issue's figure, stated as 80 % of 1,024/s; 64 requests
  in flight, 50 ms each, would be 1,280/s at most).
- adaptive: the same without `max_concurrency` (the adaptive limit, from 8 up to
  `max_in_flight_per_webhook`); also the time from the first request until the receiver's
  rolling 1-second rate first reaches 819/s (target: within 10 s).
- overload: adaptive, the endpoint serves 20 requests at a time (50 ms each) and answers 503
  at once to any request beyond them; retry schedule 1, 2, 5 s so that the refused ones come
  back soon. Targets: the adaptive limit's mean over the run's second half near 20 (16-24),
  and < 10 % of requests refused.
- rate: `rate_limit` 100/s, the endpoint answers at once; 3,000 deliveries. Target: the
  receiver's rate from the 2nd second to the last request within 100/s ± 5 %.

Measured, for each: deliveries/s from the attempts in `delivery-log` (first start to last
finish of a successful attempt), the receiver's arrival times (rolling and per-second
rates, the most requests it had in flight at once, refusals), the sender's per-webhook gauges
(`hookstream_webhook_concurrency_limit`, `hookstream_webhook_in_flight`) and its put-off
counter (`hookstream_deliveries_deferred_total{reason="webhook_limit"}`) read off its /metrics
every 0.5 s, and the Retry records of attempt 1 in the retry tiers (the put-off records).
Progress is read off `delivery-log` (end offsets) and the receiver every 100 ms; a scenario
ends once every delivery was served (or dead-lettered) and every attempt is logged.
"""

from __future__ import annotations

import bisect
import time
import urllib.request
import uuid
from dataclasses import dataclass, replace
from typing import Any

from bench import workload
from bench.cluster import Offsets, Publisher, Stage, read_topic
from bench.context import Context, Sizes
from bench.machine import load_average, sample_process
from bench.receiver import HOOK_PREFIX, ReceiverProcess
from bench.stage_sender import attempt_rate
from hookstream.tools.localkafka import free_port

DRAIN_TIMEOUT = 600.0
SAMPLE_SECONDS = 0.1
GAUGE_SECONDS = 0.5
LIMIT_SERIES = "hookstream_webhook_concurrency_limit"
IN_FLIGHT_SERIES = "hookstream_webhook_in_flight"
DEFERRED_SERIES = "hookstream_deliveries_deferred_total"


@dataclass(frozen=True)
class Scenario:
    name: str  # the Stage's name: its topic prefix and work folder
    deliveries: int
    delay_ms: float  # the receiver answers after this
    capacity: int = 0  # the receiver serves so many at once, 503 beyond (0: any number)
    max_concurrency: int | None = None
    rate_limit: float | None = None
    retry_schedule: tuple[float, ...] | None = None  # None: the deployment's default


def run_fixed(ctx: Context) -> dict[str, Any]:
    sizes = ctx.sizes
    scenario = Scenario(
        "limits-fixed",
        sizes.limits_deliveries,
        sizes.limits_delay_ms,
        max_concurrency=sizes.limits_fixed_concurrency,
    )
    result, _served = _run(ctx, scenario)
    result["target_deliveries_per_second"] = sizes.limits_target_rate
    result["most_deliveries_per_second"] = _most(sizes)
    return result


def run_adaptive(ctx: Context) -> dict[str, Any]:
    sizes = ctx.sizes
    scenario = Scenario("limits-adaptive", sizes.limits_deliveries, sizes.limits_delay_ms)
    result, served = _run(ctx, scenario)
    target = sizes.limits_target_rate
    result["target_deliveries_per_second"] = target
    result["most_deliveries_per_second"] = _most(sizes)
    result["seconds_to_target_rate"] = _seconds_to_rate(served, target)
    return result


def run_overload(ctx: Context) -> dict[str, Any]:
    sizes = ctx.sizes
    scenario = Scenario(
        "limits-overload",
        sizes.limits_overload_deliveries,
        sizes.limits_delay_ms,
        capacity=sizes.limits_overload_capacity,
        retry_schedule=sizes.limits_retry_schedule,
    )
    result, _served = _run(ctx, scenario)
    gauges = result["gauges"]
    span = result["receiver"]["arrival_seconds"]
    later = [g for g in gauges if g[0] >= span / 2 and g[0] <= span and g[1] is not None]
    result["limit_mean_second_half"] = (
        round(sum(g[1] for g in later) / len(later), 2) if later else None
    )
    result["in_flight_mean_second_half"] = (
        round(sum(g[2] for g in later) / len(later), 2) if later else None
    )
    limits = [g[1] for g in later]
    result["limit_range_second_half"] = [min(limits), max(limits)] if limits else None
    offered = result["receiver"]["served"] + result["receiver"]["refused"]
    result["refused_share"] = round(result["receiver"]["refused"] / offered, 4) if offered else None
    return result


def run_rate(ctx: Context) -> dict[str, Any]:
    sizes = ctx.sizes
    scenario = Scenario(
        "limits-rate", sizes.limits_rate_deliveries, 0.0, rate_limit=sizes.limits_rate
    )
    result, served = _run(ctx, scenario)
    result["target_rate"] = sizes.limits_rate
    result["steady"] = _steady_rate(served, skip_seconds=1.0)
    return result


def _most(sizes: Sizes) -> float:
    """Deliveries/s of the fixed limit kept full: limit / answer time."""
    return round(sizes.limits_fixed_concurrency / (sizes.limits_delay_ms / 1000), 1)


def _run(ctx: Context, scenario: Scenario) -> tuple[dict[str, Any], list[float]]:
    """The scenario's measures, and the served requests' arrival times (sorted, wall clock)."""
    sizes = ctx.sizes
    count = scenario.deliveries
    metrics_port = free_port()
    overrides: dict[str, Any] = {"metrics_port": metrics_port}
    if scenario.retry_schedule is not None:
        overrides["retry_schedule"] = scenario.retry_schedule
    stage = Stage.create(scenario.name, ctx.broker, ctx.codec, ctx.workdir, **overrides)
    run_id = uuid.uuid4().hex[:6]
    port = free_port()
    url = f"http://127.0.0.1:{port}{HOOK_PREFIX}0"
    hook = replace(
        workload.webhook(0, "tnt_000", url, (workload.EVENT_TYPE,), run_id),
        max_concurrency=scenario.max_concurrency,
        rate_limit=scenario.rate_limit,
    )
    receiver = ReceiverProcess(
        port,
        [hook.secrets[0].value],
        sizes.verify_every,
        stage.workdir,
        delay_ms=scenario.delay_ms,
        capacity=scenario.capacity,
    )
    publisher = Publisher(stage)
    publisher.webhooks([hook])
    bodies = workload.BodyMaker.of_size(sizes.body_size)
    for key, value in workload.delivery_records(ctx.codec, [hook], count, bodies, run_id):
        publisher.produce(stage.topics.deliveries, value, key)
    publisher.flush()

    load_before = load_average()
    gauges: list[tuple[float, float | None, float | None, float]] = []  # wall, limit, in, put off
    with receiver, Offsets(stage) as offsets:
        sender = ctx.start(stage, "sender")
        spawned = time.time()
        next_gauge = time.monotonic()
        cpu_start: dict[str, float] | None = None
        try:
            while True:
                logged = offsets.end(stage.topics.delivery_log)
                dead = offsets.end(stage.topics.dlq)
                stats = receiver.stats()
                if cpu_start is None and stats["received"] + stats["refused"] > 0:
                    cpu_start = _cpu(sender.pid, receiver.pid)
                if time.monotonic() >= next_gauge:
                    gauges.append(_scrape(metrics_port))
                    next_gauge += GAUGE_SECONDS
                answered = stats["received"] + stats["refused"]
                if stats["received"] + dead >= count and logged >= answered:
                    break
                sender.check_alive()
                if time.time() - spawned > DRAIN_TIMEOUT:
                    raise TimeoutError(
                        f"{scenario.name}: {stats['received']} of {count} served, {dead} dead "
                        f"in {DRAIN_TIMEOUT:.0f} s"
                    )
                time.sleep(SAMPLE_SECONDS)
            cpu_end = _cpu(sender.pid, receiver.pid)
            gauges.append(_scrape(metrics_port))
        finally:
            sender.stop()
        load_after = load_average()
        stats = receiver.stats()
        arrivals = receiver.arrivals()
        dead = offsets.end(stage.topics.dlq)

    attempts = read_topic(stage, stage.topics.delivery_log, "Attempt")
    put_off = _put_off_records(stage)
    served = sorted(arrivals["served"])
    refused = sorted(arrivals["refused"])
    first = min(served[:1] + refused[:1])
    last = max(served[-1:] + refused[-1:])
    successes = [a for a in attempts if a["outcome"] == "success"]
    cpu = {
        name: round((cpu_end[name] - (cpu_start or cpu_end)[name]) / max(last - first, 1e-3), 2)
        for name in cpu_end
    }
    return {
        "deliveries": count,
        "max_concurrency": scenario.max_concurrency,
        "rate_limit": scenario.rate_limit,
        "endpoint_delay_ms": scenario.delay_ms,
        "endpoint_capacity": scenario.capacity or None,
        "retry_schedule": list(stage.settings.retry_schedule),
        "max_in_flight": stage.settings.max_in_flight,
        "max_in_flight_per_webhook": stage.settings.max_in_flight_per_webhook,
        "startup_seconds": round(first - spawned, 2),
        "delivered": attempt_rate(successes),
        "outcomes": _outcomes(attempts),
        "attempts_logged": len(attempts),
        "dead_letters": dead,
        "receiver": {
            "served": stats["received"],
            "refused": stats["refused"],
            "in_flight_peak": stats["in_flight_peak"],
            "verified": stats["verified"],
            "verify_failures": stats["verify_failures"],
            "arrival_seconds": round(last - first, 2),
            "rate_first_to_last": round((len(served) - 1) / (served[-1] - served[0]), 1)
            if len(served) > 1 and served[-1] > served[0]
            else None,
            "peak_rolling_1s_rate": _peak_rolling(served),
            "served_per_second": _per_second(served, first),
            "refused_per_second": _per_second(refused, first),
        },
        # The counter as the last scrape before the sender stopped saw it.
        "put_off": {"deferred_metric": gauges[-1][3] if gauges else None, **put_off},
        # [seconds since the first request, limit, in flight, put off so far], every 0.5 s
        "gauges": [
            [round(wall - first, 2), limit, in_flight, deferred]
            for wall, limit, in_flight, deferred in gauges
        ],
        "cores_used": cpu,
        "load_average_before": load_before,
        "load_average_after": load_after,
    }, served


def _scrape(port: int) -> tuple[float, float | None, float | None, float]:
    """(wall clock, concurrency limit, in flight, deliveries put off for webhook_limit)."""
    now = time.time()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as answer:
            text = answer.read().decode()
    except OSError:
        return (now, None, None, 0.0)
    series = _series(text)
    return (
        now,
        series.get(LIMIT_SERIES),
        series.get(IN_FLIGHT_SERIES),
        series.get(DEFERRED_SERIES + '{reason="webhook_limit"}', 0.0),
    )


def _series(text: str) -> dict[str, float]:
    """The samples of the series this stage reads; per-webhook ones under their bare name
    (the stage has one webhook)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        name, _, value = line.rpartition(" ")
        bare = name.split("{", 1)[0]
        if bare in (LIMIT_SERIES, IN_FLIGHT_SERIES):
            out[bare] = float(value)
        elif bare == DEFERRED_SERIES:
            out[name] = float(value)
    return out


def _put_off_records(stage: Stage) -> dict[str, int]:
    """Retry records asking for attempt 1 (nothing attempted yet): put off, not retried.

    A record put off for longer than its tier's delay is produced to the tier again when its
    first turn comes (the sender's requeue), so the records outnumber the put-offs; the
    deliveries are counted once each."""
    records = 0
    ids: set[str] = set()
    for tier in stage.topics.retry_tiers:
        for retry in read_topic(stage, tier.topic, "Retry"):
            if retry["attempt"] == 1:
                records += 1
                ids.add(retry["delivery_id"])
    return {"retry_records_attempt_1": records, "deliveries_put_off": len(ids)}


def _cpu(sender_pid: int, receiver_pid: int | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, pid in (("sender", sender_pid), ("receiver", receiver_pid)):
        sample = sample_process(pid) if pid is not None else None
        out[name] = sample.cpu_seconds if sample else 0.0
    return out


def _outcomes(attempts: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for attempt in attempts:
        key = f"{attempt['outcome']} {attempt['status_code']}"
        counts[key] = counts.get(key, 0) + 1
    return counts


def _per_second(times: list[float], origin: float) -> list[int]:
    """How many of `times` (sorted) fell in each second from `origin`."""
    if not times:
        return []
    counts = [0] * (int(times[-1] - origin) + 1)
    for at in times:
        counts[int(at - origin)] += 1
    return counts


def _peak_rolling(times: list[float]) -> int:
    """The most of `times` (sorted) within any 1-second window."""
    best = 0
    for index, at in enumerate(times):
        best = max(best, index + 1 - bisect.bisect_right(times, at - 1.0))
    return best


def _seconds_to_rate(times: list[float], rate: float) -> float | None:
    """Seconds from the first of `times` (sorted) until the last second held `rate` of them."""
    for index, at in enumerate(times):
        if index + 1 - bisect.bisect_right(times, at - 1.0) >= rate:
            return round(at - times[0], 2)
    return None


def _steady_rate(times: list[float], skip_seconds: float) -> dict[str, Any]:
    """The rate from `skip_seconds` after the first of `times` to the last, and the fewest
    and most in any whole second of that span."""
    if len(times) < 2:
        return {"rate": None}
    begin = times[0] + skip_seconds
    kept = times[bisect.bisect_left(times, begin) :]
    if len(kept) < 2 or kept[-1] <= kept[0]:
        return {"rate": None}
    whole = int(kept[-1] - begin)  # whole seconds from `begin` before the last request
    counts = [0] * whole
    for at in kept:
        second = int(at - begin)
        if second < whole:
            counts[second] += 1
    return {
        "from_second": skip_seconds,
        "requests": len(kept),
        "seconds": round(kept[-1] - kept[0], 2),
        "rate": round((len(kept) - 1) / (kept[-1] - kept[0]), 2),
        "per_second_min": min(counts) if counts else None,
        "per_second_max": max(counts) if counts else None,
        "per_second": counts,
    }
