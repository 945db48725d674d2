"""Senders against a real local HTTP receiver: Standard Webhooks signing, paths, Retry-After and
how each outcome is classified."""

from __future__ import annotations

import json
import time
from email.utils import formatdate

import httpx
import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from driftline.alerts.notifiers import (
    AlertmanagerSender,
    Delivery,
    Message,
    SlackSender,
    WebhookSender,
)
from driftline.alerts.payloads import slack_body
from tests.alerts.conftest import SECRET
from tests.alerts.receiver import Receiver
from tests.conftest import free_port

BODY = json.dumps({"version": "4", "status": "firing", "alerts": []}).encode()


def message(id: str = "msg-1", body: bytes = BODY) -> Message:
    return Message(id, "alpha", "team", "webhook", "{}:{}", body, time.time())


def test_signature_verifies(client: httpx.Client, receiver: Receiver) -> None:
    delivery = WebhookSender(client, f"{receiver.url}/hook", SECRET, 5).send(message())
    assert delivery.ok and delivery.status_code == 200 and delivery.error == ""
    (request,) = receiver.requests
    assert request.path == "/hook" and request.method == "POST"
    assert request.body == BODY and request.verified is True
    assert Webhook(SECRET).verify(request.body, request.headers) == json.loads(BODY)
    assert request.headers["webhook-id"] == "msg-1"
    assert request.headers["webhook-signature"].startswith("v1,")
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == "driftline-alerts"


