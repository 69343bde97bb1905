"""One chaos run: the whole pipeline under load while services die, then the reckoning."""

from __future__ import annotations

import random
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import create_engine, select

from hookstream.client.http import ApiClient
from hookstream.core.settings import Settings
from hookstream.core.topics import Topics
from hookstream.store import Store
from hookstream.store.engine import normalize_url
from hookstream.store.schema import attempts
from hookstream.tools import localkafka
from hookstream.tools.status import GroupStatus, Status, collect_status
from hookstream.tools.topics import create_topics
from tests.chaos.brokers import Brokers
from tests.chaos.fleet import Fleet
from tests.chaos.load import Load
from tests.chaos.plan import (
    OUTAGE,
    OUTAGE_SECONDS,
    RETRY_SCHEDULE,
    SERVICES,
    SLOW,
    SLOW_ANSWER_SECONDS,
    TENANT_WEBHOOKS,
    ChaosPlan,
    Fault,
)
from tests.chaos.verdict import Receipt, StoredAttempt, Target, Verdict, expected_pairs, judge
from tests.helpers import api_ready, settings_for_test, wait_for
from tests.pipeline import read_topic
from tests.receiver import Behaviour, TestReceiver

ADMIN_KEY = "chaos-admin-key"
# A retry may be this late past its due time before it counts as stuck (a sender that was
# just killed leaves its partitions idle until the group notices, ~10 s).
STUCK_GRACE_MS = 30_000


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    report: dict[str, Any]


def chaos_settings(bootstrap: str, store_url: str, brokers: int = 1) -> Settings:
    """On a cluster, the production topic settings: three copies, two acknowledge a write."""
    replicated = {"replication_factor": 3, "min_insync_replicas": 2} if brokers >= 3 else {}
    return settings_for_test(
        bootstrap,
        f"chaos{uuid.uuid4().hex[:8]}.",
        events_partitions=4,
        deliveries_partitions=6,
        retry_schedule=RETRY_SCHEDULE,
        request_timeout=5.0,
        store_url=store_url,
        api_port=localkafka.free_port(),
        api_keys={ADMIN_KEY: "*"},
        allow_private_targets=("127.0.0.0/8",),
        **replicated,
    )


def run_chaos(
    plan: ChaosPlan,
    settings: Settings,
    work_dir: Path,
    out: TextIO,
    brokers: Brokers | None = None,
) -> Outcome:
    create_topics(settings)
    Store.open(settings.store_url).close()  # migrate once, as an operator would
    receiver = TestReceiver().start()
    fleet = Fleet(settings, work_dir, brokers)
    api = ApiClient(f"http://127.0.0.1:{settings.api_port}", ADMIN_KEY, timeout=10)
    try:
        fleet.start("api")
        wait_for(lambda: api_ready(api.base_url), 60, 0.2, "the API to answer /readyz")
        targets = _create_webhooks(api, receiver, plan)
        # Started after the webhooks exist: the router's first view of them is complete.
        for name in SERVICES:
            if name != "api":
                fleet.start(name)
        print(f"chaos: {plan.events} events, {len(targets)} webhooks, {plan.rate:g}/s", file=out)

        tenants = sorted({t.tenant_id for t in targets})
        load = Load(settings, plan, tenants, api)
        fleet.started_at = time.monotonic()
        loader = threading.Thread(target=load.run, daemon=True)
        loader.start()
        chooser = random.Random(plan.seed)
        for fault in plan.faults:
            _wait_until(fleet.started_at + fault.at)
            _apply(fault, fleet, receiver, targets, chooser)
        loader.join()
        load_seconds = time.monotonic() - fleet.started_at
        print(f"chaos: load done in {load_seconds:.0f} s; draining", file=out)

        expected = expected_pairs(load.published.values(), targets)
        by_path = {t.path: t for t in targets}
        drained = _drain(settings, fleet, receiver, by_path, expected, plan.drain_timeout)
        drain_seconds = time.monotonic() - fleet.started_at - load_seconds
        status = collect_status(settings)
        crashed = fleet.dead()
        exit_codes = fleet.stop()

        verdict = judge(
            expected,
            _receipts(receiver, by_path),
            [
                a["attempt_id"]
                for a in read_topic(
                    settings, Topics.from_settings(settings).delivery_log, "Attempt"
                )
            ],
            _stored_attempts(settings.store_url),
            load.failures,
        )
        _judge_backlog(verdict, status, drained)
        verdict.check("services that died on their own", len(crashed), not crashed, crashed)
        bad_exits = {n: c for n, c in exit_codes.items() if c != 0}
        verdict.check(
            "services not stopping cleanly on SIGTERM",
            len(bad_exits),
            not bad_exits,
            bad_exits.items(),
        )
        verdict.figures.update(
            {
                "load_seconds": round(load_seconds, 1),
                "publish_seconds": {k: round(v, 1) for k, v in load.timings.items()},
                "api_publish_retries": load.api_retries,
                "drain_seconds": round(drain_seconds, 1),
                "delivered_per_second": round(len(expected) / (load_seconds + drain_seconds), 1),
            }
        )
        report = {
            "plan": {
                "events": plan.events,
                "webhooks": plan.webhooks,
                "rate": plan.rate,
                "faults": [asdict(f) for f in plan.faults],
            },
            "timeline": [asdict(h) for h in fleet.timeline],
            "logs": [str(p) for p in fleet.logs()],
        }
        return Outcome(verdict, report)
    finally:
        fleet.close()
        receiver.stop()


