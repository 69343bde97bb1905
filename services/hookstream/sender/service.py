"""The sender: `deliveries` and every `retry.<delay>` topic -> signed HTTP POSTs.

Each record becomes an asyncio task, bounded globally and per webhook, so one slow endpoint
never holds up the others in its partition. A record counts as finished only once its attempt
record and any retry / dead letter / webhook update are acknowledged by Kafka; only then
may its offset be committed.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import random
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.trace import Span
from prometheus_client import Counter

from hookstream.core import signing, tracing
from hookstream.core.codec import Codec
from hookstream.core.deadletter import (
    PROCESS_ERRORS,
    RejectedRecord,
    dead_letter,
    refuse,
)
from hookstream.core.kafka import Headers, appended_at_ms
from hookstream.core.records import MAX_UNIX_MS, Delivery, Outcome, Retry, Webhook, due_at_header
from hookstream.core.settings import Settings
from hookstream.core.view import CompactedView
from hookstream.endpoints.secrets import SecretError, load_keyring
from hookstream.runtime import eventloop
from hookstream.runtime.context import ServiceContext
from hookstream.runtime.metrics import DEAD_LETTERS
from hookstream.runtime.runner import run_async_until_signalled
from hookstream.runtime.writer import KafkaWriter, Record
from hookstream.sender import metrics, spans
from hookstream.sender.absence import absence_means_deleted
from hookstream.sender.attempt import Conclusion, Source, conclude, deferred
from hookstream.sender.fence import FencedError, Permit
from hookstream.sender.fetcher import Fetched, Fetcher, retry_due_at_ms
from hookstream.sender.gate import Ticket, WebhookGate, overloaded, put_off_due_ms
from hookstream.sender.http import HttpSender
from hookstream.sender.intake import INVALID_DELIVERY, decode_delivery
from hookstream.sender.origins import origin_header, without_origin
from hookstream.sender.outcome import HttpResult
from hookstream.sender.signers import WebhookSigners
from hookstream.sender.slowlane import AnswerTimes, SlowLane

log = logging.getLogger(__name__)

# Records taken from Kafka but not finished, as a multiple of the in-flight bound: enough to
# keep every slot busy while some webhooks are at their own limit, small enough for memory.
OUTSTANDING_PER_SLOT = 4
# Seconds a retry record may hold its partition beyond its tier's longest jittered delay.
REQUEUE_SLACK = 0.05
# A 410-disable that keeps losing to other writers gives up after this many tries.
DISABLE_TRIES = 5
# Seconds a revoke waits for requests in flight beyond the request timeout (the response
# body, the signing, a view sync before the request).
REVOKE_SLACK = 2.0

# The record task's way through its partition's fence (sender/fence.py): asked right before
# the request and right before producing, wherever in the record's processing they happen.
_PERMIT: contextvars.ContextVar[Permit] = contextvars.ContextVar("permit")
# What the per-record boundary does not dead-letter: errors of the process, and a fenced
# record (it must produce nothing at all).
_PASSED_ON: tuple[type[BaseException], ...] = (*PROCESS_ERRORS, FencedError)


class Sender:
    def __init__(self, settings: Settings, codec: Codec | None = None) -> None:
        self.context = ServiceContext.build(settings, "sender", codec)
        self.settings = settings
        self.codec = self.context.codec
        self.topics = self.context.topics
        self.dead_letters = self.context.dead_letters
        self.webhooks: CompactedView[Webhook] = self.context.webhook_view()
        # Before anything else: production without an encryption key must not start.
        self.keyring = load_keyring(settings)
        self._webhook_signers = WebhookSigners(self.keyring)
        self.http = HttpSender(settings)
        # Attempt records are not on the way to any receiver: a longer linger gathers them
        # into fewer, larger produce requests (less broker CPU per delivery); only the offset
        # commit of a finished record waits for it.
        self.writer = KafkaWriter(settings, name="sender-producer", extra={"linger.ms": 50})
        self._rng = random.Random()
        # Made here, not on the loop: asyncio primitives bind to a loop on first use.
        self._global = asyncio.Semaphore(settings.max_in_flight)
        self._gate = WebhookGate(
            settings.max_in_flight_per_webhook, settings.max_in_flight * OUTSTANDING_PER_SLOT
        )
        share = settings.max_in_flight * settings.slow_webhook_share
        self._slow_lane = SlowLane(max(1, int(share)))
        self._answer_times = AnswerTimes(settings.slow_webhook_seconds)
        self._tasks: set[asyncio.Task[None]] = set()
        self._failure: BaseException | None = None
        # Set the moment something fails (a record task, the fetcher's thread, the view's
        # thread): the sender stops at once, without polling for it.
        self._failed = asyncio.Event()

    async def run(self, stop: asyncio.Event, ready: threading.Event | None = None) -> None:
        loop = asyncio.get_running_loop()
        wake = eventloop.threadsafe_set(self._failed)
        self.webhooks.when_dead(wake)
        self.webhooks.start()
        self.writer.start()
        fetcher: Fetcher | None = None

        def deliver(batch: list[Fetched]) -> None:
            loop.call_soon_threadsafe(self._dispatch, fetcher, batch)

        try:
            await loop.run_in_executor(None, self.webhooks.wait_ready)
            await self.http.start()
            # A tier's records are due in append order give or take the jitter; a slack
            # covers the time between computing a due time and the record's timestamp.
            max_hold = {
                tier.topic: tier.delay * (1 + self.settings.retry_jitter) + REQUEUE_SLACK
                for tier in self.topics.retry_tiers
            }
            fetcher = Fetcher(
                self.settings,
                [self.topics.deliveries, *max_hold],
                max_hold,
                deliver,
                self.settings.max_in_flight * OUTSTANDING_PER_SLOT,
                on_failure=wake,
                revoke_wait=self.settings.request_timeout + REVOKE_SLACK,
            )
            fetcher.start()
            await loop.run_in_executor(None, fetcher.ready.wait)
            if ready is not None:
                ready.set()
            await self._wait_for_stop(stop)
            if self._failure is None and fetcher.error is None:
                self.webhooks.check()
        finally:
            if fetcher is not None:
                fetcher.stop(self.settings.shutdown_grace)
                if self._tasks:
                    await asyncio.wait(set(self._tasks), timeout=self.settings.shutdown_grace)
                await loop.run_in_executor(None, fetcher.join)
            await self.http.close()
            await loop.run_in_executor(None, self.writer.close)
            self.webhooks.stop()
            await loop.run_in_executor(None, self.dead_letters.flush, 10.0)
        if self._failure is not None:
            raise self._failure
        if fetcher is not None and fetcher.error is not None:
            raise fetcher.error

    async def _wait_for_stop(self, stop: asyncio.Event) -> None:
        """Return once a signal asks to stop or something has failed."""
        waits = [asyncio.create_task(stop.wait()), asyncio.create_task(self._failed.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()

    def _dispatch(self, fetcher: Fetcher | None, batch: list[Fetched]) -> None:
        assert fetcher is not None
        for item in batch:
            task = asyncio.create_task(self._handle(fetcher, item))
            self._tasks.add(task)
            task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._failure is not None:  # `_handle` could not finish its record
            self._failed.set()

    async def _handle(self, fetcher: Fetcher, item: Fetched) -> None:
        """Process one record: the per-record boundary of the sender.

        Whatever processing this one record raises, it is dead-lettered and the record counts
        as finished. Only errors of the process (Kafka refusing our output) stop the sender;
        the offset then stays uncommitted and a restart re-processes the record.
        """
        permit = Permit(fetcher.fence, item.epoch)
        _PERMIT.set(permit)  # this task's own context
        try:
            try:
                await self._process(item)
            except _PASSED_ON:
                raise
            except Exception as exc:
                refusal, record = refuse("sender", item.message, item.headers, exc)
                dlq = Record(self.topics.dlq, item.message.key(), self.codec.write(record))
                await self._produce([dlq])
                DEAD_LETTERS.labels(refusal.reason).inc()
            fetcher.finished(item)
        except FencedError as exc:
            # Revoked (or stopping) before this record's follow-ups were produced: it is left
            # unfinished, and the partition's next owner makes its attempt.
            log.debug("sender: dropped a record of %s: %s", item.partition, exc)
        except Exception as exc:
            log.exception("sender: stopping: could not finish a record: %s", exc)
            self._failure = exc
        finally:
            permit.release()  # after `finished`: a revoke waiting for it then commits it

    async def _process(self, item: Fetched) -> None:
        message = item.message
        topic = message.topic() or ""
        if item.requeue:
            # Due later than its tier's delay (Retry-After): back to the end of the tier, so
            # it does not hold up the records behind it. The record itself is unchanged,
            # unless its due time is none: then it would circle its tier for ever.
            if retry_due_at_ms(message, item.headers) > MAX_UNIX_MS:
                raise RejectedRecord(INVALID_DELIVERY, "its due time lies beyond the year 9999")
            await self._produce(
                [Record(topic, message.key(), message.value() or b"", _requeued(item))]
            )
            return
        delivery = decode_delivery(self.codec, self.topics.delivery_type(topic), message.value())
        source = Source(
            topic, message.partition() or 0, message.offset() or 0, appended_at_ms(message)
        )
        webhook_id = delivery.webhook_id
        slow = self._answer_times.is_slow(webhook_id)
        if slow and (self._slow_lane.full() or self._gate.waiting(webhook_id)):
            await self._defer(item, delivery, self.topics.retry_tiers[0].delay, "slow_lane")
            return
        # Its limits: a webhook created a moment ago is read first, not taken as limitless.
        webhook = await self._current_webhook(delivery, source)
        put_off = self._gate.put_off(webhook, webhook_id)
        if put_off is not None:
            await self._defer(item, delivery, put_off, "webhook_limit")
            return
        ticket = await self._gate.acquire(webhook, webhook_id)
        try:
            if slow:
                async with self._slow_lane, self._global:
                    conclusion, trace = await self._attempt(delivery, source, item.headers, ticket)
            else:
                async with self._global:
                    conclusion, trace = await self._attempt(delivery, source, item.headers, ticket)
        finally:
            self._gate.release(ticket)
        if conclusion.outcome not in (Outcome.SKIPPED, Outcome.REFUSED):
            self._answer_times.record(webhook_id, conclusion.attempt.duration_ms / 1000)
        await self._produce(self._outputs(item, delivery, conclusion, trace))
        if conclusion.disabled_webhook is not None:
            # Before the record counts as finished: a crash before it repeats the attempt.
            await self._disable(conclusion.disabled_webhook)
        _count(conclusion, delivery)
        _log_attempt(conclusion)

    async def _defer(self, item: Fetched, delivery: Delivery, seconds: float, reason: str) -> None:
        """Put a delivery off by `seconds`, unattempted, through the retry tier of the longest
        delay within that (the first tier for shorter ones: a record there is taken when due)."""
        tiers = self.topics.retry_tiers
        tier = max(
            (t for t in tiers if t.delay <= seconds), key=lambda t: t.delay, default=tiers[0]
        )
        retry = deferred(delivery, tier, put_off_due_ms(int(time.time() * 1000), seconds))
        # No attempt was made: the retry keeps the delivery's own trace context.
        trace = tracing.passed_on(item.headers)
        record = self._retry_record(tier.topic, item.message.key(), retry, trace, item)
        await self._produce([record])
        metrics.DELIVERIES_DEFERRED.labels(reason).inc()

    def _retry_record(
        self,
        topic: str,
        key: bytes | None,
        retry: Retry,
        trace: tracing.TraceHeaders,
        source: Fetched,
    ) -> Record:
        # The due time rides in a header too, so the fetcher can hold a record back without
        # decoding it; the origin lets the tier keep one copy of it (sender/origins.py).
        headers = [due_at_header(retry.due_at_ms), _origin(source), *trace]
        return Record(topic, key, self.codec.write(retry), headers)

    async def _attempt(
        self, delivery: Delivery, source: Source, record_headers: Headers, ticket: Ticket
    ) -> tuple[Conclusion, tracing.TraceHeaders]:
        """Make the attempt; the trace headers of what follows it (sender/spans.py)."""
        span = spans.start_attempt(record_headers)
        try:
            conclusion, webhook = await self._make_attempt(
                delivery, source, span, record_headers, ticket
            )
        except BaseException:
            if span is not None:
                span.end()  # the record is dead-lettered or the sender stops: no outcome
            raise
        if span is not None:
            spans.end_attempt(span, delivery, webhook, conclusion)
        return conclusion, spans.following(span, record_headers)

    async def _make_attempt(
        self,
        delivery: Delivery,
        source: Source,
        span: Span | None,
        record_headers: Headers,
        ticket: Ticket,
    ) -> tuple[Conclusion, Webhook | None]:
        webhook_id = delivery.webhook_id
        # Again after the wait at the gate: it may have changed (disabled, deleted) meanwhile.
        webhook = await self._current_webhook(delivery, source)
        started_ms = int(time.time() * 1000)
        skip: str | None = None
        result: HttpResult | None = None
        if webhook is None:
            skip = "webhook deleted"
        elif not webhook.enabled:
            skip = f"webhook disabled: {webhook.disabled_reason or 'by its owner'}"
        else:
            signers, custom, unsigned = self._request_parts(webhook, started_ms)
            if unsigned is not None:
                result = unsigned
            elif not signers:
                skip = "webhook has no valid signing secret"
            else:
                body = delivery.body
                headers = signing.headers(
                    signers,
                    delivery.event_id,
                    started_ms // 1000,
                    body,
                    self.settings.user_agent,
                )
                if custom:
                    # The signing headers last: no custom header can stand in for them.
                    headers = {**custom, **headers}
                if self.settings.send_traceparent:
                    # Not signed: the receiver's tracing may use it, its verification ignores it.
                    trace = spans.following(span, record_headers)
                    headers.update((name, value.decode("ascii")) for name, value in trace)
                _PERMIT.get().send()
                metrics.IN_FLIGHT.inc()
                try:
                    result = await self.http.send(
                        webhook.url, headers, body, webhook.timeout_seconds
                    )
                finally:
                    metrics.IN_FLIGHT.dec()
                self._gate.observe(ticket, result)
        conclusion = conclude(
            delivery,
            webhook,
            result,
            started_ms,
            self.settings,
            self.topics,
            self._rng,
            skip_reason=skip,
            # The request may have taken a while: what follows it (e.g. disabling on 410)
            # applies to the webhook as it is now, not as it was when the request started.
            webhook_now=self.webhooks.get(webhook_id),
        )
        if result is not None and result.retry_after and overloaded(result):
            # New requests wait as long as this delivery's retry does: Retry-After as the
            # schedule's clamp allows it (sender/outcome.py), or as asked when none follows.
            seconds = result.retry_after
            if conclusion.retry is not None:
                seconds = min(seconds, (conclusion.retry.due_at_ms - started_ms) / 1000)
            self._gate.pause(ticket, seconds)
        return conclusion, webhook

    async def _current_webhook(self, delivery: Delivery, source: Source) -> Webhook | None:
        """The delivery's webhook as the view holds it; None when it is deleted."""
        webhook = self.webhooks.get(delivery.webhook_id)
        if webhook is None and not absence_means_deleted(
            self.webhooks.synced_at_ms, delivery, source.appended_at_ms
        ):
            # Created a moment before this delivery, perhaps, and not read yet: only a view
            # caught up since the record was appended may say "deleted" (sender/absence.py).
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, self.webhooks.sync)
            webhook = self.webhooks.get(delivery.webhook_id)
        return webhook

    def _request_parts(
        self, webhook: Webhook, now_ms: int
    ) -> tuple[list[signing.Signer], Mapping[str, str], HttpResult | None]:
        """The webhook's signers and custom headers, or the failed attempt when a secret or a
        sensitive header cannot be decrypted, or a secret cannot sign."""
        try:
            ready = self._webhook_signers.get(webhook, now_ms)
            return ready.signers, ready.headers, None
        except (SecretError, signing.UnusableSecretError) as exc:
            # Nothing goes out unsigned, nor without the headers its receiver asked for. A
            # temporary failure: once the missing key is configured (or the secret rotated),
            # the retries deliver.
            failed = HttpResult(status_code=None, duration_ms=0, error=f"not sent: {exc}")
            return [], {}, failed

    def _outputs(
        self,
        item: Fetched,
        delivery: Delivery,
        conclusion: Conclusion,
        trace: tracing.TraceHeaders,
    ) -> list[Record]:
        key = delivery.webhook_id.encode()
        write = self.codec.write
        attempt = conclusion.attempt
        out = [Record(self.topics.delivery_log, key, write(attempt), trace or None)]
        if conclusion.retry is not None and conclusion.retry_topic is not None:
            retry = self._retry_record(conclusion.retry_topic, key, conclusion.retry, trace, item)
            out.append(retry)
        if conclusion.dead_letter_reason is not None:
            record = dead_letter(
                item.message,
                item.headers,
                conclusion.dead_letter_reason,
                attempt.error or f"HTTP {attempt.status_code} on attempt {attempt.attempt_number}",
                webhook_id=delivery.webhook_id,
                delivery_id=delivery.delivery_id,
                event_id=delivery.event_id,
            )
            out.append(Record(self.topics.dlq, key, write(record)))
        return out

    async def _disable(self, wanted: Webhook) -> None:
        """Write a 410-disable on the webhook's current version until the views apply it.

        The sender changes only what it owns (enabled + reason): when another writer's
        record came first (a rotation, a rename), the disable is made again on that version;
        a webhook deleted or disabled meanwhile is left as it is (core.versions).
        """
        loop = asyncio.get_running_loop()
        record = wanted
        for _ in range(DISABLE_TRIES):
            key = record.id.encode()
            with self.webhooks.verdicts(record.id) as verdicts:
                [written] = await self.writer.write_all(
                    [Record(self.topics.webhooks, key, self.codec.write(record))]
                )
                read = await loop.run_in_executor(
                    None, self.webhooks.wait_for_offset, written.partition, written.offset
                )
            if not read or verdicts.get((written.partition, written.offset), False):
                return  # applied (or our view lags: the views decide without us)
            current = self.webhooks.get(record.id)
            if current is None or not current.enabled:
                # Deleted or disabled meanwhile: nothing to change, but our refused record is
                # the last of its key; the state the views hold goes after it (settling).
                value = None if current is None else self.codec.write(current)
                await self.writer.write_all([Record(self.topics.webhooks, key, value)])
                return
            record = current.disabled(wanted.disabled_reason or "", int(time.time() * 1000))
        log.warning("sender: webhook %s kept changing; not disabled on 410", wanted.id)

    async def _produce(self, records: Sequence[Record]) -> None:
        """Produce every record and wait until Kafka has acknowledged all of them; raise
        `FencedError` instead when the record's partition is no longer this sender's."""
        _PERMIT.get().produce()
        await self.writer.write_all(records)


