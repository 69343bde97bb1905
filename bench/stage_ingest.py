"""HTTP ingest (issue 19): how many events one api process takes, alone with the broker.

Two phases against one `hookstream run api` on the stage's topics (no router or sender runs:
what is measured is the api taking events and Kafka acknowledging them):

- single: `ingest_clients` (32) clients, each on a keep-alive connection of its own, post one
  event after another to `POST /v1/events`, each with an id of its own (so every request
  claims its id, as a platform that retries would);
- batch: `ingest_batch_clients` (4) clients post `POST /v1/events/batch` with
  `ingest_batch_size` (500) events each.

Both report events accepted per second, request latency, and the CPU seconds per 1,000
events of the api, the broker and this load generator.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import urllib.request
import uuid
from typing import Any

import aiohttp
import orjson

from bench import workload
from bench.cluster import Service, Stage, wait_until
from bench.context import Context
from bench.machine import jit_cpu_seconds, sample_process
from bench.stage_e2e import API_KEY
from hookstream.tools.localkafka import free_port


def run(ctx: Context) -> dict[str, Any]:
    sizes = ctx.sizes
    port = free_port()
    stage = Stage.create(
        "ingest", ctx.broker, ctx.codec, ctx.workdir, api_port=port, api_keys=f"{API_KEY}:*"
    )
    api = ctx.start(stage, "api")
    try:
        wait_until(lambda: _ready(port), 60, "the api to answer", [api])
        run_id = uuid.uuid4().hex[:6]
        # A short round first, so that connections, the producer and SQLite are warm.
        asyncio.run(_phase(port, 8, 1, 2.0, f"{run_id}w", sizes.body_size, True))
        result: dict[str, Any] = {}
        for name, clients, per_request, with_ids in (
            ("single", sizes.ingest_clients, 1, True),
            # Without ids: nothing to claim, what the api and Kafka cost alone.
            ("single_without_ids", sizes.ingest_clients, 1, False),
            ("batch", sizes.ingest_batch_clients, sizes.ingest_batch_size, True),
        ):
            before = _cpu(ctx, api)
            measured = asyncio.run(
                _phase(
                    port,
                    clients,
                    per_request,
                    sizes.ingest_seconds,
                    f"{run_id}{name[0]}{len(name)}",
                    sizes.body_size,
                    with_ids,
                )
            )
            after = _cpu(ctx, api)
            events = measured["events"]
            measured["cpu_seconds_per_1000"] = {
                k: round((after[k] - before[k]) * 1000 / events, 3) if events else None
                for k in after
            }
            measured["cpu_seconds_per_1000_api_and_broker"] = (
                round(
                    sum(after.get(k, 0.0) - before.get(k, 0.0) for k in ("api", "broker"))
                    * 1000
                    / events,
                    3,
                )
                if events
                else None
            )
            result[name] = measured
        return result
    finally:
        api.stop()


async def _phase(
    port: int,
    clients: int,
    per_request: int,
    seconds: float,
    run_id: str,
    body_size: int,
    with_ids: bool,
) -> dict[str, Any]:
    """`clients` posting for `seconds`; every answer checked (202, or 200 with every event
    accepted)."""
    url = f"http://127.0.0.1:{port}/v1/events" + ("/batch" if per_request > 1 else "")
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    data = {"blob": "x" * max(0, body_size - 64)}
    latencies: list[float] = []
    counts = [0]
    deadline = time.monotonic() + seconds

    async def client(n: int, session: aiohttp.ClientSession) -> None:
        serial = 0
        while time.monotonic() < deadline:
            events = []
            for _ in range(per_request):
                serial += 1
                event = {
                    "type": workload.EVENT_TYPE,
                    "tenant_id": f"tnt_{serial % 100:05d}",
                    "data": data,
                }
                if with_ids:
                    event["id"] = f"evt_{run_id}_{n}_{serial}"
                events.append(event)
            body = orjson.dumps(events[0] if per_request == 1 else {"events": events})
            started = time.perf_counter()
            async with session.post(url, data=body, headers=headers) as answer:
                reply = await answer.read()
                _check(answer.status, reply, per_request)
            latencies.append(time.perf_counter() - started)
            counts[0] += per_request

    connector = aiohttp.TCPConnector(limit=clients)
    started = time.monotonic()
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(client(n, session) for n in range(clients)))
    elapsed = time.monotonic() - started
    ordered = sorted(latencies)
    return {
        "with_ids": with_ids,
        "clients": clients,
        "events_per_request": per_request,
        "events": counts[0],
        "requests": len(latencies),
        "seconds": round(elapsed, 2),
        "events_per_second": round(counts[0] / elapsed, 1),
        "request_p50_ms": round(statistics.median(ordered) * 1000, 2) if ordered else None,
        "request_p99_ms": round(ordered[int(0.99 * (len(ordered) - 1))] * 1000, 2)
        if ordered
        else None,
    }


def _check(status: int, reply: bytes, per_request: int) -> None:
    if per_request == 1:
        if status != 202:
            raise RuntimeError(f"POST /v1/events answered {status}: {reply[:300]!r}")
        return
    answer = orjson.loads(reply) if status == 200 else None
    if answer is None or answer["accepted"] != per_request:
        raise RuntimeError(f"POST /v1/events/batch answered {status}: {reply[:300]!r}")


def _cpu(ctx: Context, api: Service) -> dict[str, float]:
    sample = api.sample()
    out = {"api": sample.cpu_seconds if sample else 0.0}
    if ctx.broker.pid is not None:
        broker = sample_process(ctx.broker.pid)
        out["broker"] = (broker.cpu_seconds if broker else 0.0) - jit_cpu_seconds(ctx.broker.pid)
    bench = sample_process(os.getpid())
    out["bench (load generator)"] = bench.cpu_seconds if bench else 0.0
    return out


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False
