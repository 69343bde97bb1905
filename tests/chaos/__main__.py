"""`make chaos`: the full chaos run on a broker of its own; exits non-zero on any loss.

    python -m tests.chaos [--events N] [--tenants N] [--rate R] [--kill-every S] [--seed N]
                          [--brokers 1|3]

Prints the checks as a table and writes them, with the plan and the fault timeline, to
`build/chaos/chaos-<UTC time>.json`. With HOOKSTREAM_KAFKA_BOOTSTRAP_SERVERS set it uses
that cluster instead and skips the broker restart (it cannot restart a cluster it did not
start). With `--brokers 3` it runs on a three-node cluster of its own with the production
topic settings (replication factor 3, min.insync.replicas 2) and, instead of the broker
restart, kills -9 the node leading the most `deliveries` partitions, restarts it, then the
active controller.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from tests.chaos.brokers import Brokers, local_kafka, server_logs
from tests.chaos.plan import ChaosPlan, full_plan
from tests.chaos.run import Outcome, chaos_settings, run_chaos
from tests.helpers import fresh_store_url

RESULTS = Path("build/chaos")


def _run(
    plan: ChaosPlan,
    store: str,
    work_dir: Path,
    bootstrap: str,
    brokers: Brokers | None,
    stamp: str,
) -> Outcome:
    with fresh_store_url(store, work_dir) as store_url:
        settings = chaos_settings(bootstrap, store_url, plan.brokers)
        outcome = run_chaos(plan, settings, work_dir, sys.stdout, brokers)
    if not outcome.verdict.passed:
        # The scratch folder goes away: keep what explains the failure.
        kept = RESULTS / f"logs-{stamp}"
        kept.mkdir(parents=True, exist_ok=True)
        for log in outcome.report["logs"]:
            shutil.copy(log, kept)
        if brokers is not None:
            for log in server_logs(brokers.run_dir):
                shutil.copy(log, kept / f"kafka-{log.parent.parent.name}-server.log")
        outcome.report["logs"] = str(kept)
    return outcome


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--tenants", type=int, default=5, help="ten webhooks per tenant")
    parser.add_argument("--rate", type=float, default=200.0, help="events offered per second")
    parser.add_argument("--kill-every", type=float, default=7.0, help="seconds between kills")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--store", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--brokers", type=int, choices=(1, 3), default=1)
    args = parser.parse_args(argv)
    plan = full_plan(args.events, args.tenants, args.rate, args.kill_every, args.seed, args.brokers)

    with tempfile.TemporaryDirectory(prefix="hookstream-chaos-") as scratch:
        work_dir = Path(scratch)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        existing = os.environ.get("HOOKSTREAM_KAFKA_BOOTSTRAP_SERVERS")
        if existing:
            print("chaos: using the configured cluster; no broker faults", file=sys.stderr)
            outcome = _run(plan, args.store, work_dir, existing, None, stamp)
        else:
            with local_kafka(work_dir / "kafka", plan.brokers) as brokers:
                outcome = _run(plan, args.store, work_dir, brokers.bootstrap, brokers, stamp)
    verdict = outcome.verdict
    path = RESULTS / f"chaos-{stamp}.json"
    outcome.report["timeline_text"] = [
        f"{h['at']:>7.1f} s  {h['action']} {h['target']} ({h['seconds']} s)"
        for h in outcome.report["timeline"]
    ]
    if verdict.passed:
        outcome.report.pop("logs")  # they lived in the scratch folder, gone by now
    verdict.write_json(path, {"finished_at": stamp, **outcome.report})
    print("\n".join(outcome.report["timeline_text"]))
    print(verdict.table())
    print(f"figures: {verdict.figures}")
    print(f"chaos: {'PASSED' if verdict.passed else 'FAILED'}; report in {path}")
    return 0 if verdict.passed else 1


if __name__ == "__main__":
    sys.exit(main())
