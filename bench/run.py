"""`python -m bench`: run the stages, print the table, write bench/results/<date>-<host>.json."""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import socket
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import ceiling, stage_e2e, stage_ingest, stage_limits, stage_router, stage_sender
from bench.cluster import Broker
from bench.context import FULL, QUICK, Context, Sizes
from bench.machine import REPO, describe, load_average
from bench.nginx import Nginx, ensure_installed
from bench.report import build_figures, figures_json, table
from hookstream.core.codec import default_codec

STAGES = (
    "ceiling",
    "sender",
    "isolation",
    "router",
    "light",
    "ingest",
    "limits",
    "e2e",
    "scaleout",
)
RESULTS = REPO / "bench" / "results"

# What `make bench` runs differs from issue 7's sizes here, to stay within ~15 minutes.
FULL_SIZE_NOTES = [
    "The ceiling picks the best of a short concurrency sweep (16/32/64/256), then runs "
    "30,000 requests at it.",
    "End-to-end steps last 10 s each; the run stops at the first step not sustained.",
]
QUICK_NOTES = [
    "--quick: every stage is scaled down (see `sizes`); figures are indicative only.",
]


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="hookstream's benchmark (issue 7); see bench/README.md.",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, a few minutes")
    parser.add_argument(
        "--stage",
        action="append",
        default=[],
        help=f"run only these stages (repeat or comma-separate): {', '.join(STAGES)}; "
        "the ceiling always runs, since every figure is a ratio to it",
    )
    parser.add_argument("--output", type=Path, default=None, help="JSON path to write")
    parser.add_argument("--keep", action="store_true", help="keep the work folder and logs")
    return parser.parse_args(argv)


def _selected(args: argparse.Namespace) -> list[str]:
    chosen = [name.strip() for item in args.stage for name in item.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(STAGES))
    if unknown:
        raise SystemExit(f"unknown stage(s) {', '.join(unknown)}; choose from {', '.join(STAGES)}")
    if not chosen:
        return list(STAGES)
    return [name for name in STAGES if name in chosen or name == "ceiling"]


