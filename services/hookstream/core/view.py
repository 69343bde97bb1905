"""In-memory views of the compacted `webhooks` and `principals` topics.

Every service keeps its own copy: a background thread reads the topic from the beginning
(no consumer group offsets), applies upserts and tombstones, and keeps following it.
`wait_ready` returns once every partition has been read to its end, so a service never
routes or sends against a half-loaded view.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Generic, TypeVar

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    IsolationLevel,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, OffsetSpec

from hookstream.core.codec import Codec
from hookstream.core.deadletter import (
    PROCESS_ERRORS,
    DeadLetterSink,
    ProcessError,
    RejectedRecord,
    refuse,
)
from hookstream.core.kafka import (
    admin_client,
    appended_at_ms,
    consumer_config,
    header_pairs,
    topic_metadata,
)
from hookstream.core.records import Principal, Webhook
from hookstream.core.settings import Settings
from hookstream.core.topics import WEBHOOKS_DELETE_RETENTION_MS
from hookstream.core.versions import Headers, admits, tombstone_version

log = logging.getLogger(__name__)

T = TypeVar("T")

ChangeHandler = Callable[[str, T | None], None]
DeathHandler = Callable[[BaseException], None]
# (held, key deleted before, incoming or None for a tombstone, the record's headers) -> apply?
Admit = Callable[[T | None, bool, T | None, Headers], bool]


class ViewNotReadyError(Exception):
    """The view did not reach the end of its topic in time."""


class CompactedView(Generic[T]):
    """A dict of the latest value per key of a compacted topic, kept current by a thread."""

    def __init__(
        self,
        settings: Settings,
        topic: str,
        decode: Callable[[bytes], T],
        on_change: ChangeHandler[T] | None = None,
        dead_letters: DeadLetterSink | None = None,
        key_of: Callable[[T], str] | None = None,
        admit: Admit[T] | None = None,
    ) -> None:
        self._settings = settings
        self._topic = topic
        self._decode = decode
        self._on_change = on_change
        self._dead_letters = dead_letters
        self._key_of = key_of
        self._items: dict[str, T] = {}
        # With `admit` (optimistic concurrency, core.versions): keys a tombstone deleted, and
        # keys whose latest record was refused, with when (monotonic s), until a record of
        # theirs is applied again.
        self._admit = admit
        # Deleted key -> when (record time, ms), oldest first; forgotten after the topic's
        # tombstone retention, when a view started anew would not know it either.
        self._deleted: dict[str, int] = {}
        self._unsettled: dict[str, float] = {}
        # Open `verdicts` of writers waiting to learn whether their record was applied.
        self._verdicts: dict[str, list[dict[tuple[int, int], bool]]] = {}
        # Held while applying a change; callers that need a consistent snapshot hold it too.
        self.lock = threading.RLock()
        self._applied = threading.Condition(self.lock)
        self._next_offsets: dict[int, int] = {}
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        # Told, on the view's thread, what stopped it: a service waits on this, not on a poll.
        self._death_lock = threading.Lock()
        self._on_death: list[DeathHandler] = []
        self._partitions: list[int] = []
        # End-offset queries for `sync`, made on the caller's thread with a client of their
        # own: the view's thread may sit in a 200 ms poll, which a sync should not wait out.
        self._sync_lock = threading.Lock()
        self._end_offsets: AdminClient | None = None
        # When the end offsets of the latest completed sync were read (Unix ms).
        self.synced_at_ms = 0
        self._thread = threading.Thread(target=self._run, name=f"view:{topic}", daemon=True)

    @property
    def topic(self) -> str:
        return self._topic

    def start(self) -> CompactedView[T]:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        with self._sync_lock:
            self._end_offsets = None

    def wait_ready(self, timeout: float = 60.0) -> None:
        if not self._ready.wait(timeout):
            raise ViewNotReadyError(f"{self._topic} was not read to its end within {timeout} s")
        if self._error is not None:
            raise self._error

    def wait_for_offset(self, partition: int, offset: int, timeout: float = 10.0) -> bool:
        """Block until the record at `offset` of `partition` is applied (read-your-writes)."""
        deadline = time.monotonic() + timeout
        with self._applied:
            while self._next_offsets.get(partition, 0) <= offset:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._applied.wait(remaining)
        return True

    def sync(self, timeout: float = 5.0) -> bool:
        """Block until every record on the topic now has been applied.

        For a key that is unknown right after it was written elsewhere (e.g. a webhook created
        a moment ago): after `sync`, absence means deleted, not "not read yet". Afterwards
        `synced_at_ms` is a moment before which every acknowledged write is applied.
        """
        return sync_views([self], timeout)

    def _end_offsets_client(self) -> AdminClient:
        """The client of this view's end-offset queries; callers hold `_sync_lock`."""
        if self._end_offsets is None:
            self._end_offsets = admin_client(self._settings)
        return self._end_offsets

    def _wait_applied(self, targets: dict[int, int], deadline: float, read_at_ms: int) -> bool:
        """Block until every partition's `targets` offset is applied, or until `deadline`."""
        with self._applied:
            while any(self._next_offsets.get(p, 0) < high for p, high in targets.items()):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stop.is_set():
                    return False
                self._applied.wait(remaining)
            self.synced_at_ms = max(self.synced_at_ms, read_at_ms)
        return True

    def check(self) -> None:
        """Raise what stopped the view's thread, if anything did: it no longer follows."""
        if self._error is not None:
            raise ProcessError(f"the view of {self._topic} stopped: {self._error}") from (
                self._error
            )

    def when_dead(self, handler: DeathHandler) -> None:
        """Call `handler(error)` once an error stops the view's thread (at once if one has).

        It runs on the view's thread: a handler only signals (sets an event, wakes a loop).
        """
        with self._death_lock:
            error = self._error
            if error is None:
                self._on_death.append(handler)
                return
        handler(error)

    def get(self, key: str) -> T | None:
        return self._items.get(key)

    @contextlib.contextmanager
    def verdicts(self, key: str) -> Iterator[dict[tuple[int, int], bool]]:
        """While open: (partition, offset) -> applied, for every record of `key` this view
        reads. A writer opens it before producing and looks up its own record's offset after
        `wait_for_offset`: whether its write won, not merely whether the view moved on.
        """
        seen: dict[tuple[int, int], bool] = {}
        with self.lock:
            self._verdicts.setdefault(key, []).append(seen)
        try:
            yield seen
        finally:
            with self.lock:
                open_ = self._verdicts.get(key, [])
                open_.remove(seen)
                if not open_:
                    self._verdicts.pop(key, None)

    def unsettled(self, older_than: float) -> list[str]:
        """Keys whose latest record this view refused at least `older_than` seconds ago.

        That record is still the last of its key in the log, and compaction keeps the last:
        a view read after compaction would apply it. Writing the state the views hold after
        it (`settle`) makes the log's last record one every view applied.
        """
        cutoff = time.monotonic() - older_than
        with self.lock:
            return [key for key, since in self._unsettled.items() if since <= cutoff]

    def values(self) -> list[T]:
        with self.lock:
            return list(self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def _run(self) -> None:
        try:
            self._consume()
        except BaseException as exc:  # surfaced to the service through wait_ready
            log.exception("view of %s failed", self._topic)
            with self._death_lock:
                self._error = exc
                handlers = list(self._on_death)
            self._ready.set()
            for handler in handlers:
                handler(exc)

    def _consume(self) -> None:
        config = consumer_config(
            self._settings,
            # Views assign partitions themselves; the group id only satisfies librdkafka.
            f"view-{uuid.uuid4().hex[:8]}",
            {"enable.auto.commit": False, "enable.partition.eof": True},
        )
        consumer = Consumer(config)
        try:
            metadata = topic_metadata(consumer, self._topic, timeout=30)
            topic_meta = metadata.topics.get(self._topic)
            if topic_meta is None or topic_meta.error is not None:
                raise ViewNotReadyError(f"topic {self._topic} does not exist")
            partitions = sorted(topic_meta.partitions)
            self._partitions = partitions
            consumer.assign([TopicPartition(self._topic, p, OFFSET_BEGINNING) for p in partitions])
            assigned = [TopicPartition(self._topic, p) for p in partitions]
            at_end: set[int] = set()
            while not self._stop.is_set():
                messages = consumer.consume(num_messages=500, timeout=0.2)
                # Applied as one step with the positions after them, so that whoever holds
                # the lock sees a record applied only together with the markers past it.
                with self._applied:
                    for message in messages:
                        error = message.error()
                        if error is not None:
                            if error.code() == KafkaError._PARTITION_EOF:
                                self._reached_end(message)
                                at_end.add(message.partition() or 0)
                                if len(at_end) == len(partitions):
                                    self._ready.set()
                                continue
                            log.warning("view of %s: %s", self._topic, error)
                            continue
                        self._apply(message)
                    self._moved_past(consumer.position(assigned))
        finally:
            consumer.close()

    def _apply(self, message: Message) -> None:
        """Apply one record: the per-record boundary of every view.

        A record that cannot be applied (no key, undecodable, a key that is not the id it
        carries, a change handler that raised) is skipped with a dead letter and the view
        keeps what it had for that key; it never stops the view or a service's start-up.
        """
        headers = header_pairs(message)  # once: see header_pairs
        with self._applied:
            try:
                self._apply_change(message, headers)
            except PROCESS_ERRORS:
                raise
            except Exception as exc:
                if self._dead_letters is not None:
                    self._dead_letters.refuse(message, exc, headers)
                else:
                    refuse(self._topic, message, headers, exc)  # logged only
            self._next_offsets[message.partition() or 0] = (message.offset() or 0) + 1
            self._applied.notify_all()

    def _reached_end(self, message: Message) -> None:
        """The consumer is at the end of a partition: everything below is applied.

        The end can lie past the last record applied: transaction markers (a platform that
        publishes transactionally) and aborted records take offsets no consumer is given.
        The end-of-partition event carries the position, so a sync waiting for the end
        offset a read_committed reader sees is not left waiting for records that never come.
        """
        partition, offset = message.partition() or 0, message.offset()
        if offset is None or offset <= self._next_offsets.get(partition, 0):
            return
        with self._applied:
            self._next_offsets[partition] = offset
            self._applied.notify_all()

    def _moved_past(self, positions: list[TopicPartition]) -> None:
        """Count what the consumer has moved past as applied; callers hold the lock.

        Its position passes transaction markers and aborted records as soon as the fetch
        that held them is handled: the end offset a read_committed sync waits for counts
        them, and no record ever shows them. (The end-of-partition event would too, but only
        after another fetch has waited out the broker's long poll.)
        """
        moved = False
        for position in positions:
            if position.offset > self._next_offsets.get(position.partition, 0):
                self._next_offsets[position.partition] = position.offset
                moved = True
        if moved:
            self._applied.notify_all()

    def _apply_change(self, message: Message, headers: Headers) -> None:
        raw_key = message.key()
        if not isinstance(raw_key, bytes):
            raise RejectedRecord("missing_key", "compacted topic records need a key")
        key = raw_key.decode("utf-8", "replace")
        value = message.value()
        previous = self._items.get(key)
        item = None if value is None else self._decode(value)
        if item is not None and self._key_of is not None and self._key_of(item) != key:
            raise RejectedRecord(
                "key_mismatch", f"record key {key!r} is not the id {self._key_of(item)!r} it holds"
            )
        applied = self._admit is None or self._admit(previous, key in self._deleted, item, headers)
        self._tell_writers(key, message, applied)
        if not applied:
            # A write based on a stale read, or a copy of a deleted webhook: the view keeps
            # what it holds. Not an error of the record's producer to dead-letter.
            log.info(
                "view of %s: %s[%s]@%s for %s is based on a stale version; not applied",
                self._topic,
                message.topic(),
                message.partition(),
                message.offset(),
                key,
            )
            self._unsettled.setdefault(key, time.monotonic())
            return
        self._unsettled.pop(key, None)
        if item is None:
            self._items.pop(key, None)
            if self._admit is not None:
                self._remember_deleted(key, message)
            self._notify(key, None, previous)
            return
        self._items[key] = item
        self._notify(key, item, previous)

    def _remember_deleted(self, key: str, message: Message) -> None:
        at = appended_at_ms(message) or int(time.time() * 1000)
        self._deleted.pop(key, None)
        self._deleted[key] = at
        # Oldest first (record times of one topic, near enough in order): drop from the front.
        cutoff = at - WEBHOOKS_DELETE_RETENTION_MS
        while self._deleted:
            oldest = next(iter(self._deleted))
            if self._deleted[oldest] >= cutoff:
                break
            del self._deleted[oldest]

    def _tell_writers(self, key: str, message: Message, applied: bool) -> None:
        for seen in self._verdicts.get(key, ()):
            seen[(message.partition() or 0, message.offset() or 0)] = applied

    def _notify(self, key: str, item: T | None, previous: T | None) -> None:
        if self._on_change is None:
            return
        try:
            self._on_change(key, item)
        except BaseException:
            # Keep the view and whatever the handler maintains (the router's index) on the
            # last change that applied cleanly.
            if previous is None:
                self._items.pop(key, None)
            else:
                self._items[key] = previous
            with contextlib.suppress(Exception):
                self._on_change(key, previous)
            raise


def sync_views(views: Sequence[CompactedView[Any]], timeout: float = 5.0) -> bool:
    """`sync` of every view in `views` at once: one end-offset request for all their topics.

    The router catches its views up before each transaction; one round trip instead of one
    per view is latency every event at light load pays. Asked with the first view's client.
    """
    deadline = time.monotonic() + timeout
    if not all(view._ready.wait(max(0.0, deadline - time.monotonic())) for view in views):
        return False
    # Taken before the end offsets are read, so every write acknowledged before it lies
    # below them.
    read_at_ms = int(time.time() * 1000)
    first = views[0]
    latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]
    asked = {
        TopicPartition(view.topic, partition): latest
        for view in views
        for partition in view._partitions
    }
    targets: dict[str, dict[int, int]] = {view.topic: {} for view in views}
    with first._sync_lock:
        if any(view._stop.is_set() for view in views):
            return False
        client = first._end_offsets_client()
        try:
            answers = client.list_offsets(
                asked,
                isolation_level=IsolationLevel.READ_COMMITTED,
                request_timeout=max(0.1, deadline - time.monotonic()),
            )
            for tp, answer in answers.items():
                targets[tp.topic][tp.partition] = answer.result().offset
        except KafkaException as exc:
            topics = ", ".join(view.topic for view in views)
            log.warning("views of %s: reading end offsets: %s", topics, exc)
            return False
        finally:
            client.poll(0)  # hands its log lines over (see core.kafka)
    return all(view._wait_applied(targets[view.topic], deadline, read_at_ms) for view in views)


def webhook_view(
    settings: Settings,
    codec: Codec,
    topic: str,
    dead_letters: DeadLetterSink | None,
    on_change: ChangeHandler[Webhook] | None = None,
) -> CompactedView[Webhook]:
    def decode(value: bytes) -> Webhook:
        return codec.read(Webhook, value)

    return CompactedView(
        settings, topic, decode, on_change, dead_letters, _webhook_id, _admit_webhook
    )


def _admit_webhook(
    held: Webhook | None, deleted: bool, incoming: Webhook | None, headers: Headers
) -> bool:
    deletes = tombstone_version(headers) if incoming is None else None
    return admits(held, deleted, incoming, deletes)


def principal_view(
    settings: Settings,
    codec: Codec,
    topic: str,
    dead_letters: DeadLetterSink | None,
) -> CompactedView[Principal]:
    def decode(value: bytes) -> Principal:
        return codec.read(Principal, value)

    return CompactedView(settings, topic, decode, None, dead_letters, _principal_id)


def _webhook_id(webhook: Webhook) -> str:
    return webhook.id


def _principal_id(principal: Principal) -> str:
    return principal.id