def _origin(item: Fetched) -> tuple[str, bytes]:
    message = item.message
    return origin_header(message.topic() or "", message.partition() or 0, message.offset() or 0)


def _requeued(item: Fetched) -> Headers:
    """A requeued record's headers: its own, but it follows from the record it copies (two
    requeues of one record, after a crash, are one copy too many)."""
    return [*without_origin(item.headers), _origin(item)]


# `.labels()` takes a lock and builds its key on every call: the few children an attempt can
# count into are looked up once, by outcome and status code.
_attempt_counters: dict[tuple[Outcome, int | None], Counter] = {}


def _attempts_counter(outcome: Outcome, status_code: int | None) -> Counter:
    counter = _attempt_counters.get((outcome, status_code))
    if counter is None:
        counter = metrics.ATTEMPTS.labels(str(outcome), metrics.status_class(status_code))
        _attempt_counters[(outcome, status_code)] = counter
    return counter


def _count(conclusion: Conclusion, delivery: Delivery) -> None:
    attempt = conclusion.attempt
    _attempts_counter(conclusion.outcome, attempt.status_code).inc()
    if conclusion.outcome is not Outcome.SKIPPED:
        metrics.REQUEST_DURATION.observe(attempt.duration_ms / 1000)
    if conclusion.outcome is Outcome.SUCCESS:
        finished_ms = attempt.started_at_ms + attempt.duration_ms
        metrics.EVENT_TO_DELIVERY.observe(max(0, finished_ms - delivery.created_at_ms) / 1000)
    if conclusion.retry is not None:
        metrics.RETRIES_SCHEDULED.labels(conclusion.retry.tier).inc()
    if conclusion.dead_letter_reason is not None:
        DEAD_LETTERS.labels(conclusion.dead_letter_reason).inc()