def _output_path(args: argparse.Namespace, selected: list[str], date: str) -> Path:
    if args.output is not None:
        return Path(args.output)
    name = f"{date}-{socket.gethostname()}"
    if args.quick:
        name += "-quick"
    if selected != list(STAGES):
        name += "-" + "-".join(selected)
    return RESULTS / f"{name}.json"


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    selected = _selected(args)
    sizes: Sizes = QUICK if args.quick else FULL
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="hookstream-bench-"))
    stages: dict[str, Any] = {}
    errors: dict[str, str] = {}
    timings: dict[str, float] = {}
    nginx: Nginx | None = None
    broker: Broker | None = None
    ctx: Context | None = None
    machine: dict[str, Any] = {}
    try:
        binary = ensure_installed()
        nginx = Nginx(binary, workdir / "nginx", sizes.slow_seconds).start()
        print(f"bench: nginx {nginx.url('')} (prefix {nginx.prefix})", flush=True)
        broker = Broker.provide(workdir)
        print(f"bench: Kafka {broker.version} at {broker.bootstrap}", flush=True)
        machine = describe(broker.version, binary)
        ctx = Context(sizes, workdir, broker, nginx, default_codec())
        for name, work in _plan(ctx, selected):
            print(f"bench: {name} ...", flush=True)
            began = time.monotonic()
            try:
                stages[name] = work()
            except Exception as exc:
                errors[name] = "".join(traceback.format_exception(exc))[-4000:]
                print(f"bench: {name} FAILED: {exc}", flush=True)
                ctx.stop_all()
            timings[name] = round(time.monotonic() - began, 1)
            print(f"bench: {name} done in {timings[name]:.0f} s", flush=True)
    finally:
        if ctx is not None:
            ctx.stop_all()
        if nginx is not None:
            nginx.stop()
        if broker is not None:
            broker.stop()
        if args.keep or errors:
            print(f"bench: work folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    figures = build_figures(stages)
    machine["load_average_at_end"] = load_average()
    result: dict[str, Any] = {
        "schema": 1,
        "mode": "quick" if args.quick else "full",
        "stages_selected": selected,
        "machine": machine,
        "sizes": sizes.as_dict(),
        "notes": QUICK_NOTES if args.quick else FULL_SIZE_NOTES,
        "figures": figures_json(figures),
        "stages": stages,
        "errors": errors,
        "stage_seconds": timings,
        "total_seconds": round(time.monotonic() - started, 1),
    }
    date = datetime.now(UTC).strftime("%Y-%m-%d")
    path = _output_path(args, selected, date)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(json.dumps(result, indent=2) + "\n")
    partial.replace(path)
    print()
    print(table(figures))
    print()
    for note in result["notes"]:
        print(f"note: {note}")
    for name in errors:
        print(f"ERROR in stage {name}; details in the JSON")
    print(f"bench: {len(figures)} figures in {result['total_seconds']:.0f} s -> {path}")
    return 1 if errors else 0


def _plan(ctx: Context, selected: list[str]) -> list[tuple[str, Callable[[], Any]]]:
    """(result name, work) in run order; a stage's prerequisite runs even if not selected."""
    plan: list[tuple[str, Callable[[], Any]]] = [("ceiling", lambda: _ceiling(ctx))]
    if "sender" in selected or "isolation" in selected:
        plan.append(("sender", lambda: stage_sender.run(ctx)))
    if "isolation" in selected:
        plan.append(
            ("isolation", lambda: stage_sender.run(ctx, slow_fraction=ctx.sizes.slow_fraction))
        )
    if "router" in selected:
        for fanout in sorted(ctx.sizes.router_events):
            work = functools.partial(stage_router.run, ctx, fanout)
            plan.append((f"router_fanout_{fanout}", work))
    if "light" in selected:
        plan.append(("light_latency", lambda: stage_e2e.run_light(ctx)))
    if "ingest" in selected:
        plan.append(("http_ingest", lambda: stage_ingest.run(ctx)))
    if "limits" in selected:
        plan.append(("limits_fixed", lambda: stage_limits.run_fixed(ctx)))
        plan.append(("limits_adaptive", lambda: stage_limits.run_adaptive(ctx)))
        plan.append(("limits_overload", lambda: stage_limits.run_overload(ctx)))
        plan.append(("limits_rate", lambda: stage_limits.run_rate(ctx)))
    if "e2e" in selected:
        plan.append(("e2e_latency", lambda: stage_e2e.run_latency(ctx)))
    if "e2e" in selected or "scaleout" in selected:
        plan.append(("e2e_steps", lambda: stage_e2e.run_steps(ctx, senders=1)))
    if "scaleout" in selected:
        plan.append(("scaleout_steps", lambda: stage_e2e.run_steps(ctx, senders=2)))
    return plan


def _ceiling(ctx: Context) -> dict[str, Any]:
    sizes = ctx.sizes
    base = ctx.nginx.url("")
    # The reference runs on the loop the sender runs on (hookstream.runtime.eventloop).
    loop = "uvloop" if ceiling.uvloop_available() else "asyncio"

    def once(requests: int, concurrency: int, loop: str = loop) -> dict[str, Any]:
        return ceiling.measure(
            base, requests, concurrency, sizes.sender_webhooks, sizes.body_size, loop
        )

    sweep = [once(sizes.ceiling_sweep_requests, c) for c in sizes.ceiling_concurrencies]
    best = max(sweep, key=lambda point: float(point["requests_per_second"]))
    result = once(sizes.ceiling_requests, int(best["concurrency"]))
    result["sweep"] = sweep
    if loop == "uvloop":
        result["asyncio"] = once(sizes.ceiling_requests, int(best["concurrency"]), "asyncio")
    return result
