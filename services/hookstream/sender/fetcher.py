"""The sender's consumer thread: fetch, hold back what is not due, commit what is finished.

Every call on the consumer happens on this one thread (librdkafka consumers are not meant
to be shared), including the rebalance callbacks. The asyncio side only hands finished
offsets back through a queue.

- A retry partition whose head record is not yet due is paused, resumed when it is due and
  seeked back to that record; nothing is ever sent early and the poll loop never sleeps.
- A head may hold its partition only as long as its tier's longest (jittered) delay. One due
  later than that (a Retry-After beyond the schedule) is handed back as a requeue: the sender
  appends it to the end of its tier, so it never holds up the other webhooks' retries.
- When too many records are outstanding every partition is paused until the work drains
  (then resumed at its position): backpressure without blocking heartbeats. A consume never
  takes more records than the bound has room for.
- Offsets are committed only up to the lowest unfinished record of each partition, every
  200 ms and synchronously at a revoke; the commit's metadata names the finished records
  above that point, and a next owner skips those instead of sending them again.
- A revoke first lets the revoked partitions' requests in flight end (bounded), then fences
  what is still running (sender/fence.py) and only then commits: a record of a partition
  that is no longer ours produces nothing, so its next owner's retry chain is the only one.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from confluent_kafka import (
    Consumer,
    KafkaException,
    Message,
    TopicPartition,
)

from hookstream.core.codec import DecodeError, default_codec
from hookstream.core.kafka import (
    Headers,
    appended_at_ms,
    consume_batch,
    consumer_config,
    header_pairs,
)
from hookstream.core.records import SENDER_GROUP, InvalidRecordError, Retry, due_at_from_headers
from hookstream.core.settings import Settings
from hookstream.runtime.metrics import with_lag_metrics
from hookstream.sender import metrics
from hookstream.sender.fence import Fence
from hookstream.sender.offsets import OffsetTracker, decode_finished
from hookstream.sender.origins import WINDOW_MS, OriginLog, origin_of

log = logging.getLogger(__name__)

Partition = tuple[str, int]

# Longest a revoke or the last commit of a stop waits for records already producing what
# follows their attempt (Kafka acknowledges them within moments). Far below the group's
# rebalance timeout (max.poll.interval.ms, 300 s): a revoke must end before the group gives
# up on this member.
PRODUCE_WAIT = 30.0
# Seconds between two commits of finished records.
COMMIT_INTERVAL = 0.2
# Longest an assignment waits for the committed offsets' metadata (what the last owner
# finished above its commit point); without it those records are sent again.
COMMITTED_TIMEOUT = 10.0
# Longest a revoke waits for requests in flight, whatever the request timeout says.
MAX_REVOKE_WAIT = 240.0


@dataclass(frozen=True, slots=True)
class Fetched:
    message: Message
    # Which assignment of the partition this record belongs to: a finish reported after the
    # partition was revoked (and maybe re-assigned) must not move the new owner's offsets.
    epoch: int
    # Its headers, read once here (see header_pairs): the sender must not read them again.
    headers: Headers
    # Not due yet, but it has held its retry partition as long as its tier allows: append it
    # to the end of the same topic instead of attempting it.
    requeue: bool = False

    @property
    def partition(self) -> Partition:
        return (self.message.topic() or "", self.message.partition() or 0)


def retry_due_at_ms(message: Message, headers: Headers) -> int:
    """When a retry record is due: its header (read without decoding the record), or, for a
    record whose headers the client could not read, the record's own `due_at_ms`."""
    due = due_at_from_headers(headers)
    if due is not None:
        return due
    try:
        return default_codec().read(Retry, message.value()).due_at_ms
    except (DecodeError, InvalidRecordError):
        return 0  # not a retry record at all: the sender refuses it as soon as it is taken


