"""The alerts API inside the collector: alerts, silences, notifications with their attempts,
dead letters sent again, and the alert metrics, all scoped to the key's project."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from driftline.store import keys
from tests.alerts.conftest import SECRET, insert_calls
from tests.alerts.receiver import Receiver
from tests.conftest import Collector, wait_for

RULES = """
rules:
  - alert: HighErrorRate
    when: {{metric: {{metric: error_rate, over: 5m, above: 0.1, by: [service], min_calls: 10}}}}
    labels: {{severity: critical}}
    annotations: {{summary: "{{{{ $labels.service }}}} fails"}}
route: {{receiver: hook, group_wait: 0s}}
receivers:
  - name: hook
    webhook: {{url: "{url}", secret: "{secret}"}}
"""


def alerting_collector(collector_factory: Any, tmp_path: Path, url: str) -> Collector:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.format(url=url, secret=SECRET))
    return collector_factory(  # type: ignore[no-any-return]
        alerts={
            "rules_file": str(rules),
            "evaluation_interval": 0.2,
            "outbox": {"tick_seconds": 0.1, "backoff_initial": 0.1, "backoff_max": 0.5},
        }
    )


def api(c: Collector, method: str, path: str, key: str | None = None, **kwargs: Any) -> Any:
    return c.client.request(
        method, path, headers={"Authorization": f"Bearer {key or c.read_key}"}, **kwargs
    )


def test_alert_fires_notifies_signed_and_shows_in_the_api(
    collector_factory: Any, tmp_path: Path
) -> None:
    with Receiver(secret=SECRET) as receiver:
        c = alerting_collector(collector_factory, tmp_path, receiver.url + "/hook")
        insert_calls(c.runtime.store, time.time(), 20, errors=10, service="a")
        [alert] = wait_for(
            lambda: api(c, "GET", "/api/alerts", params={"state": "firing"}).json()["items"],
            "the alert did not fire",
        )
        assert alert["labels"]["service"] == "a" and alert["annotations"]["summary"] == "a fails"
        assert alert["silencedBy"] == []
        assert receiver.wait_delivered(1)
        [request] = receiver.delivered
        assert request.verified is True
        assert request.json()["alerts"][0]["fingerprint"] == alert["fingerprint"]

        [note] = wait_for(
            lambda: api(c, "GET", "/api/notifications", params={"status": "delivered"}).json()[
                "items"
            ],
            "no delivered notification",
        )
        assert note["id"] == request.webhook_id and note["receiver"] == "hook"
        assert [a["statusCode"] for a in note["deliveryAttempts"]] == [200]
        assert note["body"]["groupKey"] == '{}:{alertname="HighErrorRate", project="alpha"}'

        metrics = c.client.get("/metrics").text
        assert 'driftline_alerts{rule="HighErrorRate",state="firing"} 1.0' in metrics
        assert (
            'driftline_notifications_total{notifier="webhook",outcome="sent",receiver="hook"} 1.0'
            in metrics
        )

        # Another project's key sees none of it.
        beta = keys.create_key(c.runtime.store, "beta", "admin")[1]
        assert api(c, "GET", "/api/alerts", beta).json()["items"] == []
        assert api(c, "GET", "/api/notifications", beta).json()["items"] == []


def test_dead_letters_are_listed_and_can_be_sent_again(
    collector_factory: Any, tmp_path: Path
) -> None:
    with Receiver(secret=SECRET) as receiver:
        receiver.answer(410)  # gone: not worth retrying
        c = alerting_collector(collector_factory, tmp_path, receiver.url + "/hook")
        insert_calls(c.runtime.store, time.time(), 20, errors=10, service="a")
        [dead] = wait_for(
            lambda: api(c, "GET", "/api/notifications", params={"status": "dead"}).json()["items"],
            "the message was not dead-lettered",
        )
        assert "410" in dead["lastError"]
        assert "driftline_notifications_dead 1.0" in c.client.get("/metrics").text
        assert api(c, "POST", f"/api/notifications/{dead['id']}/retry").status_code == 403
        receiver.recover()
        answer = api(c, "POST", f"/api/notifications/{dead['id']}/retry", c.admin_key)
        assert answer.status_code == 200, answer.text
        assert receiver.wait_delivered(1)
        assert receiver.statuses(dead["id"]) == [410, 200]
        missing = api(c, "POST", "/api/notifications/msg_nope/retry", c.admin_key)
        assert missing.status_code == 404


def test_silences_api(collector_factory: Any, tmp_path: Path) -> None:
    with Receiver(secret=SECRET) as receiver:
        c = alerting_collector(collector_factory, tmp_path, receiver.url + "/hook")
        made = api(
            c, "POST", "/api/silences", c.admin_key,
            json={"matchers": ['service="a"', {"name": "severity", "value": "crit.*",
                                               "isRegex": True}],
                  "duration": "2h", "createdBy": "ops", "comment": "deploy"},
        )  # fmt: skip
        assert made.status_code == 201, made.text
        silence = made.json()
        assert silence["matchersText"] == ['service="a"', 'severity=~"crit.*"']
        assert silence["status"]["state"] == "active"

        insert_calls(c.runtime.store, time.time(), 20, errors=10, service="a")
        [alert] = wait_for(
            lambda: api(c, "GET", "/api/alerts", params={"state": "firing"}).json()["items"],
            "the alert did not fire",
        )
        assert alert["silencedBy"] == [silence["id"]]
        time.sleep(1)
        assert receiver.requests == []  # silenced: nothing sent

        beta = keys.create_key(c.runtime.store, "beta", "admin")[1]
        assert api(c, "GET", "/api/silences", beta).json()["items"] == []
        assert api(c, "DELETE", f"/api/silences/{silence['id']}", beta).status_code == 404
        assert api(c, "DELETE", f"/api/silences/{silence['id']}").status_code == 403
        expired = api(c, "DELETE", f"/api/silences/{silence['id']}", c.admin_key)
        assert expired.json()["status"]["state"] == "expired"
        assert receiver.wait_delivered(1)  # unsilenced: the alert goes out

        for body, problem in [
            ({"matchers": ["service"], "duration": "1h"}, 'must look like name="value"'),
            ({"matchers": ['team=~".*"'], "duration": "1h"}, "would silence everything"),
            ({"matchers": ['a="b"'], "endsAt": "2020-01-01T00:00:00Z"}, "after startsAt"),
            (
                {
                    "matchers": ['a="b"'],
                    "startsAt": "2019-01-01T00:00:00Z",
                    "endsAt": "2020-01-01T00:00:00Z",
                },
                "in the past",
            ),
            ({"matchers": ['a="b"']}, "exactly one of endsAt or duration"),
            ({"matchers": ['a="b"'], "duration": "soon"}, "must look like 30s"),
            ({"matchers": ['a="b"'], "endsAt": "tomorrow"}, "not an RFC 3339 time"),
        ]:
            answer = api(
                c, "POST", "/api/silences", c.admin_key,
                json={"createdBy": "ops", "comment": "x", **body},
            )  # fmt: skip
            assert answer.status_code == 400 and problem in answer.json()["error"], answer.text
