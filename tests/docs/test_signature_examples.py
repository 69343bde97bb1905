"""The signature-verification examples of docs/verifying-signatures.md, run for real.

Each example receiver (Python, Node, Go) gets a genuine delivery from hookstream's router and
sender, which it must accept, and requests signed by hookstream's signing code that were
tampered with (body, secret, timestamp), which it must refuse.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hookstream.core.settings import Settings
from hookstream.core.signing import headers as signed_headers
from hookstream.core.signing import new_secret, signer
from hookstream.core.topics import Topics
from hookstream.tools import localkafka
from hookstream.tools.topics import create_topics
from tests.docs.processes import ExampleProcess, run_setup
from tests.helpers import settings_for_test, sqlite_url, unique_prefix, wait_for
from tests.pipeline import Platform, Service, make_webhook, read_topic

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
LANGUAGES = ("python", "node", "go")
# Where Go lives when it is installed from go.dev's tarball rather than a package.
GO_FALLBACK = Path("/usr/local/go/bin/go")


@dataclass(frozen=True)
class Endpoint:
    """One example's webhook: created before the router starts, so routing never races it."""

    language: str
    tenant_id: str
    secret: str
    port: int


@dataclass
class Pipeline:
    settings: Settings
    platform: Platform
    endpoints: dict[str, Endpoint]


@pytest.fixture(scope="module")
def pipeline(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    directory = tmp_path_factory.mktemp("signatures")
    settings = settings_for_test(
        kafka_bootstrap,
        unique_prefix(),
        allow_private_targets=("127.0.0.0/8",),
        request_timeout=5.0,
        store_url=sqlite_url(directory),
    )
    create_topics(settings)
    platform = Platform(settings)
    endpoints: dict[str, Endpoint] = {}
    for language in LANGUAGES:
        endpoint = Endpoint(language, f"tenant_{language}", new_secret(), localkafka.free_port())
        url = f"http://127.0.0.1:{endpoint.port}/hooks"
        platform.webhook(
            make_webhook(endpoint.tenant_id, url, ["invoice.*"], secret=endpoint.secret)
        )
        endpoints[language] = endpoint
    services = [Service(settings, name, directory) for name in ("router", "sender")]
    try:
        yield Pipeline(settings, platform, endpoints)
    finally:
        for service in services:
            service.terminate(30)
            service.close()


def _python(_cache: Path) -> list[str]:
    return [sys.executable, "receiver.py"]


def _node(_cache: Path) -> list[str]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("Node.js (node and npm) is not installed")
    directory = EXAMPLES / "node"
    if not (directory / "node_modules" / "standardwebhooks").is_dir():
        # The committed lockfile pins the exact packages; node_modules is not committed.
        run_setup([npm, "ci", "--no-audit", "--no-fund"], directory, "npm ci")
    return [node, "receiver.mjs"]


def _go(cache: Path) -> list[str]:
    found = shutil.which("go")
    go = found or (str(GO_FALLBACK) if GO_FALLBACK.exists() else None)
    if go is None:
        pytest.skip("Go is not installed")
    binary = cache / "go-receiver"
    # Modules come from the Go module proxy, checked against the committed go.sum.
    run_setup([go, "build", "-o", str(binary), "."], EXAMPLES / "go", "go build")
    return [str(binary)]


PREPARE: dict[str, Callable[[Path], list[str]]] = {"python": _python, "node": _node, "go": _go}


@pytest.fixture(params=LANGUAGES)
def example(
    request: pytest.FixtureRequest, pipeline: Pipeline, tmp_path: Path
) -> Iterator[tuple[Endpoint, ExampleProcess]]:
    language: str = request.param
    command = PREPARE[language](tmp_path)
    endpoint = pipeline.endpoints[language]
    process = ExampleProcess(
        command,
        EXAMPLES / language,
        {"WEBHOOK_SECRET": endpoint.secret, "PORT": str(endpoint.port)},
    )
    try:
        process.wait_line(lambda line: "listening on" in line, 120, f"the {language} receiver")
        yield endpoint, process
    finally:
        process.stop()


def _post(port: int, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/hooks", data=body, headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_example_accepts_a_genuine_delivery(
    example: tuple[Endpoint, ExampleProcess], pipeline: Pipeline
) -> None:
    endpoint, process = example
    event_id = pipeline.platform.event(
        endpoint.tenant_id, "invoice.paid", {"invoice_id": f"inv_{endpoint.language}"}
    )
    process.wait_line(
        lambda line: line == f"verified {event_id} invoice.paid", 60, "the verified delivery"
    )
    # The sender recorded the example's answer: accepted on the first attempt.
    topic = Topics.from_settings(pipeline.settings).delivery_log
    [attempt] = wait_for(
        lambda: [
            a for a in read_topic(pipeline.settings, topic, "Attempt") if a["event_id"] == event_id
        ],
        timeout=30,
        interval=0.2,
        what="the attempt record",
    )
    assert (attempt["outcome"], attempt["status_code"]) == ("success", 204)
    assert not any(line.startswith("rejected") for line in process.lines), process.output()


def test_example_rejects_tampered_requests(example: tuple[Endpoint, ExampleProcess]) -> None:
    endpoint, process = example
    body = json.dumps(
        {
            "id": "evt_docs_1",
            "type": "invoice.paid",
            "occurred_at": "2026-11-27T10:00:00.000Z",
            "api_version": "v1",
            "data": {"invoice_id": "inv_1", "amount_cents": 125000},
        },
        separators=(",", ":"),
    ).encode()
    now = int(time.time())

    def signed(secret: str = endpoint.secret, at: int = now) -> dict[str, str]:
        return signed_headers([signer(secret)], "evt_docs_1", at, body, "hookstream-docs-test")

    assert _post(endpoint.port, body, signed()) == 204, process.output()
    tampered = body.replace(b"125000", b"999999")
    assert _post(endpoint.port, tampered, signed()) == 400, "a changed body must be refused"
    assert _post(endpoint.port, body, signed(secret=new_secret())) == 400, "another secret"
    # Ten minutes old: outside the libraries' five-minute tolerance (replay protection).
    assert _post(endpoint.port, body, signed(at=now - 600)) == 400, "an old timestamp"
    unsigned = {"content-type": "application/json"}
    assert _post(endpoint.port, body, unsigned) == 400, "no signature at all"
    # Every refusal was the library's verdict, printed by the example: 1 accepted, 4 refused.
    wait_for(
        lambda: len(process.matching(lambda line: line.startswith("rejected"))) == 4,
        timeout=10,
        what="four rejections printed",
    )
