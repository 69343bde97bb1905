"""`hookstream demo` (`make demo`): the whole pipeline on this machine, retries included.

Starts the broker if none is configured or running, creates the topics, runs the api, sender,
log-sink and router and two `hookstream receiver` endpoints as child processes, creates one
webhook per receiver through the API, publishes a handful of sample events (the "accounting"
receiver fails its first requests) and prints the delivery log once every delivery has
succeeded. Every child is stopped at the end, on an error and on Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from argparse import Namespace
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TextIO, TypeVar

from hookstream.client import output
from hookstream.client.commands import deliveries_list
from hookstream.client.http import ApiCallError, ApiClient
from hookstream.core.settings import Settings, load_settings
from hookstream.tools import localkafka
from hookstream.tools.topics import create_topics

# The same development-only key and private-target allowance as `make run`; the demo's API
# listens on loopback only, whatever HOOKSTREAM_API_HOST says.
DEMO_API_KEY = "dev-admin-key"
DEMO_PRIVATE_TARGETS = "127.0.0.0/8"
STOP_TIMEOUT = 20.0
STARTUP_TIMEOUT = 90.0
# Beyond the first retry delay: room for start-up, routing, the log-sink's batches.
SETTLE_TIMEOUT = 60.0

T = TypeVar("T")


class DemoError(Exception):
    """The demo cannot go on; the message says why and where the logs are."""


@dataclass(frozen=True)
class Endpoint:
    """One receiver process and the webhook that points at it."""

    name: str
    events: tuple[str, ...]
    fail_first: int


@dataclass(frozen=True)
class SampleEvent:
    type: str
    data: dict[str, Any]


ENDPOINTS = (
    Endpoint("shop", ("invoice.*", "offer.*"), fail_first=0),
    # Answers 500 to its first two requests: both invoice.paid deliveries fail once, then
    # succeed on their first retry.
    Endpoint("accounting", ("invoice.paid",), fail_first=2),
)

SAMPLES = (
    SampleEvent("invoice.created", {"invoice_id": "inv_1001", "amount_cents": 125000}),
    SampleEvent("invoice.paid", {"invoice_id": "inv_1001", "amount_cents": 125000}),
    SampleEvent("offer.accepted", {"offer_id": "off_2001", "amount_cents": 480000}),
    SampleEvent("invoice.paid", {"invoice_id": "inv_1002", "amount_cents": 9900}),
)


def subscribed(patterns: tuple[str, ...], event_type: str) -> bool:
    """Whether a subscription (`invoice.paid`, `invoice.*`, `*`) covers an event type."""
    return any(
        pattern in ("*", event_type)
        or (pattern.endswith(".*") and event_type.startswith(pattern[:-1]))
        for pattern in patterns
    )


def expected_deliveries() -> int:
    return sum(subscribed(e.events, s.type) for s in SAMPLES for e in ENDPOINTS)


class Children:
    """The demo's child processes, each in its own process group so that a terminal's Ctrl-C
    reaches the demo alone, which then stops them in order."""

    def __init__(self, log_dir: Path, env: dict[str, str], out: TextIO) -> None:
        self.log_dir = log_dir
        self.env = env
        self.out = out
        self.running: dict[str, subprocess.Popen[str]] = {}
        self._log_files: list[IO[str]] = []
        self._printers: list[threading.Thread] = []

    def start_service(self, name: str) -> None:
        log = (self.log_dir / f"{name}.log").open("w")
        self._log_files.append(log)
        self.running[name] = subprocess.Popen(
            [sys.executable, "-m", "hookstream", "run", name],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            process_group=0,
        )

    def start_receiver(self, endpoint: Endpoint, port: int, secret: str) -> None:
        """`hookstream receiver`, its lines shown prefixed with its name as they come."""
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "hookstream", "receiver"),
                *("--port", str(port), "--secret", secret, "--fail", str(endpoint.fail_first)),
            ],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            process_group=0,
        )
        self.running[f"receiver {endpoint.name}"] = process
        listening = threading.Event()
        printer = threading.Thread(
            target=self._relay, args=(endpoint.name, process, listening), daemon=True
        )
        printer.start()
        self._printers.append(printer)
        wait_until(listening.is_set, STARTUP_TIMEOUT, f"receiver {endpoint.name}", self)

    def _relay(self, name: str, process: subprocess.Popen[str], listening: threading.Event) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if "listening on" in line:
                listening.set()
            print(f"  [{name}] {line.rstrip()}", file=self.out, flush=True)

    def check_alive(self) -> None:
        for name, process in self.running.items():
            code = process.poll()
            if code is not None:
                raise DemoError(f"{name} exited with {code}; see {self.log_dir}")

    def stop_all(self) -> None:
        """SIGTERM to every child (newest first: the router stops before what it feeds)."""
        for process in reversed(self.running.values()):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for name, process in reversed(self.running.items()):
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"{name} did not stop within {STOP_TIMEOUT:g} s: killed", file=self.out)
                process.kill()
                process.wait()
        for printer in self._printers:
            printer.join(5)
        for log in self._log_files:
            log.close()


def wait_until(
    condition: Callable[[], T | None], timeout: float, what: str, children: Children
) -> T:
    """Poll `condition` until it returns something truthy; a child's death ends it early."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        children.check_alive()
        if time.monotonic() > deadline:
            raise DemoError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.2)


