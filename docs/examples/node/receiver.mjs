// A webhook receiver that accepts only requests signed by hookstream.
//
//   npm ci
//   WEBHOOK_SECRET='whsec_…' PORT=9000 node receiver.mjs
//
// It answers 204 to a request whose signature verifies and 400 to anything else.
import http from "node:http";
import { Webhook, WebhookVerificationError } from "standardwebhooks";

// Build the verifier once: it decodes the secret, and the same one serves every request.
const verifier = new Webhook(process.env.WEBHOOK_SECRET);
const port = Number(process.env.PORT ?? 9000);

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (chunk) => chunks.push(chunk));
  req.on("end", () => {
    // Verify the raw body exactly as it arrived: a body parsed and re-serialised by a JSON
    // middleware is not the byte sequence that was signed.
    const body = Buffer.concat(chunks).toString("utf8");
    let event;
    try {
      // Node lower-cases header names, as the library expects.
      event = verifier.verify(body, req.headers);
    } catch (err) {
      if (!(err instanceof WebhookVerificationError)) throw err;
      console.log(`rejected: ${err.message}`);
      res.writeHead(400).end();
      return;
    }
    // webhook-id is identical on every retry of a delivery: use it to ignore duplicates.
    console.log(`verified ${req.headers["webhook-id"]} ${event.type}`);
    handle(event);
    res.writeHead(204).end();
  });
});

// Your business logic; answer quickly and queue slow work (the sender waits for you).
function handle(event) {
  console.log(JSON.stringify(event.data));
}

server.listen(port, "127.0.0.1", () => {
  console.log(`listening on http://127.0.0.1:${port}/`);
});
