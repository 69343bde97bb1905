"""What an HTTP attempt means for the delivery, and when the next attempt happens. Pure logic."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime

from hookstream.core.records import Outcome

# Only these statuses carry a Retry-After worth honouring (RFC 9110 §10.2.3 usage).
RETRY_AFTER_STATUSES = frozenset({429, 503})


@dataclass(frozen=True, slots=True)
class HttpResult:
    status_code: int | None
    duration_ms: int
    error: str | None = None
    response_body: str | None = None
    # Seconds the receiver asked us to wait; None when the header is absent or unparsable.
    retry_after: float | None = None
    # The destination is not allowed (SSRF guard); no request left the process.
    refused: bool = False


def classify(result: HttpResult) -> Outcome:
    """The SPEC outcome table. 410 is permanent; the caller also disables the webhook."""
    if result.refused:
        # A forbidden destination stays forbidden: retrying would only repeat the refusal.
        return Outcome.REFUSED
    status = result.status_code
    if status is None or result.error is not None:
        # No response, or one that did not arrive complete within the timeout (a body that
        # never ends, or broke off): whatever its status line said, the exchange failed.
        return Outcome.TEMPORARY_FAILURE
    if 200 <= status < 300:
        return Outcome.SUCCESS
    if status in (408, 429):
        return Outcome.TEMPORARY_FAILURE
    if 400 <= status < 500:
        return Outcome.PERMANENT_FAILURE
    # 3xx (redirects are never followed), 5xx, and anything non-standard may heal by itself.
    return Outcome.TEMPORARY_FAILURE


def retry_delay(
    schedule: Sequence[float],
    attempt_number: int,
    jitter: float,
    retry_after: float | None,
    status_code: int | None,
    rng: random.Random,
) -> float | None:
    """Seconds before the attempt after `attempt_number` (1-based), or None when exhausted.

    Without a usable Retry-After the delay is the scheduled one, jittered uniformly within
    ±jitter. A Retry-After on 429/503 replaces it, clamped to [scheduled, 2 * scheduled], and
    is not jittered: the receiver named a time, and the clamp already bounds it. Either way the
    result lies in [scheduled * (1 - jitter), 2 * scheduled].
    """
    if attempt_number < 1:
        raise ValueError(f"attempt_number is 1-based, got {attempt_number}")
    if not 0.0 <= jitter < 1.0:
        raise ValueError(f"jitter must be in [0, 1), got {jitter}")
    if attempt_number > len(schedule):
        return None
    base = max(0.0, float(schedule[attempt_number - 1]))
    if retry_after is not None and status_code in RETRY_AFTER_STATUSES:
        return min(max(retry_after, base), 2.0 * base)
    return max(0.0, base * (1.0 + rng.uniform(-jitter, jitter)))


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds from `now` (Unix time) named by a Retry-After value: delta-seconds or HTTP-date."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        # HTTP-dates are GMT by definition; the asctime form simply omits the zone.
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)
