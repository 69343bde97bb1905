"""The CLI's API commands: `webhooks …`, `events publish[-batch]`, `deliveries …`, `event-types`.

Every command talks to the management API (`--api-url`, `--api-key`, or HOOKSTREAM_API_URL
and HOOKSTREAM_API_KEY), prints tables for people or the API's JSON with `--json`, and on
failure exits non-zero with the API's one-line reason on stderr. `deliveries tail` is the
exception: it reads the delivery-log topic from Kafka directly.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeAlias
from urllib.parse import quote

from hookstream.client import output
from hookstream.client.http import DEFAULT_API_URL, ApiCallError, ApiClient
from hookstream.core.settings import Settings
from hookstream.endpoints.headers import split_header_line

SettingsFactory = Callable[[], Settings]
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
ApiAction = Callable[[argparse.Namespace, ApiClient], None]

EXIT_API_ERROR = 1
EXIT_USAGE = 2
_RELATIVE = re.compile(r"^(\d+)\s*([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


class UsageError(Exception):
    """Bad input caught before calling the API (unreadable file, nothing to change)."""


# -- plumbing -----------------------------------------------------------------------------


def _fail(message: str) -> None:
    print(f"hookstream: {' '.join(message.split())}", file=sys.stderr)


def _api_handler(action: ApiAction) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        if not args.api_key:
            _fail("no API key: pass --api-key or set HOOKSTREAM_API_KEY")
            return EXIT_USAGE
        try:
            action(args, ApiClient(args.api_url, args.api_key))
            sys.stdout.flush()
        except BrokenPipeError:
            return _reader_gone()
        except UsageError as exc:
            _fail(str(exc))
            return EXIT_USAGE
        except ApiCallError as exc:
            reason = exc.one_line()
            if "tenant_id" in exc.message and "admin key" in exc.message:
                reason += " (pass --tenant-id or set HOOKSTREAM_TENANT_ID)"
            _fail(reason)
            return EXIT_API_ERROR
        return 0

    return handler


def _reader_gone() -> int:
    """stdout was closed early (`| head`): not an error; silence the flush at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 0


def _api_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("API connection and output")
    group.add_argument(
        "--api-url",
        default=os.environ.get("HOOKSTREAM_API_URL", DEFAULT_API_URL),
        help=f"the management API (env HOOKSTREAM_API_URL, default {DEFAULT_API_URL})",
    )
    group.add_argument(
        "--api-key",
        default=os.environ.get("HOOKSTREAM_API_KEY"),
        help="API key sent as a bearer token (env HOOKSTREAM_API_KEY)",
    )
    group.add_argument(
        "--tenant-id",
        default=os.environ.get("HOOKSTREAM_TENANT_ID"),
        help="tenant to act for; needed with an admin key to create webhooks and publish "
        "events, optional filter otherwise (env HOOKSTREAM_TENANT_ID)",
    )
    group.add_argument("--json", action="store_true", help="print the API's JSON answer")
    return parent


def _tenant(args: argparse.Namespace) -> dict[str, str | int | None]:
    return {"tenant_id": args.tenant_id}


def _webhook_path(webhook_id: str, action: str | None = None) -> str:
    path = f"/v1/webhooks/{quote(webhook_id, safe='')}"
    return f"{path}/{action}" if action else path


def _delivery_path(delivery_id: str, action: str | None = None) -> str:
    path = f"/v1/deliveries/{quote(delivery_id, safe='')}"
    return f"{path}/{action}" if action else path


def _event_list(values: list[str] | None) -> list[str] | None:
    if values is None:
        return None
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


def instant(value: str) -> str:
    """ISO 8601 or Unix milliseconds as given; `now`, or `30m`/`2h`/`7d` ago, as ISO 8601."""
    text = value.strip()
    if text == "now":
        return _iso(datetime.now(UTC))
    relative = _RELATIVE.match(text)
    if relative:
        amount, unit = int(relative.group(1)), relative.group(2)
        return _iso(datetime.now(UTC) - timedelta(**{_UNITS[unit]: amount}))
    return text


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


# -- webhooks -----------------------------------------------------------------------------


class Clear:
    """What `--max-concurrency adaptive`, `--rate-limit none` and `--timeout default` parse
    to: the setting is sent as null, back to the default."""

    def __repr__(self) -> str:
        return "CLEAR"


