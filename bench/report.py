"""The figures of a run against issue 7's targets: a printed table, JSON, and Markdown.

`python -m bench.report bench/results/<file>.json` prints a stored run as a Markdown table
(the one in bench/README.md).
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Figure:
    label: str
    value: float | None
    unit: str
    ratio: float | None  # to the ceiling measured in the same run
    target: str = ""
    met: bool | None = None
    note: str = ""

    def shown_value(self) -> str:
        if self.value is None:
            return "n/a"
        if self.unit in ("/s", "MB"):
            return f"{self.value:,.0f} {self.unit}".replace(" /s", "/s")
        if self.unit == "ms":
            return f"{self.value:,.1f} ms"
        if self.unit == "%":
            return f"{self.value:.1f} %" if abs(self.value) < 10 else f"{self.value:.0f} %"
        return f"{self.value:g} {self.unit}".strip()

    def shown_ratio(self) -> str:
        return "—" if self.ratio is None else f"{self.ratio:.2f}"

    def shown_met(self) -> str:
        return {True: "yes", False: "NO", None: ""}[self.met]


def _ratio(value: float | None, reference: float | None) -> float | None:
    if value is None or not reference:
        return None
    return value / reference


def build_figures(stages: dict[str, Any]) -> list[Figure]:
    """Every figure of the stages that ran, each with its ratio to the ceiling."""
    figures: list[Figure] = []
    ceiling = stages.get("ceiling") or {}
    rate = ceiling.get("requests_per_second")
    cpu = ceiling.get("cpu_seconds_per_1000")
    rss = ceiling.get("peak_rss_mb")
    if ceiling:
        figures.append(
            Figure(
                f"Ceiling: signed POSTs/s, 1 process, concurrency {ceiling['concurrency']}",
                rate,
                "/s",
                1.0,
            )
        )
        figures.append(Figure("Ceiling: CPU s per 1,000 requests", cpu, "s", 1.0))
        standard = ceiling.get("asyncio")
        if standard:
            figures.append(
                Figure(
                    "Ceiling on the standard asyncio loop (same concurrency)",
                    standard["requests_per_second"],
                    "/s",
                    _ratio(standard["requests_per_second"], rate),
                    note="the services run on uvloop; shown for comparison",
                )
            )
    sender = stages.get("sender")
    if sender:
        value = sender["deliveries_per_second"]
        ratio = _ratio(value, rate)
        figures.append(
            Figure(
                "Sender stage: deliveries/s, 1 process",
                value,
                "/s",
                ratio,
                ">= 60 % of ceiling",
                None if ratio is None else ratio >= 0.60,
            )
        )
        figures.append(
            Figure(
                "Sender stage: CPU s per 1,000 deliveries",
                sender["cpu_seconds_per_1000"],
                "s",
                _ratio(sender["cpu_seconds_per_1000"], cpu),
            )
        )
        figures.append(
            Figure(
                f"Sender stage: peak RSS (max_in_flight {sender['max_in_flight']})",
                sender["peak_rss_mb"],
                "MB",
                _ratio(sender["peak_rss_mb"], rss),
                "<= 300 MB",
                sender["peak_rss_mb"] is not None and sender["peak_rss_mb"] <= 300,
            )
        )
    for fanout, target in ((1, 30_000), (10, None)):
        router = stages.get(f"router_fanout_{fanout}")
        if router:
            value = router["deliveries_per_second"]
            figures.append(
                Figure(
                    f"Router fan-out {fanout}: routed deliveries/s, 1 process",
                    value,
                    "/s",
                    _ratio(value, rate),
                    f">= {target:,}/s" if target else "",
                    None if target is None or value is None else value >= target,
                    ""
                    if router["cpu_utilisation"] is None
                    else f"router CPU busy {router['cpu_utilisation']:.0%} of one core",
                )
            )
    steps = stages.get("e2e_steps")
    if steps:
        value = steps["sustained_deliveries_per_second"]
        figures.append(
            Figure(
                "End to end: highest sustained deliveries/s (1 sender)",
                value,
                "/s",
                _ratio(value, rate),
                ">= 4,000/s",
                value >= 4000,
                f"highest delivered rate seen {steps['highest_delivered_rate']:,.0f}/s",
            )
        )
        spent = steps.get("cpu_seconds_per_1000_at_best")
        if spent:
            total = sum(spent.values())
            parts = ", ".join(f"{name} {value:.2f}" for name, value in spent.items())
            figures.append(
                Figure(
                    "End to end: CPU s per 1,000 deliveries, every process, at that rate",
                    round(total, 3),
                    "s",
                    _ratio(total, cpu),
                    note=parts,
                )
            )
    light = stages.get("light_latency")
    if light:
        light_rate = light["rate_target"]
        p50, p99 = light["latency_p50_ms"], light["latency_p99_ms"]
        figures.append(
            Figure(
                f"Light load: p50 latency at {light_rate}/s, Kafka ingest (linger 1 ms)",
                p50,
                "ms",
                None,
                "<= 10 ms",
                p50 is not None and p50 <= 10,
            )
        )
        figures.append(
            Figure(
                f"Light load: p99 latency at {light_rate}/s, Kafka ingest (linger 1 ms)",
                p99,
                "ms",
                None,
                "<= 25 ms",
                p99 is not None and p99 <= 25,
                f"max {light['latency_max_ms']} ms, {light['latency_samples']} samples",
            )
        )
        http = light.get("http")
        if http:
            for name, value, bound in (
                ("p50", http["latency_p50_ms"], 10),
                ("p99", http["latency_p99_ms"], 25),
            ):
                figures.append(
                    Figure(
                        f"Light load: {name} latency at {light_rate}/s, POST /v1/events "
                        "(from the request's start)",
                        value,
                        "ms",
                        None,
                        f"<= {bound} ms",
                        value is not None and value <= bound,
                    )
                )
        idle = light["idle"]
        cores = idle["cores_all_but_bench"]
        parts = ", ".join(
            f"{name} {value:.3f}" for name, value in idle["cores"].items() if value >= 0.0005
        )
        figures.append(
            Figure(
                "Idle: cores used by every process, broker included, with no traffic",
                cores,
                "cores",
                None,
                "<= 0.03",
                cores <= 0.03,
                parts,
            )
        )
    ingest = stages.get("http_ingest")
    if ingest:
        for phase, label, bound in (
            ("single", "POST /v1/events, ids", 3_000),
            ("single_without_ids", "POST /v1/events, no ids", 3_000),
            ("batch", "POST /v1/events/batch, ids", 20_000),
        ):
            measured = ingest.get(phase)
            if measured is None:
                continue
            value = measured["events_per_second"]
            cpu = measured["cpu_seconds_per_1000_api_and_broker"]
            figures.append(
                Figure(
                    f"HTTP ingest: events/s, one api, {measured['clients']} clients, "
                    f"{measured['events_per_request']} per request ({label})",
                    value,
                    "/s",
                    None,
                    f">= {bound:,}",
                    value >= bound,
                    f"request p50 {measured['request_p50_ms']} ms, p99 "
                    f"{measured['request_p99_ms']} ms; api + broker {cpu} CPU s per 1,000",
                )
            )
    figures += _limits_figures(stages)
    latency = stages.get("e2e_latency")
    if latency:
        sustained = steps["sustained_deliveries_per_second"] if steps else None
        over = sustained is not None and latency["rate_target"] > sustained
        note = "offered load is above the sustained rate: queueing" if over else ""
        figures.append(
            Figure(
                f"End to end: p50 latency at {latency['rate_target']:,}/s",
                latency["latency_p50_ms"],
                "ms",
                None,
                note=note,
            )
        )
        figures.append(
            Figure(
                f"End to end: p99 latency at {latency['rate_target']:,}/s",
                latency["latency_p99_ms"],
                "ms",
                None,
                "<= 100 ms",
                latency["latency_p99_ms"] is not None and latency["latency_p99_ms"] <= 100,
                note,
            )
        )
        low = latency.get("low_rate")
        if low:
            figures.append(
                Figure(
                    f"End to end: p99 latency at {low['rate_target']:,}/s",
                    low["latency_p99_ms"],
                    "ms",
                    None,
                    note=f"p50 {low['latency_p50_ms']:,.1f} ms",
                )
            )
        verified = latency["verified"] + (low["verified"] if low else 0)
        failures = latency["verify_failures"] + (low["verify_failures"] if low else 0)
        figures.append(
            Figure(
                f"Correctness: signature failures in {verified:,} verified requests",
                failures,
                "",
                None,
                "0",
                failures == 0,
                f"every {latency['verify_every']}th request verified with standardwebhooks",
            )
        )
    isolation = stages.get("isolation")
    if isolation and sender:
        healthy = isolation["healthy"]["deliveries_per_second"]
        baseline = sender["healthy"]["deliveries_per_second"]
        share = _ratio(healthy, baseline)
        figures.append(
            Figure(
                "Isolation: healthy deliveries/s with 10 % of webhooks slow (2 s)",
                healthy,
                "/s",
                _ratio(healthy, rate),
                ">= 90 % of run without slow",
                None if share is None else share >= 0.90,
                "" if share is None else f"{share:.0%} of {baseline:,.0f}/s without slow ones",
            )
        )
    scaled = stages.get("scaleout_steps")
    if scaled:
        value = scaled["sustained_deliveries_per_second"]
        one = steps["sustained_deliveries_per_second"] if steps else None
        gain = _ratio(value, one)
        held = [member.get("deliveries", 0) for member in scaled.get("sender_assignment", [])]
        notes = [] if gain is None else [f"{gain:.2f}x the 1-sender run"]
        notes.append(f"deliveries partitions per sender: {held}")
        figures.append(
            Figure(
                "Scale-out: highest sustained deliveries/s, 2 senders",
                value,
                "/s",
                _ratio(value, rate),
                note="; ".join(notes),
            )
        )
    return figures


def _share(value: float | None, whole: float) -> str:
    return "n/a" if value is None or not whole else f"{value / whole:.0%}"


def _limits_figures(stages: dict[str, Any]) -> list[Figure]:
    """Stage `limits`: one webhook's fixed, adaptive and rate limits (bench/stage_limits.py)."""
    figures: list[Figure] = []
    for name, label in (
        ("limits_fixed", "max_concurrency {max_concurrency}"),
        ("limits_adaptive", "adaptive limit"),
    ):
        run = stages.get(name)
        if not run:
            continue
        value = run["delivered"]["deliveries_per_second"]
        target = run["target_deliveries_per_second"]
        peak_limit = max((g[1] for g in run["gauges"] if g[1] is not None), default=None)
        put_off = run["put_off"]
        figures.append(
            Figure(
                f"Limits: deliveries/s, one webhook, {label.format(**run)}, "
                f"{run['endpoint_delay_ms']:g} ms endpoint",
                value,
                "/s",
                None,
                f">= {target:,.0f}/s",
                value is not None and value >= target,
                f"{_share(value, run['most_deliveries_per_second'])} of "
                f"{run['most_deliveries_per_second']:,.0f}/s (64 in flight, 50 ms each); "
                f"receiver peak in flight {run['receiver']['in_flight_peak']}, limit gauge "
                f"max {peak_limit if peak_limit is None else int(peak_limit)}; put off "
                f"{put_off['deferred_metric'] or 0:,.0f} times "
                f"({put_off['deliveries_put_off']:,} deliveries)",
            )
        )
        if name == "limits_adaptive":
            reached = run["seconds_to_target_rate"]
            figures.append(
                Figure(
                    f"Limits: s from the first request until 1 s at {target:,.0f}/s, adaptive",
                    reached,
                    "s",
                    None,
                    "<= 10 s",
                    reached is not None and reached <= 10,
                    f"peak 1 s rate at the receiver {run['receiver']['peak_rolling_1s_rate']:,}",
                )
            )
    overload = stages.get("limits_overload")
    if overload:
        mean = overload["limit_mean_second_half"]
        capacity = overload["endpoint_capacity"]
        low, high = round(capacity * 0.8), round(capacity * 1.2)
        figures.append(
            Figure(
                f"Limits: adaptive limit, mean over the 2nd half, endpoint taking {capacity} "
                "at a time (503 beyond)",
                mean,
                "",
                None,
                f"near {capacity} ({low}-{high})",
                mean is not None and low <= mean <= high,
                f"range {overload['limit_range_second_half']}, in flight mean "
                f"{overload['in_flight_mean_second_half']}",
            )
        )
        share = overload["refused_share"]
        receiver = overload["receiver"]
        figures.append(
            Figure(
                "Limits: requests refused with 503, same run",
                None if share is None else round(share * 100, 1),
                "%",
                None,
                "< 10 %",
                share is not None and share < 0.10,
                f"{receiver['refused']:,} of {receiver['served'] + receiver['refused']:,} "
                f"requests; {overload['dead_letters']} dead letters",
            )
        )
    rate = stages.get("limits_rate")
    if rate:
        steady = rate["steady"]
        value = steady["rate"]
        wanted = rate["target_rate"]
        figures.append(
            Figure(
                f"Limits: rate at the receiver, rate_limit {wanted:g}/s (2nd s to last request)",
                value,
                "/s",
                None,
                f"{wanted * 0.95:g}-{wanted * 1.05:g}/s",
                value is not None and abs(value - wanted) <= 0.05 * wanted,
                f"{value}/s; per second min {steady.get('per_second_min')}, max "
                f"{steady.get('per_second_max')}; put off "
                f"{rate['put_off']['deferred_metric'] or 0:,.0f} times",
            )
        )
    return figures