def _bootstrap(out: TextIO) -> str:
    """The configured cluster, else the running local broker, else a newly started one."""
    configured = os.environ.get("HOOKSTREAM_KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        return configured
    running = localkafka.read_state()
    if running is not None:
        return running.bootstrap
    print(f"starting Kafka {localkafka.KAFKA_VERSION} (KRaft, single node) ...", file=out)
    out.flush()
    state = localkafka.start()
    print(f"kafka ready at {state.bootstrap} in {state.startup_seconds:.1f} s", file=out)
    print("it keeps running after the demo: `hookstream kafka stop` stops it", file=out)
    return state.bootstrap


def demo_settings(bootstrap: str, api_port: int) -> Settings:
    """The environment's settings with the demo's development overrides."""
    return load_settings(
        kafka_bootstrap_servers=bootstrap,
        api_keys={DEMO_API_KEY: "*"},
        allow_private_targets=(DEMO_PRIVATE_TARGETS,),
        api_host="127.0.0.1",
        api_port=api_port,
        metrics_port=0,  # any free ports: the demo must not collide with `make run`
    )


def child_env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "HOOKSTREAM_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "HOOKSTREAM_API_KEYS": f"{DEMO_API_KEY}:*",
        "HOOKSTREAM_ALLOW_PRIVATE_TARGETS": DEMO_PRIVATE_TARGETS,
        "HOOKSTREAM_API_HOST": settings.api_host,
        "HOOKSTREAM_API_PORT": str(settings.api_port),
        "HOOKSTREAM_METRICS_PORT": "0",
    }


