"""Several sender processes share one consumer group; a member leaving loses nothing."""

from __future__ import annotations

import pytest

from tests.conftest import ServiceStarter
from tests.helpers import wait_for
from tests.pipeline import Platform, make_webhook
from tests.receiver import TestReceiver

pytestmark = pytest.mark.integration


def test_two_senders_share_the_work_and_survive_a_member_leaving(
    platform: Platform, receiver: TestReceiver, services: ServiceStarter
) -> None:
    webhooks = []
    for index in range(8):
        webhook = make_webhook("tenant_g", "", ["invoice.paid"])
        url = receiver.expect(f"/g{index}", [webhook.secrets[0].value])
        webhooks.append(
            platform.webhook(
                make_webhook("tenant_g", url, ["invoice.paid"], secret=webhook.secrets[0].value)
            )
        )
    services("router")
    first = services("sender")
    second = services("sender")
    events = [platform.event("tenant_g", "invoice.paid", flush=False) for _ in range(150)]
    platform.flush()
    expected = {(event, webhook.id) for event in events for webhook in webhooks}

    def delivered() -> set[tuple[str, str]]:
        return {
            (request.headers["webhook-id"], webhooks[int(request.path[2:])].id)
            for request in receiver.received()
            if request.verified
        }

    deliveries_topic = f"{platform.topics.deliveries}["
    for member in (first, second):
        wait_for(lambda m=member: deliveries_topic in m.log(), timeout=60, what="both members")
    wait_for(lambda: len(delivered()) >= len(expected) // 3, timeout=90, what="a third")
    assert first.terminate() == 0  # a graceful leave hands its partitions to the other member
    more = [platform.event("tenant_g", "invoice.paid", flush=False) for _ in range(50)]
    platform.flush()
    expected |= {(event, webhook.id) for event in more for webhook in webhooks}
    wait_for(lambda: delivered() >= expected, timeout=120, what="every delivery")
    assert second.alive()
    assert "sender: assigned" in second.log()
