"""The `hookstream` API commands as a user runs them: subprocesses against a running pipeline.

One pipeline (api, router, sender, log-sink, each `hookstream run <name>`) and one verifying
receiver serve the module. Every CLI call is a real `python -m hookstream …` process, with
the API's address and key in the environment as a user would export them.
"""

from __future__ import annotations

import json
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import pytest

from tests.helpers import settings_env, sqlite_url, wait_for
from tests.pipeline import PipelineStack, api_settings, running_stack
from tests.receiver import Behaviour, Received, received

pytestmark = pytest.mark.integration

KEY = "cli-key-tenant-0123456789"
ADMIN = "cli-key-admin-0123456789"
TENANT = "tenant_cli"
# A webhook write is answered once the API's view has it; the router's view follows within
# tens of milliseconds. Events published right after a create wait this long first.
PROPAGATION = 0.5


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    @property
    def json(self) -> Any:
        return json.loads(self.out)


@dataclass
class Stack(PipelineStack):
    paths: Iterator[int] = field(default_factory=lambda: iter(range(1, 1_000_000)))

    def env(self, key: str | None = KEY) -> dict[str, str]:
        env = settings_env(self.settings)
        env["HOOKSTREAM_API_URL"] = self.api_url
        env.pop("HOOKSTREAM_API_KEY", None)
        env.pop("HOOKSTREAM_TENANT_ID", None)
        if key is not None:
            env["HOOKSTREAM_API_KEY"] = key
        return env

    def cli(self, *args: str, key: str | None = KEY, stdin: str | None = None) -> Result:
        done = subprocess.run(
            [sys.executable, "-m", "hookstream", *args],
            env=self.env(key),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return Result(done.returncode, done.stdout, done.stderr)

    def ok(self, *args: str, key: str | None = KEY, stdin: str | None = None) -> Result:
        result = self.cli(*args, key=key, stdin=stdin)
        assert result.code == 0, f"hookstream {' '.join(args)}: {result.err}"
        assert result.err == "", result.err
        return result

    def path(self) -> str:
        return f"/cli{next(self.paths)}"


@pytest.fixture(scope="module")
def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    directory = tmp_path_factory.mktemp("cli")
    store_url = sqlite_url(directory)
    settings = api_settings(kafka_bootstrap, store_url, {KEY: TENANT, ADMIN: "*"})
    with running_stack(Stack, settings, directory) as built:
        yield built


def create_webhook(
    stack: Stack,
    *extra: str,
    key: str = KEY,
    events: str = "invoice.paid",
    behaviour: Behaviour | None = None,
) -> tuple[dict[str, Any], str]:
    """A webhook made with `webhooks create --json`, pointing at a fresh receiver path."""
    path = stack.path()
    url = stack.receiver.url(path)
    created = stack.ok(
        "webhooks",
        "create",
        "--name",
        f"cli {path}",
        "--url",
        url,
        "-e",
        events,
        "--json",
        *extra,
        key=key,
    ).json
    assert created["url"] == url and created["secret"].startswith("whsec_")
    stack.receiver.expect(path, [created["secret"]], behaviour)
    return created, path


def logged(stack: Stack, delivery_id: str, status: str, attempts: int) -> dict[str, Any]:
    """`deliveries get --json` once the log-sink has stored what is expected."""

    def fetch() -> dict[str, Any] | None:
        result = stack.cli("deliveries", "get", delivery_id, "--json")
        if result.code != 0:
            return None
        found: dict[str, Any] = result.json
        done = found["status"] == status and len(found["attempts"]) >= attempts
        return found if done else None

    delivery: dict[str, Any] = wait_for(fetch, timeout=30, interval=0.3, what=delivery_id)
    return delivery


@dataclass(frozen=True)
class Delivered:
    webhook: dict[str, Any]
    path: str
    event_id: str
    request: Received


@pytest.fixture(scope="module")
def delivered(stack: Stack) -> Delivered:
    """A webhook created and an event published with the CLI, arrived at the receiver."""
    webhook, path = create_webhook(stack)
    event = {"type": "invoice.paid", "data": {"invoice_id": "inv_cli_1", "amount_cents": 4200}}
    published = stack.ok("events", "publish", "--json", stdin=json.dumps(event)).json
    assert published["duplicate"] is False
    [request] = received(stack.receiver, path)
    return Delivered(webhook, path, published["id"], request)


def test_an_event_published_with_the_cli_arrives_verified(delivered: Delivered) -> None:
    request = delivered.request
    assert request.verified
    assert request.headers["webhook-id"] == delivered.event_id
    body = json.loads(request.body)
    assert body["type"] == "invoice.paid"
    assert body["data"] == {"invoice_id": "inv_cli_1", "amount_cents": 4200}


def test_deliveries_list_get_and_replay(stack: Stack, delivered: Delivered) -> None:
    webhook_id = delivered.webhook["id"]

    def listed() -> list[dict[str, Any]] | None:
        page = stack.ok("deliveries", "list", "--webhook-id", webhook_id, "--json").json
        rows: list[dict[str, Any]] = page["data"]
        return rows if rows and rows[0]["status"] == "succeeded" else None

    [row] = wait_for(listed, timeout=30, interval=0.3, what="the delivery in the log")
    assert row["event_id"] == delivered.event_id and row["event_type"] == "invoice.paid"

    delivery = logged(stack, row["id"], "succeeded", 1)
    [attempt] = delivery["attempts"]
    assert attempt["outcome"] == "success" and attempt["status_code"] == 204
    assert attempt["trigger"] == "scheduled" and attempt["url"] == delivered.webhook["url"]
    assert delivery["payload"]["data"]["invoice_id"] == "inv_cli_1"

    # For people: one table row per delivery, and the attempts under the delivery's fields.
    table = stack.ok("deliveries", "list", "--webhook-id", webhook_id).out
    assert table.splitlines()[0].split()[:3] == ["ID", "STATUS", "ATTEMPTS"]
    assert row["id"] in table and "succeeded" in table
    shown = stack.ok("deliveries", "get", row["id"]).out
    assert row["id"] in shown and "success" in shown and "scheduled" in shown

    replayed = stack.ok("deliveries", "replay", row["id"], "--json").json
    assert replayed == {"delivery_id": row["id"], "event_id": delivered.event_id, "attempt": 2}
    again = received(stack.receiver, delivered.path, 2)[-1]
    assert again.verified and again.body == delivered.request.body
    assert again.headers["webhook-id"] == delivered.request.headers["webhook-id"]
    delivery = logged(stack, row["id"], "succeeded", 2)
    assert [(a["attempt_number"], a["trigger"]) for a in delivery["attempts"]] == [
        (1, "scheduled"),
        (2, "manual"),
    ]
    assert "replaying delivery" in stack.ok("deliveries", "replay", row["id"]).out


def test_rotate_secret_and_send_a_test_event(stack: Stack) -> None:
    tenant = f"tenant_{uuid.uuid4().hex[:8]}"
    webhook, path = create_webhook(stack, "--tenant-id", tenant, key=ADMIN)
    old = webhook["secret"]
    rotated = stack.ok(
        "webhooks", "rotate-secret", webhook["id"], "--tenant-id", tenant, "--json", key=ADMIN
    ).json
    new = rotated["secret"]
    assert new.startswith("whsec_") and new != old
    assert rotated["secret_hint"] == "…" + new[-4:]
    assert rotated["previous_secrets_valid_until"] is None
    # The receiver now accepts only the new secret.
    stack.receiver.expect(path, [new])
    time.sleep(PROPAGATION)

    sent = stack.ok("webhooks", "test", webhook["id"], "--json", key=ADMIN).json
    [request] = received(stack.receiver, path)
    assert request.verified and json.loads(request.body)["type"] == "webhook.test"
    assert request.headers["webhook-id"] == sent["event_id"]
    assert len(request.headers["webhook-signature"].split(" ")) == 1

    # With a grace period the human output says until when the old secret still signs.
    out = stack.ok(
        "webhooks", "rotate-secret", webhook["id"], "--grace-period", "60", key=ADMIN
    ).out
    assert "keeps signing until" in out and "whsec_" in out


def test_tail_from_beginning_prints_one_line_per_attempt(
    stack: Stack, delivered: Delivered
) -> None:
    delivery_id = logged_id(stack, delivered)
    process = subprocess.Popen(
        [sys.executable, "-m", "hookstream", "deliveries", "tail", "--from-beginning"],
        env=stack.env(None),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stderr is not None
    lines = _lines(process.stdout)
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                seen.append(lines.get(timeout=0.5))
            except queue.Empty:
                if process.poll() is not None:
                    break
                continue
            if any(delivery_id in line for line in seen):
                break
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(15)
    err = process.stderr.read()
    mine = [line for line in seen if delivery_id in line]
    assert mine, f"no attempt line for {delivery_id}: {seen!r} stderr={err!r}"
    when, outcome, status, webhook_id, event_type, shown_id, duration, *_ = mine[0].split()
    assert when.endswith("Z") and outcome == "success" and status == "204"
    assert (webhook_id, event_type, shown_id) == (
        delivered.webhook["id"],
        "invoice.paid",
        delivery_id,
    )
    assert duration.endswith("ms")
    assert code == 0, err
    assert "following" in err


def logged_id(stack: Stack, delivered: Delivered) -> str:
    def listed() -> str | None:
        args = ("deliveries", "list", "--webhook-id", delivered.webhook["id"], "--json")
        rows = stack.ok(*args).json["data"]
        return str(rows[0]["id"]) if rows else None

    found: str = wait_for(listed, timeout=30, interval=0.3, what="the delivery id")
    return found


def _lines(stream: IO[str]) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line.rstrip("\n"))

    threading.Thread(target=pump, daemon=True).start()
    return lines


def test_webhook_commands_and_recover(stack: Stack) -> None:
    tenant = f"tenant_{uuid.uuid4().hex[:8]}"
    webhook, path = create_webhook(
        stack, "--tenant-id", tenant, key=ADMIN, behaviour=Behaviour(status=400)
    )
    wid = webhook["id"]
    admin = ("--tenant-id", tenant)

    listed = stack.ok("webhooks", "list", *admin, "--json", key=ADMIN).json
    assert [w["id"] for w in listed["data"]] == [wid] and listed["next_cursor"] is None
    table = stack.ok("webhooks", "list", *admin, key=ADMIN).out.splitlines()
    assert table[0].split()[:2] == ["ID", "NAME"] and table[1].startswith(wid)

    got = stack.ok("webhooks", "get", wid, "--json", key=ADMIN).json
    assert "secret" not in got and got["secret_hint"] == "…" + webhook["secret"][-4:]
    assert "whsec_" not in stack.ok("webhooks", "get", wid, key=ADMIN).out

    updated = stack.ok(
        "webhooks",
        "update",
        wid,
        "--name",
        "renamed",
        "-e",
        "invoice.paid,invoice.created",
        "--json",
        key=ADMIN,
    ).json
    assert updated["name"] == "renamed"
    assert updated["events"] == ["invoice.paid", "invoice.created"]

    # An event the endpoint refuses (400: permanent), then recovered once it answers 204.
    event = {"invoice_id": "inv_cli_2"}
    published = stack.ok(
        "events", "publish", "--type", "invoice.paid", *admin, stdin=json.dumps(event), key=ADMIN
    )
    assert published.out.startswith("published event evt_")

    def failed() -> list[dict[str, Any]] | None:
        args = ("deliveries", "list", "--webhook-id", wid, "--status", "failed", "--json")
        rows: list[dict[str, Any]] = stack.ok(*args, key=ADMIN).json["data"]
        return rows or None

    [row] = wait_for(failed, timeout=30, interval=0.3, what="a failed delivery")
    health = stack.ok("webhooks", "health", wid, "--json", key=ADMIN).json
    assert health["last_status_code"] == 400 and health["attempts_24h"] == 1

    stack.receiver.behave(path, Behaviour(status=204))
    recovered = stack.ok("webhooks", "recover", wid, "--since", "1h", "--json", key=ADMIN).json
    assert recovered == {"replayed": 1, "skipped": 0}
    requests = received(stack.receiver, path, 2)
    assert requests[1].verified
    assert requests[1].headers["webhook-id"] == requests[0].headers["webhook-id"]

    catalog = stack.ok("event-types").out
    assert catalog.splitlines()[0].split() == ["TYPE", "CATEGORY", "PERMISSION", "DESCRIPTION"]
    assert "invoice.paid" in catalog

    assert "deleted webhook" in stack.ok("webhooks", "delete", wid, key=ADMIN).out
    # Its history stays; the webhook itself is gone.
    assert stack.ok("deliveries", "get", row["id"], "--json", key=ADMIN).json["id"] == row["id"]
    gone = stack.cli("webhooks", "get", wid, key=ADMIN)
    assert gone.code == 1 and "not found" in gone.err


def shown(out: str, name: str, value: str) -> bool:
    """Whether `webhooks get` printed `value` as the field `name` ("" for a continuation)."""
    return re.search(rf"^{re.escape(name)}\s+{re.escape(value)}$", out, re.MULTILINE) is not None


def test_delivery_settings_and_custom_headers(stack: Stack) -> None:
    token = f"Bearer tok-{uuid.uuid4().hex}"
    webhook, path = create_webhook(
        stack,
        "--max-concurrency",
        "4",
        "--rate-limit",
        "2.5",
        "--timeout",
        "7",
        "--header",
        f"Authorization: {token}",
        "--header",
        "X-Tenant: acme",
        "--header",
        "X-Trace:on",
    )
    wid = webhook["id"]
    assert (webhook["max_concurrency"], webhook["rate_limit"], webhook["timeout_seconds"]) == (
        4,
        2.5,
        7,
    )
    # The credential is encrypted at rest and never read back, not even right after create.
    assert webhook["headers"] == {"Authorization": "********", "X-Tenant": "acme", "X-Trace": "on"}
    assert webhook["sensitive_headers"] == ["Authorization"]
    out = stack.ok("webhooks", "get", wid).out
    assert "tok-" not in out
    assert shown(out, "max concurrency", "4") and shown(out, "rate limit", "2.5 per second")
    assert shown(out, "timeout", "7 s")
    assert shown(out, "headers", "Authorization: ********")
    assert shown(out, "", "X-Tenant: acme") and shown(out, "", "X-Trace: on")

    # The receiver gets the headers, the credential decrypted.
    time.sleep(PROPAGATION)
    stack.ok("webhooks", "test", wid)
    [request] = received(stack.receiver, path)
    assert request.verified
    assert (request.headers["authorization"], request.headers["x-tenant"]) == (token, "acme")
    assert request.headers["x-trace"] == "on"

    updated = stack.ok(
        "webhooks",
        "update",
        wid,
        "--max-concurrency",
        "adaptive",
        "--rate-limit",
        "none",
        "--remove-header",
        "x-trace",
        "--header",
        "X-Tenant: globex",
        "--json",
    ).json
    assert (updated["max_concurrency"], updated["rate_limit"], updated["timeout_seconds"]) == (
        None,
        None,
        7,
    )
    # Merged: the one removed is gone, the one given changed, the one left out stays.
    assert updated["headers"] == {"Authorization": "********", "X-Tenant": "globex"}
    assert updated["sensitive_headers"] == ["Authorization"]

    out = stack.ok("webhooks", "update", wid, "--timeout", "default").out
    assert shown(out, "timeout", "default")
    out = stack.ok("webhooks", "get", wid).out
    assert shown(out, "max concurrency", "adaptive") and shown(out, "rate limit", "none")
    assert shown(out, "timeout", "default")
    assert shown(out, "headers", "Authorization: ********") and shown(out, "", "X-Tenant: globex")
    assert "X-Trace" not in out and "tok-" not in out

    # Refused, each with the reason: by the API (exit 1) or before calling it (exit 2).
    for args, code, reason in (
        (("--header", "Authorization: ********"), 1, "placeholder"),
        (("--header", "Webhook-Id: mine"), 1, "Webhook-Id"),
        (("--header", "Bad Name: x"), 1, "Bad Name"),
        (("--max-concurrency", "0"), 1, "max_concurrency"),
        (("--timeout", "31"), 1, "timeout_seconds"),
        (("--rate-limit", "-1"), 1, "rate_limit"),
        (("--rate-limit", "nan"), 2, "'none'"),
        (("--max-concurrency", "lots"), 2, "'adaptive'"),
        (("--header", "no colon"), 2, "Name: value"),
        (("--header", "X-A: 1", "--remove-header", "x-a"), 2, "more than once"),
    ):
        refused = stack.cli("webhooks", "update", wid, *args)
        assert refused.code == code and reason in refused.err, (args, refused)
        assert refused.out == ""
    after = stack.ok("webhooks", "get", wid, "--json").json
    assert after["headers"] == updated["headers"] and after["timeout_seconds"] is None


def test_errors_exit_non_zero_with_the_apis_message_in_one_line(stack: Stack) -> None:
    wrong = stack.cli("webhooks", "list", key="not-a-key")
    assert wrong.code != 0 and wrong.out == ""
    assert wrong.err.count("\n") == 1 and "invalid API key" in wrong.err

    missing = stack.cli("webhooks", "list", key=None)
    assert missing.code == 2 and "HOOKSTREAM_API_KEY" in missing.err

    # An admin key must name the tenant; the API's message names the field.
    url = stack.receiver.url("/never")
    no_tenant = stack.cli("webhooks", "create", "--name", "n", "--url", url, "-e", "x", key=ADMIN)
    assert no_tenant.code == 1 and no_tenant.err.count("\n") == 1
    assert "tenant_id" in no_tenant.err

    unknown = stack.cli(
        "webhooks", "create", "--name", "n", "--url", url, "-e", "invoice.nope", "--json"
    )
    assert unknown.code == 1 and "invoice.nope" in unknown.err and unknown.out == ""

    not_json = stack.cli("events", "publish", stdin="{nope")
    assert not_json.code == 2 and "not valid JSON" in not_json.err

    unreachable = stack.cli("event-types", "--api-url", "http://127.0.0.1:1")
    assert unreachable.code == 1 and "cannot reach the API" in unreachable.err


def test_publish_batch_sends_many_events_and_names_the_ones_refused(stack: Stack) -> None:
    run = uuid.uuid4().hex[:8]
    lines = [
        {"id": f"evt_{run}_1", "type": "invoice.paid", "data": {"invoice_id": "inv_b1"}},
        {"id": f"evt_{run}_2", "type": "invoice.nope", "data": {}},
        {"id": f"evt_{run}_3", "type": "invoice.paid", "data": {"invoice_id": "inv_b3"}},
    ]
    refused = stack.cli("events", "publish-batch", stdin="\n".join(map(json.dumps, lines)))
    assert refused.code == 2, refused.err
    assert "event 1: rejected: unknown event type: invoice.nope" in refused.err
    assert refused.out.strip() == ("published 2, already accepted 0, in progress 0, rejected 1")
    # Again, as a JSON array: the good ones were accepted before and are not sent twice.
    again = stack.cli("events", "publish-batch", "--json", stdin=json.dumps([lines[0], lines[2]]))
    assert again.code == 0, again.err
    assert [r["status"] for r in again.json["results"]] == ["duplicate", "duplicate"]
    empty = stack.cli("events", "publish-batch", stdin="\n\n")
    assert empty.code == 2 and "holds no events" in empty.err
