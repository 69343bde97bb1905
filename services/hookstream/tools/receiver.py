"""`hookstream receiver`: a development endpoint to point webhooks at (like `stripe listen`).

Verifies every request with the given secret(s), prints one line per request and answers
with a chosen status; `--fail N` answers 500 to the first N requests so retries can be
watched.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TextIO

from aiohttp import web
from standardwebhooks.webhooks import Webhook as Verifier
from standardwebhooks.webhooks import WebhookVerificationError


@dataclass
class ReceiverState:
    secrets: Sequence[str]
    status: int = 204
    fail_first: int = 0
    fail_status: int = 500
    out: TextIO = field(default=sys.stdout)
    seen: int = 0


def verify(secrets: Sequence[str], body: bytes, headers: dict[str, str]) -> str:
    """'verified', 'UNVERIFIED' or 'unchecked' (no secret given)."""
    if not secrets:
        return "unchecked"
    for secret in secrets:
        try:
            Verifier(secret).verify(body, headers)
            return "verified"
        except WebhookVerificationError:
            continue
    return "UNVERIFIED"


def _event_type(body: bytes) -> str:
    try:
        parsed = json.loads(body)
    except ValueError:
        return "(not JSON)"
    return str(parsed.get("type", "?")) if isinstance(parsed, dict) else "(not an object)"


def make_app(state: ReceiverState) -> web.Application:
    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        headers = {key.lower(): value for key, value in request.headers.items()}
        state.seen += 1
        status = state.fail_status if state.seen <= state.fail_first else state.status
        when = datetime.now(UTC).strftime("%H:%M:%S.%f")[:-3]
        print(
            f"{when} {request.method} {request.path} {_event_type(body)} "
            f"id={headers.get('webhook-id', '-')} {verify(state.secrets, body, headers)} "
            f"-> {status}",
            file=state.out,
            flush=True,
        )
        return web.Response(status=status)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def run(state: ReceiverState, host: str, port: int) -> int:
    print(f"listening on http://{host}:{port}/ (Ctrl-C to stop)", file=state.out, flush=True)
    web.run_app(make_app(state), host=host, port=port, print=None, access_log=None)
    return 0
