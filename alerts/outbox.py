"""The persistent outbox: every notification is stored before its first attempt, delivered at
least once under a stable id (receivers dedupe on it), retried with backoff and jitter, and
dead-lettered when it cannot be delivered. Each state change is a new row version in
`notifications`; each attempt a row in `notification_attempts`."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from driftline.alerts import tables
from driftline.alerts.config import OutboxSettings
from driftline.alerts.metrics import AlertMetrics
from driftline.alerts.notifiers import Delivery, Message, Sender
from driftline.store import Store

log = logging.getLogger("driftline.alerts")

PENDING, DELIVERED, DEAD, SUPERSEDED = "pending", "delivered", "dead", "superseded"
# Messages that carry a receiver's whole state (Alertmanager pushes): a newer one of the same
# receiver and group replaces a pending older one, which would otherwise arrive after it.
STATEFUL_KINDS = frozenset({"alertmanager"})
# Ids remembered beyond the pending ones; older ids are looked up in the store instead.
_KNOWN_IDS = 100_000


@dataclass
class _Entry:
    """A pending message and where its delivery stands."""

    message: Message
    attempts: int
    next_at: float
    last_error: str
    updated_ms: int
    since: float  # the give-up clock starts here: creation, or the last manual retry
    base_attempts: int  # attempts before `since`; backoff counts the ones after


@dataclass
class _Outcome:
    entry: _Entry
    status: str
    error: str


class Outbox:
    """The single owner of delivery state in this process; `enqueue` and `deliver_due` may run
    on different threads."""

    def __init__(
        self,
        store: Store,
        senders: Callable[[Message], Sender | None],
        settings: OutboxSettings,
        metrics: AlertMetrics | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self._store = store
        self._senders = senders
        self._settings = settings
        self._metrics = metrics
        self._clock = clock
        self._rng = rng or random.Random()
        self._lock = threading.Lock()  # the in-memory state; never held during HTTP
        self._enqueue_lock = threading.Lock()  # one enqueue or retry at a time
        self._deliver_lock = threading.Lock()  # one delivery round at a time
        self._pool = ThreadPoolExecutor(settings.workers, thread_name_prefix="driftline-outbox")
        self._round_size = max(256, settings.workers * 32)
        self._known: OrderedDict[str, None] = OrderedDict()
        self._unsaved: tuple[list[dict[str, Any]], list[dict[str, Any]]] = ([], [])
        self._pending = {e.message.id: e for e in self._load(PENDING)}
        self._dead = tables.count_notifications(self._store, DEAD)
        self._report()

    def enqueue(self, messages: Sequence[Message]) -> int:
        """Store messages not stored before (by id) as pending, due now; return how many are new."""
        with self._enqueue_lock:
            fresh = self._unseen(messages)
            if not fresh:
                return 0
            now = self._clock()
            now_ms = _ms(now)
            entries = [_Entry(m, 0, now, "", now_ms, m.created_at, 0) for m in fresh]
            tables.insert_notifications(self._store, [_row(e, PENDING) for e in entries])
            with self._lock:
                stale = self._superseded(fresh)
                for entry in entries:
                    self._pending[entry.message.id] = entry
                    self._remember(entry.message.id)
            if stale:
                tables.insert_notifications(self._store, [_row(e, SUPERSEDED) for e in stale])
            self._report()
            return len(entries)

    def deliver_due(self) -> int:
        """Attempt every pending message whose next attempt is due, `settings.workers` at a time;
        return attempts made."""
        with self._deliver_lock:
            self._flush()
            now = self._clock()
            with self._lock:
                due = [e for e in self._pending.values() if e.next_at <= now]
            due.sort(key=lambda e: e.next_at)
            made = 0
            for start in range(0, len(due), self._round_size):
                made += self._round(due[start : start + self._round_size])
            return made

    def retry(self, message_id: str, project: str | None = None) -> bool:
        """Put a dead message back to pending, due now (False if unknown or not dead)."""
        with self._enqueue_lock:
            with self._lock:
                if message_id in self._pending:
                    return False
            entries = self._load(DEAD, message_id, project)
            if not entries:
                return False
            now = self._clock()
            for entry in entries:
                entry.next_at, entry.since, entry.base_attempts = now, now, entry.attempts
                entry.updated_ms = max(_ms(now), entry.updated_ms + 1)
            tables.insert_notifications(self._store, [_row(e, PENDING) for e in entries])
            with self._lock:
                for entry in entries:
                    self._pending[entry.message.id] = entry
                    self._remember(entry.message.id)
                self._dead -= len(entries)
            log.info("notification %s to %s retried", message_id, entries[0].message.receiver)
            self._report()
            return True

    def pending_count(self) -> int:
        """Messages not yet delivered nor dead."""
        with self._lock:
            return len(self._pending)

    def close(self) -> None:
        """Wait for deliveries in flight, stop the workers and save what is left unsaved."""
        with self._deliver_lock:
            self._pool.shutdown(wait=True)
            self._flush()

    def _superseded(self, fresh: Sequence[Message]) -> list[_Entry]:
        """Pending stateful messages that `fresh` ones replace, taken out of the pending set.
        Call with the lock held."""
        newest = {
            (m.receiver, m.group_key): m.created_at for m in fresh if m.kind in STATEFUL_KINDS
        }
        stale = [
            e for e in self._pending.values()
            if e.message.kind in STATEFUL_KINDS
            and e.message.created_at < newest.get((e.message.receiver, e.message.group_key), 0)
        ]  # fmt: skip
        now_ms = _ms(self._clock())
        for entry in stale:
            del self._pending[entry.message.id]
            entry.updated_ms = max(now_ms, entry.updated_ms + 1)
            entry.last_error = "replaced by a newer push before it could be delivered"
        return stale

    # -- one round ---------------------------------------------------------------------------

    def _round(self, due: list[_Entry]) -> int:
        """Attempt `due` concurrently, then record every outcome in one insert per table."""
        resolved = [(entry, self._senders(entry.message)) for entry in due]
        sendable = [(entry, sender) for entry, sender in resolved if sender is not None]
        results = list(self._pool.map(lambda pair: self._attempt(*pair), sendable))
        now = self._clock()
        outcomes, attempts = [], []
        for (entry, _), (at, delivery) in zip(sendable, results, strict=True):
            outcomes.append(self._judge(entry, delivery, now))
            attempts.append(_attempt_row(entry, delivery, at))
        for entry, sender in resolved:
            if sender is None:
                error = f"receiver {entry.message.receiver!r} is no longer configured"
                outcomes.append(_Outcome(entry, DEAD, error))
        self._apply(outcomes, now)
        self._unsaved[0].extend(_row(o.entry, o.status) for o in outcomes)
        self._unsaved[1].extend(attempts)
        self._flush()
        return len(sendable)

    def _judge(self, entry: _Entry, delivery: Delivery, now: float) -> _Outcome:
        """The state after one attempt; schedules the next one when it can still succeed."""
        entry.attempts += 1
        self._observe(entry.message, delivery)
        if delivery.ok:
            return _Outcome(entry, DELIVERED, "")
        if not delivery.retryable:
            return _Outcome(entry, DEAD, delivery.error)
        deadline = entry.since + self._settings.give_up_after
        if deadline <= now:
            error = (
                f"gave up after {entry.attempts} attempts over {now - entry.since:.0f}s: "
                f"{delivery.error}"
            )
            return _Outcome(entry, DEAD, error)
        wait = self._backoff(entry.attempts - entry.base_attempts)
        if delivery.retry_after is not None:
            wait = max(wait, delivery.retry_after)
        entry.next_at = min(now + wait, deadline)
        log.debug(
            "notification %s to %s failed (attempt %d), next in %.1fs: %s",
            entry.message.id,
            entry.message.receiver,
            entry.attempts,
            entry.next_at - now,
            delivery.error,
        )
        return _Outcome(entry, PENDING, delivery.error)

    def _backoff(self, attempt: int) -> float:
        """Equal jitter: half the exponential delay, plus up to half again at random."""
        settings = self._settings
        delay = min(settings.backoff_max, settings.backoff_initial * 2.0 ** (attempt - 1))
        return delay / 2 + self._rng.uniform(0, delay / 2)

    def _attempt(self, entry: _Entry, sender: Sender) -> tuple[float, Delivery]:
        """One attempt on a worker thread: when it started, and how it went."""
        at = self._clock()
        start = time.perf_counter()
        try:
            return at, sender.send(entry.message)
        except Exception as exc:  # senders do not raise; a faulty one must not lose the round
            log.exception("sender for receiver %s failed", entry.message.receiver)
            error = f"{type(exc).__name__}: sender failed"
            return at, Delivery(None, error, None, time.perf_counter() - start)

    def _apply(self, outcomes: Iterable[_Outcome], now: float) -> None:
        """Move finished messages out of the pending set and count, log and version each one."""
        now_ms = _ms(now)
        with self._lock:
            for outcome in outcomes:
                entry, message = outcome.entry, outcome.entry.message
                entry.last_error = outcome.error
                entry.updated_ms = max(now_ms, entry.updated_ms + 1)
                if outcome.status == PENDING:
                    continue
                self._pending.pop(message.id, None)
                if outcome.status == DEAD:
                    self._dead += 1
                    self._count(message, "dead")
                    log.warning(
                        "notification %s to %s dead-lettered: %s",
                        message.id,
                        message.receiver,
                        outcome.error,
                    )
        self._report()

    # -- store -------------------------------------------------------------------------------

    def _load(
        self, status: str, message_id: str | None = None, project: str | None = None
    ) -> list[_Entry]:
        rows = tables.notifications_in(self._store, status, message_id, project)
        return [_entry(row) for row in rows]

    def _unseen(self, messages: Sequence[Message]) -> list[Message]:
        """The messages whose ids are neither in memory nor in the store, first of each id."""
        candidates: dict[str, Message] = {}
        with self._lock:
            for m in messages:
                if m.id not in candidates and m.id not in self._pending and m.id not in self._known:
                    candidates[m.id] = m
        if not candidates:
            return []
        stored = tables.stored_notification_ids(self._store, list(candidates))
        with self._lock:
            for message_id in stored:
                self._remember(message_id)
        known = set(stored)
        return [m for i, m in candidates.items() if i not in known]

    def _flush(self) -> None:
        """Save row versions and attempts not yet saved; on failure keep them for next time."""
        states, attempts = self._unsaved
        if not states and not attempts:
            return
        # Attempts first: a reader that sees a message delivered must also see how it went.
        try:
            if attempts:
                tables.insert_notification_attempts(self._store, attempts)
                attempts.clear()
            if states:
                tables.insert_notifications(self._store, states)
                states.clear()
        except Exception as exc:
            log.warning("outbox: cannot save delivery state, will retry: %s", exc)

    # -- bookkeeping -------------------------------------------------------------------------

    def _remember(self, message_id: str) -> None:
        """Call with the lock held."""
        self._known[message_id] = None
        if len(self._known) > _KNOWN_IDS:
            self._known.popitem(last=False)

    def _observe(self, message: Message, delivery: Delivery) -> None:
        if self._metrics is None:
            return
        self._metrics.delivery_seconds.labels(message.kind).observe(delivery.seconds)
        if delivery.ok:
            self._count(message, "sent")
        elif delivery.retryable:
            self._count(message, "failed")

    def _count(self, message: Message, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.notifications.labels(message.receiver, message.kind, outcome).inc()

    def _report(self) -> None:
        if self._metrics is not None:
            with self._lock:
                pending, dead = len(self._pending), self._dead
            self._metrics.pending.set(pending)
            self._metrics.dead.set(dead)


def _entry(row: dict[str, Any]) -> _Entry:
    created = row["created_ms"] / 1000
    message = Message(
        id=row["id"],
        project=row["project_id"],
        receiver=row["receiver"],
        kind=row["kind"],
        group_key=row["group_key"],
        body=row["body"].encode() if isinstance(row["body"], str) else bytes(row["body"]),
        created_at=created,
    )
    return _Entry(
        message=message,
        attempts=int(row["attempts"]),
        next_at=row["next_ms"] / 1000,
        last_error=row["last_error"],
        updated_ms=int(row["updated_ms"]),
        since=created,
        base_attempts=0,
    )


def _row(entry: _Entry, status: str) -> dict[str, Any]:
    message = entry.message
    return {
        "project_id": message.project,
        "id": message.id,
        "receiver": message.receiver,
        "kind": message.kind,
        "group_key": message.group_key,
        "body": message.body,
        "status": status,
        "attempts": entry.attempts,
        "next_attempt_at": _ms(entry.next_at),
        "last_error": entry.last_error,
        "created_at": _ms(message.created_at),
        "updated_at": entry.updated_ms,
    }


def _attempt_row(entry: _Entry, delivery: Delivery, at: float) -> dict[str, Any]:
    return {
        "project_id": entry.message.project,
        "notification_id": entry.message.id,
        "attempt": entry.attempts,
        "at": _ms(at),
        "status_code": delivery.status_code or 0,
        "error": delivery.error,
        "duration_ms": delivery.seconds * 1000,
    }


def _ms(seconds: float) -> int:
    return round(seconds * 1000)
