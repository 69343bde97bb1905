"""Opaque keyset cursors for newest-first delivery pages."""

from __future__ import annotations

import base64
import binascii
import json

from hookstream.store.errors import InvalidCursorError

# Far above any real cursor; bounds the work an attacker-supplied string can cause.
MAX_CURSOR_LENGTH = 512
_MALFORMED = "malformed cursor: pass back the next_cursor of a previous page unchanged"


def encode_cursor(created_at_ms: int, delivery_id: str) -> str:
    raw = json.dumps([created_at_ms, delivery_id], separators=(",", ":")).encode()
    # Padding is dropped so the cursor needs no escaping in a query string.
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    """The (created_at_ms, delivery_id) of the last row of the previous page."""
    if len(cursor) > MAX_CURSOR_LENGTH:
        raise InvalidCursorError(_MALFORMED)
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (UnicodeError, binascii.Error, ValueError) as exc:
        raise InvalidCursorError(_MALFORMED) from exc
    if (
        not isinstance(value, list)
        or len(value) != 2
        or type(value[0]) is not int
        # Out of BIGINT range would surface as a database error instead of a client one.
        or not -(2**63) <= value[0] < 2**63
        or not isinstance(value[1], str)
    ):
        raise InvalidCursorError(_MALFORMED)
    return value[0], value[1]
