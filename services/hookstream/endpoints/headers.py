"""Custom headers a webhook adds to its requests: which names and values are allowed.

Checked where a webhook is written (the API answers 422 naming the header) and again where a
request is built: a record written to the topic by another producer must not override what
hookstream itself sends (the signature headers above all), nor smuggle a second header line.
"""

from __future__ import annotations

import re

# Headers one webhook may carry (Svix and Outpost allow about as many).
MAX_HEADERS = 20
MAX_VALUE_CHARS = 4096
MAX_NAME_CHARS = 256

# RFC 9110 §5.6.2: a field name is a token.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# A field value as sent: visible ASCII, spaces and tabs inside, none at either end; above all no
# CR, LF or NUL, which would end the line and start another header.
_VALUE = re.compile(r"[\x21-\x7e]([\x20-\x7e\t]*[\x21-\x7e])?")

# What hookstream sets itself (the Standard Webhooks headers, the body's framing, the client)
# and what belongs to the connection rather than to the request.
_RESERVED = frozenset(
    {
        "content-type",
        "content-length",
        "content-encoding",
        "host",
        "user-agent",
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "expect",
        "traceparent",
        "tracestate",
    }
)
_RESERVED_PREFIXES = ("webhook-", "proxy-")

# Credential-like names: their values are encrypted at rest and redacted on read.
_SENSITIVE = frozenset({"authorization", "cookie"})
_SENSITIVE_SUFFIXES = ("-key", "-token", "-secret")


def is_reserved(name: str) -> bool:
    lowered = name.lower()
    return lowered in _RESERVED or lowered.startswith(_RESERVED_PREFIXES)


def is_sensitive(name: str) -> bool:
    lowered = name.lower()
    return lowered in _SENSITIVE or lowered.endswith(_SENSITIVE_SUFFIXES)


def split_header_line(line: str) -> tuple[str, str] | None:
    """`Name: value`, as the CLI and the console take a custom header, as (name, value)
    without the spaces and tabs around each; None without a colon or a name. Whether the
    name and the value may be sent is for `name_problem` and `value_problem` to say."""
    name, colon, value = line.partition(":")
    name, value = name.strip(" \t"), value.strip(" \t")
    return (name, value) if colon and name else None


def name_problem(name: str) -> str | None:
    """Why `name` cannot be a custom header, or None."""
    if not name or len(name) > MAX_NAME_CHARS or _TOKEN.fullmatch(name) is None:
        return (
            f"header name {name[:MAX_NAME_CHARS]!r} is not a valid field name "
            f"(RFC 9110 token characters, 1-{MAX_NAME_CHARS} of them)"
        )
    if is_reserved(name):
        return f"header {name!r} is set by hookstream itself and cannot be overridden"
    return None


def value_problem(name: str, value: str) -> str | None:
    """Why `value` cannot be sent as header `name`, or None."""
    if len(value) > MAX_VALUE_CHARS:
        return f"value of header {name!r} is longer than {MAX_VALUE_CHARS} characters"
    if _VALUE.fullmatch(value) is None:
        return (
            f"value of header {name!r} must be visible ASCII, with spaces or tabs only "
            "between characters (no line breaks, no control characters, not empty)"
        )
    return None
