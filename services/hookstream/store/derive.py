"""Pure rules turning attempts into delivery status and endpoint health; no database here."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from hookstream.core.records import Attempt, DeliveryStatus, Outcome

DELIVERY_STATUSES = frozenset(DeliveryStatus)

# Keyed by text: an Outcome is its text, and an outcome this version does not know is text too.
_STATUS_BY_OUTCOME: dict[str, DeliveryStatus] = {
    Outcome.SUCCESS: DeliveryStatus.SUCCEEDED,
    Outcome.TEMPORARY_FAILURE: DeliveryStatus.RETRYING,
    Outcome.PERMANENT_FAILURE: DeliveryStatus.FAILED,
    Outcome.EXHAUSTED: DeliveryStatus.FAILED,
    Outcome.REFUSED: DeliveryStatus.FAILED,
    Outcome.SKIPPED: DeliveryStatus.SKIPPED,
}
assert frozenset(_STATUS_BY_OUTCOME) == frozenset(Outcome)


def delivery_status(outcome: str) -> DeliveryStatus:
    # An outcome added by a newer sender must not wedge the log sink on one batch; calling it
    # a failure keeps it visible to recover and to health rather than hiding it.
    return _STATUS_BY_OUTCOME.get(outcome, DeliveryStatus.FAILED)


def attempt_order(attempt: Attempt) -> tuple[int, int, str]:
    """Which of two attempts is later; the same key the database uses to pick the latest."""
    return (attempt.started_at_ms, attempt.attempt_number, attempt.attempt_id)


@dataclass(frozen=True, slots=True)
class HealthState:
    webhook_id: str
    tenant_id: str
    last_outcome: str
    last_status_code: int | None
    last_attempt_at_ms: int
    failing_since_ms: int | None


def fold_health(state: HealthState | None, attempts: Iterable[Attempt]) -> HealthState | None:
    """Advance one webhook's health over a batch of its attempts.

    Attempts older than the stored last attempt are ignored, so re-applying a batch (or
    replaying the whole log) cannot move the state backwards: folding is idempotent.
    """
    for attempt in sorted(attempts, key=attempt_order):
        outcome = attempt.outcome
        started = attempt.started_at_ms
        # A skip sent nothing to the endpoint, so it says nothing about the endpoint's health.
        if outcome == Outcome.SKIPPED:
            continue
        if state is not None and started < state.last_attempt_at_ms:
            continue
        failing_since: int | None = None
        if outcome != Outcome.SUCCESS:
            kept = state.failing_since_ms if state is not None else None
            failing_since = started if kept is None else kept
        state = HealthState(
            webhook_id=attempt.webhook_id,
            tenant_id=attempt.tenant_id,
            last_outcome=str(outcome),
            last_status_code=attempt.status_code,
            last_attempt_at_ms=started,
            failing_since_ms=failing_since,
        )
    return state
