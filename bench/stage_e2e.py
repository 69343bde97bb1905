"""Stages 4 (end to end) and 6 (scale-out): router + sender + log-sink + broker on this machine.

A pipeline is one stage's topics with `hookstream run log-sink`, `router` and one or more
`sender` processes, 1,000 webhooks (one per tenant, each subscribed to the event type) and
events produced by this process at a paced rate, each routed to exactly one webhook.

- Latency: 1,000 events/s for a while against the aiohttp receiver, which notes arrival minus
  the produce time carried in the event's data, and verifies every Nth signature.
- Steps: against nginx, offered load is stepped up (each step's events are encoded before the
  step, so producing them costs little). A step is sustained when deliveries grow at >= 95 %
  of the offered rate over its last three quarters (the first quarter absorbs the pipeline's
  latency) and, within a short grace after it, every event of the step is delivered and
  stored by the log-sink. The first step that is not sustained ends the run.
"""

from __future__ import annotations

import http.client
import os
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from confluent_kafka.admin import AdminClient

from bench import workload
from bench.cluster import (
    Offsets,
    Publisher,
    Service,
    Stage,
    group_assignment,
    group_members,
    wait_until,
)
from bench.context import Context
from bench.machine import jit_cpu_seconds, load_average, sample_process
from bench.receiver import ReceiverProcess

SUSTAINED_FRACTION = 0.95
# Where in a step the delivered rate starts being counted: past the ramp-up that the
# pipeline's own latency causes at the start of every step.
PROBE_AT = 0.25
WARMUP_EVENTS = 300
# The admin key of a pipeline's api (HTTP ingest), which only this bench's process knows.
API_KEY = f"bench-{uuid.uuid4().hex}"
# The broker counts as warm once its JIT compiler threads use less than this share of a core
# over a warm-up round at this rate.
WARM_JIT_SHARE = 0.05
WARMUP_RATE = 400
WARMUP_ROUND_SECONDS = 5.0
DRAIN_TIMEOUT = 120.0


@dataclass(frozen=True, slots=True)
class Offered:
    produced: int
    started: float
    ended: float
    # (monotonic time, delivered count) a quarter into the offer and at its end
    probe: tuple[float, int] = (0.0, 0)
    end: tuple[float, int] = (0.0, 0)

    @property
    def settled_delivered_rate(self) -> float:
        """Deliveries per second over the last three quarters of the offer."""
        seconds = self.end[0] - self.probe[0]
        return (self.end[1] - self.probe[1]) / seconds if seconds > 0 else 0.0

    @property
    def seconds(self) -> float:
        return self.ended - self.started

    @property
    def rate(self) -> float:
        return self.produced / self.seconds if self.seconds > 0 else 0.0


