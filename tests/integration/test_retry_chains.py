"""A failing delivery runs one retry chain, whatever happens to the senders running it.

Every delivery here goes to an endpoint that always fails, so it runs its whole schedule
(ATTEMPTS attempts) and is dead-lettered once. Meanwhile the sender group changes: a member
joins and leaves mid-chain, a member stops with a grace shorter than a request, a member is
killed with -9. What the receiver saw is what counts: each delivery's requests follow one
schedule (ATTEMPTS of them; one more only for a request that was cut off or lost with its
sender, made again by the next owner), and the `dlq` holds one dead letter per delivery.

Each test ends once every delivery is dead-lettered and the sender group has committed
every record of `deliveries` and the retry tiers: nothing of any chain is left to run.
"""

from __future__ import annotations

import collections
import os
import signal
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from hookstream.core.kafka import consumer_config
from hookstream.core.records import SENDER_GROUP, Webhook
from hookstream.core.settings import Settings
from hookstream.core.signing import new_secret
from hookstream.core.topics import Topics
from hookstream.tools.topics import create_topics
from tests.conftest import ServiceStarter, SettingsFactory
from tests.helpers import unique_prefix, wait_for
from tests.pipeline import Platform, Service, TopicTail, make_webhook
from tests.receiver import Behaviour, TestReceiver

pytestmark = pytest.mark.integration

EVENT_TYPE = "invoice.paid"
# Six attempts about five seconds apart in all: long enough to change the group mid-chain.
SCHEDULE = (0.5, 0.6, 0.7, 0.8, 0.9)
ATTEMPTS = len(SCHEDULE) + 1

Delivery = tuple[str, str]  # (webhook id, event id)


@dataclass
class Chains:
    """A pipeline whose every delivery fails, and what its receiver and topics show."""

    settings: Settings
    platform: Platform
    receiver: TestReceiver
    hooks: dict[str, Webhook]  # by receiver path
    deliveries: set[Delivery]
    tails: list[TopicTail]
    dlq: TopicTail
    unsettled: str = ""

    def requests(self) -> collections.Counter[Delivery]:
        """Requests each delivery's endpoint received."""
        return collections.Counter(
            (self.hooks[r.path].id, r.headers["webhook-id"])
            for r in self.receiver.received()
            if r.path in self.hooks
        )

    def dead_letters(self) -> collections.Counter[Delivery]:
        return collections.Counter((r["webhook_id"], r["event_id"]) for r in self.dlq.poll())

    def every_delivery_at(self, count: int) -> Callable[[], bool]:
        def reached() -> bool:
            seen = self.requests()
            return all(seen[d] >= count for d in self.deliveries)

        return reached

    def settled(self) -> bool:
        """Every delivery dead-lettered, and every record of the sender's topics committed:
        no record is left whose processing could still send or produce anything."""
        missing = self.deliveries - set(self.dead_letters())
        if missing:
            self.unsettled = f"{len(missing)} deliveries not dead-lettered, e.g. {min(missing)}"
            return False
        # Committed offsets first, records after: a record appended after the committed
        # offsets were read follows from one still uncommitted then, which the tails see.
        committed = committed_offsets(self.settings, [tail.topic for tail in self.tails])
        for tail in self.tails:
            tail.poll()
            for message, _ in tail.records:
                key = (tail.topic, message.partition() or 0)
                if (message.offset() or 0) >= committed.get(key, 0):
                    self.unsettled = f"{key} committed at {committed.get(key)}, not past "
                    self.unsettled += f"{message.offset()}"
                    return False
        return True

    def wait_settled(self, timeout: float = 45) -> None:
        try:
            wait_for(self.settled, timeout=timeout, interval=0.3, what="every chain to end")
        except pytest.fail.Exception:
            pytest.fail(f"the chains did not end: {self.unsettled}; {self.requests()}")

    def assert_one_chain_each(self, repeated: int = 0) -> None:
        """Each delivery: one dead letter and ATTEMPTS requests, of which at most
        `repeated` deliveries one more (an attempt cut off or lost, made again)."""
        dead = self.dead_letters()
        doubled = {d: n for d, n in dead.items() if n != 1}
        assert not doubled, f"deliveries dead-lettered more than once: {doubled}"
        seen = self.requests()
        counts = {d: seen[d] for d in self.deliveries}
        wrong = {d: n for d, n in counts.items() if not ATTEMPTS <= n <= ATTEMPTS + 1}
        assert not wrong, f"requests per delivery off the schedule of {ATTEMPTS}: {wrong}"
        again = [d for d, n in counts.items() if n == ATTEMPTS + 1]
        assert len(again) <= repeated, f"{len(again)} deliveries had an attempt repeated"


def committed_offsets(settings: Settings, topics: list[str]) -> dict[tuple[str, int], int]:
    group = Consumer(consumer_config(settings, SENDER_GROUP, {"enable.auto.commit": False}))
    try:
        partitions = [
            TopicPartition(topic, p)
            for topic in topics
            for p in group.list_topics(topic, timeout=10).topics[topic].partitions
        ]
        return {(tp.topic, tp.partition): tp.offset for tp in group.committed(partitions, 10)}
    finally:
        group.close()


