"""`hookstream receiver` verifies, prints and fails on request, as a developer would use it."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request

from hookstream.core.signing import headers, new_secret, signer
from hookstream.tools import localkafka
from tests.helpers import wait_for


def _post(url: str, body: bytes, secret: str) -> int:
    signed = headers([signer(secret)], "evt_dev_1", int(time.time()), body, "test")
    request = urllib.request.Request(url, data=body, headers=signed, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_receiver_verifies_and_fails_first_n() -> None:
    secret = new_secret()
    port = localkafka.free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hookstream",
            "receiver",
            "--port",
            str(port),
            "--secret",
            secret,
            "--fail",
            "1",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert "listening on" in process.stdout.readline()
        url = f"http://127.0.0.1:{port}/hook"
        body = b'{"id":"evt_dev_1","type":"invoice.paid","data":{}}'
        statuses = [
            wait_for(lambda: _try(url, body, secret), timeout=10, what="the receiver"),
            _post(url, body, secret),
            _post(url, body, new_secret()),  # signed with another secret
        ]
        assert statuses == [500, 204, 204]
        lines = [process.stdout.readline() for _ in range(3)]
        assert "invoice.paid id=evt_dev_1 verified -> 500" in lines[0]
        assert "verified -> 204" in lines[1]
        assert "UNVERIFIED -> 204" in lines[2]
    finally:
        process.terminate()
        process.wait(10)


def _try(url: str, body: bytes, secret: str) -> int | None:
    try:
        return _post(url, body, secret)
    except OSError:
        return None