def _create_webhooks(api: ApiClient, receiver: TestReceiver, plan: ChaosPlan) -> list[Target]:
    """The plan's webhooks, created through the API the way a customer would."""
    targets: list[Target] = []
    for t in range(plan.tenants):
        tenant = f"tenant-{t}"
        for n, (kind, events) in enumerate(TENANT_WEBHOOKS):
            path = f"/{tenant}/{n}-{kind}"
            created = api.post(
                "/v1/webhooks",
                {
                    "tenant_id": tenant,
                    "name": f"chaos {tenant} {n} {kind}",
                    "url": receiver.url(path),
                    "events": list(events),
                },
            )
            behaviour = Behaviour(delay=SLOW_ANSWER_SECONDS if kind == SLOW else 0.0)
            receiver.expect(path, [created["secret"]], behaviour)
            targets.append(Target(created["id"], tenant, events, kind, path, created["secret"]))
    return targets


def _apply(
    fault: Fault,
    fleet: Fleet,
    receiver: TestReceiver,
    targets: list[Target],
    chooser: random.Random,
) -> None:
    if fault.action == "kill":
        fleet.kill_and_restart(fault.target)
    elif fault.action == "kill-random":
        fleet.kill_and_restart(chooser.choice(fleet.names()))
    elif fault.action == "add-sender":
        fleet.add_sender()
    elif fault.action == "remove-sender":
        fleet.remove_sender()
    elif fault.action == "restart-broker":
        fleet.restart_broker()
    elif fault.action == "kill-leader":
        fleet.kill_node("leader")
    elif fault.action == "kill-controller":
        fleet.kill_node("controller")
    elif fault.action == "restart-nodes":
        fleet.restart_nodes()
    elif fault.action == "outage":
        until = time.time() + OUTAGE_SECONDS
        for target in targets:
            if target.kind == OUTAGE:
                receiver.behave(target.path, Behaviour(fail_status=503, fail_until=until))
        fleet.note(f"outage {OUTAGE_SECONDS:g} s", "outage webhooks")
    else:
        raise ValueError(f"unknown fault {fault.action!r}")


def _drain(
    settings: Settings,
    fleet: Fleet,
    receiver: TestReceiver,
    by_path: dict[str, Target],
    expected: set[tuple[str, str]],
    timeout: float,
) -> bool:
    """Wait until every expected pair arrived and every group has read everything; give up
    at the deadline or as soon as a service has died on its own (nothing restarts it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not fleet.dead():
        delivered = {r.pair for r in _receipts(receiver, by_path) if r.verified and r.accepted}
        if expected <= delivered and _all_read(collect_status(settings)):
            return True
        time.sleep(1.0)
    return False


def _all_read(status: Status) -> bool:
    return all(group.lag == 0 for group in status.groups) and all(
        not tier.backlog for tier in status.retry_tiers
    )


def _judge_backlog(verdict: Verdict, status: Status, drained: bool) -> None:
    verdict.check("drained before the deadline", "yes" if drained else "no", drained)
    # Each lagging partition with its owner and offsets: what a failure on a machine whose
    # logs are gone still tells (a partition nobody reads, or one read but never committed).
    lagging = [f"{g.name}: {g.lag} ({_lagging_partitions(g)})" for g in status.groups if g.lag]
    verdict.check(
        "records left unread by a group", sum(g.lag for g in status.groups), not lagging, lagging
    )
    cutoff = status.taken_at_ms - STUCK_GRACE_MS
    stuck = [
        f"{tier.tier}: {tier.backlog} (oldest due {tier.oldest_due_at_ms})"
        for tier in status.retry_tiers
        if tier.backlog and tier.oldest_due_at_ms is not None and tier.oldest_due_at_ms < cutoff
    ]
    verdict.check("retry tiers stuck past their due time", len(stuck), not stuck, stuck)
    verdict.check("dead letters", status.dead_letters.size, status.dead_letters.size == 0)


def _lagging_partitions(group: GroupStatus) -> str:
    owners = {name: m.client_id for m in group.members for name in m.partitions}
    return "; ".join(
        f"{t.topic}[{p.partition}] committed {p.committed} of {p.high},"
        f" owner {owners.get(f'{t.topic}[{p.partition}]', 'none')}"
        for t in group.topics
        for p in t.partitions
        if p.lag
    )


def _receipts(receiver: TestReceiver, by_path: dict[str, Target]) -> list[Receipt]:
    receipts = []
    for request in receiver.received():
        target = by_path.get(request.path)
        event_id = request.headers.get("webhook-id", "")
        pair = (event_id, target.id if target else f"unknown path {request.path}")
        receipts.append(Receipt(pair, request.verified, 200 <= request.status < 300))
    return receipts


def _stored_attempts(store_url: str) -> list[StoredAttempt]:
    engine = create_engine(normalize_url(store_url))
    try:
        with engine.connect() as conn:
            a = attempts.c
            rows = conn.execute(select(a.attempt_id, a.event_id, a.webhook_id, a.outcome)).all()
        return [StoredAttempt(r.attempt_id, (r.event_id, r.webhook_id), r.outcome) for r in rows]
    finally:
        engine.dispose()


def _wait_until(moment: float) -> None:
    while (left := moment - time.monotonic()) > 0:
        time.sleep(min(left, 0.5))