def test_tampered_body_fails_verification(client: httpx.Client, receiver: Receiver) -> None:
    WebhookSender(client, receiver.url, SECRET, 5).send(message())
    (request,) = receiver.requests
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(request.body.replace(b"firing", b"resolved"), request.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(request.body, {**request.headers, "webhook-id": "msg-2"})


def test_id_is_stable_and_each_attempt_is_signed_at_its_time(
    client: httpx.Client, receiver: Receiver
) -> None:
    first = int(time.time()) - 90
    times = iter([first, first + 60])
    sender = WebhookSender(client, receiver.url, SECRET, 5, clock=lambda: next(times))
    receiver.answer(503, times=1)
    assert sender.send(message()).status_code == 503
    assert sender.send(message()).ok
    one, two = receiver.requests
    assert one.webhook_id == two.webhook_id == "msg-1"
    assert one.headers["webhook-timestamp"] == str(first)
    assert two.headers["webhook-timestamp"] == str(first + 60)
    assert one.headers["webhook-signature"] != two.headers["webhook-signature"]
    assert one.verified and two.verified
    assert receiver.delivered_ids == {"msg-1": 1}


def test_without_secret_no_signature(client: httpx.Client, receiver: Receiver) -> None:
    now = time.time()
    WebhookSender(client, receiver.url, None, 5, clock=lambda: now).send(message())
    (request,) = receiver.requests
    assert request.headers["webhook-id"] == "msg-1"
    assert request.headers["webhook-timestamp"] == str(int(now))
    assert "webhook-signature" not in request.headers
    assert request.verified is False


def test_slack_posts_the_body_to_the_url(client: httpx.Client, receiver: Receiver) -> None:
    body = json.dumps({"text": "drift"}).encode()
    delivery = SlackSender(client, f"{receiver.url}/services/T0/B0/tok", 5).send(message(body=body))
    assert delivery.ok
    (request,) = receiver.requests
    assert request.path == "/services/T0/B0/tok" and request.body == body
    assert request.headers["content-type"] == "application/json"


def test_alertmanager_posts_to_the_v2_api(client: httpx.Client, receiver: Receiver) -> None:
    body = json.dumps([{"labels": {"alertname": "Drift"}}]).encode()
    for url in (receiver.url, f"{receiver.url}/"):
        assert AlertmanagerSender(client, url, 5).send(message(body=body)).ok
    assert [r.path for r in receiver.requests] == ["/api/v2/alerts"] * 2
    assert all(r.headers["content-type"] == "application/json" for r in receiver.requests)
    assert receiver.requests[0].json() == [{"labels": {"alertname": "Drift"}}]


def test_retry_after_in_seconds(client: httpx.Client, receiver: Receiver) -> None:
    receiver.answer(429, times=1, retry_after="7")
    delivery = WebhookSender(client, receiver.url, None, 5).send(message())
    assert delivery.status_code == 429 and delivery.retry_after == 7.0
    assert delivery.retryable and not delivery.ok
    assert delivery.error.startswith("HTTP 429")


def test_retry_after_as_http_date(client: httpx.Client, receiver: Receiver) -> None:
    now = float(int(time.time()))
    receiver.answer(503, times=1, retry_after=formatdate(now + 120, usegmt=True))
    delivery = WebhookSender(client, receiver.url, None, 5, clock=lambda: now).send(message())
    assert delivery.status_code == 503 and delivery.retry_after == 120.0


@pytest.mark.parametrize("header", [None, "soon", "", "inf"])
def test_retry_after_absent_or_unusable(
    client: httpx.Client, receiver: Receiver, header: str | None
) -> None:
    receiver.answer(503, times=1, retry_after=header)
    delivery = WebhookSender(client, receiver.url, None, 5).send(message())
    assert delivery.status_code == 503 and delivery.retry_after is None


def test_timeout_is_retryable_without_status(client: httpx.Client, receiver: Receiver) -> None:
    receiver.answer(200, times=1, delay=1.0)
    delivery = WebhookSender(client, receiver.url, None, 0.1).send(message())
    assert delivery.status_code is None and delivery.retryable and not delivery.ok
    assert delivery.error.startswith("ReadTimeout")


def test_connection_refused_is_retryable_and_hides_the_url(client: httpx.Client) -> None:
    url = f"http://user:hunter2@127.0.0.1:{free_port()}/services/T0/B0/s3cr3t?token=abc"
    for sender in (SlackSender(client, url, 1), WebhookSender(client, url, SECRET, 1)):
        delivery = sender.send(message())
        assert delivery.status_code is None and delivery.retryable
        assert delivery.error.startswith("ConnectError")
        for secret in ("hunter2", "s3cr3t", "token", "127.0.0.1"):
            assert secret not in delivery.error


def test_bad_request_is_permanent(client: httpx.Client, receiver: Receiver) -> None:
    receiver.answer(400, times=1)
    delivery = WebhookSender(client, receiver.url, None, 5).send(message())
    assert delivery.status_code == 400 and not delivery.retryable and not delivery.ok
    assert delivery.error == "HTTP 400: scripted 400"


@pytest.mark.parametrize(
    ("status", "ok", "retryable"),
    [
        (200, True, False),
        (204, True, False),
        (301, False, False),
        (400, False, False),
        (401, False, False),
        (404, False, False),
        (408, False, True),
        (425, False, True),
        (429, False, True),
        (500, False, True),
        (503, False, True),
        (None, False, True),
    ],
)
def test_classification(status: int | None, ok: bool, retryable: bool) -> None:
    delivery = Delivery(status, "" if ok else "x", None, 0.0)
    assert (delivery.ok, delivery.retryable) == (ok, retryable)


def test_slack_shows_labels_and_annotations_from_spans_as_text() -> None:
    """A span sets label values (service, model) and rules copy them into annotations: none of
    them may become a Slack mention, a link, or end a `code` span."""
    hostile = {"alertname": "Drift", "service": "<!channel> `rm -rf`", "model": "a&b>c"}
    annotations = {"summary": "<!here> see <https://evil.example|docs>", "description": "<@U1>"}
    webhook = {
        "status": "firing", "groupLabels": {"alertname": "Drift"}, "commonLabels": hostile,
        "alerts": [{"status": "firing", "labels": hostile, "annotations": annotations,
                    "generatorURL": "http://driftline/alerts?x=1&y=<2>"}],
    }  # fmt: skip
    body = slack_body(webhook)
    sent = json.dumps(body)
    for injected in ("<!channel>", "<!here>", "<https://evil", "<@U1>", "y=<2>"):
        assert injected not in sent
    section = body["blocks"][1]["text"]["text"]
    assert "&lt;!channel&gt;" in section and "a&amp;b&gt;c" in section
    assert "&lt;!here&gt;" in body["text"]
    code = section.splitlines()[2]  # the labels line: each label one `code` span
    assert code.count("`") == 4 and "\u02cbrm -rf\u02cb" in code
    assert "<http://driftline/alerts?x=1&amp;y=&lt;2&gt;|alert>" in section
