"""`make chaos`: the full chaos run on a broker of its own; exits non-zero on any loss.

    python -m tests.chaos [--events N] [--tenants N] [--rate R] [--kill-every S] [--seed N]

Prints the checks as a table and writes them, with the plan and the fault timeline, to
`build/chaos/chaos-<UTC time>.json`. With HOOKSTREAM_KAFKA_BOOTSTRAP_SERVERS set it uses
that cluster instead and skips the broker restart (it cannot restart a cluster it did not
start).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from hookstream.tools import localkafka
from tests.chaos.plan import full_plan
from tests.chaos.run import chaos_settings, run_chaos
from tests.helpers import fresh_store_url
from tests.pipeline import kill_and_restart_broker

RESULTS = Path("build/chaos")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--tenants", type=int, default=5, help="ten webhooks per tenant")
    parser.add_argument("--rate", type=float, default=200.0, help="events offered per second")
    parser.add_argument("--kill-every", type=float, default=7.0, help="seconds between kills")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--store", choices=("postgresql", "sqlite"), default="postgresql")
    args = parser.parse_args(argv)
    plan = full_plan(args.events, args.tenants, args.rate, args.kill_every, args.seed)

    with tempfile.TemporaryDirectory(prefix="hookstream-chaos-") as scratch:
        work_dir = Path(scratch)
        existing = os.environ.get("HOOKSTREAM_KAFKA_BOOTSTRAP_SERVERS")
        broker_dir = work_dir / "kafka"
        restart: Callable[[], None] | None = None
        if existing:
            bootstrap = existing
            print("chaos: using the configured cluster; no broker restart", file=sys.stderr)
        else:
            state = localkafka.start(run_dir=broker_dir, port=localkafka.free_port())
            bootstrap = state.bootstrap
            port = int(bootstrap.rsplit(":", 1)[1])
            restart = lambda: kill_and_restart_broker(broker_dir, port)  # noqa: E731
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        try:
            with fresh_store_url(args.store, work_dir) as store_url:
                settings = chaos_settings(bootstrap, store_url)
                outcome = run_chaos(plan, settings, work_dir, sys.stdout, restart)
            if not outcome.verdict.passed:
                # The scratch folder goes away: keep what explains the failure.
                kept = RESULTS / f"logs-{stamp}"
                kept.mkdir(parents=True, exist_ok=True)
                for log in outcome.report["logs"]:
                    shutil.copy(log, kept)
                if not existing:
                    shutil.copy(broker_dir / "logs" / "server.log", kept / "kafka-server.log")
                outcome.report["logs"] = str(kept)
        finally:
            if not existing:
                localkafka.stop(broker_dir, wipe=True)
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
