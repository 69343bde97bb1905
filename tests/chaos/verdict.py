"""What a chaos run proved: the checks, as a table for people and JSON for the record."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hookstream.events.catalog import matches
from tests.chaos.load import PublishedEvent

Pair = tuple[str, str]  # (event id, webhook id)


@dataclass(frozen=True)
class Target:
    """One webhook of the run and the receiver path that stands for its endpoint."""

    id: str
    tenant_id: str
    events: tuple[str, ...]
    kind: str
    path: str
    secret: str


@dataclass(frozen=True)
class Receipt:
    pair: Pair
    verified: bool
    accepted: bool  # answered 2xx


@dataclass(frozen=True)
class StoredAttempt:
    attempt_id: str
    pair: Pair
    outcome: str


@dataclass(frozen=True)
class Check:
    name: str
    value: int | str
    ok: bool


@dataclass
class Verdict:
    checks: list[Check] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(check.ok for check in self.checks)

    def check(self, name: str, value: int | str, ok: bool, examples: Iterable[Any] = ()) -> None:
        self.checks.append(Check(name, value, ok))
        shown = [str(e) for e in list(examples)[:5]]
        if shown:
            self.examples[name] = shown

    def table(self) -> str:
        width = max(len(c.name) for c in self.checks)
        lines = [f"{'check'.ljust(width)}  {'value':>10}  result", "-" * (width + 22)]
        for c in self.checks:
            lines.append(f"{c.name.ljust(width)}  {c.value!s:>10}  {'ok' if c.ok else 'FAIL'}")
        for name, shown in self.examples.items():
            lines.append(f"  e.g. {name}: {'; '.join(shown)}")
        return "\n".join(lines)

    def write_json(self, path: Path, extra: Mapping[str, Any]) -> None:
        document = {
            "passed": self.passed,
            "checks": [asdict(c) for c in self.checks],
            "figures": self.figures,
            "examples": self.examples,
            **extra,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document, indent=2, default=str) + "\n")


def expected_pairs(events: Iterable[PublishedEvent], targets: Iterable[Target]) -> set[Pair]:
    """Every (event, webhook) pair the catalog's matching rule says must be delivered."""
    by_tenant: dict[str, list[Target]] = {}
    for target in targets:
        by_tenant.setdefault(target.tenant_id, []).append(target)
    return {
        (event.id, target.id)
        for event in events
        for target in by_tenant.get(event.tenant_id, [])
        if matches(target.events, event.type)
    }


def judge(
    expected: set[Pair],
    receipts: list[Receipt],
    topic_attempt_ids: list[str],
    stored: list[StoredAttempt],
    publish_failures: list[str],
) -> Verdict:
    verdict = Verdict()
    delivered = {r.pair for r in receipts if r.verified and r.accepted}
    accepted_per_pair = Counter(r.pair for r in receipts if r.accepted)
    duplicates = {pair: n for pair, n in accepted_per_pair.items() if n > 1}
    unverified = [r.pair for r in receipts if not r.verified]
    misrouted = {r.pair for r in receipts} - expected
    lost = expected - delivered

    in_topic = Counter(topic_attempt_ids)
    # attempt_id is the table's primary key: present means present exactly once.
    in_store = Counter(a.attempt_id for a in stored)
    missing_in_store = set(in_topic) - set(in_store)
    unknown_in_store = set(in_store) - set(in_topic)
    succeeded = {a.pair for a in stored if a.outcome == "success"}
    no_success_row = delivered - succeeded
    outcomes = Counter(a.outcome for a in stored)

    verdict.check("events published (acknowledged)", len({p[0] for p in expected}), True)
    verdict.check(
        "events the platform refused", len(publish_failures), not publish_failures, publish_failures
    )
    verdict.check("pairs to deliver", len(expected), bool(expected))
    verdict.check("pairs delivered and verified", len(delivered & expected), True)
    verdict.check("pairs lost", len(lost), not lost, sorted(lost))
    verdict.check("requests failing verification", len(unverified), not unverified, unverified)
    verdict.check("pairs sent to a wrong webhook", len(misrouted), not misrouted, sorted(misrouted))
    verdict.check("pairs delivered more than once", len(duplicates), True)
    verdict.check("most deliveries of one pair", max(duplicates.values(), default=1), True)
    verdict.check("attempts in delivery-log", len(in_topic), bool(in_topic))
    verdict.check(
        "attempts missing from the store",
        len(missing_in_store),
        not missing_in_store,
        missing_in_store,
    )
    verdict.check(
        "store attempts not in the log",
        len(unknown_in_store),
        not unknown_in_store,
        unknown_in_store,
    )
    stored_outcomes: dict[Pair, list[str]] = {}
    for a in stored:
        stored_outcomes.setdefault(a.pair, []).append(a.outcome)
    verdict.check(
        "delivered pairs without a success row",
        len(no_success_row),
        not no_success_row,
        # What the store holds for them instead, and how often the receiver accepted them.
        (
            f"{pair}: stored {stored_outcomes.get(pair, [])}, accepted {accepted_per_pair[pair]}x"
            for pair in sorted(no_success_row)
        ),
    )
    verdict.figures.update(
        {
            "requests_received": len(receipts),
            "duplicate_pairs": len(duplicates),
            "extra_deliveries": sum(n - 1 for n in duplicates.values()),
            "attempts_by_outcome": dict(outcomes),
            "log_records_repeated": sum(n - 1 for n in in_topic.values() if n > 1),
        }
    )
    return verdict