# Attempt outcomes logged at INFO; every attempt is logged at DEBUG.
_FAILURES = frozenset(
    {Outcome.TEMPORARY_FAILURE, Outcome.PERMANENT_FAILURE, Outcome.EXHAUSTED, Outcome.REFUSED}
)
_MAX_LOGGED_ERROR = 300


def _log_attempt(conclusion: Conclusion) -> None:
    """One line per attempt (DEBUG), per failure at INFO: ids and facts, never the URL (it may
    carry a token), a secret, the payload or the response body."""
    failed = conclusion.outcome in _FAILURES
    level = logging.INFO if failed else logging.DEBUG
    if not log.isEnabledFor(level):
        return
    attempt = conclusion.attempt
    fields: dict[str, Any] = {
        "event_id": attempt.event_id,
        "delivery_id": attempt.delivery_id,
        "webhook_id": attempt.webhook_id,
        "tenant_id": attempt.tenant_id,
        "event_type": attempt.event_type,
        "attempt_number": attempt.attempt_number,
        "outcome": str(conclusion.outcome),
        "status_code": attempt.status_code,
        "duration_ms": attempt.duration_ms,
    }
    if attempt.error:
        fields["error"] = attempt.error[:_MAX_LOGGED_ERROR]
    if conclusion.retry is not None:
        fields["retry_tier"] = conclusion.retry.tier
        fields["next_attempt_at_ms"] = conclusion.retry.due_at_ms
    if conclusion.dead_letter_reason is not None:
        fields["dead_letter_reason"] = conclusion.dead_letter_reason
    if conclusion.disabled_webhook is not None:
        fields["webhook_disabled"] = True
    status = attempt.status_code
    log.log(
        level,
        "sender: attempt %d of %s: %s (%s)",
        attempt.attempt_number,
        attempt.delivery_id,
        conclusion.outcome,
        f"HTTP {status}" if status is not None else "no response",
        extra=fields,
    )


def run_sender(settings: Settings) -> int:
    async def serve(stop: asyncio.Event, ready: threading.Event) -> None:
        # Built on the loop, inside the runner: a missing encryption key is the sender's
        # error at start (status 70), like any other.
        await Sender(settings).run(stop, ready)

    return run_async_until_signalled(
        "sender", settings, serve, stopping="finishing in-flight deliveries"
    )
