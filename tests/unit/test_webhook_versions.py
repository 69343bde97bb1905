"""Optimistic concurrency on the webhooks topic (core.versions), as a model of the whole log.

Writers with stale reads race on a few webhooks; their records are fed, in log order, through
the views' real per-record boundary (`CompactedView._apply`, with `confluent_kafka.Message`
records). The properties: no write is applied unless it was based on the state it replaces
(no lost update), a deleted webhook never comes back, every writer learns the truth about its
own record, and a view read after compaction ends where the live views are.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from confluent_kafka import TIMESTAMP_CREATE_TIME, Message
from hypothesis import given, settings
from hypothesis import strategies as st

from hookstream.core.codec import Codec
from hookstream.core.records import StoredSecret, Webhook, WebhookSecret
from hookstream.core.settings import Settings
from hookstream.core.versions import admits, tombstone_headers
from hookstream.core.view import CompactedView, webhook_view

TOPIC = "versions.webhooks"
KEYS = ("wh_a", "wh_b")
CODEC = Codec.load()


@dataclass(frozen=True)
class Written:
    key: str
    value: bytes | None
    headers: list[tuple[str, bytes]] | None
    based_on: Webhook | None  # the state the writer read (None for a create)
    settle: bool = False


def _view() -> CompactedView[Webhook]:
    return webhook_view(Settings(), CODEC, TOPIC, None)


def _message(offset: int, record: Written) -> Message:
    return Message(
        topic=TOPIC,
        partition=0,
        offset=offset,
        key=record.key.encode(),
        value=record.value,
        headers=record.headers,
    )


def _created(key: str) -> Webhook:
    secret = WebhookSecret(StoredSecret(f"enc:{key}:0"))
    return Webhook(key, "ten_1", "first", "https://example.com/h", ("*",), (secret,), version=1)


# One writer's step: which key, how stale its read is (records back from the end of the log),
# and what it does with what it read.
ACTIONS = ("rename", "rotate", "disable", "delete", "legacy")
steps = st.lists(
    st.tuples(st.sampled_from(KEYS), st.integers(0, 6), st.sampled_from(ACTIONS)),
    max_size=30,
)


def _write(action: str, read: Webhook, n: int) -> Written | None:
    """What a writer following the protocol writes after reading `read`."""
    if action == "rename":
        record: Webhook | None = read.next_version(n, name=f"name-{n}")
    elif action == "rotate":
        secret = WebhookSecret(StoredSecret(f"enc:{read.id}:{n}"))
        record = read.next_version(n, secrets=(secret,))
    elif action == "disable":
        if not read.enabled:
            return None  # machine writers only change what they own, on an enabled webhook
        record = read.disabled(f"410 #{n}", n)
    elif action == "legacy":
        # A process from before versions: writes version 0 whatever it read.
        record = replace(read, name=f"legacy-{n}", version=0)
    else:
        record = None
    if record is None:
        return Written(read.id, None, tombstone_headers(read.version), read)
    return Written(read.id, CODEC.write(record), None, read)


def _settle(view: CompactedView[Webhook], key: str) -> Written:
    held = view.get(key)
    return Written(key, None if held is None else CODEC.write(held), None, held, settle=True)


def _run(log: list[Written]) -> CompactedView[Webhook]:
    view = _view()
    for offset, record in enumerate(log):
        view._apply(_message(offset, record))
    return view


@settings(max_examples=300, deadline=None)
@given(steps, st.data())
def test_racing_writers_converge_without_lost_updates(
    history: list[tuple[str, int, str]], data: st.DataObject
) -> None:
    log = [Written(key, CODEC.write(_created(key)), None, None) for key in KEYS]
    live = _view()
    # The state each key had after each offset: what a stale reader at that point read.
    states: list[dict[str, Webhook | None]] = []
    legacy_seen: set[str] = set()
    deleted: set[str] = set()

    def apply(record: Written) -> bool:
        offset = len(states)
        before = live.get(record.key)
        with live.verdicts(record.key) as verdicts:
            live._apply(_message(offset, record))
        applied = verdicts[(0, offset)]
        after = live.get(record.key)
        # Never applied blindly: a write lands only on the version it was based on (a
        # tombstone of a deleted key changes nothing). A legacy (version 0) writer cannot
        # state one: it is applied only before the key's first versioned write.
        versioned = record.value is None or CODEC.read(Webhook, record.value).version != 0
        if applied and not record.settle and before is not None and versioned:
            assert before == record.based_on
        if not applied:
            assert after == before
        if record.key in deleted:
            assert after is None  # never resurrected
        if record.value is None and applied:
            deleted.add(record.key)
        states.append({key: live.get(key) for key in KEYS})
        return applied

    for record in log:
        assert apply(record)
    for n, (key, stale, action) in enumerate(history, start=2):
        read = states[max(0, len(states) - 1 - stale)][key]
        if read is None:
            continue
        if action == "legacy":
            legacy_seen.add(key)
        record = _write(action, read, n)
        if record is not None:
            log.append(record)
            apply(record)
    # The API's upkeep: a key whose last record was refused gets the held state written
    # after it.
    for key in live.unsettled(older_than=-1):
        log.append(_settle(live, key))
        assert apply(log[-1])
    assert live.unsettled(older_than=-1) == []

    # Every other live view reads the same log and holds the same.
    assert {k: _run(log).get(k) for k in KEYS} == {k: live.get(k) for k in KEYS}

    # Compaction up to a cut point, at any point where the last record of every key in the
    # prefix is one the views applied (min.compaction.lag.ms is far longer than settling):
    # the prefix keeps the last record per key, and a fresh view reads it, then the rest.
    applied_last = [
        i
        for i in range(len(log))
        if all(_last_applied(log[: i + 1], states, key) for key in KEYS if _has(log[: i + 1], key))
    ]
    cut = data.draw(st.sampled_from(applied_last)) + 1
    prefix: dict[str, Written] = {}
    for record in log[:cut]:
        prefix[record.key] = record
    compacted = [*prefix.values(), *log[cut:]]
    fresh = _run(compacted)
    assert {k: fresh.get(k) for k in KEYS} == {k: live.get(k) for k in KEYS}


def _has(log: list[Written], key: str) -> bool:
    return any(record.key == key for record in log)


def _last_applied(prefix: list[Written], states: list[dict[str, Webhook | None]], key: str) -> bool:
    """Whether the last record of `key` in `prefix` is what the view held after it."""
    index = max(i for i, record in enumerate(prefix) if record.key == key)
    held = states[index][key]
    value = prefix[index].value
    return (held is None) if value is None else (held == CODEC.read(Webhook, value))


def test_stale_write_is_refused_and_its_writer_learns_it() -> None:
    first = _created("wh_a")
    renamed = first.next_version(5, name="renamed")
    stale_rotation = first.next_version(6, secrets=())
    log = [
        Written("wh_a", CODEC.write(first), None, None),
        Written("wh_a", CODEC.write(renamed), None, first),
        Written("wh_a", CODEC.write(stale_rotation), None, first),
    ]
    view = _view()
    with view.verdicts("wh_a") as verdicts:
        for offset, record in enumerate(log):
            view._apply(_message(offset, record))
    assert verdicts == {(0, 0): True, (0, 1): True, (0, 2): False}
    assert view.get("wh_a") == renamed
    assert view.unsettled(older_than=-1) == ["wh_a"]


def test_admits_rules() -> None:
    held = _created("wh_a")
    assert admits(None, False, held)
    assert not admits(None, True, held)  # deleted stays deleted
    assert admits(held, False, held)  # the same state again (settling)
    assert admits(held, False, held.next_version(1))
    assert not admits(held, False, held.next_version(1).next_version(2))
    assert not admits(held.next_version(1), False, held.next_version(2, name="other"))
    assert admits(held, False, None, held.version)
    assert not admits(held.next_version(1), False, None, held.version)
    assert admits(held, False, None, None)  # a tombstone from before versions


def _at(offset: int, key: str, value: bytes | None, headers: Any, at_ms: int) -> Message:
    return Message(
        topic=TOPIC,
        partition=0,
        offset=offset,
        key=key.encode(),
        value=value,
        headers=headers,
        timestamp=(TIMESTAMP_CREATE_TIME, at_ms),
    )


HOUR_MS = 3_600_000


def test_a_view_remembers_a_deletion_as_long_as_the_topic_keeps_its_tombstone() -> None:
    live = _view()
    first = _created("wh_gone")
    stale_copy = CODEC.write(first.disabled("410", 1))
    t0 = 1_700_000_000_000
    live._apply(_at(0, "wh_gone", CODEC.write(first), None, t0))
    live._apply(_at(1, "wh_gone", None, tombstone_headers(first.version), t0 + 1))
    # An hour later, a machine writer's stale copy: refused, the webhook stays deleted.
    live._apply(_at(2, "wh_gone", stale_copy, None, t0 + HOUR_MS))
    assert live.get("wh_gone") is None
    # A day and more of other deletions later, the tombstone may be gone from the topic, and
    # the view has forgotten it too: its memory of deletions is bounded by that retention.
    for n in range(1, 200):
        other = _created(f"wh_other_{n}")
        at = t0 + 25 * HOUR_MS + n
        live._apply(_at(2 + 2 * n, other.id, CODEC.write(other), None, at))
        live._apply(_at(3 + 2 * n, other.id, None, tombstone_headers(other.version), at))
    assert "wh_gone" not in live._deleted
    assert len(live._deleted) == 199
    # So a copy arriving then is judged as a view started anew judges it, reading a topic
    # the cleaner has left with only that copy of the key.
    late = _at(1_000, "wh_gone", stale_copy, None, t0 + 26 * HOUR_MS)
    fresh = _view()
    live._apply(late)
    fresh._apply(late)
    assert live.get("wh_gone") == fresh.get("wh_gone")
