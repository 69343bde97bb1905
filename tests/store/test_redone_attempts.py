"""A record redone after a sender crash makes its request again: that is a second attempt,
and the store must show its answer, not only the first one's."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hookstream.core.records import Delivery, Trigger
from hookstream.core.settings import load_settings
from hookstream.core.topics import Topics
from hookstream.sender.attempt import conclude
from hookstream.sender.outcome import HttpResult
from hookstream.store import Store

SETTINGS = load_settings(topic_prefix="t.")
TOPICS = Topics.from_settings(SETTINGS)
T0 = 1_700_000_000_000


def _delivery(n: int) -> Delivery:
    return Delivery(
        f"dlv_{n}", f"evt_{n}", "invoice.paid", "ten_1", "wh_1", b"{}", 1, Trigger.SCHEDULED, 5
    )


def test_a_redo_answered_204_after_a_logged_503_reads_as_delivered(store: Store) -> None:
    # The first run logged its 503 (its retry record was lost with the process); the next
    # owner made the request again and got a 204.
    delivery = _delivery(1)
    first = conclude(
        delivery, None, HttpResult(503, 5, None), T0, SETTINGS, TOPICS, random.Random(1)
    )
    redo = conclude(
        delivery, None, HttpResult(204, 5, None), T0 + 10_000, SETTINGS, TOPICS, random.Random(1)
    )
    store.record_attempts([first.attempt])
    store.record_attempts([redo.attempt])
    [row] = store.list_deliveries(tenant_id="ten_1").items
    assert row.status == "succeeded", row
    assert row.last_status_code == 204


@settings(max_examples=50, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(codes=st.lists(st.sampled_from([204, 500, 503, 429, 200]), min_size=2, max_size=5))
def test_every_request_made_for_one_record_is_an_attempt_of_its_own(codes: list[int]) -> None:
    delivery = _delivery(2)
    ids = {
        conclude(
            delivery, None, HttpResult(code, 5, None), T0 + i, SETTINGS, TOPICS, random.Random(i)
        ).attempt.attempt_id
        for i, code in enumerate(codes)
    }
    assert len(ids) == len(codes)
