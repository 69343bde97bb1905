"""Checks on what a client asks for that need the catalog or the network."""

from __future__ import annotations

from collections.abc import Sequence

from hookstream.api.context import Api
from hookstream.api.errors import ApiError, invalid
from hookstream.endpoints.destinations import check_url


def check_subscription(api: Api, events: Sequence[str]) -> None:
    unknown = api.catalog.unknown(events)
    if unknown:
        raise ApiError(
            422,
            "unknown_event_types",
            f"unknown event type(s): {', '.join(unknown)}",
            [{"field": "events", "message": "unknown event type", "unknown": unknown}],
        )


def check_event_type(api: Api, event_type: str) -> None:
    if api.catalog.get(event_type) is None:
        raise ApiError(
            422,
            "unknown_event_type",
            f"unknown event type: {event_type}",
            [{"field": "type", "message": "unknown event type", "unknown": [event_type]}],
        )


async def check_destination(api: Api, url: str) -> None:
    """422 with the reason when `url` is not a public https URL (or an allowed private one)."""
    # Plain http is refused except to allow-listed networks, which check_url permits itself.
    reason = await api.blocking(check_url, url, api.settings.private_networks, False)
    if reason is not None:
        raise invalid("url", reason)