def _api_ready(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/readyz", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the children are stopped either way."""

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(log_dir: Path | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    logs = log_dir or Path(tempfile.mkdtemp(prefix="hookstream-demo-"))
    logs.mkdir(parents=True, exist_ok=True)
    with _stop_on_sigterm():
        children: Children | None = None
        try:
            settings = demo_settings(_bootstrap(out), localkafka.free_port())
            report = create_topics(settings)
            if report.conflicts:
                raise DemoError("topic conflicts: " + "; ".join(report.conflicts))
            print(
                f"topics: {len(report.created)} created, {len(report.existing)} existing", file=out
            )
            print(f"service logs: {logs}", file=out, flush=True)
            children = Children(logs, child_env(settings), out)
            Demo(settings, children, out).run()
            return 0
        except KeyboardInterrupt:
            print("\ninterrupted: stopping the demo's processes", file=out, flush=True)
            return 130
        except (DemoError, ApiCallError) as exc:
            text = exc.one_line() if isinstance(exc, ApiCallError) else str(exc)
            print(f"hookstream demo: {text}", file=sys.stderr)
            print(f"service logs: {logs}", file=sys.stderr)
            return 1
        finally:
            if children is not None:
                children.stop_all()


class Demo:
    def __init__(self, settings: Settings, children: Children, out: TextIO) -> None:
        self.settings = settings
        self.children = children
        self.out = out
        self.base_url = f"http://{settings.api_host}:{settings.api_port}"
        self.api = ApiClient(self.base_url, DEMO_API_KEY)
        # A tenant of its own: earlier runs' webhooks and deliveries stay out of this one.
        self.tenant_id = f"demo-{uuid.uuid4().hex[:8]}"
        self.webhook_names: dict[str, str] = {}

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def run(self) -> None:
        # The router starts last, once the webhooks exist: its view of the webhooks topic is
        # read to the end before it routes, so no sample event can miss a new webhook.
        for name in ("api", "sender", "log-sink"):
            self.children.start_service(name)
        wait_until(lambda: _api_ready(self.base_url), STARTUP_TIMEOUT, "the API", self.children)
        self.say(f"api, sender and log-sink running; API {self.base_url} (tenant {self.tenant_id})")
        webhook_ids = [self._webhook(endpoint) for endpoint in ENDPOINTS]
        self.children.start_service("router")
        self.say("router running")
        try:
            for sample in SAMPLES:
                accepted = self.api.post(
                    "/v1/events",
                    {"type": sample.type, "data": sample.data, "tenant_id": self.tenant_id},
                )
                self.say(f"published {accepted['id']} {sample.type}")
            deliveries = self._settle()
            self._report(deliveries)
        finally:
            # The demo's webhooks go with it (their history stays); an API already gone
            # leaves them behind, harmless in a tenant no later run uses.
            with suppress(ApiCallError):
                for webhook_id in webhook_ids:
                    self.api.delete(f"/v1/webhooks/{webhook_id}", {"tenant_id": self.tenant_id})

    def _webhook(self, endpoint: Endpoint) -> str:
        port = localkafka.free_port()
        created = self.api.post(
            "/v1/webhooks",
            {
                "name": endpoint.name,
                "url": f"http://127.0.0.1:{port}/hooks",
                "events": list(endpoint.events),
                "tenant_id": self.tenant_id,
            },
        )
        self.webhook_names[created["id"]] = endpoint.name
        failing = f", fails its first {endpoint.fail_first}" if endpoint.fail_first else ""
        self.say(
            f"webhook {created['id']} {endpoint.name}: {','.join(endpoint.events)} "
            f"-> {created['url']}{failing}"
        )
        self.children.start_receiver(endpoint, port, created["secret"])
        return str(created["id"])

    def _deliveries(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.api.pages(
            "/v1/deliveries", {"tenant_id": self.tenant_id, "limit": 100}
        )
        return found

    def _settle(self) -> list[dict[str, Any]]:
        """Every delivery succeeded, as the store (the log-sink's work) shows it."""
        expected = expected_deliveries()
        delay, jitter = self.settings.retry_schedule[0], self.settings.retry_jitter
        first_retry = delay * (1 + jitter)
        self.say(
            f"waiting for {expected} deliveries "
            f"(first retry after {delay:g} s ±{jitter * 100:.0f} %, HOOKSTREAM_RETRY_SCHEDULE) ..."
        )
        last: tuple[tuple[str, int], ...] = ()

        def settled() -> list[dict[str, Any]] | None:
            nonlocal last
            deliveries = self._deliveries()
            tally: dict[str, int] = {}
            for delivery in deliveries:
                tally[delivery["status"]] = tally.get(delivery["status"], 0) + 1
            shown = tuple(sorted(tally.items()))
            if shown != last:
                last = shown
                self.say("deliveries: " + ", ".join(f"{n} {status}" for status, n in shown))
            done = len(deliveries) == expected and tally.get("succeeded") == expected
            return deliveries if done else None

        return wait_until(
            settled, SETTLE_TIMEOUT + first_retry, "every delivery to succeed", self.children
        )

    def _report(self, deliveries: list[dict[str, Any]]) -> None:
        self.say("\ndeliveries (newest first):")
        # The same table as `hookstream deliveries list`, which prints to stdout.
        with redirect_stdout(self.out):
            deliveries_list(
                Namespace(
                    tenant_id=self.tenant_id,
                    webhook_id=None,
                    event_type=None,
                    status=None,
                    since=None,
                    until=None,
                    limit=100,
                    all=True,
                    cursor=None,
                    json=False,
                ),
                self.api,
            )
        self.say("\ndelivery log (every attempt, oldest first):")
        rows = []
        retried = 0
        for summary in sorted(deliveries, key=lambda d: (d["created_at"], d["id"])):
            delivery = self.api.get(
                f"/v1/deliveries/{summary['id']}", {"tenant_id": self.tenant_id}
            )
            retried += len(delivery["attempts"]) > 1
            for attempt in delivery["attempts"]:
                rows.append(
                    (
                        delivery["id"],
                        self.webhook_names.get(delivery["webhook_id"], delivery["webhook_id"]),
                        delivery["event_type"],
                        attempt["attempt_number"],
                        attempt["started_at"],
                        attempt["outcome"],
                        attempt["status_code"],
                        f"{attempt['duration_ms']}ms",
                    )
                )
        output.table(
            ("DELIVERY", "WEBHOOK", "EVENT TYPE", "#", "STARTED", "OUTCOME", "CODE", "DURATION"),
            rows,
            self.out,
        )
        self.say(
            f"\n{len(deliveries)} deliveries succeeded, {retried} of them after a retry. "
            "The attempts stay in the store and the delivery-log topic "
            "(`hookstream deliveries tail --from-beginning`)."
        )