@pytest.fixture
def chains_factory(
    settings_factory: SettingsFactory, receiver: TestReceiver
) -> Iterator[Callable[..., Chains]]:
    made: list[Chains] = []

    def make(webhooks: int, events: int, delay: float, **overrides: Any) -> Chains:
        prefix = unique_prefix()
        values: dict[str, Any] = {
            "allow_private_targets": ("127.0.0.0/8",),
            "retry_schedule": SCHEDULE,
            "retry_jitter": 0.1,
            "request_timeout": 2.0,
            "deliveries_partitions": 4,
            "retry_partitions": 2,
            **overrides,
        }
        settings = settings_factory(topic_prefix=prefix, consumer_group_prefix=prefix, **values)
        create_topics(settings)
        platform = Platform(settings)
        tenant = f"tenant_{uuid.uuid4().hex[:8]}"
        hooks: dict[str, Webhook] = {}
        for index in range(webhooks):
            secret = new_secret()
            path = f"/{tenant}/{index}"
            url = receiver.expect(path, [secret], Behaviour(status=500, delay=delay))
            hooks[path] = platform.webhook(make_webhook(tenant, url, [EVENT_TYPE], secret=secret))
        topics = Topics.from_settings(settings)
        sender_topics = [topics.deliveries, *(tier.topic for tier in topics.retry_tiers)]
        chains = Chains(
            settings,
            platform,
            receiver,
            hooks,
            set(),
            [TopicTail(settings, topic, "Retry") for topic in sender_topics[1:]]
            + [TopicTail(settings, topics.deliveries, "Delivery")],
            TopicTail(settings, topics.dlq, "DeadLetter"),
        )
        for _ in range(events):
            event = platform.event(tenant, EVENT_TYPE, flush=False)
            chains.deliveries |= {(hook.id, event) for hook in hooks.values()}
        platform.flush()
        made.append(chains)
        return chains

    yield make
    for chains in made:
        for tail in [*chains.tails, chains.dlq]:
            tail.close()


def holds_partitions(sender: Service, settings: Settings) -> Callable[[], bool]:
    deliveries = f"{Topics.from_settings(settings).deliveries}["
    return lambda: deliveries in sender.log()


def test_a_member_joining_and_leaving_mid_chain_doubles_no_chain(
    chains_factory: Callable[..., Chains], services: ServiceStarter
) -> None:
    # Slow answers: at any moment many requests are in flight, also when partitions move.
    chains = chains_factory(webhooks=12, events=2, delay=0.4)
    services("router", chains.settings)
    first = services("sender", chains.settings)
    wait_for(chains.every_delivery_at(2), timeout=40, what="every delivery's second attempt")

    second = services("sender", chains.settings)
    wait_for(holds_partitions(second, chains.settings), timeout=30, what="the second member")
    wait_for(chains.every_delivery_at(4), timeout=40, what="every delivery's fourth attempt")
    assert second.terminate() == 0  # a graceful leave: its partitions go back to the first

    chains.wait_settled()
    assert first.alive()
    chains.assert_one_chain_each()


def test_a_stop_whose_grace_is_shorter_than_a_request_doubles_no_chain(
    chains_factory: Callable[..., Chains], services: ServiceStarter
) -> None:
    # Each request takes 1.5 s (the timeout is 3 s); the stop gives them 0.3 s.
    chains = chains_factory(
        webhooks=4, events=2, delay=1.5, request_timeout=3.0, shutdown_grace=0.3
    )
    services("router", chains.settings)
    first = services("sender", chains.settings)
    # Every delivery's second request is on its way: the stop cuts each of them off.
    wait_for(chains.every_delivery_at(2), timeout=40, what="every delivery's second attempt")
    assert first.terminate() == 0

    services("sender", chains.settings)
    chains.wait_settled()
    # The cut-off requests are made once more, by the next sender; nothing else repeats.
    chains.assert_one_chain_each(repeated=len(chains.deliveries))
    assert "after the shutdown grace" in first.log()


def test_a_member_killed_mid_chain_doubles_no_chain(
    chains_factory: Callable[..., Chains], services: ServiceStarter
) -> None:
    chains = chains_factory(webhooks=12, events=2, delay=0.1)
    services("router", chains.settings)
    first = services("sender", chains.settings)
    wait_for(chains.every_delivery_at(3), timeout=40, what="every delivery's third attempt")
    # Killed the moment the first retries toward the fourth attempts appear: the records
    # that failed a third time are finished, most of them not committed yet.
    fourth = chains.tails[2]
    wait_for(fourth.poll, timeout=20, interval=0.01, what="a retry toward a fourth attempt")
    os.kill(first.process.pid, signal.SIGSTOP)  # no commit from here on
    first.kill()

    # The next sender takes over once the group's session timeout (10 s here) has passed,
    # and makes again what the killed one had in hand: at most one attempt per delivery.
    services("sender", chains.settings)
    chains.wait_settled(timeout=50)
    chains.assert_one_chain_each(repeated=len(chains.deliveries))
