"""Per-webhook delivery settings, set through the API and seen at real receivers.

One pipeline (api, router, sender, log-sink) on one `deliveries` partition serves the module,
so every webhook of a test shares its partition with the others: a limited webhook must not
hold up the rest. Each test works on its own tenant.
"""

from __future__ import annotations

import re
import string
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from hookstream.core.records import WebhookHeader
from hookstream.core.topics import Topics
from hookstream.endpoints.headers import is_sensitive, name_problem, value_problem
from hookstream.sender.limits import INITIAL_LIMIT
from tests.helpers import api_call, http_request, sqlite_url, wait_for
from tests.pipeline import (
    PipelineStack,
    Platform,
    Service,
    api_settings,
    make_webhook,
    read_topic,
    running_stack,
)
from tests.receiver import Behaviour, Received

pytestmark = pytest.mark.integration

ADMIN = "key-admin-settings-0123456789"
EVENT_TYPE = "invoice.paid"


class Stack(PipelineStack):
    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return api_call(self.settings.api_port, ADMIN, method, path, body)

    def webhook(
        self, tenant: str, path: str, behaviour: Behaviour | None = None, **fields: Any
    ) -> dict[str, Any]:
        status, created = self.call(
            "POST",
            "/v1/webhooks",
            {
                "tenant_id": tenant,
                "name": f"settings {path}",
                "url": self.receiver.url(path),
                "events": [EVENT_TYPE],
                **fields,
            },
        )
        assert status == 201, created
        self.receiver.expect(path, [created["secret"]], behaviour)
        return dict(created)

    def publish(self, tenant: str, count: int) -> list[str]:
        ids = []
        for _ in range(count):
            status, accepted = self.call(
                "POST", "/v1/events", {"type": EVENT_TYPE, "tenant_id": tenant, "data": {}}
            )
            assert status == 202, accepted
            ids.append(accepted["id"])
        return ids

    def delivered(self, path: str, events: list[str], timeout: float = 60) -> list[Received]:
        """The successful requests at `path`, once every one of `events` has had one."""

        def done() -> list[Received] | None:
            ok = [r for r in self.receiver.received(path) if 200 <= r.status < 300]
            return ok if {r.headers["webhook-id"] for r in ok} >= set(events) else None

        return list(wait_for(done, timeout=timeout, interval=0.05, what=f"deliveries at {path}"))

    def attempts(self, webhook_id: str) -> list[dict[str, Any]]:
        log = Topics.from_settings(self.settings).delivery_log
        return [
            a for a in read_topic(self.settings, log, "Attempt") if a["webhook_id"] == webhook_id
        ]


@pytest.fixture(scope="module")
def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    directory = tmp_path_factory.mktemp("settings")
    settings = api_settings(
        kafka_bootstrap,
        sqlite_url(directory),
        {ADMIN: "*"},
        deliveries_partitions=1,
        retry_partitions=1,
        # Enough retries that refused requests end up delivered, quickly.
        retry_schedule=(0.2, 0.5, 1.0, 2.0, 3.0),
    )
    with running_stack(Stack, settings, directory) as built:
        yield built


def tenant() -> str:
    return f"t_{uuid.uuid4().hex[:10]}"


def most_open(requests: list[Received]) -> int:
    return max(r.concurrent for r in requests)


def test_max_concurrency_is_the_most_the_receiver_sees_and_waiting_is_not_an_attempt(
    stack: Stack,
) -> None:
    owner = tenant()
    limited = stack.webhook(owner, "/limited", Behaviour(delay=0.3), max_concurrency=3)
    # Its neighbour in the one partition, subscribed to the same events.
    other = stack.webhook(owner, "/neighbour")
    events = stack.publish(owner, 24)

    neighbour = stack.delivered("/neighbour", events)
    requests = stack.delivered("/limited", events)
    assert most_open(requests) == 3, "never more than max_concurrency, and that many used"
    # 24 requests three at a time take 8 rounds of 0.3 s; the neighbour did not wait for them.
    assert max(r.at for r in neighbour) < min(r.at for r in requests) + 1.2
    # Held back is not failed: one attempt per delivery, each a success, none put off as one.
    found = wait_for(
        lambda: len(got := stack.attempts(limited["id"])) >= len(events) and got,
        what="the attempt records",
    )
    assert len(found) == len(events)
    assert {(a["attempt_number"], a["outcome"]) for a in found} == {(1, "success")}
    assert len(stack.attempts(other["id"])) == len(events)


def test_a_rate_limit_spaces_the_requests_at_the_receiver(stack: Stack) -> None:
    owner = tenant()
    stack.webhook(owner, "/rated", rate_limit=10.0)
    events = stack.publish(owner, 30)
    requests = sorted(stack.delivered("/rated", events), key=lambda r: r.at)
    times = [r.at for r in requests]
    # A burst of one token, then one per 0.1 s: 30 requests span 29 intervals at least.
    assert times[-1] - times[0] >= 2.9 - 0.1
    # No second holds more than its rate and the one-token burst.
    assert max(sum(1 for t in times if start <= t < start + 1) for start in times) <= 11


