"""Router and sender as separate processes deliver signed events end to end."""

from __future__ import annotations

import orjson
import pytest

from tests.conftest import ServiceStarter
from tests.helpers import wait_for
from tests.pipeline import Platform, make_webhook
from tests.receiver import TestReceiver

pytestmark = pytest.mark.integration


def test_one_event_is_delivered_signed(
    platform: Platform, receiver: TestReceiver, services: ServiceStarter
) -> None:
    webhook = make_webhook("tenant_a", "", ["invoice.paid"])
    url = receiver.expect("/a", [webhook.secrets[0].value])
    platform.webhook(
        make_webhook("tenant_a", url, ["invoice.paid"], secret=webhook.secrets[0].value)
    )
    services("router")
    services("sender")
    event_id = platform.event("tenant_a", "invoice.paid", {"invoice_id": "inv_9"})
    [request] = wait_for(lambda: receiver.received("/a"), timeout=60, what="the delivery")
    assert request.verified
    assert request.headers["webhook-id"] == event_id
    body = orjson.loads(request.body)
    assert list(body) == ["id", "type", "occurred_at", "api_version", "data"]
    assert body["id"] == event_id and body["data"] == {"invoice_id": "inv_9"}
