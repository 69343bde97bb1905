"""Optimistic concurrency for the compacted `webhooks` topic.

Several processes write whole webhook records: every API replica, the sender (disable on
410), the log-sink (auto-disable) and `hookstream secrets reencrypt`. Each write states the
version it was based on by carrying that version + 1; a tombstone carries the version it
deletes in a header. Every view applies the same pure rule (`admits`) to the same log in the
same order, so every view ends in the same state, and a writer learns from its own view
whether its record won (`CompactedView.verdicts`). A refused record is still in the log:
`CompactedView.unsettled` names such keys and the API writes the state the views hold after
it, so the last record of every key is one the views applied, which is what compaction keeps
(see docs/operating.md, "Concurrent writers").
"""

from __future__ import annotations

from collections.abc import Sequence

from hookstream.core.records import Webhook

VERSION_HEADER = "hookstream-version"

Headers = Sequence[tuple[str, bytes | str | None]]


def tombstone_headers(version: int) -> list[tuple[str, bytes]]:
    """The headers of a tombstone that deletes `version` of a webhook."""
    return [(VERSION_HEADER, str(version).encode("ascii"))]


def tombstone_version(headers: Headers | None) -> int | None:
    """The version a tombstone deletes; None when it does not say (an older writer)."""
    for name, value in headers or ():
        if name != VERSION_HEADER or value is None:
            continue
        raw = value.decode("ascii", "replace") if isinstance(value, bytes) else value
        try:
            return int(raw)
        except ValueError:
            return None
    return None


def admits(
    held: Webhook | None,
    deleted: bool,
    incoming: Webhook | None,
    deletes_version: int | None = None,
) -> bool:
    """Whether a view holding `held` for a key applies the next record of that key.

    `deleted`: the view has applied a tombstone of this key (webhook ids are never reused, so
    a deleted webhook stays deleted). `incoming` is None for a tombstone, which then deletes
    `deletes_version` (None: the writer did not say).
    """
    if incoming is None:
        return held is None or deletes_version is None or deletes_version == held.version
    if held is None:
        # A machine writer's copy landing after a delete would resurrect the webhook.
        return not deleted
    if incoming == held:
        return True  # the same state written again (a settling write): changes nothing
    if incoming.version == 0:
        # Written by a process from before versions: applied while the key has no versioned
        # write yet, as it always was.
        return held.version == 0
    return incoming.version == held.version + 1