class Fetcher:
    def __init__(
        self,
        settings: Settings,
        topics: Sequence[str],
        retry_topics: Mapping[str, float],
        deliver: Callable[[list[Fetched]], None],
        max_outstanding: int,
        on_failure: Callable[[BaseException], None] | None = None,
        revoke_wait: float = 0.0,
    ) -> None:
        """`retry_topics` maps each retry topic to the longest its head may hold it (seconds).

        `revoke_wait` is how long a revoke lets the revoked partitions' requests in flight
        end before it fences them (the request timeout and a little more).

        `on_failure(error)` is called on the consumer thread if an error stops it (then also
        in `error`), so the sender learns of it at once.
        """
        self._settings = settings
        self._topics = list(topics)
        self._retry_topics = retry_topics
        self._deliver = deliver
        self._on_failure = on_failure
        self._max_outstanding = max_outstanding
        self._revoke_wait = min(revoke_wait, MAX_REVOKE_WAIT)
        # Asked by the record tasks before each request and each produce.
        self.fence = Fence()
        self._finished: queue.SimpleQueue[Fetched] = queue.SimpleQueue()
        self._trackers: dict[Partition, OffsetTracker] = {}
        self._epochs: dict[Partition, int] = {}
        self._epoch = 0
        self._due: dict[Partition, int] = {}
        # Where each paused partition must restart once resumed. The seek is made after the
        # resume: seeking a paused partition made librdkafka start fetching it again only
        # about a second after the resume.
        self._rewind: dict[Partition, int] = {}
        self._backpressured = False
        self._outstanding = 0
        # Each retry partition's origins of its recent records (sender/origins.py), and where
        # the records read back only for their origins end (its committed offset).
        self._origins: dict[Partition, OriginLog] = {}
        self._replay_until: dict[Partition, int] = {}
        # Partitions with records finished since their last commit.
        self._uncommitted: set[Partition] = set()
        self._next_commit = 0.0
        self._fetching = threading.Event()
        self._fetching.set()
        self._stop = threading.Event()
        self._drain_deadline = 0.0
        self.error: BaseException | None = None
        self.ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sender-fetcher", daemon=True)

    # -- called from other threads -------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def finished(self, item: Fetched) -> None:
        self._finished.put(item)

    def stop(self, grace: float) -> None:
        """Stop fetching, wait up to `grace` seconds for outstanding work, commit, close."""
        self._drain_deadline = time.monotonic() + grace
        self._fetching.clear()
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    @property
    def outstanding(self) -> int:
        return self._outstanding

    # -- the consumer thread -------------------------------------------------------------

    def _run(self) -> None:
        config = consumer_config(
            self._settings,
            SENDER_GROUP,
            {
                # Committed by `_commit_due`, with the finished records above each commit
                # point as metadata (auto-commit cannot carry any).
                "enable.auto.commit": False,
                "on_commit": self._on_commit,
                # A resumed retry partition joins the next fetch request only once the one in
                # flight returns, and an idle broker holds that one up to this long: the
                # default 500 ms made due retries up to half a second late.
                "fetch.wait.max.ms": 100,
            },
            balance_per_topic=True,
        )
        consumer = Consumer(with_lag_metrics(config))
        try:
            consumer.subscribe(
                self._topics,
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
            self.ready.set()
            while not self._stop.is_set():
                self._poll_once(consumer)
            self._drain(consumer)
        except BaseException as exc:
            log.exception("sender: consumer thread failed")
            self.error = exc
            if self._on_failure is not None:
                self._on_failure(exc)
        finally:
            self.ready.set()
            try:
                consumer.close()
            except KafkaException as exc:
                log.warning("sender: closing the consumer: %s", exc)

    def _poll_once(self, consumer: Consumer) -> None:
        self._apply_finished(consumer)
        self._commit_due(consumer)
        self._resume_due(consumer)
        self._apply_backpressure(consumer)
        # Never take more than the outstanding bound allows: a whole batch on top of a nearly
        # full window would let a crash re-send up to a batch more than the bound.
        room = max(1, min(500, self._max_outstanding - self._outstanding))
        batch = consume_batch(consumer, room, timeout=0.1)
        if batch:
            ready = self._admit(consumer, batch)
            if ready:
                self._deliver(ready)

    def _admit(self, consumer: Consumer, batch: list[Message]) -> list[Fetched]:
        """Track the records to work on; hold back retry records that are not yet due."""
        now_ms = int(time.time() * 1000)
        ready: list[Fetched] = []
        for message in batch:
            error = message.error()
            if error is not None:
                log.warning("sender: consume error: %s", error)
                continue
            part = (message.topic() or "", message.partition() or 0)
            if part in self._due or part not in self._trackers:
                continue  # paused earlier in this batch, or no longer ours
            tracker = self._trackers[part]
            offset = message.offset() or 0
            headers = header_pairs(message)
            max_hold = self._retry_topics.get(part[0])
            if max_hold is not None and not self._first_of_origin(part, message, headers):
                continue
            if tracker.already_finished(offset):
                # Finished by the partition's last owner above its commit point.
                self._skip(part, offset)
                continue
            requeue = False
            if max_hold is not None:
                due = retry_due_at_ms(message, headers)
                if due > now_ms:
                    until = min(due, _hold_limit_ms(message, max_hold))
                    if until > now_ms:
                        self._hold(consumer, part, message.offset() or 0, until)
                        continue
                    requeue = True
            tracker.started(offset)
            self._outstanding += 1
            ready.append(Fetched(message, self._epochs[part], headers, requeue))
        return ready

    def _first_of_origin(self, part: Partition, message: Message, headers: Headers) -> bool:
        """Whether to go on with a retry-tier record: not read back only to remember its
        origin, and not a copy of an earlier record's retry (sender/origins.py)."""
        offset = message.offset() or 0
        origin = origin_of(headers)
        timestamp = appended_at_ms(message) or int(time.time() * 1000)
        copy = origin is not None and self._origins[part].is_copy(origin, offset, timestamp)
        replay_until = self._replay_until.get(part)
        if replay_until is not None:
            if offset < replay_until:
                return False  # finished before this assignment: only its origin counts
            del self._replay_until[part]
        if copy:
            log.info(
                "sender: dropped %s[%d]@%d: a second retry record of %s",
                part[0],
                part[1],
                offset,
                (origin or b"").decode(errors="replace"),
            )
            metrics.RETRY_COPIES_DROPPED.inc()
            self._skip(part, offset)
            return False
        return True

    def _skip(self, part: Partition, offset: int) -> None:
        """A record that needs no work: finished as it is taken."""
        tracker = self._trackers[part]
        tracker.started(offset)
        tracker.finished(offset)
        self._uncommitted.add(part)

    def _hold(self, consumer: Consumer, part: Partition, offset: int, due_ms: int) -> None:
        consumer.pause([TopicPartition(part[0], part[1])])
        self._rewind[part] = offset  # the held record is read again when due
        self._due[part] = due_ms

    def _resume(self, consumer: Consumer, parts: list[Partition]) -> None:
        consumer.resume([TopicPartition(topic, p) for topic, p in parts])
        for part in parts:
            offset = self._rewind.pop(part, None)
            if offset is not None:
                consumer.seek(TopicPartition(part[0], part[1], offset))

    def _resume_due(self, consumer: Consumer) -> None:
        if not self._due:
            return
        now_ms = int(time.time() * 1000)
        due = [part for part, when in self._due.items() if when <= now_ms]
        for part in due:
            del self._due[part]
        if due and not self._backpressured:
            self._resume(consumer, due)

    def _apply_backpressure(self, consumer: Consumer) -> None:
        if not self._backpressured and self._outstanding >= self._max_outstanding:
            assigned = list(consumer.assignment())
            if not assigned:
                return
            consumer.pause(assigned)
            # Records fetched but not yet returned are dropped by the pause; the resume
            # restarts right after the last record we took.
            for position in consumer.position(assigned):
                part = (position.topic, position.partition)
                if position.offset >= 0 and part not in self._due:
                    self._rewind.setdefault(part, position.offset)
            self._backpressured = True
        elif self._backpressured and self._outstanding <= self._max_outstanding // 2:
            resumable = [
                (tp.topic, tp.partition)
                for tp in consumer.assignment()
                if (tp.topic, tp.partition) not in self._due
            ]
            if resumable:
                self._resume(consumer, resumable)
            self._backpressured = False

    def _apply_finished(self, consumer: Consumer) -> None:
        touched: set[Partition] = set()
        while True:
            try:
                item = self._finished.get_nowait()
            except queue.Empty:
                break
            part = item.partition
            tracker = self._trackers.get(part)
            if tracker is None or self._epochs.get(part) != item.epoch:
                continue
            tracker.finished(item.message.offset() or 0)
            self._outstanding -= 1
            touched.add(part)
        self._uncommitted |= touched

    def _offsets(self, parts: set[Partition]) -> list[TopicPartition]:
        """Each partition's commit point, and the finished records above it as metadata."""
        offsets = []
        for part in parts:
            tracker = self._trackers.get(part)
            committable = tracker.committable() if tracker is not None else None
            if tracker is not None and committable is not None:
                offsets.append(
                    TopicPartition(part[0], part[1], committable, metadata=tracker.metadata())
                )
        return offsets

    def _commit_due(self, consumer: Consumer) -> None:
        """Commit what finished since the last commit, at most every COMMIT_INTERVAL.

        Finished records not yet committed are sent again after a crash: commit often, so
        that window stays a fraction of a second of work.
        """
        now = time.monotonic()
        if not self._uncommitted or now < self._next_commit:
            return
        self._next_commit = now + COMMIT_INTERVAL
        self._commit(consumer, self._uncommitted, asynchronous=True)

    def _drain(self, consumer: Consumer) -> None:
        """The last commit of a stop: after the requests in flight, or the grace, ended.

        Records not yet sent are not started any more, and a request still running when the
        grace ends (it may be shorter than the request timeout) is aborted by the sender: it
        produces nothing, and its offset stays uncommitted, so the next owner sends it once.
        """
        assigned = list(consumer.assignment())
        if assigned:
            consumer.pause(assigned)
        grace = max(0.0, self._drain_deadline - time.monotonic())
        fenced = self.fence.close(list(self._epochs.values()), grace, PRODUCE_WAIT)
        if fenced:
            log.info(
                "sender: %d requests still in flight after the shutdown grace: "
                "left to the partitions' next owner",
                fenced,
            )
        self._apply_finished(consumer)
        self._commit(consumer, set(self._trackers))

    def _commit(
        self, consumer: Consumer, parts: set[Partition], asynchronous: bool = False
    ) -> None:
        offsets = self._offsets(parts)
        self._uncommitted -= parts
        if not offsets:
            return
        try:
            if asynchronous:
                consumer.commit(offsets=offsets, asynchronous=True)
            else:
                consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            log.warning("sender: commit failed: %s", exc)
            self._uncommitted |= parts & set(self._trackers)

    def _on_commit(self, error: object, partitions: list[TopicPartition]) -> None:
        """A commit's outcome (served inside consume(), on this thread): what it could not
        commit (a member epoch moved on by an assignment meanwhile, say) is committed again
        by the next round, or a partition with nothing new to finish would stay behind."""
        failed = {tp_key(tp) for tp in partitions if error is not None or tp.error is not None}
        self._uncommitted |= failed & set(self._trackers)

    # -- rebalance callbacks (run inside consume(), on this thread) --------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        committed = self._committed(consumer, partitions)
        starts = self._read_back(consumer, partitions, committed)
        consumer.incremental_assign(
            [
                TopicPartition(tp.topic, tp.partition, starts.get(tp_key(tp), tp.offset))
                for tp in partitions
            ]
        )
        for tp in partitions:
            part = (tp.topic, tp.partition)
            point = committed.get(part)
            finished = decode_finished(point.offset, point.metadata) if point else set()
            if part in starts and point is not None:
                self._replay_until[part] = point.offset
            if part[0] in self._retry_topics:
                self._origins[part] = OriginLog()
            self._epoch += 1
            self._epochs[part] = self._epoch
            self.fence.open(self._epoch)
            self._trackers[part] = OffsetTracker(finished)
            self._due.pop(part, None)
            self._rewind.pop(part, None)
        if partitions:
            # librdkafka keeps a partition's pause across an incremental revoke and re-assign
            # (it stalled forever when revoked while backpressured): set its state explicitly.
            if self._backpressured:
                consumer.pause(partitions)
            else:
                consumer.resume(partitions)
        log.info("sender: assigned %s", _names(partitions))

    def _committed(
        self, consumer: Consumer, partitions: list[TopicPartition]
    ) -> dict[Partition, TopicPartition]:
        """The partitions' committed offsets, with what their last owners finished above
        them (the metadata)."""
        if not partitions:
            return {}
        try:
            committed = consumer.committed(
                [TopicPartition(tp.topic, tp.partition) for tp in partitions],
                timeout=COMMITTED_TIMEOUT,
            )
        except KafkaException as exc:
            log.warning("sender: reading the committed offsets: %s", exc)
            return {}
        return {tp_key(tp): tp for tp in committed if tp.error is None and tp.offset >= 0}

    def _read_back(
        self,
        consumer: Consumer,
        partitions: list[TopicPartition],
        committed: Mapping[Partition, TopicPartition],
    ) -> dict[Partition, int]:
        """Where to start the retry partitions so that their last `WINDOW_MS` below the
        committed offset is read again, for its origins only (sender/origins.py)."""
        since = int(time.time() * 1000) - WINDOW_MS
        asked = [
            TopicPartition(tp.topic, tp.partition, since)
            for tp in partitions
            if tp.topic in self._retry_topics and tp_key(tp) in committed
        ]
        if not asked:
            return {}
        try:
            found = consumer.offsets_for_times(asked, timeout=COMMITTED_TIMEOUT)
        except KafkaException as exc:
            # Without it a copy of a retry finished just before this assignment is not
            # recognised: a crash at the same moment could double that chain.
            log.warning("sender: reading back the retry partitions' origins: %s", exc)
            return {}
        return {
            tp_key(tp): tp.offset
            for tp in found
            if tp.error is None and 0 <= tp.offset < committed[tp_key(tp)].offset
        }

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        parts = {(tp.topic, tp.partition) for tp in partitions}
        try:
            # This member keeps the partitions until the callback returns: waiting here (the
            # background thread keeps heartbeating) lets their requests in flight finish and
            # be committed as finished rather than be made again by the next owner.
            epochs = [self._epochs[part] for part in parts if part in self._epochs]
            fenced = self.fence.close(epochs, self._revoke_wait, PRODUCE_WAIT)
            if fenced:
                log.info(
                    "sender: revoke fenced %d records still in their request: "
                    "their next owner makes those attempts again",
                    fenced,
                )
            self._apply_finished(consumer)
            self._commit(consumer, parts & set(self._trackers))
        finally:
            self._forget(parts)
        log.info("sender: revoked %s", _names(partitions))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Another member may own these already: committing now could move its offsets, and
        # whatever their records would still produce could double the new owner's.
        parts = {(tp.topic, tp.partition) for tp in partitions}
        self.fence.close([self._epochs[p] for p in parts if p in self._epochs], 0.0, 0.0)
        self._forget(parts)
        log.warning("sender: lost %s", _names(partitions))

    def _forget(self, parts: set[Partition]) -> None:
        for part in parts:
            tracker = self._trackers.pop(part, None)
            if tracker is not None:
                self._outstanding -= tracker.in_flight
            self._epochs.pop(part, None)
            self._uncommitted.discard(part)
            self._origins.pop(part, None)
            self._replay_until.pop(part, None)
            self._due.pop(part, None)
            self._rewind.pop(part, None)


def _hold_limit_ms(message: Message, max_hold: float) -> int:
    """Until when this record may hold its partition: its append time plus the tier's limit.

    Without a timestamp there is no limit, and the record holds its partition until due.
    """
    appended = appended_at_ms(message)
    if appended is None:
        return _NO_LIMIT
    return appended + round(max_hold * 1000)


_NO_LIMIT = 2**62


def tp_key(tp: TopicPartition) -> Partition:
    return (tp.topic, tp.partition)


def _names(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing"
