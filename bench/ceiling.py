"""Stage 1, the ceiling: how fast one Python process can sign and POST, with nothing else to do.

One process, one aiohttp session, `concurrency` workers. Each request is signed exactly as the
sender signs it (`hookstream.core.signing.headers`, one ready signer per webhook, a fresh
timestamp per request) and POSTed to the same receiver the sender uses. Every later figure is
divided by this one. Run in its own process (`python -m bench.ceiling ...`) so its CPU time and
memory are read off /proc the same way as the sender's.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import subprocess
import sys
import time
from typing import Any

import aiohttp

from bench.machine import sample_process
from bench.workload import BodyMaker, event_id
from hookstream.core import signing
from hookstream.core.signing import new_secret

USER_AGENT = "hookstream/0.1"
BODY_POOL = 1000


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    # Built once per webhook, as the sender keeps them (`hookstream.sender.signers`).
    signers = [[signing.signer(new_secret())] for _ in range(args.webhooks)]
    urls = [f"{args.base_url}/hook/{index}" for index in range(args.webhooks)]
    maker = BodyMaker.of_size(args.body_size)
    bodies = [maker.body(index, event_id("ceiling", index)) for index in range(BODY_POOL)]
    errors: list[str] = []
    connector = aiohttp.TCPConnector(limit=args.concurrency, limit_per_host=0)
    async with aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        headers={"User-Agent": USER_AGENT},
        timeout=aiohttp.ClientTimeout(total=30),
    ) as session:

        async def post(index: int) -> None:
            hook = index % args.webhooks
            body = bodies[index % BODY_POOL]
            headers = signing.headers(
                signers[hook], event_id("ceiling", index), int(time.time()), body, USER_AGENT
            )
            async with session.post(
                urls[hook], data=body, headers=headers, allow_redirects=False
            ) as response:
                await response.read()
                if response.status >= 300 and len(errors) < 5:
                    errors.append(f"HTTP {response.status}")

        async def worker(counter: itertools.count[int], limit: int) -> None:
            for index in counter:
                if index >= limit:
                    return
                await post(index)

        async def burst(count: int) -> None:
            counter = itertools.count()
            await asyncio.gather(*(worker(counter, count) for _ in range(args.concurrency)))

        await burst(args.concurrency * 4)  # warm-up: open every pooled connection
        before = sample_process(os.getpid())
        started = time.perf_counter()
        await burst(args.requests)
        seconds = time.perf_counter() - started
        after = sample_process(os.getpid())
    assert before is not None and after is not None
    return {
        "loop": args.loop,
        "requests": args.requests,
        "concurrency": args.concurrency,
        "seconds": round(seconds, 3),
        "requests_per_second": round(args.requests / seconds, 1),
        "cpu_seconds": round(after.cpu_seconds - before.cpu_seconds, 2),
        "cpu_seconds_per_1000": round(
            (after.cpu_seconds - before.cpu_seconds) / args.requests * 1000, 4
        ),
        "peak_rss_mb": round(after.peak_rss_bytes / 2**20, 1),
        "errors": errors,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ceiling")
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--requests", type=int, default=30_000)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--webhooks", type=int, default=1000)
    parser.add_argument("--body-size", type=int, default=1024)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    args = parser.parse_args(argv)
    if args.loop == "uvloop":
        import uvloop

        result = uvloop.run(_run(args))
    else:
        result = asyncio.run(_run(args))
    print(json.dumps(result))
    return 0


def uvloop_available() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def measure(
    base_url: str, requests: int, concurrency: int, webhooks: int, body_size: int, loop: str
) -> dict[str, Any]:
    """Run the ceiling in a child process and return what it measured."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.ceiling",
            "--base-url",
            base_url,
            "--requests",
            str(requests),
            "--concurrency",
            str(concurrency),
            "--webhooks",
            str(webhooks),
            "--body-size",
            str(body_size),
            "--loop",
            loop,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if out.returncode != 0:
        raise RuntimeError(f"the ceiling run failed:\n{out.stderr[-3000:]}")
    loaded: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return loaded


if __name__ == "__main__":
    raise SystemExit(main())