class Pipeline:
    def __init__(
        self,
        ctx: Context,
        name: str,
        urls: list[str],
        senders: int,
        linger_ms: int = 5,
        api_port: int | None = None,
    ) -> None:
        self.ctx = ctx
        # With an api too (HTTP ingest), which takes the bench's own admin key.
        api = {"api_port": api_port, "api_keys": f"{API_KEY}:*"} if api_port else {}
        self.stage = Stage.create(name, ctx.broker, ctx.codec, ctx.workdir, **api)
        self.run_id = uuid.uuid4().hex[:6]
        self.hooks = [
            workload.webhook(i, f"tnt_{i:05d}", url, (workload.EVENT_TYPE,), self.run_id)
            for i, url in enumerate(urls)
        ]
        setup = Publisher(self.stage)
        setup.webhooks(self.hooks)
        # 5 ms: hookstream's producer default; the light-load stage publishes with 1 ms.
        self.publisher = Publisher(self.stage, linger_ms=linger_ms)
        self.bodies = workload.BodyMaker.of_size(ctx.sizes.body_size)
        self.offsets = Offsets(self.stage)
        self.next_index = 0
        self.offered_total = 0
        self.services: dict[str, Service] = {"log-sink": ctx.start(self.stage, "log-sink")}
        self.services["router"] = ctx.start(self.stage, "router")
        if api_port:
            self.services["api"] = ctx.start(self.stage, "api")
        for n in range(senders):
            self.services[f"sender-{n + 1}"] = ctx.start(self.stage, "sender", f"-{n + 1}")
        self.senders = senders
        self.warmup: dict[str, Any] = {}
        self.admin = AdminClient({"bootstrap.servers": ctx.broker.bootstrap})

    @property
    def secrets(self) -> list[str]:
        return [hook.secrets[0].value for hook in self.hooks]

    def start(self) -> None:
        expected = {"sender": self.senders, "router": 1, "log-sink": 1}
        for group, members in expected.items():
            wait_until(
                lambda g=group, m=members: _holds_partitions(self.admin, self.stage.group(g), m),
                120,
                f"the {group} group to settle with {members} member(s)",
                self.services.values(),
            )
        self.offer(WARMUP_EVENTS / 2, 2.0)
        self.wait_caught_up(60.0)
        self.warmup = self._warm_up_broker(self.ctx.sizes.broker_warmup_max_seconds)

    def _warm_up_broker(self, max_seconds: float) -> dict[str, Any]:
        """Offer load until the broker's JIT compiler has settled, or `max_seconds` passed.

        A broker that has run for a while has compiled its hot paths; a fresh one spends a
        large share of its CPU doing so, which would be charged to the first steps.
        """
        pid = self.ctx.broker.pid
        started = time.monotonic()
        rounds = 0
        share = None
        while pid is not None and time.monotonic() - started < max_seconds:
            before, began = jit_cpu_seconds(pid), time.monotonic()
            self.offer(WARMUP_RATE, WARMUP_ROUND_SECONDS)
            self.wait_caught_up(60.0)
            share = (jit_cpu_seconds(pid) - before) / (time.monotonic() - began)
            rounds += 1
            if share < WARM_JIT_SHARE:
                break
        return {
            "seconds": round(time.monotonic() - started, 1),
            "rounds": rounds,
            "rate": WARMUP_RATE,
            "last_round_jit_share_of_a_core": None if share is None else round(share, 3),
        }

    def delivered(self) -> int:
        return self.offsets.end(self.stage.topics.delivery_log)

    def stored(self) -> int:
        return self.offsets.committed(self.stage.group("log-sink"), self.stage.topics.delivery_log)

    def caught_up(self) -> bool:
        return self.delivered() >= self.offered_total and self.stored() >= self.offered_total

    def wait_caught_up(self, timeout: float) -> float | None:
        """Seconds until every offered event is delivered and stored; None past `timeout`."""
        started = time.monotonic()
        while not self.caught_up():
            for service in self.services.values():
                service.check_alive()
            if time.monotonic() - started > timeout:
                return None
            time.sleep(0.05)
        return time.monotonic() - started

    def _value(self, index: int, timestamped: bool) -> tuple[bytes, bytes]:
        hook = self.hooks[index % len(self.hooks)]
        t_us = time.time_ns() // 1000 if timestamped else None
        value = workload.event_value(
            self.ctx.codec,
            self.run_id,
            index,
            hook.tenant_id,
            workload.EVENT_TYPE,
            self.bodies,
            t_us,
        )
        return hook.tenant_id.encode(), value

    def offer(self, rate: float, seconds: float, timestamped: bool = False) -> Offered:
        """Produce events at `rate` per second for `seconds`; returns what was produced."""
        first = self.next_index
        total = int(rate * seconds)
        self.next_index += total
        prepared = (
            None if timestamped else [self._value(i, False) for i in range(first, first + total)]
        )
        topic = self.stage.topics.events
        sent = 0
        probe: tuple[float, int] | None = None
        started = time.monotonic()
        while sent < total:
            now = time.monotonic()
            due = min(total, int(rate * (now - started)) + 1)
            while sent < due:
                if prepared is None:
                    key, value = self._value(first + sent, True)
                else:
                    key, value = prepared[sent]
                self.publisher.produce(topic, value, key)
                sent += 1
            self.publisher.poll()
            if probe is None and now - started >= seconds * PROBE_AT:
                probe = (time.monotonic(), self.delivered())
            time.sleep(0.002)
        ended = time.monotonic()
        end = (time.monotonic(), self.delivered())
        self.publisher.flush()
        self.offered_total += total
        return Offered(total, started, ended, probe or end, end)

    def offer_http(self, port: int, rate: float, seconds: float) -> Offered:
        """`offer`, through `POST /v1/events` on one keep-alive connection: each event's
        `t_us` is taken as its request starts, so latency counts the api's part too."""
        first = self.next_index
        total = int(rate * seconds)
        self.next_index += total
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
        sent = 0
        started = time.monotonic()
        try:
            while sent < total:
                due = min(total, int(rate * (time.monotonic() - started)) + 1)
                while sent < due:
                    index = first + sent
                    hook = self.hooks[index % len(self.hooks)]
                    evt = workload.event_id(self.run_id, index)
                    t_us = time.time_ns() // 1000
                    body = {
                        "id": evt,
                        "type": workload.EVENT_TYPE,
                        "tenant_id": hook.tenant_id,
                        "data": self.bodies.data(index, evt, t_us),
                    }
                    connection.request("POST", "/v1/events", orjson.dumps(body), headers)
                    answer = connection.getresponse()
                    reply = answer.read()
                    if answer.status != 202:
                        raise RuntimeError(f"POST /v1/events answered {answer.status}: {reply!r}")
                    sent += 1
                time.sleep(0.002)
        finally:
            connection.close()
        ended = time.monotonic()
        end = (ended, self.delivered())
        self.offered_total += total
        return Offered(total, started, ended, end, end)

    def sender_assignment(self) -> list[dict[str, int]]:
        """Partitions per topic (prefix dropped) held by each sender, once the group settled."""
        prefix = self.stage.settings.topic_prefix
        members = group_assignment(self.admin, self.stage.group("sender"))
        return [
            {topic.removeprefix(prefix): count for topic, count in member.items()}
            for member in members
        ]

    def cpu(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, service in self.services.items():
            sample = service.sample()
            out[name] = sample.cpu_seconds if sample else 0.0
        if self.ctx.broker.pid is not None:
            broker = sample_process(self.ctx.broker.pid)
            # Apart, so that the sum stays every process's CPU: warm-up is not per delivery.
            jit = jit_cpu_seconds(self.ctx.broker.pid)
            out["broker"] = (broker.cpu_seconds if broker else 0.0) - jit
            out["broker JIT compiler"] = jit
        bench = sample_process(os.getpid())
        out["bench (load generator)"] = bench.cpu_seconds if bench else 0.0
        return out

    def rss_mb(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, service in self.services.items():
            sample = service.sample()
            if sample is not None:
                out[name] = round(sample.peak_rss_bytes / 2**20, 1)
        return out

    def stop(self) -> None:
        for service in self.services.values():
            service.stop()
        self.offsets.close()


def _holds_partitions(admin: AdminClient, group: str, members: int) -> bool:
    try:
        held = group_members(admin, group)
    except Exception:
        return False
    return len(held) == members and all(count > 0 for count in held)


def run_latency(ctx: Context) -> dict[str, Any]:
    """Latency at the target rate, and at a low rate that shows the pipeline's own delay."""
    sizes = ctx.sizes
    port = _free_port()
    urls = [f"http://127.0.0.1:{port}/hook/{i}" for i in range(sizes.e2e_webhooks)]
    pipeline: Pipeline | None = None
    receiver: ReceiverProcess | None = None
    try:
        pipeline = Pipeline(ctx, "latency", urls, senders=1)
        receiver = ReceiverProcess(port, pipeline.secrets, sizes.verify_every, ctx.workdir)
        receiver.start()
        pipeline.start()
        ready = pipeline
        low = _latency_phase(
            pipeline,
            receiver,
            sizes.latency_low_rate,
            lambda: ready.offer(sizes.latency_low_rate, sizes.latency_seconds, timestamped=True),
        )
        result = _latency_phase(
            pipeline,
            receiver,
            sizes.latency_rate,
            lambda: ready.offer(sizes.latency_rate, sizes.latency_seconds, timestamped=True),
        )
        result["low_rate"] = low
        result["broker_warmup"] = pipeline.warmup
        result["peak_rss_mb"] = pipeline.rss_mb()
        return result
    finally:
        if pipeline is not None:
            pipeline.stop()
        if receiver is not None:
            receiver.stop()


def run_light(ctx: Context) -> dict[str, Any]:
    """Publish-to-receipt latency at light load (Kafka ingest), then the cost of idling.

    Publishes `light_rate` events/s with linger 1 ms (a platform that wants its events out
    at once), one webhook per event; then nothing at all for `idle_seconds`, and reports
    the cores every process (broker included) used meanwhile.
    """
    sizes = ctx.sizes
    port = _free_port()
    api_port = _free_port()
    urls = [f"http://127.0.0.1:{port}/hook/{i}" for i in range(sizes.e2e_webhooks)]
    pipeline: Pipeline | None = None
    receiver: ReceiverProcess | None = None
    try:
        pipeline = Pipeline(ctx, "light", urls, senders=1, linger_ms=1, api_port=api_port)
        receiver = ReceiverProcess(port, pipeline.secrets, 1, ctx.workdir)
        receiver.start()
        pipeline.start()
        wait_until(
            lambda: _api_ready(api_port), 60, "the api to answer", pipeline.services.values()
        )
        kafka = pipeline
        result = _latency_phase(
            pipeline,
            receiver,
            sizes.light_rate,
            lambda: kafka.offer(sizes.light_rate, sizes.light_seconds, timestamped=True),
        )
        result["http"] = _latency_phase(
            pipeline,
            receiver,
            sizes.light_rate,
            lambda: kafka.offer_http(api_port, sizes.light_rate, sizes.light_seconds),
        )
        before = pipeline.cpu()
        started = time.monotonic()
        time.sleep(sizes.idle_seconds)  # the measurement itself: a window with no traffic
        after = pipeline.cpu()
        elapsed = time.monotonic() - started
        result["idle"] = {
            "seconds": round(elapsed, 1),
            "cores": {name: round((after[name] - before[name]) / elapsed, 4) for name in after},
        }
        result["idle"]["cores_all_but_bench"] = round(
            sum(v for k, v in result["idle"]["cores"].items() if not k.startswith("bench")), 4
        )
        result["broker_warmup"] = pipeline.warmup
        return result
    finally:
        if pipeline is not None:
            pipeline.stop()
        if receiver is not None:
            receiver.stop()


def _api_ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def _latency_phase(
    pipeline: Pipeline, receiver: ReceiverProcess, rate: int, offer: Callable[[], Offered]
) -> dict[str, Any]:
    receiver.reset()
    load_before = load_average()
    cpu_before = pipeline.cpu()
    offered = offer()
    received_all = receiver_wait(receiver, offered.produced, 120.0)
    cpu_after = pipeline.cpu()
    stats = receiver.stats()
    caught_up = pipeline.wait_caught_up(60.0)
    return {
        "rate_target": rate,
        "offered_rate": round(offered.rate, 1),
        "seconds": round(offered.seconds, 2),
        "events": offered.produced,
        "received": stats["received"],
        "all_received": received_all,
        "stored_after_s": None if caught_up is None else round(caught_up, 2),
        "latency_p50_ms": _round(stats["latency_p50_ms"]),
        "latency_p99_ms": _round(stats["latency_p99_ms"]),
        "latency_max_ms": _round(stats["latency_max_ms"]),
        "latency_samples": stats["latency_samples"],
        "verify_every": receiver.verify_every,
        "verified": stats["verified"],
        "verify_failures": stats["verify_failures"],
        "failure_examples": stats["failure_examples"],
        "cpu_seconds_per_1000": _per_1000(cpu_before, cpu_after, offered.produced),
        "load_average_before": load_before,
        "load_average_after": load_average(),
    }


def receiver_wait(receiver: ReceiverProcess, count: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while receiver.stats()["received"] < count:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def run_steps(ctx: Context, senders: int) -> dict[str, Any]:
    sizes = ctx.sizes
    urls = [ctx.nginx.url(f"/hook/{i}") for i in range(sizes.e2e_webhooks)]
    name = f"steps-{senders}-sender{'s' if senders > 1 else ''}"
    pipeline = Pipeline(ctx, name, urls, senders)
    steps: list[dict[str, Any]] = []
    try:
        pipeline.start()
        assignment = pipeline.sender_assignment()
        for rate in sizes.step_rates:
            step = _step(pipeline, rate, sizes.step_seconds, sizes.step_grace)
            steps.append(step)
            print(
                f"bench:   {name}: offered {step['offered_rate']:>7.0f}/s "
                f"delivered {step['delivered_rate']:>7.0f}/s "
                f"{'sustained' if step['sustained'] else 'NOT sustained'}",
                flush=True,
            )
            if not step["sustained"]:
                drained = pipeline.wait_caught_up(DRAIN_TIMEOUT)
                step["drained_after_s"] = None if drained is None else round(drained, 2)
                break
        rss = pipeline.rss_mb()
    finally:
        pipeline.stop()
    passed = [step for step in steps if step["sustained"]]
    best = max(passed, key=lambda step: step["offered_rate"]) if passed else None
    return {
        "senders": senders,
        "webhooks": sizes.e2e_webhooks,
        "step_seconds": sizes.step_seconds,
        "grace_seconds": sizes.step_grace,
        "sustained_deliveries_per_second": best["offered_rate"] if best else 0.0,
        "highest_delivered_rate": max((step["delivered_rate"] for step in steps), default=0.0),
        "cpu_seconds_per_1000_at_best": best["cpu_seconds_per_1000"] if best else None,
        "peak_rss_mb": rss,
        "sender_assignment": assignment,
        "broker_warmup": pipeline.warmup,
        "steps": steps,
    }


def _step(pipeline: Pipeline, rate: int, seconds: float, grace: float) -> dict[str, Any]:
    delivered_before = pipeline.delivered()
    load_before = load_average()
    cpu_before = pipeline.cpu()
    offered = pipeline.offer(rate, seconds)
    cpu_after = pipeline.cpu()
    caught_up = pipeline.wait_caught_up(grace)
    # In steady state deliveries grow at the offered rate whatever the latency; a pipeline
    # that falls behind grows at its capacity instead.
    delivered_rate = offered.settled_delivered_rate
    sustained = caught_up is not None and delivered_rate >= SUSTAINED_FRACTION * offered.rate
    return {
        "rate_target": rate,
        "offered_rate": round(offered.rate, 1),
        "events": offered.produced,
        "seconds": round(offered.seconds, 2),
        "delivered_rate": round(delivered_rate, 1),
        "delivered_during_step": offered.end[1] - delivered_before,
        "caught_up_after_s": None if caught_up is None else round(caught_up, 2),
        "sustained": sustained,
        "cpu_seconds_per_1000": _per_1000(cpu_before, cpu_after, offered.produced),
        "load_average_before": load_before,
    }


def _per_1000(before: dict[str, float], after: dict[str, float], count: int) -> dict[str, float]:
    if count <= 0:
        return {}
    return {name: round((after[name] - before.get(name, 0.0)) / count * 1000, 4) for name in after}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