def test_custom_headers_are_sent_and_sensitive_ones_redacted_on_read(stack: Stack) -> None:
    owner = tenant()
    token = "Bearer tok-" + uuid.uuid4().hex
    hook = stack.webhook(
        owner, "/headers", headers={"Authorization": token, "X-Tenant": "acme", "X-Api-Key": "k1"}
    )
    assert hook["headers"] == {
        "Authorization": "********",
        "X-Tenant": "acme",
        "X-Api-Key": "********",
    }
    assert sorted(hook["sensitive_headers"]) == ["Authorization", "X-Api-Key"]
    status, read = stack.call("GET", f"/v1/webhooks/{hook['id']}")
    assert status == 200 and read["headers"] == hook["headers"]

    [request] = stack.delivered("/headers", stack.publish(owner, 1))
    assert request.verified, "the signature headers are hookstream's own"
    assert request.headers["authorization"] == token
    assert (request.headers["x-tenant"], request.headers["x-api-key"]) == ("acme", "k1")

    # Merged on PATCH: null removes, a name in another case replaces.
    status, patched = stack.call(
        "PATCH",
        f"/v1/webhooks/{hook['id']}",
        {"headers": {"x-api-key": None, "x-tenant": "globex"}},
    )
    assert status == 200, patched
    assert patched["headers"] == {"Authorization": "********", "x-tenant": "globex"}
    time.sleep(0.5)  # the sender's view applies the change
    [later] = stack.publish(owner, 1)
    [latest] = [r for r in stack.delivered("/headers", [later]) if r.headers["webhook-id"] == later]
    assert latest.headers["x-tenant"] == "globex" and "x-api-key" not in latest.headers
    assert latest.headers["authorization"] == token

    # The plaintext is nowhere on the topic.
    webhooks = Topics.from_settings(stack.settings).webhooks
    stored = [
        w for w in read_topic(stack.settings, webhooks, "Webhook") if w and w["id"] == hook["id"]
    ]
    assert stored and all(token not in str(w) and "k1" not in str(w["headers"]) for w in stored)


def test_a_webhooks_own_timeout_is_honoured(stack: Stack) -> None:
    owner = tenant()
    hook = stack.webhook(owner, "/patient", Behaviour(delay=3.0), timeout_seconds=1)
    stack.publish(owner, 1)
    first = wait_for(
        lambda: (found := stack.attempts(hook["id"])) and found[0], what="the first attempt"
    )
    assert first["outcome"] == "temporary_failure"
    assert first["error"] == "timeout after 1 s"
    # The global request timeout of this pipeline is 2 s; this webhook's 1 s ended it.
    assert 900 <= first["duration_ms"] < 1900


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"max_concurrency": 257}, "max_concurrency"),
        ({"rate_limit": 0}, "rate_limit"),
        ({"timeout_seconds": 31}, "timeout_seconds"),
        ({"headers": {"Bad Header": "x"}}, "'Bad Header' is not a valid field name"),
        ({"headers": {"Webhook-Signature": "v1,x"}}, "cannot be overridden"),
        ({"headers": {"Content-Type": "text/plain"}}, "cannot be overridden"),
        ({"headers": {"X-A": "a\r\nX-Evil: 1"}}, "no line breaks"),
        ({"headers": {"Authorization": "********"}}, "redacted placeholder"),
        ({"headers": {"X-A": "1", "x-a": "2"}}, "named twice"),
        ({"headers": {f"X-H{i}": "v" for i in range(21)}}, "at most 20"),
    ],
)
def test_bad_settings_are_422_naming_the_problem(
    stack: Stack, fields: dict[str, Any], problem: str
) -> None:
    body = {
        "tenant_id": tenant(),
        "name": "bad",
        "url": stack.receiver.url("/bad"),
        "events": ["*"],
    }
    status, answer = stack.call("POST", "/v1/webhooks", {**body, **fields})
    assert status == 422, answer
    assert re.search(re.escape(problem), str(answer["error"])), answer


def test_a_patch_clears_settings_with_null_and_counts_headers_after_merging(stack: Stack) -> None:
    owner = tenant()
    many = {f"X-H{i}": "v" for i in range(20)}
    hook = stack.webhook(owner, "/patched", max_concurrency=5, rate_limit=2.5, headers=many)
    path = f"/v1/webhooks/{hook['id']}"
    # Twenty removed and twenty added in one change leave twenty: allowed.
    swap = {**dict.fromkeys(many), **{f"X-N{i}": "n" for i in range(20)}}
    status, patched = stack.call("PATCH", path, {"headers": swap})
    assert status == 200, patched
    assert sorted(patched["headers"]) == sorted(f"X-N{i}" for i in range(20))
    status, answer = stack.call("PATCH", path, {"headers": {"X-One-More": "1"}})
    assert status == 422 and "at most 20" in str(answer["error"])
    status, cleared = stack.call(
        "PATCH", path, {"max_concurrency": None, "rate_limit": None, "timeout_seconds": None}
    )
    assert status == 200
    assert (cleared["max_concurrency"], cleared["rate_limit"], cleared["timeout_seconds"]) == (
        None,
        None,
        None,
    )
    status, answer = stack.call("PATCH", path, {"name": None})
    assert status == 422


