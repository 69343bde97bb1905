"""A webhook receiver that accepts only requests signed by hookstream.

Run it with the webhook's secret (shown once, when the webhook is created):

    pip install standardwebhooks
    WEBHOOK_SECRET='whsec_…' PORT=9000 python receiver.py

It answers 204 to a request whose signature verifies and 400 to anything else.
"""

from __future__ import annotations

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

# Build the verifier once: it decodes the secret, and the same one serves every request.
VERIFIER = Webhook(os.environ["WEBHOOK_SECRET"])


class WebhookHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        # Verify the body exactly as it arrived: parsing and re-serialising the JSON first
        # would change the bytes that were signed.
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            event = VERIFIER.verify(body, headers)
        except WebhookVerificationError as exc:
            print(f"rejected: {exc}", flush=True)
            self.send_response(400)
            self.end_headers()
            return
        # webhook-id is identical on every retry of a delivery: use it to ignore duplicates.
        print(f"verified {headers['webhook-id']} {event['type']}", flush=True)
        handle(event)
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per request is printed above


def handle(event: dict[str, object]) -> None:
    """Your business logic; answer quickly and queue slow work (the sender waits for you)."""
    print(json.dumps(event["data"]), flush=True)


def main() -> None:
    port = int(os.environ.get("PORT", "9000"))
    server = ThreadingHTTPServer(("127.0.0.1", port), WebhookHandler)
    print(f"listening on http://127.0.0.1:{port}/", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