def table(figures: list[Figure]) -> str:
    rows = [("figure", "value", "x ceiling", "target", "met", "note")]
    rows += [
        (f.label, f.shown_value(), f.shown_ratio(), f.target, f.shown_met(), f.note)
        for f in figures
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = []
    for index, row in enumerate(rows):
        cells = [row[i].ljust(widths[i]) if i == 0 else row[i].rjust(widths[i]) for i in range(5)]
        lines.append("  ".join(cells) + ("  " + row[5] if row[5] else ""))
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown(result: dict[str, Any]) -> str:
    machine = result["machine"]
    figures = [Figure(**figure) for figure in result["figures"]]
    lines = [
        f"Run {machine['date']} on `{machine['host']}` ({result['mode']} sizes): "
        f"{machine['cpu_model']}, {machine['cores']} cores, {machine['memory_gib']} GiB, "
        f"Python {machine['python']}, Kafka {machine['kafka']}, nginx {machine['nginx']}, "
        f"commit `{(machine['commit'] or 'unknown')[:12]}`; load average at start "
        f"{', '.join(str(v) for v in machine['load_average_at_start'])}.",
        "",
        "| figure | value | x ceiling | target | met | note |",
        "|---|---:|---:|---|---|---|",
    ]
    for f in figures:
        lines.append(
            f"| {f.label} | {f.shown_value()} | {f.shown_ratio()} | {f.target} | "
            f"{f.shown_met()} | {f.note} |"
        )
    return "\n".join(lines)


def figures_json(figures: list[Figure]) -> list[dict[str, Any]]:
    return [asdict(figure) for figure in figures]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m bench.report bench/results/<file>.json", file=sys.stderr)
        return 2
    print(markdown(json.loads(Path(args[0]).read_text())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
