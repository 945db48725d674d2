"""The outbox on a real embedded store, delivering to a real local receiver: at least once with a
stable id (so exactly once after dedupe), backoff, Retry-After, restarts, dead letters."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from driftline.alerts.config import OutboxSettings
from driftline.alerts.metrics import AlertMetrics
from driftline.alerts.notifiers import (
    AlertmanagerSender,
    Delivery,
    Message,
    Sender,
    WebhookSender,
)
from driftline.alerts.outbox import Outbox
from driftline.store import Store
from tests.alerts.receiver import Receiver

FAST = OutboxSettings.model_validate(
    {"workers": 4, "backoff_initial": 0.05, "backoff_max": 0.5, "give_up_after": 60}
)


def message(n: int, created_at: float | None = None, receiver: str = "team") -> Message:
    body = json.dumps({"version": "4", "groupKey": f"g{n}", "alerts": []}).encode()
    at = time.time() if created_at is None else created_at
    return Message(f"msg-{n}", "alpha", receiver, "webhook", f"g{n}", body, at)


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Scripted:
    """A Sender that answers from a list (the last answer repeats) without any HTTP."""

    def __init__(self, *answers: Delivery) -> None:
        self.answers = list(answers)
        self.sent: list[str] = []

    def send(self, message: Message) -> Delivery:
        self.sent.append(message.id)
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def to(receiver: Receiver, client: httpx.Client) -> Callable[[Message], Sender | None]:
    sender = WebhookSender(client, f"{receiver.url}/hook", None, 2)
    return lambda message: sender


def settle(outbox: Outbox, timeout: float = 20) -> None:
    """Run delivery rounds until nothing is pending (bounded)."""
    deadline = time.monotonic() + timeout
    while outbox.pending_count() and time.monotonic() < deadline:
        outbox.deliver_due()
        time.sleep(0.01)
    assert outbox.pending_count() == 0, "messages still pending"


def rows(store: Store) -> dict[str, dict[str, Any]]:
    found = store.query(
        "SELECT id, status, attempts, last_error,"
        " toUnixTimestamp64Milli(next_attempt_at) AS next_ms FROM notifications FINAL"
    )
    return {row["id"]: row for row in found}


def attempts(store: Store) -> dict[str, list[tuple[int, int, str]]]:
    found = store.query(
        "SELECT notification_id, attempt, status_code, error, toUnixTimestamp64Milli(at) AS at_ms"
        " FROM notification_attempts ORDER BY notification_id, attempt"
    )
    by_id: dict[str, list[tuple[int, int, str]]] = {}
    for row in found:
        by_id.setdefault(row["notification_id"], []).append(
            (row["attempt"], row["status_code"], row["error"])
        )
    return by_id


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_retries_through_503_and_429_then_delivers_exactly_once(
    store: Store, client: httpx.Client, receiver: Receiver
) -> None:
    registry = CollectorRegistry()
    outbox = Outbox(store, to(receiver, client), FAST, AlertMetrics(registry))
    receiver.answer(503, times=3, per_id=True)
    receiver.answer(429, times=1, per_id=True, retry_after="1")
    messages = [message(n) for n in range(4)]
    assert outbox.enqueue(messages) == 4
    assert sample(registry, "driftline_notifications_pending") == 4
    settle(outbox)
    outbox.close()

    ids = {m.id for m in messages}
    assert receiver.delivered_ids == dict.fromkeys(ids, 1)
    tried = attempts(store)
    for id in ids:
        assert [(n, code) for n, code, _ in tried[id]] == list(
            enumerate([503, 503, 503, 429, 200], start=1)
        )
        assert tried[id][0][2].startswith("HTTP 503") and tried[id][-1][2] == ""
        assert receiver.statuses(id) == [503, 503, 503, 429, 200]
    assert {r["status"] for r in rows(store).values()} == {"delivered"}
    assert {r["attempts"] for r in rows(store).values()} == {5}
    retried = store.query(
        "SELECT notification_id, max(toUnixTimestamp64Milli(at)) - min(toUnixTimestamp64Milli(at))"
        " AS gap_ms FROM notification_attempts"
        " WHERE attempt IN (4, 5) GROUP BY notification_id"
    )
    assert len(retried) == 4
    assert all(r["gap_ms"] >= 990 for r in retried), "Retry-After: 1 not honoured"
    labels = {"receiver": "team", "notifier": "webhook"}
    assert sample(registry, "driftline_notifications_total", **labels, outcome="sent") == 4
    assert sample(registry, "driftline_notifications_total", **labels, outcome="failed") == 16
    assert sample(registry, "driftline_notifications_pending") == 0
    count = "driftline_notification_delivery_seconds_count"
    assert sample(registry, count, notifier="webhook") == 20


def test_restart_while_receiver_is_down_loses_and_repeats_nothing(
    store: Store, client: httpx.Client
) -> None:
    receiver = Receiver()  # not listening yet: connection refused
    first = Outbox(store, to(receiver, client), FAST)
    messages = [message(n) for n in range(20)]
    assert first.enqueue(messages) == 20
    tries = 0
    while tries < 40:  # a few failed rounds, whatever their timing
        tries += first.deliver_due()
        time.sleep(0.01)
    first.close()

    second = Outbox(store, to(receiver, client), FAST)  # the restart
    assert second.pending_count() == 20
    assert second.enqueue(messages) == 0
    deadline = time.monotonic() + 10
    while second.deliver_due() == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    with receiver:
        settle(second)
    second.close()

    assert receiver.delivered_ids == {m.id: 1 for m in messages}
    assert {r["status"] for r in rows(store).values()} == {"delivered"}
    tried = attempts(store)
    for m in messages:
        numbers = [n for n, _, _ in tried[m.id]]
        assert numbers == list(range(1, len(numbers) + 1)) and len(numbers) >= 2
        *failed, (_, last, _) = tried[m.id]
        assert last == 200
        assert all(code == 0 and error.startswith("ConnectError") for _, code, error in failed)


def test_gives_up_then_manual_retry_delivers(
    store: Store, client: httpx.Client, receiver: Receiver
) -> None:
    registry = CollectorRegistry()
    settings = FAST.model_copy(update={"give_up_after": 0.3})
    outbox = Outbox(store, to(receiver, client), settings, AlertMetrics(registry))
    receiver.answer(503)
    outbox.enqueue([message(1), message(2)])
    settle(outbox)
    outbox.close()

    for row in rows(store).values():
        assert row["status"] == "dead"
        assert row["last_error"].startswith(f"gave up after {row['attempts']} attempts over")
        assert row["last_error"].endswith("HTTP 503: scripted 503")
    assert sample(registry, "driftline_notifications_dead") == 2
    dead = {"receiver": "team", "notifier": "webhook", "outcome": "dead"}
    assert sample(registry, "driftline_notifications_total", **dead) == 2
    assert receiver.delivered_ids == {}

    registry = CollectorRegistry()  # a restart counts the dead from the store
    outbox = Outbox(store, to(receiver, client), settings, AlertMetrics(registry))
    assert sample(registry, "driftline_notifications_dead") == 2
    receiver.recover()
    assert not outbox.retry("msg-404")
    assert not outbox.retry("msg-1", project="beta")
    assert outbox.retry("msg-1", project="alpha")
    assert not outbox.retry("msg-1")  # pending now, not dead
    assert sample(registry, "driftline_notifications_dead") == 1
    assert outbox.pending_count() == 1
    settle(outbox)
    outbox.close()

    assert receiver.delivered_ids == {"msg-1": 1}
    assert rows(store)["msg-1"]["status"] == "delivered"
    assert rows(store)["msg-2"]["status"] == "dead"
    numbers = [n for n, _, _ in attempts(store)["msg-1"]]
    assert numbers == list(range(1, len(numbers) + 1))
    assert sample(registry, "driftline_notifications_dead") == 1


def test_bad_request_is_dead_after_one_attempt(
    store: Store, client: httpx.Client, receiver: Receiver
) -> None:
    outbox = Outbox(store, to(receiver, client), FAST)
    receiver.answer(400)
    outbox.enqueue([message(1)])
    assert outbox.deliver_due() == 1
    assert outbox.pending_count() == 0
    assert outbox.deliver_due() == 0
    outbox.close()
    row = rows(store)["msg-1"]
    assert (row["status"], row["attempts"], row["last_error"]) == (
        "dead",
        1,
        "HTTP 400: scripted 400",
    )
    assert attempts(store)["msg-1"] == [(1, 400, "HTTP 400: scripted 400")]
    assert len(receiver.requests) == 1


def test_enqueue_is_idempotent_by_id(
    store: Store, client: httpx.Client, receiver: Receiver
) -> None:
    outbox = Outbox(store, to(receiver, client), FAST)
    assert outbox.enqueue([message(1), message(1)]) == 1
    assert outbox.enqueue([message(1)]) == 0
    settle(outbox)
    assert outbox.enqueue([message(1), message(2)]) == 1
    settle(outbox)
    outbox.close()

    again = Outbox(store, to(receiver, client), FAST)  # knows the ids only from the store
    assert again.enqueue([message(1), message(2)]) == 0
    assert again.pending_count() == 0
    again.close()
    counts = store.query("SELECT id, count() AS n FROM notifications FINAL GROUP BY id")
    assert {r["id"]: r["n"] for r in counts} == {"msg-1": 1, "msg-2": 1}
    assert receiver.delivered_ids == {"msg-1": 1, "msg-2": 1}


def test_backoff_grows_with_equal_jitter(store: Store) -> None:
    clock = FakeClock()
    sender = Scripted(Delivery(503, "HTTP 503", None, 0.01))
    settings = OutboxSettings.model_validate(
        {"backoff_initial": 1, "backoff_max": 8, "give_up_after": 10_000}
    )
    outbox = Outbox(store, lambda m: sender, settings, clock=clock, rng=random.Random(7))
    outbox.enqueue([message(1, created_at=clock.now)])
    delays = []
    for n in range(1, 9):
        assert outbox.deliver_due() == 1
        due = rows(store)["msg-1"]["next_ms"] / 1000
        delay = due - clock.now
        bound = min(8, 2 ** (n - 1))
        assert bound / 2 - 0.001 <= delay <= bound + 0.001, (n, delay)
        delays.append(delay)
        clock.now = due - 0.01
        assert outbox.deliver_due() == 0  # not due yet
        clock.now = due
    outbox.close()
    assert delays[:4] == sorted(delays[:4])  # [d/2, d] ranges do not overlap below the cap
    assert len(set(delays)) == len(delays)  # jittered
    assert len(sender.sent) == 8
    assert [n for n, _, _ in attempts(store)["msg-1"]] == list(range(1, 9))


def test_retry_after_beyond_backoff_max_until_give_up(store: Store) -> None:
    clock = FakeClock()
    created = clock.now
    sender = Scripted(Delivery(429, "HTTP 429", 100.0, 0.01))
    settings = OutboxSettings.model_validate(
        {"backoff_initial": 1, "backoff_max": 8, "give_up_after": 150}
    )
    outbox = Outbox(store, lambda m: sender, settings, clock=clock, rng=random.Random(1))
    outbox.enqueue([message(1, created_at=created)])
    outbox.deliver_due()
    due = rows(store)["msg-1"]["next_ms"] / 1000
    assert due == pytest.approx(created + 100)  # honoured above backoff_max
    clock.now = due
    outbox.deliver_due()
    due = rows(store)["msg-1"]["next_ms"] / 1000
    assert due == pytest.approx(created + 150)  # but not past the give-up time
    clock.now = due
    outbox.deliver_due()
    outbox.close()
    row = rows(store)["msg-1"]
    assert row["status"] == "dead"
    assert row["last_error"] == "gave up after 3 attempts over 150s: HTTP 429"


def test_unknown_receiver_and_failing_sender(store: Store) -> None:
    class Broken:
        def send(self, message: Message) -> Delivery:
            raise RuntimeError("bug")

    broken = Broken()
    outbox = Outbox(
        store, lambda m: None if m.receiver == "gone" else broken, FAST, clock=FakeClock()
    )
    outbox.enqueue([message(1, receiver="gone"), message(2)])
    assert outbox.deliver_due() == 1  # only the resolvable one is attempted
    outbox.close()
    found = rows(store)
    assert found["msg-1"]["status"] == "dead"
    assert "'gone'" in found["msg-1"]["last_error"]
    assert "msg-1" not in attempts(store)
    assert found["msg-2"]["status"] == "pending"  # a raising sender is a retryable failure
    assert attempts(store)["msg-2"] == [(1, 0, "RuntimeError: sender failed")]


def test_enqueue_from_another_thread_while_delivering(
    store: Store, client: httpx.Client, receiver: Receiver
) -> None:
    outbox = Outbox(store, to(receiver, client), FAST)
    messages = [message(n) for n in range(200)]

    def produce() -> None:
        for start in range(0, len(messages), 20):
            outbox.enqueue(messages[start : start + 20])
            time.sleep(0.005)

    producer = threading.Thread(target=produce)
    producer.start()
    deadline = time.monotonic() + 30
    while (producer.is_alive() or outbox.pending_count()) and time.monotonic() < deadline:
        outbox.deliver_due()
        time.sleep(0.005)
    producer.join()
    outbox.close()
    assert receiver.delivered_ids == {m.id: 1 for m in messages}
    assert {r["status"] for r in rows(store).values()} == {"delivered"}


def test_a_newer_alertmanager_push_replaces_a_pending_older_one(store: Store) -> None:
    """Pushes carry the whole state: a stale one delivered after a newer one would re-fire
    resolved alerts, so only the newest pending push per receiver and project is sent."""

    def push(ident: str, project: str, at: float) -> Message:
        return Message(ident, project, "am", "alertmanager", f"alertmanager:{project}",
                       ident.encode(), time.time() + at)  # fmt: skip

    with Receiver() as receiver, httpx.Client() as client:
        receiver.answer(503, times=1)
        sender = AlertmanagerSender(client, receiver.url, 5.0)
        outbox = Outbox(store, lambda _m: sender, OutboxSettings.model_validate({}))
        outbox.enqueue([push("push-1", "alpha", 1.0)])
        outbox.deliver_due()  # 503: push-1 waits for its retry
        outbox.enqueue([push("push-2", "alpha", 2.0), push("push-3", "beta", 1.5)])
        assert outbox.pending_count() == 2
        outbox.deliver_due()
        outbox.close()
        delivered = [r.body for r in receiver.requests if r.status == 200]
    assert sorted(delivered) == [b"push-2", b"push-3"]
    statuses = dict(
        (r["id"], r["status"]) for r in store.query("SELECT id, status FROM notifications FINAL")
    )
    assert statuses == {"push-1": "superseded", "push-2": "delivered", "push-3": "delivered"}
