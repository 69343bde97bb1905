"""The correctness receiver: aiohttp, run as its own process, verifying a sample of requests.

Every request to `/hook/<n>` is counted and answered 204. Every `verify_every`-th request has
its signature checked with the `standardwebhooks` package against webhook n's secret, as a
customer would; failures are counted. When the body's `data` carries `t_us` (the event's
produce time, microseconds since the epoch) the receiver records arrival minus that: the
end-to-end latency from event produce to receiver arrival, on one machine and one clock.

For the limits stage it can also play a slower or smaller endpoint: `--delay-ms D` answers
every request after D ms (`asyncio.sleep`), and `--capacity C` serves at most C requests at a
time and answers 503 at once to any request beyond them (refusals are counted, not recorded
as received). Either way it notes the most requests it had in flight at once and every
arrival's wall-clock time, which `GET /_arrivals` returns (served and refused apart).

`GET /_stats` returns the counters and latency percentiles; `POST /_reset` clears them.
Run as `python -m bench.receiver --port N --secrets FILE --verify-every K
[--delay-ms D] [--capacity C]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson
from aiohttp import web
from standardwebhooks.webhooks import Webhook as Verifier
from standardwebhooks.webhooks import WebhookVerificationError

HOOK_PREFIX = "/hook/"


def percentile(sorted_values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return None
    rank = max(1, round(fraction * len(sorted_values) + 0.5))
    return sorted_values[min(rank, len(sorted_values)) - 1]


class Counters:
    def __init__(
        self, secrets: list[str], verify_every: int, delay_ms: float = 0.0, capacity: int = 0
    ) -> None:
        self.verifiers = [Verifier(secret) for secret in secrets]
        self.verify_every = max(1, verify_every)
        self.delay_seconds = max(0.0, delay_ms) / 1000
        self.capacity = max(0, capacity)  # 0: no limit
        self.in_flight = 0  # requests being served now (a reset leaves them counted)
        self.reset()

    def reset(self) -> None:
        self.received = 0
        self.verified = 0
        self.failures = 0
        self.failure_examples: list[str] = []
        self.latencies_ms: list[float] = []
        self.first_at = 0.0
        self.last_at = 0.0
        self.refused = 0
        self.in_flight_peak = 0
        # Wall-clock seconds of every served and every refused request's arrival.
        self.served_at: list[float] = []
        self.refused_at: list[float] = []

    def stats(self) -> dict[str, Any]:
        ordered = sorted(self.latencies_ms)
        return {
            "received": self.received,
            "verified": self.verified,
            "verify_failures": self.failures,
            "failure_examples": self.failure_examples,
            "latency_samples": len(ordered),
            "latency_p50_ms": percentile(ordered, 0.50),
            "latency_p99_ms": percentile(ordered, 0.99),
            "latency_max_ms": ordered[-1] if ordered else None,
            "first_at": self.first_at,
            "last_at": self.last_at,
            "refused": self.refused,
            "in_flight_peak": self.in_flight_peak,
            "delay_ms": self.delay_seconds * 1000,
            "capacity": self.capacity,
        }


def build_app(counters: Counters) -> web.Application:
    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        arrived_us = time.time_ns() // 1000
        if counters.capacity and counters.in_flight >= counters.capacity:
            counters.refused += 1
            counters.refused_at.append(arrived_us / 1e6)
            return web.Response(status=503)
        counters.in_flight += 1
        counters.in_flight_peak = max(counters.in_flight_peak, counters.in_flight)
        try:
            return await serve(request, body, arrived_us)
        finally:
            counters.in_flight -= 1

    async def serve(request: web.Request, body: bytes, arrived_us: int) -> web.Response:
        counters.served_at.append(arrived_us / 1e6)
        counters.received += 1
        if counters.first_at == 0.0:
            counters.first_at = arrived_us / 1e6
        counters.last_at = arrived_us / 1e6
        _record_latency(counters, body, arrived_us)
        if counters.received % counters.verify_every == 0:
            _verify(counters, request, body)
        if counters.delay_seconds:
            await asyncio.sleep(counters.delay_seconds)
        return web.Response(status=204)

    async def stats(_request: web.Request) -> web.Response:
        return web.json_response(counters.stats())

    async def arrivals(_request: web.Request) -> web.Response:
        return web.json_response({"served": counters.served_at, "refused": counters.refused_at})

    async def reset(_request: web.Request) -> web.Response:
        counters.reset()
        return web.Response(status=204)

    app = web.Application(client_max_size=1024 * 1024)
    app.router.add_get("/_stats", stats)
    app.router.add_get("/_arrivals", arrivals)
    app.router.add_post("/_reset", reset)
    app.router.add_post(HOOK_PREFIX + "{index}", hook)
    return app


def _record_latency(counters: Counters, body: bytes, arrived_us: int) -> None:
    try:
        sent_us = orjson.loads(body)["data"]["t_us"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return
    if isinstance(sent_us, int):
        counters.latencies_ms.append((arrived_us - sent_us) / 1000)


def _verify(counters: Counters, request: web.Request, body: bytes) -> None:
    counters.verified += 1
    problem: str | None = None
    try:
        index = int(request.match_info["index"])
        counters.verifiers[index].verify(body, dict(request.headers), json_parse=False)
    except (ValueError, IndexError):
        problem = f"no secret for {request.path}"
    except WebhookVerificationError as exc:
        problem = f"{request.path}: {exc}"
    if problem is not None:
        counters.failures += 1
        if len(counters.failure_examples) < 5:
            counters.failure_examples.append(problem)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.receiver")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--secrets", type=Path, required=True, help="JSON list, index = n")
    parser.add_argument("--verify-every", type=int, default=10)
    parser.add_argument("--delay-ms", type=float, default=0.0, help="answer after so many ms")
    parser.add_argument(
        "--capacity", type=int, default=0, help="serve so many at a time, 503 beyond (0: any)"
    )
    args = parser.parse_args(argv)
    secrets = json.loads(args.secrets.read_text())
    app = build_app(Counters(secrets, args.verify_every, args.delay_ms, args.capacity))
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)
    return 0


class ReceiverProcess:
    """Runs the receiver in its own process so it never shares a GIL with the load."""

    def __init__(
        self,
        port: int,
        secrets: list[str],
        verify_every: int,
        workdir: Path,
        *,
        delay_ms: float = 0.0,
        capacity: int = 0,
    ) -> None:
        self.port = port
        self.delay_ms = delay_ms
        self.capacity = capacity
        self._secrets_path = workdir / f"receiver-{port}-secrets.json"
        self._secrets_path.write_text(json.dumps(secrets))
        self._log_path = workdir / f"receiver-{port}.log"
        self.verify_every = verify_every
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def url(self, index: int) -> str:
        return f"http://127.0.0.1:{self.port}{HOOK_PREFIX}{index}"

    def start(self) -> ReceiverProcess:
        log = self._log_path.open("wb")
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.receiver",
                "--port",
                str(self.port),
                "--secrets",
                str(self._secrets_path),
                "--verify-every",
                str(self.verify_every),
                "--delay-ms",
                str(self.delay_ms),
                "--capacity",
                str(self.capacity),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 20
        while True:
            try:
                self.stats()
                return self
            except OSError as exc:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    output = self._log_path.read_text(errors="replace")
                    raise RuntimeError(f"the receiver did not start:\n{output}") from exc
                time.sleep(0.1)

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/_stats", timeout=10) as rsp:
            loaded: dict[str, Any] = json.loads(rsp.read())
            return loaded

    def arrivals(self) -> dict[str, list[float]]:
        """Wall-clock arrival times since the last reset: {"served": [...], "refused": [...]}."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/_arrivals", timeout=30) as rsp:
            loaded: dict[str, list[float]] = json.loads(rsp.read())
            return loaded

    def reset(self) -> None:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/_reset", method="POST")
        with urllib.request.urlopen(request, timeout=10):
            pass

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)

    def __enter__(self) -> ReceiverProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


if __name__ == "__main__":
    raise SystemExit(main())