CLEAR = Clear()


def whole_number(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def per_second(text: str) -> float:
    try:
        rate = float(text.strip())
    except ValueError:
        rate = math.nan
    # JSON carries no NaN or infinity; the API says what range it takes.
    if not math.isfinite(rate):
        raise argparse.ArgumentTypeError(f"expected a number per second, got {text!r}")
    return rate


def clearable(word: str, parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """`parse`, or CLEAR for `word`."""

    def convert(text: str) -> Any:
        if text.strip().lower() == word:
            return CLEAR
        try:
            return parse(text)
        except argparse.ArgumentTypeError as exc:
            raise argparse.ArgumentTypeError(
                str(exc).replace(", got", f" or {word!r}, got")
            ) from None

    return convert


def header(text: str) -> tuple[str, str]:
    """`Name: value` as (name, value); the API checks the name and the value."""
    parsed = split_header_line(text)
    if parsed is None:
        raise argparse.ArgumentTypeError(f"expected 'Name: value', got {text!r}")
    return parsed


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """The delivery settings given; a cleared one as None (null)."""
    body: dict[str, Any] = {}
    for field in ("max_concurrency", "rate_limit", "timeout_seconds"):
        value = getattr(args, field)
        if value is not None:
            body[field] = None if value is CLEAR else value
    return body


def _headers(
    given: list[tuple[str, str]] | None, removed: list[str] | None = None
) -> dict[str, str | None]:
    """`--header`s (and `--remove-header`s, as null); a name twice, in any case, is refused."""
    changes: dict[str, str | None] = {}
    seen: set[str] = set()
    pairs: list[tuple[str, str | None]] = [*(given or ()), *((n, None) for n in removed or ())]
    for name, value in pairs:
        if name.lower() in seen:
            raise UsageError(
                f"header {name!r} is given more than once (names are case-insensitive)"
            )
        seen.add(name.lower())
        changes[name] = value
    return changes


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _settings_fields(webhook: dict[str, Any]) -> list[tuple[str, Any]]:
    concurrency = webhook.get("max_concurrency")
    rate = webhook.get("rate_limit")
    timeout = webhook.get("timeout_seconds")
    pairs: list[tuple[str, Any]] = [
        ("max concurrency", "adaptive" if concurrency is None else concurrency),
        ("rate limit", "none" if rate is None else f"{_number(rate)} per second"),
        ("timeout", "default" if timeout is None else f"{timeout} s"),
    ]
    # One header a line, values as the API returns them (sensitive ones redacted).
    lines = [f"{name}: {value}" for name, value in (webhook.get("headers") or {}).items()]
    pairs.append(("headers", lines[0] if lines else "none"))
    pairs += [("", line) for line in lines[1:]]
    return pairs


def _webhook_fields(webhook: dict[str, Any]) -> list[tuple[str, Any]]:
    pairs: list[tuple[str, Any]] = [
        ("id", webhook["id"]),
        ("name", webhook["name"]),
        ("url", webhook["url"]),
        ("events", webhook["events"]),
        ("enabled", webhook["enabled"]),
    ]
    if webhook.get("disabled_reason"):
        pairs.append(("disabled reason", webhook["disabled_reason"]))
    pairs += [
        ("tenant", webhook["tenant_id"]),
        ("owner", webhook.get("owner_id")),
        ("description", webhook.get("description")),
        ("secret hint", webhook.get("secret_hint")),
    ]
    if webhook.get("previous_secrets_valid_until"):
        pairs.append(("old secrets valid until", webhook["previous_secrets_valid_until"]))
    pairs += _settings_fields(webhook)
    pairs += [("created", webhook.get("created_at")), ("updated", webhook.get("updated_at"))]
    return pairs


def _print_secret(webhook: dict[str, Any]) -> None:
    print()
    print(f"secret  {webhook['secret']}")
    print("        shown only this once: store it now; receivers verify signatures with it")


def webhooks_create(args: argparse.Namespace, api: ApiClient) -> None:
    body: dict[str, Any] = {
        "name": args.name,
        "url": args.url,
        "events": _event_list(args.events),
        "enabled": not args.disabled,
    }
    for field in ("description", "owner_id", "tenant_id"):
        if getattr(args, field) is not None:
            body[field] = getattr(args, field)
    body.update(_settings(args))
    if args.header:
        body["headers"] = _headers(args.header)
    created = api.post("/v1/webhooks", body)
    if args.json:
        output.as_json(created)
        return
    print(f"created webhook {created['id']}")
    output.fields(_webhook_fields(created))
    _print_secret(created)


def webhooks_list(args: argparse.Namespace, api: ApiClient) -> None:
    query = {**_tenant(args), "limit": args.limit}
    if args.all:
        page: dict[str, Any] = {"data": api.pages("/v1/webhooks", query), "next_cursor": None}
    else:
        page = api.get("/v1/webhooks", {**query, "cursor": args.cursor})
    if args.json:
        output.as_json(page)
        return
    output.table(
        ("ID", "NAME", "URL", "EVENTS", "ENABLED", "TENANT", "CREATED"),
        (
            (
                w["id"],
                w["name"],
                w["url"],
                w["events"],
                w["enabled"],
                w["tenant_id"],
                w["created_at"],
            )
            for w in page["data"]
        ),
    )
    if page.get("next_cursor"):
        print(f"more: --cursor {page['next_cursor']}  (or --all)")


def webhooks_get(args: argparse.Namespace, api: ApiClient) -> None:
    webhook = api.get(_webhook_path(args.id), _tenant(args))
    if args.json:
        output.as_json(webhook)
    else:
        output.fields(_webhook_fields(webhook))


def webhooks_update(args: argparse.Namespace, api: ApiClient) -> None:
    body: dict[str, Any] = {}
    for field in ("name", "url", "description"):
        if getattr(args, field) is not None:
            body[field] = getattr(args, field)
    if args.clear_description:
        body["description"] = None
    if args.events is not None:
        body["events"] = _event_list(args.events)
    if args.enabled is not None:
        body["enabled"] = args.enabled
    body.update(_settings(args))
    if args.header or args.remove_header:
        body["headers"] = _headers(args.header, args.remove_header)
    if not body:
        raise UsageError(
            "nothing to change: give --name, --url, --description, --events, --enable, "
            "--disable, --max-concurrency, --rate-limit, --timeout, --header or --remove-header"
        )
    webhook = api.patch(_webhook_path(args.id), body, _tenant(args))
    if args.json:
        output.as_json(webhook)
        return
    print(f"updated webhook {webhook['id']}")
    output.fields(_webhook_fields(webhook))


def webhooks_delete(args: argparse.Namespace, api: ApiClient) -> None:
    api.delete(_webhook_path(args.id), _tenant(args))
    if args.json:
        output.as_json({"deleted": args.id})
    else:
        print(f"deleted webhook {args.id} (its delivery history stays)")


def webhooks_rotate_secret(args: argparse.Namespace, api: ApiClient) -> None:
    body = {"grace_period_seconds": args.grace_period}
    webhook = api.post(_webhook_path(args.id, "rotate-secret"), body, _tenant(args))
    if args.json:
        output.as_json(webhook)
        return
    print(f"rotated the secret of webhook {webhook['id']}")
    if webhook.get("previous_secrets_valid_until"):
        print(f"the old secret keeps signing until {webhook['previous_secrets_valid_until']}")
    else:
        print("the old secret no longer signs")
    _print_secret(webhook)


def webhooks_test(args: argparse.Namespace, api: ApiClient) -> None:
    sent = api.post(_webhook_path(args.id, "test"), None, _tenant(args))
    if args.json:
        output.as_json(sent)
        return
    print(f"webhook.test event {sent['event_id']} queued as delivery {sent['delivery_id']}")
    print(f"follow it with: hookstream deliveries get {sent['delivery_id']}")


def webhooks_health(args: argparse.Namespace, api: ApiClient) -> None:
    health = api.get(_webhook_path(args.id, "health"), _tenant(args))
    if args.json:
        output.as_json(health)
        return
    rate = health.get("success_rate_24h")
    output.fields(
        [
            ("webhook", health["webhook_id"]),
            ("enabled", health["enabled"]),
            ("disabled reason", health.get("disabled_reason")),
            ("last status", health.get("last_status")),
            ("last status code", health.get("last_status_code")),
            ("last attempt", health.get("last_attempt_at")),
            ("success rate 24h", None if rate is None else f"{rate * 100:.1f}%"),
            ("attempts 24h", health.get("attempts_24h")),
            ("failing since", health.get("failing_since")),
        ]
    )


def webhooks_recover(args: argparse.Namespace, api: ApiClient) -> None:
    body: dict[str, Any] = {"since": instant(args.since)}
    if args.until is not None:
        body["until"] = instant(args.until)
    recovered = api.post(_webhook_path(args.id, "recover"), body, _tenant(args))
    if args.json:
        output.as_json(recovered)
        return
    print(f"re-queued {recovered['replayed']} failed deliveries of webhook {args.id}")
    if recovered.get("skipped"):
        print(f"skipped {recovered['skipped']} whose body is no longer stored")


# -- events -------------------------------------------------------------------------------


def _read_text(source: str, prompt: str) -> tuple[str, str]:
    """The text of `source` (a path, or - for stdin) and how to name it in an error."""
    if source == "-":
        if sys.stdin.isatty():
            print(f"reading {prompt} from stdin (end with Ctrl-D)", file=sys.stderr)
        return sys.stdin.read(), "stdin"
    try:
        return Path(source).read_text(), source
    except OSError as exc:
        raise UsageError(f"cannot read {source}: {exc.strerror or exc}") from None


def _read_json(source: str) -> Any:
    text, where = _read_text(source, "the event's JSON")
    try:
        return json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{where} is not valid JSON: {exc}") from None


# Events per `POST /v1/events/batch` (the API's limit).
BATCH_EVENTS = 500


def events_publish_batch(args: argparse.Namespace, api: ApiClient) -> None:
    events = _read_events(args.file)
    if args.tenant_id is not None:
        events = [{"tenant_id": args.tenant_id, **event} for event in events]
    results: list[dict[str, Any]] = []
    for start in range(0, len(events), BATCH_EVENTS):
        answer = api.post("/v1/events/batch", {"events": events[start : start + BATCH_EVENTS]})
        results += [{**r, "index": r["index"] + start} for r in answer["results"]]
    counts = {status: 0 for status in ("accepted", "duplicate", "in_progress", "rejected")}
    for result in results:
        counts[result["status"]] += 1
    if args.json:
        output.as_json({"results": results, **counts})
    else:
        for result in results:
            if result["status"] == "rejected":
                error = result["error"]
                print(f"event {result['index']}: rejected: {error['message']}", file=sys.stderr)
            elif result["status"] == "in_progress":
                print(
                    f"event {result['index']} ({result['id']}): being published by another "
                    "request; send it again shortly",
                    file=sys.stderr,
                )
        print(
            f"published {counts['accepted']}, already accepted {counts['duplicate']}, "
            f"in progress {counts['in_progress']}, rejected {counts['rejected']}"
        )
    if counts["rejected"] or counts["in_progress"]:
        raise UsageError(
            f"{counts['rejected'] + counts['in_progress']} of {len(results)} events not "
            "published (the others were)"
        )


def _read_events(source: str) -> list[dict[str, Any]]:
    """A JSON array of event objects, or JSON lines (one event per line)."""
    text, where = _read_text(source, "the events")
    stripped = text.strip()
    parsed: list[Any]
    if stripped.startswith("["):
        try:
            parsed = json.loads(stripped)
        except ValueError as exc:
            raise UsageError(f"{where} is not valid JSON: {exc}") from None
    else:
        parsed = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                parsed.append(json.loads(line))
            except ValueError as exc:
                raise UsageError(f"{where} line {number} is not valid JSON: {exc}") from None
    if not parsed:
        raise UsageError(f"{where} holds no events")
    events = [event for event in parsed if isinstance(event, dict)]
    if len(events) != len(parsed):
        raise UsageError("every event must be a JSON object")
    return events


def events_publish(args: argparse.Namespace, api: ApiClient) -> None:
    parsed = _read_json(args.file)
    if not isinstance(parsed, dict):
        raise UsageError("the event must be a JSON object")
    if args.type is not None:
        # The input is the event's data; the type comes from the option.
        body: dict[str, Any] = {"type": args.type, "data": parsed}
    else:
        if "type" not in parsed:
            raise UsageError(
                'the event has no "type": give {"type": ..., "data": {...}}, '
                "or pass --type and the data alone"
            )
        body = dict(parsed)
    if args.id is not None:
        body["id"] = args.id
    if args.occurred_at is not None:
        body["occurred_at"] = instant(args.occurred_at)
    if args.tenant_id is not None:
        body.setdefault("tenant_id", args.tenant_id)
    accepted = api.post("/v1/events", body)
    if args.json:
        output.as_json(accepted)
    elif accepted.get("duplicate"):
        print(f"event {accepted['id']} was already accepted; not published again")
    else:
        print(f"published event {accepted['id']} ({body['type']})")


# -- deliveries ---------------------------------------------------------------------------


def deliveries_list(args: argparse.Namespace, api: ApiClient) -> None:
    query: dict[str, str | int | None] = {
        **_tenant(args),
        "webhook_id": args.webhook_id,
        "event_type": args.event_type,
        "status": args.status,
        "since": None if args.since is None else instant(args.since),
        "until": None if args.until is None else instant(args.until),
        "limit": args.limit,
    }
    if args.all:
        page: dict[str, Any] = {"data": api.pages("/v1/deliveries", query), "next_cursor": None}
    else:
        page = api.get("/v1/deliveries", {**query, "cursor": args.cursor})
    if args.json:
        output.as_json(page)
        return
    output.table(
        ("ID", "STATUS", "ATTEMPTS", "CODE", "EVENT TYPE", "WEBHOOK", "LAST ATTEMPT", "ERROR"),
        (
            (
                d["id"],
                d["status"],
                d["attempt_count"],
                d["last_status_code"],
                d["event_type"],
                d["webhook_id"],
                d["last_attempt_at"],
                output.cell(d.get("last_error"), 40),
            )
            for d in page["data"]
        ),
    )
    if page.get("next_cursor"):
        print(f"more: --cursor {page['next_cursor']}  (or --all)")


def deliveries_get(args: argparse.Namespace, api: ApiClient) -> None:
    delivery = api.get(_delivery_path(args.id), _tenant(args))
    if args.json:
        output.as_json(delivery)
        return
    output.fields(
        [
            ("id", delivery["id"]),
            ("status", delivery["status"]),
            ("webhook", delivery["webhook_id"]),
            ("event", delivery["event_id"]),
            ("event type", delivery["event_type"]),
            ("tenant", delivery["tenant_id"]),
            ("attempts", delivery["attempt_count"]),
            ("last status code", delivery.get("last_status_code")),
            ("last error", delivery.get("last_error")),
            ("next attempt", delivery.get("next_attempt_at")),
            ("created", delivery.get("created_at")),
        ]
    )
    print()
    output.table(
        ("#", "TRIGGER", "STARTED", "OUTCOME", "CODE", "DURATION", "ERROR"),
        (
            (
                a["attempt_number"],
                a["trigger"],
                a["started_at"],
                a["outcome"],
                a["status_code"],
                f"{a['duration_ms']}ms",
                output.cell(a.get("error"), 50),
            )
            for a in delivery["attempts"]
        ),
    )
    if args.payload and delivery.get("payload") is not None:
        print()
        output.as_json(delivery["payload"])


def deliveries_replay(args: argparse.Namespace, api: ApiClient) -> None:
    replayed = api.post(_delivery_path(args.id, "replay"), None, _tenant(args))
    if args.json:
        output.as_json(replayed)
    else:
        print(
            f"replaying delivery {replayed['delivery_id']} (event {replayed['event_id']}) "
            f"as attempt {replayed['attempt']}"
        )


def _deliveries_tail(settings: SettingsFactory) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        from hookstream.client.tail import TailError, tail

        try:
            return tail(
                settings(),
                from_beginning=args.from_beginning,
                webhook_id=args.webhook_id,
                tenant_id=args.tenant_id,
                as_json=args.json,
            )
        except TailError as exc:
            _fail(str(exc))
            return EXIT_API_ERROR
        except BrokenPipeError:
            return _reader_gone()

    return handler


# -- the catalog --------------------------------------------------------------------------


def event_types(args: argparse.Namespace, api: ApiClient) -> None:
    catalog = api.get("/v1/event-types")
    if args.json:
        output.as_json(catalog)
        return
    output.table(
        ("TYPE", "CATEGORY", "PERMISSION", "DESCRIPTION"),
        (
            (t["type"], t["category"], t.get("permission"), t["description"])
            for category in catalog["categories"]
            for t in category["event_types"]
        ),
    )
    print(
        f"\nsubscribe to one type, a category (e.g. invoice.*) or * (API {catalog['api_version']})"
    )


# -- the parsers --------------------------------------------------------------------------


def delivery_settings(parser: argparse.ArgumentParser, *, update: bool) -> None:
    """The per-webhook delivery options of `webhooks create` and `webhooks update`."""
    group = parser.add_argument_group("delivery settings")

    def either(word: str, parse: Callable[[str], Any]) -> Callable[[str], Any]:
        return clearable(word, parse) if update else parse

    group.add_argument(
        "--max-concurrency",
        type=either("adaptive", whole_number),
        metavar="N|adaptive" if update else "N",
        help="most requests in flight to the webhook, 1..256 (default: adaptive"
        + ("; `adaptive` goes back to it)" if update else ")"),
    )
    group.add_argument(
        "--rate-limit",
        type=either("none", per_second),
        metavar="R|none" if update else "R",
        help="most deliveries per second, e.g. 10 or 0.5 (default: no limit"
        + ("; `none` removes it)" if update else ")"),
    )
    group.add_argument(
        "--timeout",
        dest="timeout_seconds",
        type=either("default", whole_number),
        metavar="SECONDS|default" if update else "SECONDS",
        help="seconds one attempt may take, 1..30 (default: the sender's request timeout"
        + ("; `default` goes back to it)" if update else ")"),
    )
    group.add_argument(
        "--header",
        type=header,
        action="append",
        metavar="'NAME: VALUE'",
        help="a custom header added to every request; repeatable"
        + (" (adds or replaces that header; the others stay)" if update else "")
        + ". Credential-like ones (Authorization, Cookie, *-Key, *-Token, *-Secret) are "
        "stored encrypted and shown as ********",
    )
    if update:
        group.add_argument(
            "--remove-header",
            action="append",
            metavar="NAME",
            help="remove this custom header; repeatable",
        )


def register(sub: Subparsers, settings: SettingsFactory) -> None:
    """Add the API commands to the `hookstream` parser; `settings` locates Kafka for tail."""
    api = _api_options()

    def leaf(group: Subparsers, name: str, action: ApiAction, help: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = group.add_parser(
            name, parents=[api], help=help, description=help
        )
        parser.set_defaults(handler=_api_handler(action))
        return parser

    def paging(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--limit", type=int, default=50, help="items per page (default 50)")
        parser.add_argument("--cursor", help="the next_cursor of the previous page")
        parser.add_argument("--all", action="store_true", help="follow every page")

    # webhooks
    webhooks = sub.add_parser("webhooks", help="create and manage webhooks (via the API)")
    actions = webhooks.add_subparsers(dest="action", required=True, metavar="ACTION")

    create = leaf(actions, "create", webhooks_create, "create a webhook; prints its secret once")
    create.add_argument("--name", required=True)
    create.add_argument("--url", required=True, help="https URL the events are POSTed to")
    create.add_argument(
        "--events",
        "-e",
        action="append",
        required=True,
        help="event types or patterns (invoice.paid, invoice.*, *); comma-separated or repeated",
    )
    create.add_argument("--description")
    create.add_argument("--owner-id", help="principal whose permissions filter the events")
    create.add_argument("--disabled", action="store_true", help="create it disabled")
    delivery_settings(create, update=False)

    paging(leaf(actions, "list", webhooks_list, "list webhooks, newest first"))

    for name, func, help in (
        ("get", webhooks_get, "show a webhook (its secret only as a hint)"),
        ("delete", webhooks_delete, "delete a webhook; its delivery history stays"),
        ("test", webhooks_test, "send a webhook.test event to this webhook only"),
        ("health", webhooks_health, "last status, 24 h success rate, failing since"),
    ):
        leaf(actions, name, func, help).add_argument("id", help="webhook id (wh_…)")

    update = leaf(actions, "update", webhooks_update, "change a webhook")
    update.add_argument("id", help="webhook id (wh_…)")
    update.add_argument("--name")
    update.add_argument("--url")
    update.add_argument("--description")
    update.add_argument("--clear-description", action="store_true")
    update.add_argument(
        "--events", "-e", action="append", help="replaces the subscription; comma-separated"
    )
    enabled = update.add_mutually_exclusive_group()
    enabled.add_argument("--enable", dest="enabled", action="store_const", const=True)
    enabled.add_argument("--disable", dest="enabled", action="store_const", const=False)
    delivery_settings(update, update=True)

    rotate = leaf(actions, "rotate-secret", webhooks_rotate_secret, "replace the signing secret")
    rotate.add_argument("id", help="webhook id (wh_…)")
    rotate.add_argument(
        "--grace-period",
        type=int,
        default=0,
        metavar="SECONDS",
        help="keep signing with the old secret too for this long (0..604800, default 0)",
    )

    recover = leaf(
        actions, "recover", webhooks_recover, "re-send every failed delivery in a time range"
    )
    recover.add_argument("id", help="webhook id (wh_…)")
    recover.add_argument(
        "--since", required=True, help="ISO 8601, Unix ms, or a duration ago: 30m, 2h, 7d"
    )
    recover.add_argument("--until", help="same forms as --since (default: now)")

    # events
    events = sub.add_parser("events", help="publish events (via the API)")
    event_actions = events.add_subparsers(dest="action", required=True, metavar="ACTION")
    publish = leaf(
        event_actions,
        "publish",
        events_publish,
        'publish an event: {"type": ..., "data": {...}} from a file or stdin',
    )
    publish.add_argument(
        "file", nargs="?", default="-", help="JSON file (default: stdin, also as -)"
    )
    publish.add_argument("--type", help="the event type; the JSON is then the event's data alone")
    publish.add_argument("--id", help="event id; a repeated id is accepted but not re-sent")
    publish.add_argument("--occurred-at", help="ISO 8601 (default: now)")

    batch = leaf(
        event_actions,
        "publish-batch",
        events_publish_batch,
        "publish many events: a JSON array of events, or one event per line, from a file or "
        "stdin; sent 500 at a time",
    )
    batch.add_argument(
        "file", nargs="?", default="-", help="JSON or JSON-lines file (default: stdin, also as -)"
    )

    # deliveries
    deliveries = sub.add_parser("deliveries", help="the delivery log: list, inspect, replay, tail")
    delivery_actions = deliveries.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = leaf(delivery_actions, "list", deliveries_list, "list deliveries, newest first")
    listing.add_argument("--webhook-id")
    listing.add_argument("--event-type")
    listing.add_argument("--status", choices=["succeeded", "retrying", "failed", "skipped"])
    listing.add_argument("--since", help="first attempt at or after: ISO 8601, Unix ms, or 2h")
    listing.add_argument("--until", help="first attempt before: same forms as --since")
    paging(listing)

    get = leaf(delivery_actions, "get", deliveries_get, "show a delivery and every attempt")
    get.add_argument("id", help="delivery id (dlv_…)")
    get.add_argument("--payload", action="store_true", help="also print the request body")

    replay = leaf(
        delivery_actions, "replay", deliveries_replay, "send a delivery again (same webhook-id)"
    )
    replay.add_argument("id", help="delivery id (dlv_…)")

    follow = delivery_actions.add_parser(
        "tail",
        help="follow the delivery-log topic in Kafka: one line per attempt",
        description="Follow the delivery-log topic directly from Kafka (no API key; the broker "
        "from HOOKSTREAM_KAFKA_BOOTSTRAP_SERVERS or the local one). One line per attempt: "
        "time, outcome, status, webhook, event type, delivery id, duration, attempt number "
        "and trigger, error.",
    )
    follow.add_argument(
        "--from-beginning", action="store_true", help="start at the oldest retained attempt"
    )
    follow.add_argument("--webhook-id", help="only this webhook's attempts")
    follow.add_argument("--tenant-id", help="only this tenant's attempts")
    follow.add_argument("--json", action="store_true", help="one JSON object per line")
    follow.set_defaults(handler=_deliveries_tail(settings))

    # the catalog
    catalog = sub.add_parser(
        "event-types",
        parents=[api],
        help="the event types webhooks can subscribe to",
        description="The event-type catalog, by category.",
    )
    catalog.set_defaults(handler=_api_handler(event_types))