def test_the_adaptive_limit_backs_off_from_an_endpoint_at_capacity(stack: Stack) -> None:
    """An endpoint serving 4 at a time, refusing beyond: the limit (starting at 8) comes down
    to it, so few requests are refused; a fixed 8 would see about half refused."""
    owner = tenant()
    hook = stack.webhook(owner, "/capacity", Behaviour(delay=0.1, capacity=4))
    events = stack.publish(owner, 200)
    stack.delivered("/capacity", events, timeout=120)
    requests = stack.receiver.received("/capacity")
    refused = sum(1 for r in requests if r.status == 503)
    print(f"{refused} of {len(requests)} requests refused at capacity 4")
    assert refused < 0.25 * len(requests)
    limit = _gauge(stack.services["sender"], "hookstream_webhook_concurrency_limit", hook["id"])
    assert 1 <= limit < INITIAL_LIMIT


def test_limits_hold_across_a_sender_kill_and_restart(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> None:
    owner = tenant()
    stack.webhook(owner, "/restarted", Behaviour(delay=0.2), max_concurrency=2)
    events = stack.publish(owner, 40)
    wait_for(lambda: len(stack.receiver.received("/restarted")) >= 8, what="8 requests")
    old = stack.services["sender"]
    old.kill()
    restarted_at = time.time()
    new = Service(stack.settings, "sender", tmp_path_factory.mktemp("sender-restarted"))
    stack.services["sender"] = new
    old.close()
    requests = stack.delivered("/restarted", events, timeout=90)
    # Requests the killed sender left open end within their 0.2 s; after that, two at most.
    after = [r for r in requests if r.at > restarted_at + 0.5]
    assert after, "nothing was sent after the restart"
    assert most_open(after) == 2


def _gauge(service: Service, name: str, webhook_id: str) -> float:
    reply = http_request(service.ops_port(), "GET", "/metrics")
    pattern = re.compile(rf'^{name}\{{webhook_id="{re.escape(webhook_id)}"\}} (\S+)$', re.M)
    found = pattern.search(reply.body.decode())
    assert found, f"no {name} for {webhook_id}"
    return float(found.group(1))


# Names from the token alphabet and beyond it, in any case, reserved ones included.
_NAME = st.one_of(
    st.text(alphabet=string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~", min_size=1),
    st.sampled_from(["Webhook-Id", "content-type", "HOST", "Authorization", "x-api-key"]),
    st.text(max_size=12),
)


@hyp_settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(headers=st.dictionaries(_NAME, st.text(max_size=40), max_size=22))
def test_any_headers_are_stored_as_given_or_refused_naming_the_problem(
    stack: Stack, headers: dict[str, str]
) -> None:
    body = {
        "tenant_id": "t_fuzz",
        "name": "fuzz",
        "url": stack.receiver.url("/fuzz"),
        "events": ["*"],
    }
    status, answer = stack.call("POST", "/v1/webhooks", {**body, "headers": headers})
    assert status in (201, 422), answer
    if status == 422:
        assert "headers" in str(answer["error"]), answer
        return
    sensitive = {name for name in headers if is_sensitive(name)}
    assert answer["headers"] == {n: "********" if n in sensitive else v for n, v in headers.items()}
    assert set(answer["sensitive_headers"]) == sensitive
    # Only what may be sent was taken: a token, not ours, a value on one line.
    for name, value in headers.items():
        assert name_problem(name) is None and value_problem(name, value) is None
    stack.call("DELETE", f"/v1/webhooks/{answer['id']}")


def test_headers_written_around_the_api_cannot_override_hookstreams_own(stack: Stack) -> None:
    """A record on the topic from another producer, with headers the API would refuse: the
    request leaves them out, stays signed, and carries the rest."""
    owner = tenant()
    url = stack.receiver.url("/around")
    webhook = replace(
        make_webhook(owner, url, [EVENT_TYPE]),
        headers=(
            WebhookHeader("Webhook-Signature", "v1,forged"),
            WebhookHeader("Content-Type", "text/plain"),
            WebhookHeader("X-Evil", "a\r\nX-Injected: 1"),
            WebhookHeader("X-Fine", "kept"),
        ),
    )
    stack.receiver.expect("/around", [webhook.secrets[0].value])
    Platform(stack.settings).webhook(webhook)
    time.sleep(0.5)  # every view applies it
    [request] = stack.delivered("/around", stack.publish(owner, 1))
    assert request.verified
    assert request.headers["webhook-signature"] != "v1,forged"
    assert request.headers["content-type"] == "application/json"
    assert "x-evil" not in request.headers and "x-injected" not in request.headers
    assert request.headers["x-fine"] == "kept"
